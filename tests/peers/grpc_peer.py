"""A gRPC peer for the HTTP/2 tests, on grpcio (the C-core implementation),
without generated code: methods take and return raw bytes.

    grpc_peer.py server PORT
        serves test.Echo on 127.0.0.1:PORT:
          Unary(b)        -> b"echo:" + b, trailing metadata x-served-by: python
          Stream(b"N")    -> N messages b"msg-0" .. b"msg-<N-1>"
          Slow(b"MS")     -> sleeps MS milliseconds, then b"slow"
          Collect(stream) -> one response: the requests joined with b","
          Chat(stream)    -> one response per request, b"re:" + request,
                             each sent as soon as its request arrives
          Whoami(_)       -> the server's port
          Metadata(b"NAME") -> the request's metadata NAME (values joined
                             with ","), or b"-" without it
          SetServing(b"0" or b"1") -> what grpc.health.v1.Health/Check
                             answers from now on: NOT_SERVING or SERVING
        and grpc.health.v1.Health/Check (SERVING until SetServing says not)
    grpc_peer.py server PORT unavailable
        as above, but Unary fails every call with UNAVAILABLE (a trailers-only
        answer) and counts them; Count(_) -> how many Unary calls it saw
        With GRPC_PEER_TLS_CERT and GRPC_PEER_TLS_KEY (PEM files) set, the
        server speaks TLS (ALPN h2) instead of h2c.
    grpc_peer.py call TARGET METHOD ARG [TIMEOUT_SECONDS]
        calls /test.Echo/METHOD (or METHOD, when it is a /path) on TARGET
        (h2c) and prints one JSON line:
        {"code": "OK", "details": ..., "responses": [...], "trailers": {...}}
"""
import json
import os
import sys
import time
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("x-served-by", "python"),))
    return b"echo:" + request


def stream(request, context):
    for i in range(int(request.decode())):
        yield b"msg-%d" % i


def slow(request, context):
    time.sleep(int(request.decode()) / 1000.0)
    return b"slow"


def collect(requests, context):
    return b",".join(requests)


def chat(requests, context):
    for r in requests:
        yield b"re:" + r


def metadata(request, context):
    name = request.decode()
    values = [v for k, v in context.invocation_metadata() if k == name]
    return ",".join(values).encode() if values else b"-"


SERVING = [True]
FAILED = [0]


def unavailable(request, context):
    FAILED[0] += 1
    context.abort(grpc.StatusCode.UNAVAILABLE, "this host is unavailable")


def set_serving(request, context):
    SERVING[0] = request == b"1"
    return b"serving" if SERVING[0] else b"not serving"


def health_check(request, context):
    # HealthCheckResponse { status: SERVING (1) or NOT_SERVING (2) }
    return b"\x08\x01" if SERVING[0] else b"\x08\x02"


def serve(port, mode):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Whoami": grpc.unary_unary_rpc_method_handler(lambda r, c: str(port).encode()),
        "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
        "SetServing": grpc.unary_unary_rpc_method_handler(set_serving),
        "Unary": grpc.unary_unary_rpc_method_handler(
            unavailable if mode == "unavailable" else unary
        ),
        "Count": grpc.unary_unary_rpc_method_handler(lambda r, c: str(FAILED[0]).encode()),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    health = {"Check": grpc.unary_unary_rpc_method_handler(health_check)}
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("test.Echo", handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
        )
    )
    cert = os.environ.get("GRPC_PEER_TLS_CERT")
    if cert:
        with open(cert, "rb") as c, open(os.environ["GRPC_PEER_TLS_KEY"], "rb") as k:
            credentials = grpc.ssl_server_credentials(((k.read(), c.read()),))
        server.add_secure_port("127.0.0.1:%d" % port, credentials)
    else:
        server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def call(target, method, arg, timeout):
    out = {"code": "OK", "details": None, "responses": [], "trailers": {}}
    with grpc.insecure_channel(target) as channel:
        path = method if method.startswith("/") else "/test.Echo/" + method
        try:
            if method in ("Collect", "Chat"):
                # ARG is the number of request messages: m-0 .. m-<N-1>.
                requests = [b"m-%d" % i for i in range(int(arg))]
                if method == "Collect":
                    r, c = channel.stream_unary(path).with_call(iter(requests), timeout=timeout)
                    out["responses"].append(r.decode())
                    out["trailers"] = dict(c.trailing_metadata() or ())
                else:
                    it = channel.stream_stream(path)(iter(requests), timeout=timeout)
                    for r in it:
                        out["responses"].append(r.decode())
                    out["trailers"] = dict(it.trailing_metadata() or ())
            elif method == "Stream":
                it = channel.unary_stream(path)(arg.encode(), timeout=timeout)
                for r in it:
                    out["responses"].append(r.decode())
                out["trailers"] = dict(it.trailing_metadata() or ())
            else:
                r, c = channel.unary_unary(path).with_call(arg.encode(), timeout=timeout)
                out["responses"].append(r.decode())
                out["trailers"] = dict(c.trailing_metadata() or ())
        except grpc.RpcError as e:
            out["code"] = e.code().name
            out["details"] = e.details()
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
    else:
        timeout = float(sys.argv[5]) if len(sys.argv) > 5 else None
        call(sys.argv[2], sys.argv[3], sys.argv[4], timeout)
