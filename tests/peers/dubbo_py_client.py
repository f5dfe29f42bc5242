#!/usr/bin/env python3
"""A Dubbo client on an independent hessian2 codec: PyPI's dubbo-ssl-python
(import name `dubbo_ssl`).

Usage: dubbo_py_client.py HOST:PORT

Calls com.example.Calc.plus(1, 2) and com.example.Calc.echo("héllo") and
prints one JSON line: {"plus": {"ok": VALUE} | {"error": MESSAGE},
"echo": ...}. Exits 2 with an install hint when dubbo_ssl is missing.
"""

import json
import sys

try:
    from dubbo_ssl.client import DubboClient
except ImportError as e:
    print(
        f"cannot import dubbo_ssl ({e}): run `python3 -m pip install dubbo-ssl-python` (.ci/run does)",
        file=sys.stderr,
    )
    sys.exit(2)

# Per-call timeout in seconds: far above what the gateway should take.
TIMEOUT = 15


def call(client, method, args):
    try:
        return {"ok": client.call(method, args, timeout=TIMEOUT)}
    except Exception as e:  # the library raises its own DubboException types
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    # The Node peers serve sofa-rpc-node's default version, 1.0.
    client = DubboClient("com.example.Calc", group=None, version="1.0", host=sys.argv[1])
    results = {
        "plus": call(client, "plus", [1, 2]),
        "echo": call(client, "echo", ["héllo"]),
    }
    print(json.dumps(results, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
