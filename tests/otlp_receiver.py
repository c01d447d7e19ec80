"""A real OTLP receiver for tests: gRPC (TraceService, MetricsService) and HTTP/protobuf, on 127.0.0.1.

It keeps every request it acknowledged, and can be taken down and brought back on the same port.
"""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Receiver:
    def __init__(self) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc = None
        self._http = None
        self.delay = 0.0  # seconds each trace request takes: a slow receiver
        self.arrived: dict[bytes, float] = {}  # span ID -> when it first arrived (time.time())

    # -- what arrived --------------------------------------------------------------------------------

    def spans(self) -> list:
        with self.lock:
            return [s for req in self.traces for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[dict]:
        with self.lock:
            return [{a.key: a.value for a in rs.resource.attributes} for req in self.traces
                    for rs in req.resource_spans]

    def metric_points(self, name: str) -> list:
        with self.lock:
            out = []
            for req in self.metrics:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            if m.name == name:
                                data = m.WhichOneof("data")
                                out.append((data, list(getattr(m, data).data_points)))
            return out

    # -- gRPC ---------------------------------------------------------------------------------------

    def start_grpc(self, port: int = 0) -> int:
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                if receiver.delay:
                    import time

                    time.sleep(receiver.delay)
                import time

                now = time.time()
                with receiver.lock:
                    receiver.traces.append(request)
                    for rs in request.resource_spans:
                        for ss in rs.scope_spans:
                            for sp in ss.spans:
                                receiver.arrived.setdefault(sp.span_id, now)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                with receiver.lock:
                    receiver.metrics.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        self.grpc_port = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        self._grpc = server
        return self.grpc_port

    def stop_grpc(self) -> None:
        if self._grpc:
            self._grpc.stop(grace=None).wait()
            self._grpc = None

    # -- HTTP ---------------------------------------------------------------------------------------

    def start_http(self, port: int = 0) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/traces":
                    req, resp = trace_service_pb2.ExportTraceServiceRequest(), trace_service_pb2.ExportTraceServiceResponse()
                    target = receiver.traces
                elif self.path == "/v1/metrics":
                    req, resp = metrics_service_pb2.ExportMetricsServiceRequest(), metrics_service_pb2.ExportMetricsServiceResponse()
                    target = receiver.metrics
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                req.ParseFromString(body)
                with receiver.lock:
                    target.append(req)
                data = resp.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self.http_port

    def stop_http(self) -> None:
        if self._http:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def stop(self) -> None:
        self.stop_grpc()
        self.stop_http()
