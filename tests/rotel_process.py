"""The real collector rotel (the `rotel` wheel on PyPI) as a process, for tests and benchmarks: OTLP
in on gRPC and HTTP, OTLP out over gRPC."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import rotel

from harness import free_port

# The team collector's cap on spans per request (deploy/otelcol/config.yaml): 8,192 of ocsight's
# spans make a request over the 4 MiB a gRPC receiver takes by default.
TEAM_BATCH_SPANS = 2048


@dataclass
class Rotel:
    """A running rotel: its OTLP ports by protocol."""

    ports: dict[str, int]
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_rotel(out_port: int, work: Path, batch_spans: int | None = None) -> Rotel:
    """rotel listening on 127.0.0.1 and forwarding to `out_port`, in batches of at most `batch_spans`
    spans (None: rotel's default, 8,192); returns once it accepts connections."""
    binary = Path(rotel.__file__).with_name("rotel-agent")
    grpc_port, http_port = free_port(), free_port()
    p = subprocess.Popen(
        [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "otlp",
         "--otlp-exporter-endpoint", f"http://127.0.0.1:{out_port}", "--otlp-exporter-protocol", "grpc",
         "--pid-file", str(work / "rotel.pid"),
         *([] if batch_spans is None else ["--traces-batch-max-size", str(batch_spans)])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return Rotel({"grpc": grpc_port, "http/protobuf": http_port}, p)
