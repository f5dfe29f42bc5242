#!/usr/bin/env python3
"""Parse one load generator's output for labs/bench/all.sh.

    parse.py TOOL OUTPUT_FILE [EXTRA]

prints one tab-separated line: value p50_ms p99_ms requests errors
(value: requests/s, messages/s or transactions/s; "NA" where the tool does not
say; errors: "0" or a short reason). Exit status 0 even on errors: the caller
records them.
"""
import json
import re
import sys


def na(x):
    return "NA" if x is None else x


def wrk(txt, _extra):
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", txt, re.M)
    total = re.search(r"^\s*(\d+) requests in", txt, re.M)

    def lat(q):
        m = re.search(rf"^\s+{q}%\s+([0-9.]+)(us|ms|s|m)\s*$", txt, re.M)
        if not m:
            return None
        f = {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]
        return round(float(m.group(1)) * f, 3)

    errs = []
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    if m:
        errs.append(f"non2xx={m.group(1)}")
    m = re.search(r"Socket errors: (.*)", txt)
    if m:
        errs.append("socket_errors=" + m.group(1).replace(" ", ""))
    if not rps or not total:
        return None, None, None, 0, "no wrk summary"
    return float(rps.group(1)), lat(50), lat(99), int(total.group(1)), ";".join(errs) or "0"


def h2load(txt, logfile):
    m = re.search(r"finished in [0-9.]+\w*, ([0-9.]+) req/s", txt)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", txt)
    c = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", txt)
    if not m or not r or not c:
        return None, None, None, 0, "no h2load summary"
    failed, errored, tmo = int(r.group(5)), int(r.group(6)), int(r.group(7))
    non2xx = sum(int(c.group(i)) for i in (2, 3, 4))
    lat = []
    if logfile:
        try:
            with open(logfile) as f:
                lat = sorted(int(l.split("\t")[2]) for l in f if l.count("\t") >= 2)
        except OSError:
            pass

    def q(p):
        if not lat:
            return None
        return lat[min(len(lat) - 1, max(0, -(-len(lat) * p // 100) - 1))] / 1000

    bad = failed + errored + tmo + non2xx
    err = f"failed={failed};errored={errored};timeout={tmo};non2xx={non2xx}" if bad else "0"
    return float(m.group(1)), q(50), q(99), int(r.group(4)), err


def redis(txt, n):
    # redis-benchmark 7 --csv: "test","rps","avg_latency_ms","min_latency_ms",
    # "p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    rows = [l for l in txt.splitlines() if l.startswith('"') and not l.startswith('"test"')]
    if not rows:
        return None, None, None, 0, "no redis-benchmark CSV line"
    f = [x.strip('"') for x in rows[-1].split('","')]
    if len(f) < 7:
        return None, None, None, 0, "short CSV line"
    err = "0"
    if re.search(r"^(ERR|Error)", txt, re.M | re.I):
        err = "error reply"
    return float(f[1]), float(f[4]), float(f[6]), int(n), err


def mqtt(txt, _extra):
    try:
        j = json.loads(txt.strip().splitlines()[-1])
    except Exception:
        return None, None, None, 0, "no mqtt-bench JSON"
    lat = j.get("puback_latency_ms") or {}
    errs = list(j.get("errors") or [])
    if j.get("ack_errors"):
        errs.append(f"ack_errors={j['ack_errors']}")
    counted = j["acked"] if j["qos"] == 1 else j["sent"]
    return j["msgs_per_s"], lat.get("p50"), lat.get("p99"), counted, ";".join(errs) or "0"


def sysbench(txt, _extra):
    tps = re.search(r"transactions:\s+(\d+)\s+\(([0-9.]+) per sec", txt)
    p99 = re.search(r"99th percentile:\s+([0-9.]+)", txt)
    errs = re.search(r"ignored errors:\s+(\d+)", txt)
    if not tps:
        return None, None, None, 0, "no sysbench summary"
    err = "0" if not errs or errs.group(1) == "0" else f"ignored_errors={errs.group(1)}"
    return float(tps.group(2)), None, float(p99.group(1)) if p99 else None, int(tps.group(1)), err


def rpc(txt, _extra):
    try:
        j = json.loads(txt.strip().splitlines()[-1])
    except Exception:
        return None, None, None, 0, "no rpc-bench JSON"
    err = "0"
    if j.get("errors"):
        err = ";".join(f"{k.replace(' ', '_')}={v}" for k, v in sorted(j["error_kinds"].items())) or "errors"

    def num(x):
        return None if x is None or x != x else x

    return j["requests_per_s"], num(j.get("p50_ms")), num(j.get("p99_ms")), j["ok"], err


def main():
    tool, path = sys.argv[1], sys.argv[2]
    extra = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        with open(path, errors="replace") as f:
            txt = f.read()
    except OSError as e:
        print(f"NA\tNA\tNA\t0\tno output ({e.strerror})")
        return
    v, p50, p99, n, err = globals()[tool](txt, extra)
    err = err.replace("\t", " ").replace("\n", " ")[:200]
    print(f"{na(v)}\t{na(p50)}\t{na(p99)}\t{n}\t{err}")


if __name__ == "__main__":
    main()
