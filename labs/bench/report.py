#!/usr/bin/env python3
"""Aggregate labs/bench/all.sh's cells into results.json, results.md and ratios.png.

    report.py CELLS_TSV CALLGRIND_TSV META_JSON OUT_DIR

CELLS_TSV: workload target round value p50_ms p99_ms requests proxy_cpu_s_per_req
origin_cpu_s_per_req errors (one line per run). CALLGRIND_TSV: name requests instructions.
"""
import json
import os
import statistics
import sys

# The peer a user would pick instead, per workload family (the first one is the one charted).
PEERS = {"http1": ["haproxy", "nginx"], "h2": ["haproxy"], "grpc": ["haproxy"], "redis": ["twemproxy"],
         "mqtt": ["haproxy"], "mysql": ["haproxy"], "rpc": ["haproxy"]}
TARGET_ORDER = ["direct", "switchyard", "haproxy", "nginx", "twemproxy"]


def family(workload):
    w = workload.split()[0]
    return "idle" if "idle" in workload else w


def peers_of(workload):
    return PEERS.get(family(workload), ["haproxy"])


def unit_of(workload):
    if "idle" in workload:
        return "bytes of RSS per idle connection"
    if workload.startswith("mqtt"):
        return "messages/s"
    if workload.startswith("mysql"):
        return "transactions/s"
    return "requests/s"


def num(x):
    return None if x in ("NA", "", None) else float(x)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def load_cells(path):
    cells = {}
    order = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 10:
                continue
            w, t, r, v, p50, p99, n, pcpu, ocpu, err = parts[:10]
            key = (w, t)
            if key not in cells:
                cells[key] = []
                order.append(key)
            cells[key].append({"round": int(r), "value": num(v), "p50_ms": num(p50), "p99_ms": num(p99),
                               "requests": int(n or 0), "proxy_cpu": num(pcpu), "origin_cpu": num(ocpu),
                               "error": None if err == "0" else err})
    return cells, order


def aggregate(cells, order):
    out = []
    for (w, t) in order:
        runs = sorted(cells[(w, t)], key=lambda r: r["round"])
        vals = [r["value"] for r in runs if r["value"] is not None]
        out.append({
            "workload": w, "target": t, "unit": unit_of(w),
            "rounds": [r["value"] for r in runs],
            "median": med(vals), "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "p50": med(r["p50_ms"] for r in runs), "p99": med(r["p99_ms"] for r in runs),
            "cpu_s_per_req": med(r["proxy_cpu"] for r in runs),
            "origin_cpu_s_per_req": med(r["origin_cpu"] for r in runs),
            "cpu_s_per_req_rounds": [r["proxy_cpu"] for r in runs],
            "requests": [r["requests"] for r in runs],
            "errors": [r["error"] for r in runs if r["error"]],
        })
    return out


def fmt(x, spec=",.0f", none="–"):
    return none if x is None else format(x, spec)


def us(x):
    if x is None:
        return "–"
    return f"{x * 1e6:.1f}" if x * 1e6 >= 1 else f"{x * 1e6:.2f}"


def fr(x):
    return "–" if x is None else f"{x:.2f}×"


