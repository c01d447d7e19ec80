# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench fixtures install npm debs clean

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

# The stack's tests run the real Prometheus, promtool, Alertmanager and amtool.
debs:
	@command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
		{ echo "installing Prometheus and Alertmanager (for the stack's tests)"; $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager; }

test: $(STAMP) npm debs
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/bench_watch.py
	$(BIN)/python bench/bench_mcp.py

# Re-record the OpenCode corpora (and the demo store, one of them) with the real binaries from npm.
fixtures: $(STAMP) npm
	$(BIN)/python tests/record.py

clean:
	rm -rf $(VENV) build *.egg-info exporter/*.egg-info .pytest_cache
