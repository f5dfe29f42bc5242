#!/usr/bin/env python3
"""A small real HTTP/1.1 upstream for Switchyard's integration tests.

Usage: python3 tests/peers/http_upstream.py PORT

Standard library only (http.server.ThreadingHTTPServer, HTTP/1.1 keep-alive).
Every response carries `X-Upstream-Port: <port>` (which host answered) and
`X-Path: <request path>` (which request it answers).

Endpoints:
  GET  /hello          a short text body with Content-Length
  POST|PUT /echo       echoes the request body (Content-Length or chunked);
                       answers chunked when the request was chunked
  GET  /stream/<n>     n bytes of the pattern, chunked, 64 KiB chunks, flushed
  GET  /bytes/<n>      n bytes of the pattern with Content-Length
  GET  /slow/<ms>      sleeps, then answers "slept <ms>"
  GET  /status/<code>  answers with that status
  GET  /close          answers with Connection: close and closes
  GET  /headers        the request head's header lines as the body
  GET  /inflight       how many /slow requests are sleeping right now
  GET  /upgrade        with `Upgrade: echo`: 101, then echoes raw bytes
  GET  /eof-body/<n>   n bytes of the pattern, no length: the body ends at close
  GET  /big-header/<n> a response with an n-byte header value
HEAD works on every GET endpoint (no body is sent).

The pattern is byte i = i % 251 (the tests compute the same).
"""

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
_BASE = bytes(range(251))
_inflight = 0
_lock = threading.Lock()


def pattern(n):
    reps = n // len(_BASE) + 1
    return (_BASE * reps)[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "switchyard-test-upstream/1"
    # Head and body are separate writes: without TCP_NODELAY, Nagle and the
    # peer's delayed ACK add ~40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_response(self, code, message=None):
        super().send_response(code, message)
        self.send_header("X-Upstream-Port", str(self.server.server_address[1]))
        self.send_header("X-Path", self.path)

    def _text(self, code, body, extra=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self):
        """The request body and whether it came chunked."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
            return b"".join(parts), True
        n = int(self.headers.get("Content-Length", "0") or "0")
        return (self.rfile.read(n) if n else b""), False

    def _send_chunked(self, code, data, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        for i in range(0, len(data), CHUNK):
            piece = data[i : i + CHUNK]
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self):
        global _inflight
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if path == "/hello":
            self._text(200, "hello from upstream\n")
        elif parts[0] == "stream" and len(parts) == 2:
            self._send_chunked(200, pattern(int(parts[1])))
        elif parts[0] == "bytes" and len(parts) == 2:
            data = pattern(int(parts[1]))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        elif parts[0] == "eof-body" and len(parts) == 2:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(pattern(int(parts[1])))
        elif parts[0] == "big-header" and len(parts) == 2:
            self._text(200, "big header\n", extra=[("X-Big", "b" * int(parts[1]))])
        elif parts[0] == "slow" and len(parts) == 2:
            with _lock:
                _inflight += 1
            try:
                time.sleep(int(parts[1]) / 1000.0)
            finally:
                with _lock:
                    _inflight -= 1
            self._text(200, "slept %s\n" % parts[1])
        elif parts[0] == "status" and len(parts) == 2:
            code = int(parts[1])
            if code in (204, 304) or code < 200:
                self.send_response(code)
                self.end_headers()
            else:
                self._text(code, "status %d\n" % code)
        elif path == "/close":
            self.close_connection = True
            self._text(200, "bye\n", extra=[("Connection", "close")])
        elif path == "/headers":
            self._text(200, "".join("%s: %s\n" % (k, v) for k, v in self.headers.items()))
        elif path == "/inflight":
            with _lock:
                n = _inflight
            self._text(200, "%d\n" % n)
        elif path == "/upgrade" and self.headers.get("Upgrade", "").lower() == "echo":
            self.send_response(101, "Switching Protocols")
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "echo")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.connection.sendall(data)
        else:
            self._text(404, "not found: %s\n" % path)

    def do_HEAD(self):
        self.do_GET()

    def _echo(self):
        body, chunked = self._read_body()
        if chunked:
            self._send_chunked(200, body)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self):
        if self.path.split("?", 1)[0] == "/echo":
            self._echo()
        else:
            self._read_body()
            self._text(404, "not found\n")

    do_PUT = do_POST


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


def main():
    port = int(sys.argv[1])
    server = Server(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