def main():
    cells_path, cg_path, meta_path, out_dir = sys.argv[1:5]
    cells, order = load_cells(cells_path)
    results = aggregate(cells, order)
    meta = json.load(open(meta_path))
    cg = []
    if os.path.exists(cg_path):
        for line in open(cg_path):
            name, n, ir = line.rstrip("\n").split("\t")
            cg.append({"workload": "callgrind " + name, "target": "switchyard", "unit": "instructions/request",
                       "requests": int(n), "instructions": int(ir), "instructions_per_req": int(ir) / int(n)})

    by = {(c["workload"], c["target"]): c for c in results}
    workloads = []
    for c in results:
        if c["workload"] not in workloads:
            workloads.append(c["workload"])

    # Ratios per workload: switchyard / direct, switchyard / each peer (throughput, CPU per request, p99).
    summary = []
    for w in workloads:
        sy = by.get((w, "switchyard"))
        if not sy:
            continue
        d = by.get((w, "direct"))
        row = {"workload": w, "vs_direct": ratio(sy["median"], d["median"] if d else None), "peers": []}
        for p in peers_of(w):
            pc = by.get((w, p))
            if not pc:
                continue
            row["peers"].append({
                "peer": p,
                "throughput_ratio": ratio(sy["median"], pc["median"]),
                "cpu_per_req_ratio": ratio(sy["cpu_s_per_req"], pc["cpu_s_per_req"]),
                "p99_ratio": ratio(sy["p99"], pc["p99"]),
            })
        summary.append(row)

    doc = {"meta": meta, "cells": results + cg, "ratios": summary}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)

    # ---------------------------------------------------------------- Markdown
    L = []
    L.append(f"### All workloads, one run ({meta['date']}, commit {meta['commit']}"
             f"{', QUICK smoke run' if meta.get('quick') == 1 else ''})")
    L.append("")
    L.append(f"{meta['rounds']} interleaved round(s), {meta['duration_s']} s per timed cell, redis-benchmark -n {meta['n']}; "
             f"nproc {meta['nproc']}, load average {meta['load_before']} before, {meta['load_after']} after; "
             f"switchyard worker threads: {meta['switchyard_threads']}.")
    L.append("")
    L.append("| workload | target | median | min–max | p50 ms | p99 ms | vs direct | proxy CPU µs/req | origin CPU µs/req | errors |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for w in workloads:
        d = by.get((w, "direct"))
        for t in TARGET_ORDER:
            c = by.get((w, t))
            if not c:
                continue
            idle = "idle" in w
            spec = ",.0f"
            vs = ratio(c["median"], d["median"] if d else None)
            L.append(f"| {w}{' (B/conn)' if idle else ''} | {t} | {fmt(c['median'], spec)} | "
                     f"{fmt(c['min'], spec)}–{fmt(c['max'], spec)} | {fmt(c['p50'], '.3f')} | {fmt(c['p99'], '.3f')} | "
                     f"{fr(vs) if t != 'direct' else '1.00×'} | {us(c['cpu_s_per_req'])} | {us(c['origin_cpu_s_per_req'])} | "
                     f"{'; '.join(c['errors'])[:80] or 'none'} |")
    L.append("")
    L.append("Switchyard against the peer, same run (throughput: higher is better; CPU per request, p99 and "
             "idle bytes per connection: lower is better):")
    L.append("")
    L.append("| workload | Switchyard / direct | peer | Switchyard / peer | CPU per request / peer's | p99 / peer's |")
    L.append("|---|---:|---|---:|---:|---:|")
    for row in summary:
        for p in row["peers"] or [{"peer": "–", "throughput_ratio": None, "cpu_per_req_ratio": None, "p99_ratio": None}]:
            L.append(f"| {row['workload']} | {fr(row['vs_direct'])} | {p['peer']} | **{fr(p['throughput_ratio'])}** | "
                     f"{fr(p['cpu_per_req_ratio'])} | {fr(p['p99_ratio'])} |")
    if cg:
        L.append("")
        L.append("| callgrind hot path (switchyard, 1 worker thread) | requests | instructions | instructions / request |")
        L.append("|---|---:|---:|---:|")
        for c in cg:
            L.append(f"| {c['workload'][len('callgrind '):]} | {c['requests']:,} | {c['instructions']:,} | **{c['instructions_per_req']:,.0f}** |")
    L.append("")
    L.append("CPU µs/req: utime+stime from /proc/PID/stat before and after the cell, divided by the requests "
             "(for sysbench: transactions) of the cell; \"proxy\" is the process in front (Switchyard or the peer), "
             "\"origin\" the server. Idle rows: RSS growth of the process holding the connections, per connection.")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")

    # ---------------------------------------------------------------- chart
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    labels, thr, cpu = [], [], []
    for row in summary:
        if not row["peers"]:
            continue
        p = row["peers"][0]
        labels.append(f"{row['workload']}\nvs {p['peer']}")
        thr.append(p["throughput_ratio"] or float("nan"))
        cpu.append(p["cpu_per_req_ratio"] or float("nan"))
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(labels) + 2), 6))
    x = range(len(labels))
    w = 0.4
    # bars grow from 1× (up: more than the peer, down: less), on a log scale
    ax.bar([i - w / 2 for i in x], [r - 1 for r in thr], w, bottom=1,
           label="throughput Switchyard / peer (idle: RSS per connection)", color="#2b7bba")
    ax.bar([i + w / 2 for i in x], [r - 1 for r in cpu], w, bottom=1,
           label="CPU per request Switchyard / peer (lower is better)", color="#e08a2b")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.set_ylabel("ratio, log scale (1× = same as the peer)")
    title = f"Switchyard / peer, {meta['rounds']} round(s), commit {meta['commit']}"
    if meta.get("quick") == 1:
        title += " — QUICK smoke run, not a result"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "ratios.png"), dpi=110)


if __name__ == "__main__":
    main()
