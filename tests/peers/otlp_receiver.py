#!/usr/bin/env python3
"""A small real OTLP/HTTP trace receiver for Switchyard's tracing tests.

Usage: python3 tests/peers/otlp_receiver.py PORT OUT_FILE

Listens on 127.0.0.1:PORT for `POST /v1/traces` with an
`application/x-protobuf` body, decodes it as an
`ExportTraceServiceRequest` with the OpenTelemetry project's own generated
classes (PyPI `opentelemetry-proto`, which is not Switchyard's code), and
appends one JSON object per span to OUT_FILE:

  {"trace_id": hex, "span_id": hex, "parent_span_id": hex or "",
   "name": str, "kind": int, "start": ns, "end": ns,
   "attributes": {key: value}, "status_code": int, "status_message": str,
   "trace_state": str, "resource": {key: value}, "scope": str}

A body that does not decode is answered 400 and written to OUT_FILE as
{"error": ...}, so a test sees it. Prints "ready" once listening.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

_lock = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        lines = []
        status = 200
        if self.path != "/v1/traces":
            status = 404
            lines.append({"error": "POST to " + self.path})
        else:
            try:
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    resource = attributes(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            lines.append(
                                {
                                    "trace_id": s.trace_id.hex(),
                                    "span_id": s.span_id.hex(),
                                    "parent_span_id": s.parent_span_id.hex(),
                                    "name": s.name,
                                    "kind": s.kind,
                                    "start": s.start_time_unix_nano,
                                    "end": s.end_time_unix_nano,
                                    "attributes": attributes(s.attributes),
                                    "status_code": s.status.code,
                                    "status_message": s.status.message,
                                    "trace_state": s.trace_state,
                                    "resource": resource,
                                    "scope": ss.scope.name,
                                }
                            )
            except Exception as e:  # noqa: BLE001 - reported to the test
                status = 400
                lines.append({"error": "cannot decode: %r" % (e,)})
        with _lock:
            with open(OUT, "a") as f:
                for line in lines:
                    f.write(json.dumps(line) + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


if __name__ == "__main__":
    port = int(sys.argv[1])
    OUT = sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()
