#!/usr/bin/env bash
# End-to-end cost of five stream filters (issue #11, "Measure"): the same release binary runs
# as TWO gateways side by side, in ONE run,
#
#   none      routes without filters
#   filters   every route with the same five filters, all of which let every request through
#             but do their work: ip_access (allow 127.0.0.0/8), rate_limit keyed by source_ip
#             (1e9/s, never over), concurrency_limit (100000), fault (abort 100 % of the requests
#             that match a field value no benchmark request has, so the match is evaluated and
#             never hits) and payload_limit (1 MiB)
#
# and both proxy to the same private redis-server and nginx (1 KiB static file):
#
#   Redis    redis-benchmark -t get -P 1 -c 50 -n N     (one command per round trip)
#   HTTP/1.1 wrk -t1 -c32 -dDs /index.html
#
# For every run it records req/s and the gateway process's CPU time (utime + stime from
# /proc/PID/stat, delta over the run; also utime alone) divided by the requests: µs of gateway
# CPU per request.
# Rounds are interleaved (none/filters, then filters/none, ...); medians and min–max are reported,
# and "5 filters minus none" in µs of gateway CPU per request for each workload. After the rounds
# the filters gateway's /metrics must show every filter's `pass` verdict for every measured
# request and no `refuse` or `delay` verdict, or the run fails.
#
# Everything listens on 127.0.0.1 on free ports; everything started here is killed on exit.
#
# Usage:   SWITCHYARD_BIN=target/release/switchyard labs/bench/filters.sh
# Knobs (environment):
#   ROUNDS=3            interleaved rounds; medians are over rounds
#   N=500000            redis-benchmark -n, per gateway per round
#   DURATION=15         wrk -d seconds, per gateway per round
#   REDIS_CONNS=50      redis-benchmark -c
#   HTTP_CONNS=32       wrk -c (one wrk thread)
#   SWITCHYARD_BIN=...  use this binary instead of `cargo build --release`
#   SWITCHYARD_THREADS=1 tokio worker threads of both gateways (TOKIO_WORKER_THREADS); empty = the
#                       gateway's default (one per core). One worker by default: the filters' cost
#                       per request does not depend on it, and without a second worker parking,
#                       waking and stealing, CPU per request spreads less between rounds.
#   CONTROL=0           1: an A/A control run: the "filters" gateway gets no filters either, so the
#                       differences reported are the method's own noise and bias (gateway start
#                       order, ports, round order)
#   KEEP=0              1: keep the temp dir (configs, logs, raw outputs, /metrics) and print its path
#   OUT=FILE            also write the markdown report to FILE
#
# Exit status: 0 on success; 1 on a setup failure (missing peer, bad config, a peer that does
# not come up); 2 if a measured run failed or reported errors, or the filter verdicts do not add up.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
N=${N:-500000}
DURATION=${DURATION:-15}
REDIS_CONNS=${REDIS_CONNS:-50}
HTTP_CONNS=${HTTP_CONNS:-32}
SWITCHYARD_THREADS=${SWITCHYARD_THREADS-1}
CONTROL=${CONTROL:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB=filters
# shellcheck source=../lib.sh
source "$ROOT/labs/lib.sh"

for v in ROUNDS N DURATION REDIS_CONNS HTTP_CONNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $CONTROL == 0 || $CONTROL == 1 ]] || die "CONTROL must be 0 or 1 (got '$CONTROL')"
[[ -z $SWITCHYARD_THREADS || $SWITCHYARD_THREADS =~ ^[1-9][0-9]*$ ]] ||
    die "SWITCHYARD_THREADS must be a positive integer, or empty for the gateway's default (got '$SWITCHYARD_THREADS')"

# ---------------------------------------------------------------- peers present?
need redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
    "nginx:nginx-full (or nginx-light)" wrk:wrk curl:curl python3:python3 timeout:coreutils
switchyard_bin "$ROOT"
log "switchyard binary: $SY_BIN"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- temp dir, ports, configs
lab_tmp
mkdir -p "$TMP/www" "$TMP/nginx" "$TMP/raw"
read -r P_REDIS P_NGINX P_NONE P_NONE_ADMIN P_FILT P_FILT_ADMIN < <(free_ports 6)
log "ports: redis=$P_REDIS nginx=$P_NGINX none=$P_NONE (admin $P_NONE_ADMIN) filters=$P_FILT (admin $P_FILT_ADMIN)"

