"""Real Prometheus and Alertmanager for tests (the Debian packages' binaries), and a webhook receiver.

Each process runs on a free port of 127.0.0.1 in its own temporary directory (config, storage,
log) and is killed when its context manager exits. A process that fails to start or to become
ready raises `StackError` with the tail of its log. HTTP clients use urllib only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar, final

import yaml

from harness import free_port

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name; upstream's is `alertmanager`
AMTOOL = "amtool"

T = TypeVar("T")


class StackError(RuntimeError):
    pass


def binary(name: str, *fallbacks: str) -> str:
    """The path of a binary on PATH (or /usr/bin, /usr/sbin); StackError when none is installed."""
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or shutil.which(candidate, path="/usr/bin:/usr/sbin")
        if found:
            return found
    raise StackError(f"{name} is not installed (Debian: apt-get install prometheus prometheus-alertmanager)")


def wait_until(fn: Callable[[], T], timeout: float = 30, interval: float = 0.2, what: str = "condition") -> T:
    """Polls `fn` until it returns something truthy (returned); exceptions count as not yet.

    On timeout raises TimeoutError naming `what` and the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - not ready yet, whatever the reason
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout:g}s; last: {last!r}")
        time.sleep(interval)


def http_json(url: str, data: bytes | None = None, method: str | None = None, timeout: float = 10) -> Any:
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


class Process:
    """One server process: its directory, log and base URL."""

    name = "process"

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StackError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise StackError(f"{self.name} not ready on {self.url} within {timeout:g}s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def get(self, path: str, **params: str | float) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return http_json(f"{self.url}{path}{query}")


class Prometheus(Process):
    name = "prometheus"

    def argv(self) -> list[str]:
        return [binary(PROMETHEUS), f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle", "--log.level=info"]

    def _api(self, path: str, **params: str | float) -> Any:
        try:
            doc = self.get(path, **params)
        except urllib.error.HTTPError as e:
            raise StackError(f"{path} {params}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None
        if doc.get("status") != "success":
            raise StackError(f"{path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict] | list:
        """An instant query: the vector's samples ({metric, value}), or a scalar's [time, "value"]."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self._api("/api/v1/query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self._api("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"]

    def alerts(self) -> list[dict]:
        """Pending and firing alerts ({labels, annotations, state, value, ...})."""
        return self._api("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict]:
        return self._api("/api/v1/rules")["groups"]

    def targets(self) -> list[dict]:
        return self._api("/api/v1/targets")["activeTargets"]

    def reload(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/-/reload", method="POST"), timeout=10).close()


class Alertmanager(Process):
    name = "alertmanager"

    def argv(self) -> list[str]:
        return [binary(ALERTMANAGER, "alertmanager"), f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=", "--log.level=info"]

    def alerts(self) -> list[dict]:
        """Alerts Alertmanager holds (API v2), with their status (active, suppressed/inhibited)."""
        return self.get("/api/v2/alerts")


def prometheus_config(targets: Sequence[str] = (), alertmanager: str | None = None, job: str = "ocsight",
                      interval: str = "1s") -> str:
    """A minimal prometheus.yml: scrape `targets` (host:port) and evaluate rules every `interval`."""
    doc: dict[str, Any] = {"global": {"scrape_interval": interval, "evaluation_interval": interval,
                                      "scrape_timeout": interval}}
    if targets:
        doc["scrape_configs"] = [{"job_name": job, "static_configs": [{"targets": list(targets)}]}]
    if alertmanager:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(doc, sort_keys=False)


def _workdir(kind: str, workdir: Path | None) -> tuple[Path, bool]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir, False
    return Path(tempfile.mkdtemp(prefix=f"ocsight-{kind}-")), True


def _config_text(config: str | Path) -> str:
    return config.read_text() if isinstance(config, Path) else config


P = TypeVar("P", bound="Process")


@contextmanager
def _running(server: P, owned: bool, attempts: int = 3) -> Iterator[P]:
    try:
        for attempt in range(attempts):
            try:
                server.start()
                break
            except StackError as e:  # another process took the free port in between: take another
                if "address already in use" not in str(e) or attempt == attempts - 1:
                    raise
                server.port = free_port()
                server.url = f"http://127.0.0.1:{server.port}"
        yield server
    finally:
        server.stop()
        if owned:
            shutil.rmtree(server.workdir, ignore_errors=True)


@contextmanager
def prometheus(config: str | Path, rule_files: Sequence[Path] = (), workdir: Path | None = None) -> Iterator[Prometheus]:
    """Prometheus with `config` (YAML text, or a file) and `rule_files` added to its own."""
    directory, owned = _workdir("prometheus", workdir)
    doc = yaml.safe_load(_config_text(config)) or {}
    doc["rule_files"] = [*doc.get("rule_files", []), *(str(Path(p).resolve()) for p in rule_files)]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with _running(Prometheus(directory, free_port()), owned) as server:
        yield server


@contextmanager
def alertmanager(config: str | Path, workdir: Path | None = None) -> Iterator[Alertmanager]:
    """Alertmanager with `config` (YAML text, or a file), gossip off."""
    directory, owned = _workdir("alertmanager", workdir)
    (directory / "alertmanager.yml").write_text(_config_text(config))
    with _running(Alertmanager(directory, free_port()), owned) as server:
        yield server


@final
class WebhookReceiver:
    """Collects what Alertmanager's webhook_configs POST (one JSON notification per request)."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {"unparsable": body.decode(errors="replace")}
                with receiver._cond:
                    receiver.notifications.append(doc)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alerts(self) -> list[dict]:
        """Every alert of every notification so far, oldest first."""
        with self._cond:
            return [a for n in self.notifications for a in n.get("alerts", [])]

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        """The first notification (webhook JSON) for which `predicate` holds, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for n in self.notifications:
                    if predicate(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching notification within {timeout:g}s; got: "
                                       f"{json.dumps(self.notifications)[:3000]}")
                self._cond.wait(left)
