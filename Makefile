# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast test-installed test-sqlite336 check bench fixtures install npm debs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ocsight analyze

# The end-to-end tests install the real OpenCode binary with npm.
npm:
	@command -v npm >/dev/null || { echo "installing Node.js and npm (for the OpenCode binary the tests run)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm; }

# The stack's tests run the real Prometheus, promtool, Alertmanager and amtool; `live`'s keyboard
# tests drive it through a real terminal, tmux.
debs:
	@command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
		{ echo "installing Prometheus and Alertmanager (for the stack's tests)"; $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager; }
	@command -v tmux >/dev/null || { echo "installing tmux (for the live view's keyboard tests)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends tmux; }

# In tiers: the package's own checks and the fast unit tier first (seconds), then the whole suite
# (real OpenCode, real OTLP receivers, Prometheus, MCP clients) on a non-editable install, then the
# whole suite again on the oldest SQLite ocsight supports.
test: check test-fast npm debs test-installed test-sqlite336

# Import contracts (one-way data flow, no cycle) and types.
check: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/mypy

# Pure functions and tiny stores: the token rule, staging, prices, span and metric mapping.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# The suite against ocsight installed from its wheel, as users get it (not the source tree).
INSTALLED := .venv-installed
test-installed: $(STAMP)
	rm -rf $(INSTALLED)
	$(PYTHON) -m venv $(INSTALLED)
	$(INSTALLED)/bin/pip install --quiet --upgrade pip
	$(INSTALLED)/bin/pip install --quiet '.[test]'
	$(INSTALLED)/bin/python -m pytest -p no:cacheprovider

# The whole suite (the corpus exactness tests, the sidecar and the MCP server among them) on a real
# SQLite 3.36.0 under Python's own sqlite3 module (the oldest SQLite ocsight supports is 3.35):
# tests/old_sqlite.py builds it once with gcc into the test cache and runs pytest with it first on
# LD_LIBRARY_PATH; the tests check that they, and the ocsight processes they start, run on it.
test-sqlite336: $(STAMP)
	$(BIN)/python tests/old_sqlite.py $(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/bench_watch.py
	$(BIN)/python bench/bench_fleet.py
	$(BIN)/python bench/bench_mcp.py

# Re-record the OpenCode corpora (and the demo store, one of them) with the real binaries from npm.
fixtures: $(STAMP) npm
	$(BIN)/python tests/record.py

clean:
	rm -rf $(VENV) $(INSTALLED) build *.egg-info exporter/*.egg-info .pytest_cache