sed -e "s|@TMP@|$TMP|g" -e "s|@P_NGINX@|$P_NGINX|g" "$HERE/nginx.conf.in" >"$TMP/nginx.conf"
python3 -c 'import sys; sys.stdout.write(("switchyard e2e benchmark payload " * 32)[:1023] + "\n")' >"$TMP/www/index.html"

# gateway_config NAME PORT ADMIN_PORT WITH_FILTERS(0|1)
gateway_config() {
    local name=$1 port=$2 admin=$3 with=$4
    # The five filters; only the fault's match differs per protocol (a field each protocol has,
    # compared against a value no benchmark request carries).
    local common='
              - ip_access: {allow: [127.0.0.0/8]}
              - rate_limit: {rate: 1000000000, key: source_ip}
              - concurrency_limit: {max: 100000}'
    local redis_filters="" http_filters=""
    if [[ $with == 1 ]]; then
        redis_filters="
            filters:$common
              - fault: {abort: {percent: 100, status: 503}, match: {field: command, value: never-sent}}
              - payload_limit: {max_bytes: 1048576}"
        http_filters="
            filters:$common
              - fault: {abort: {percent: 100, status: 503}, match: {field: \"header:x-chaos\", value: \"on\"}}
              - payload_limit: {max_bytes: 1048576}"
    fi
    cat >"$TMP/$name.yaml" <<EOF
# labs/bench/filters.sh: gateway "$name" ($([[ $with == 1 ]] && echo "five filters on every route" || echo "no filters"))
admin:
  address: 127.0.0.1:$admin
drain_timeout: 1s
listeners:
  - name: bench
    address: 127.0.0.1:$port
    protocols: [http1, redis]
    route_table: bench
route_tables:
  - name: bench
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - name: redis
            match: {protocol: redis}
            cluster: redis$redis_filters
          - name: http
            match: {protocol: http1}
            cluster: nginx$http_filters
clusters:
  - name: redis
    hosts: ["127.0.0.1:$P_REDIS"]
  - name: nginx
    hosts: ["127.0.0.1:$P_NGINX"]
EOF
    "$SY_BIN" check "$TMP/$name.yaml" >"$TMP/$name-check.log" 2>&1 ||
        { cat "$TMP/$name-check.log" >&2; die "switchyard check rejected $TMP/$name.yaml"; }
}
gateway_config none "$P_NONE" "$P_NONE_ADMIN" 0
gateway_config filters "$P_FILT" "$P_FILT_ADMIN" $((1 - CONTROL))
nginx -t -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" >"$TMP/nginx-check.log" 2>&1 ||
    { cat "$TMP/nginx-check.log" >&2; die "nginx rejected its config"; }

# ---------------------------------------------------------------- start
redis_ping() { [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }
http_ok() { timeout 2 curl -fsS -o /dev/null "http://127.0.0.1:$1$2"; }
wait_until() { # name pid seconds cmd...
    local name=$1 pid=$2 secs=$3
    shift 3
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2; die "$name exited during startup (log above)"; }
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/$name.log" >&2; die "$name not ready after ${secs}s (log above)"; }
        sleep 0.1
    done
}

spawn redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no \
    --protected-mode no --dir "$TMP" --logfile ""
REDIS_PID=${PIDS[-1]}
spawn nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf"
NGINX_PID=${PIDS[-1]}
wait_until redis "$REDIS_PID" 10 redis_ping "$P_REDIS"
wait_until nginx "$NGINX_PID" 10 http_ok "$P_NGINX" /index.html

sy_env=(env RUST_LOG="${RUST_LOG:-info}")
[[ -n $SWITCHYARD_THREADS ]] && sy_env+=(TOKIO_WORKER_THREADS="$SWITCHYARD_THREADS")
declare -A GW_PID GW_PORT GW_ADMIN
GW_PORT=([none]=$P_NONE [filters]=$P_FILT)
GW_ADMIN=([none]=$P_NONE_ADMIN [filters]=$P_FILT_ADMIN)
for gw in none filters; do
    spawn "$gw" "${sy_env[@]}" "$SY_BIN" run -c "$TMP/$gw.yaml" # env execs: $! is the gateway
    GW_PID[$gw]=${PIDS[-1]}
done
for gw in none filters; do
    wait_until "$gw" "${GW_PID[$gw]}" 20 http_ok "${GW_ADMIN[$gw]}" /ready
    wait_until "$gw" "${GW_PID[$gw]}" 5 redis_ping "${GW_PORT[$gw]}"
    wait_until "$gw" "${GW_PID[$gw]}" 5 http_ok "${GW_PORT[$gw]}" /index.html
    [[ $(readlink "/proc/${GW_PID[$gw]}/exe") == "$(readlink -f "$SY_BIN")" ]] ||
        die "pid ${GW_PID[$gw]} is not the gateway ($(readlink "/proc/${GW_PID[$gw]}/exe"))"
done
log "all up"

# CPU time of a process (all threads) in clock ticks, "user system": fields 14 (utime) and
# 15 (stime) of /proc/PID/stat, counted after the ")" that ends the command name.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
# cpu_log REQUESTS U0 S0 U1 S1 -> "x.xx s CPU, y.yy µs/request (user z.zz)"
cpu_log() {
    awk -v n="$1" -v u=$(($4 - $2)) -v s=$(($5 - $3)) -v hz="$CLK_TCK" \
        'BEGIN {printf "%.2f s CPU, %.2f µs/request (user %.2f)", (u+s)/hz, (u+s)/hz*1e6/n, u/hz*1e6/n}'
}

# ---------------------------------------------------------------- runs
RES=$TMP/results.tsv # workload gateway round requests rps cpu_ticks user_ticks error
: >"$RES"
ERRORS=()
SENT_REDIS=0 # requests sent to the filters gateway (warm-up and checks included), per workload
SENT_HTTP=0

redis_run() { # gateway round
    local gw=$1 round=$2 out="$TMP/raw/redis-$1-$2" pid=${GW_PID[$1]} rc=0 u0 s0 u1 s1
    read -r u0 s0 < <(cpu_ticks "$pid")
    timeout 600 redis-benchmark -h 127.0.0.1 -p "${GW_PORT[$gw]}" -t get -P 1 -c "$REDIS_CONNS" \
        -n "$N" -q --csv >"$out.csv" 2>"$out.err" || rc=$?
    read -r u1 s1 < <(cpu_ticks "$pid")
    local line rps
    line=$(grep '^"GET",' "$out.csv" || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        ERRORS+=("round $round: redis-benchmark vs $gw rc=$rc: $(tr -s '\r\n' ' ' <"$out.err" | cut -c1-300)")
        printf 'redis\t%s\t%s\tNA\tNA\tNA\tNA\trc=%s\n' "$gw" "$round" "$rc" >>"$RES"
        return
    fi
    rps=$(tr -d '"' <<<"$line" | cut -d, -f2)
    printf 'redis\t%s\t%s\t%s\t%s\t%s\t%s\t0\n' "$gw" "$round" "$N" "$rps" \
        "$((u1 + s1 - u0 - s0))" "$((u1 - u0))" >>"$RES"
    [[ $gw == filters ]] && SENT_REDIS=$((SENT_REDIS + N))
    log "  redis $gw: ${rps}/s, $(cpu_log "$N" "$u0" "$s0" "$u1" "$s1")"
}

wrk_run() { # gateway round
    local gw=$1 round=$2 out="$TMP/raw/http-$1-$2.txt" pid=${GW_PID[$1]} rc=0 u0 s0 u1 s1
    read -r u0 s0 < <(cpu_ticks "$pid")
    timeout $((DURATION + 60)) wrk -t1 -c"$HTTP_CONNS" -d"${DURATION}s" \
        "http://127.0.0.1:${GW_PORT[$gw]}/index.html" >"$out" 2>&1 || rc=$?
    read -r u1 s1 < <(cpu_ticks "$pid")
    local rps reqs non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    reqs=$(awk '/ requests in / {print $1}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sockerr=$(grep -o 'Socket errors:.*' "$out" || true)
    if ((rc != 0)) || [[ -z $rps || -z $reqs ]] || ((reqs == 0)); then
        ERRORS+=("round $round: wrk vs $gw rc=$rc: $(tr -s '\r\n' ' ' <"$out" | cut -c1-300)")
        printf 'http\t%s\t%s\tNA\tNA\tNA\tNA\trc=%s\n' "$gw" "$round" "$rc" >>"$RES"
        return
    fi
    local tag=0
    [[ -n $non2xx ]] && { ERRORS+=("round $round: wrk vs $gw: Non-2xx or 3xx responses: $non2xx"); tag="non2xx=$non2xx"; }
    [[ -n $sockerr ]] && { ERRORS+=("round $round: wrk vs $gw: $sockerr"); tag="${sockerr// /_}"; }
    printf 'http\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$gw" "$round" "$reqs" "$rps" \
        "$((u1 + s1 - u0 - s0))" "$((u1 - u0))" "$tag" >>"$RES"
    [[ $gw == filters ]] && SENT_HTTP=$((SENT_HTTP + reqs))
    log "  http  $gw: ${rps}/s, $reqs requests, $(cpu_log "$reqs" "$u0" "$s0" "$u1" "$s1")"
}

log "warm-up (not measured)"
for gw in none filters; do
    timeout 120 redis-benchmark -h 127.0.0.1 -p "${GW_PORT[$gw]}" -t get -P 1 -c "$REDIS_CONNS" \
        -n 20000 -q >/dev/null 2>&1 || log "  warm-up redis $gw failed (the measured run will tell)"
    timeout 30 wrk -t1 -c"$HTTP_CONNS" -d1s "http://127.0.0.1:${GW_PORT[$gw]}/index.html" >/dev/null 2>&1 ||
        log "  warm-up http $gw failed (the measured run will tell)"
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
t_start=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(none filters); else order=(filters none); fi
    log "round $r/$ROUNDS (order: ${order[*]})"
    for gw in "${order[@]}"; do redis_run "$gw" "$r"; done
    for gw in "${order[@]}"; do wrk_run "$gw" "$r"; done
    for gw in none filters; do
        kill -0 "${GW_PID[$gw]}" 2>/dev/null || ERRORS+=("gateway $gw (pid ${GW_PID[$gw]}) DIED during round $r")
    done
    ((${#ERRORS[@]} == 0)) || break
done
elapsed=$((SECONDS - t_start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- did the filters do their work?
# Every measured request through the filters gateway must have passed all five filters of its
# route (the counters also hold the warm-up's and the readiness checks' requests, hence ≥).
VERDICTS=$TMP/verdicts.txt
: >"$VERDICTS"
if ((CONTROL)); then
    echo "control run (CONTROL=1): neither gateway has filters" >"$VERDICTS"
    timeout 5 curl -fsS "http://127.0.0.1:$P_FILT_ADMIN/metrics" >"$TMP/filters-metrics.txt" 2>/dev/null || true
    if grep -qs '^switchyard_filter_verdicts_total' "$TMP/filters-metrics.txt"; then
        ERRORS+=("control run, yet the second gateway counted filter verdicts")
    fi
elif timeout 5 curl -fsS "http://127.0.0.1:$P_FILT_ADMIN/metrics" >"$TMP/filters-metrics.txt" 2>/dev/null; then
    python3 - "$TMP/filters-metrics.txt" "$SENT_REDIS" "$SENT_HTTP" >"$VERDICTS" <<'EOF' || ERRORS+=("filter verdicts: $(tr '\n' ' ' <"$VERDICTS")")
import re, sys
text = open(sys.argv[1]).read()
sent = {"route:redis": int(sys.argv[2]), "route:http": int(sys.argv[3])}
got = {}
for m in re.finditer(r'^switchyard_filter_verdicts_total\{([^}]*)\} (\S+)$', text, re.M):
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    got[(labels["scope"], labels["filter"], labels["verdict"])] = float(m.group(2))
filters = ["ip_access", "rate_limit", "concurrency_limit", "fault", "payload_limit"]
bad = []
for scope, n in sent.items():
    passes = []
    for f in filters:
        p = got.get((scope, f, "pass"), 0)
        passes.append(f"{f} {p:,.0f}")
        if p < n:
            bad.append(f"{scope} {f}: {p:,.0f} pass verdicts < {n:,} measured requests")
        for v in ("refuse", "delay"):
            if got.get((scope, f, v), 0):
                bad.append(f"{scope} {f}: {got[(scope, f, v)]:,.0f} {v} verdicts")
    print(f"{scope} ({n:,} measured requests): pass verdicts " + ", ".join(passes))
for b in bad:
    print("ERROR " + b)
sys.exit(1 if bad else 0)
EOF
else
    ERRORS+=("could not read the filters gateway's /metrics")
fi
timeout 5 curl -fsS "http://127.0.0.1:$P_NONE_ADMIN/metrics" >"$TMP/none-metrics.txt" 2>/dev/null || true
if grep -qs '^switchyard_filter_verdicts_total' "$TMP/none-metrics.txt"; then
    ERRORS+=("the no-filters gateway counted filter verdicts: its routes are not filter-free")
fi

# ---------------------------------------------------------------- report
TABLE=$TMP/table.md
python3 - "$RES" "$CLK_TCK" "$CONTROL" >"$TABLE" <<'EOF'
import sys, statistics
hz = float(sys.argv[2])
control = sys.argv[3] == "1"
rows = {}  # (workload, gateway) -> {round: (req/s, CPU µs/request, user CPU µs/request)}
for line in open(sys.argv[1]):
    w, g, r, reqs, rps, ticks, user, err = line.rstrip("\n").split("\t")
    if reqs == "NA":
        continue
    us = lambda t: float(t) / hz * 1e6 / float(reqs)
    rows.setdefault((w, g), {})[int(r)] = (float(rps), us(ticks), us(user))

med = statistics.median
WORK = [("redis", "Redis GET (-P 1)"), ("http", "HTTP/1.1 GET 1 KiB")]
B = "B: no filters (control)" if control else "5 filters"
GW = [("none", "A: no filters" if control else "no filters"), ("filters", B)]
print("| workload | gateway | req/s median (min–max) | gateway CPU µs/request median (min–max) | µs/request per round | of which user, median |")
print("|---|---|---:|---:|---|---:|")
for w, label in WORK:
    for g, glabel in GW:
        runs = rows.get((w, g), {})
        if not runs:
            print(f"| {label} | {glabel} | ERR | ERR | | |")
            continue
        rps = [v[0] for v in runs.values()]
        us = [v[1] for v in runs.values()]
        user = [v[2] for v in runs.values()]
        per = " / ".join(f"{runs[r][1]:.2f}" for r in sorted(runs))
        print(f"| {label} | {glabel} | {med(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) | "
              f"**{med(us):.2f}** ({min(us):.2f}–{max(us):.2f}) | {per} | {med(user):.2f} |")
print()
d = "B − A" if control else "5 filters − none"
r = "B / A" if control else "5 filters / none"
print(f"| workload | {d}, µs/request: difference of the medians | per round | median of per-round differences | user CPU only: median of per-round differences | req/s, {r} (median of per-round ratios) |")
print("|---|---:|---|---:|---:|---:|")
for w, label in WORK:
    a, b = rows.get((w, "none"), {}), rows.get((w, "filters"), {})
    both = [r for r in sorted(a) if r in b]
    if not both:
        print(f"| {label} | n/a | | | | |")
        continue
    diffs = [b[r][1] - a[r][1] for r in both]
    udiffs = [b[r][2] - a[r][2] for r in both]
    ratios = [b[r][0] / a[r][0] for r in both]
    d_med = med([v[1] for v in b.values()]) - med([v[1] for v in a.values()])
    per = " / ".join(f"{d:+.2f}" for d in diffs)
    print(f"| {label} | {d_med:+.2f} | {per} | **{med(diffs):+.2f}** | {med(udiffs):+.2f} | {med(ratios):.2f}× |")
EOF

sy_rss() { awk '/^VmRSS/ {print $2, $3}' "/proc/$1/status" 2>/dev/null || echo "n/a"; }
{
    echo
    echo "## Stream filters end to end ($started)$( ((CONTROL)) && echo ", CONTROL run: no filters on either gateway")"
    echo
    cat "$TABLE"
    echo
    echo "- rounds: $ROUNDS interleaved (odd rounds none then filters, even rounds filters then none), measured part ${elapsed}s"
    echo "- redis-benchmark -t get -P 1 -c $REDIS_CONNS -n $N; wrk -t1 -c$HTTP_CONNS -d${DURATION}s /index.html (1 KiB, nginx 1 worker)"
    echo "- gateway CPU = utime + stime of the gateway process (all threads) from /proc/PID/stat over the run, ${CLK_TCK} ticks/s, divided by the run's requests; \"user\" = utime alone (the filters run in user space; stime is mostly the socket calls)"
    echo "- filter verdicts of the filters gateway (warm-up and readiness checks included):"
    sed 's/^/  - /' "$VERDICTS"
    echo "- gateway RSS after the run: none $(sy_rss "${GW_PID[none]}"), filters $(sy_rss "${GW_PID[filters]}")"
    echo "- load average (1/5/15 min) before the rounds: $load_before, after: $load_after; nproc: $(nproc)"
    echo "- switchyard worker threads: ${SWITCHYARD_THREADS:-default (one per core)}; binary: $SY_BIN; commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)"
    echo "- versions: $(redis-server --version | sed 's/ sha=.*//; s/v=//'), $(redis-benchmark --version), $(nginx -v 2>&1 | sed 's/nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), kernel $(uname -r)"
} | tee "$TMP/report.md"
[[ -n $OUT ]] && cp "$TMP/report.md" "$OUT"

if ((${#ERRORS[@]})); then
    echo
    echo "ERRORS during the benchmark (raw outputs in $TMP/raw, gateway logs $TMP/none.log, $TMP/filters.log):"
    printf '  - %s\n' "${ERRORS[@]}"
    KEEP=1
    exit 2
fi
