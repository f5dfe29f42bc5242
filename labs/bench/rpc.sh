#!/usr/bin/env bash
# RPC-mesh benchmark of Switchyard against the real servers and against HAProxy, in ONE run:
#
#   Bolt  (rpc-bench --proto bolt  -c 4 -w 64):  sofa-rpc-node server direct | switchyard | HAProxy mode tcp
#   Dubbo (rpc-bench --proto dubbo -c 4 -w 64):  sofa-rpc-node server direct | switchyard | HAProxy mode tcp
#   HTTP/2 h2c (h2load -c 4 -m 16 -D 10, 1 KiB): nginx (listen http2) direct | switchyard | HAProxy mode http, proto h2
#
# Switchyard runs ONE sniffing listener (protocols [http1, http2, redis, dubbo, bolt]) routing by
# protocol: bolt -> the Bolt server, dubbo -> the Dubbo server, http2 -> nginx over h2c.
# The RPC servers are tests/peers/rpc/peer.js (Node, sofa-rpc-node), serving com.example.Calc;
# every RPC request is `plus(1, 2)` exactly as sofa-rpc-node's client sends it, with a fresh id.
# Rounds are interleaved (direct, switchyard, haproxy per workload, every workload per round)
# and the median of the rounds is reported. Everything listens on 127.0.0.1 on free ports;
# everything started here is killed on exit.
#
# Usage:   labs/bench/rpc.sh
# Knobs (environment):
#   ROUNDS=3            interleaved rounds; the median is reported
#   DURATION=10         seconds per target per round (rpc-bench -d, h2load -D)
#   CONNS=4             client connections (rpc-bench -c, h2load -c)
#   WINDOW=64           rpc-bench requests in flight per connection (-w)
#   STREAMS=16          h2load concurrent streams per connection (-m)
#   SWITCHYARD_BIN=...  use this binary instead of `cargo build --release`
#   RPC_BENCH_BIN=...   use this rpc-bench instead of building labs/loadgen
#   SWITCHYARD_THREADS= tokio worker threads of the gateway (TOKIO_WORKER_THREADS); empty = default
#   KEEP=0              1: keep the temp dir (configs, logs, raw outputs) and print its path
#   OUT=FILE            also write the markdown report to FILE
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-4}
WINDOW=${WINDOW:-64}
STREAMS=${STREAMS:-16}
SWITCHYARD_THREADS=${SWITCHYARD_THREADS:-}
KEEP=${KEEP:-0}
OUT=${OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEER_DIR=$ROOT/tests/peers/rpc

log() { printf '[rpc %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[rpc] FATAL: %s\n' "$*" >&2; exit 1; }

for v in ROUNDS DURATION CONNS WINDOW STREAMS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

# ---------------------------------------------------------------- peers present?
declare -A PKG=(
    [node]=nodejs [nginx]="nginx-full (or nginx-light)" [haproxy]=haproxy [h2load]=nghttp2-client
    [curl]=curl [python3]=python3 [timeout]=coreutils
)
missing=()
for b in node nginx haproxy h2load curl python3 timeout; do
    if ! command -v "$b" >/dev/null 2>&1; then
        if [[ -x /usr/sbin/$b ]]; then PATH="$PATH:/usr/sbin"; else missing+=("$b (Debian package: ${PKG[$b]})"); fi
    fi
done
if ((${#missing[@]})); then
    printf '[rpc] FATAL: missing peer binaries:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install with: apt-get install -y --no-install-recommends nodejs npm nginx-full haproxy nghttp2-client curl\n' >&2
    exit 1
fi
[[ -f $PEER_DIR/peer.js ]] || die "$PEER_DIR/peer.js not found"
(cd "$PEER_DIR" && node -e 'require("sofa-rpc-node"); require("sofa-bolt-node"); require("dubbo-remoting")') >/dev/null 2>&1 ||
    die "the Node RPC peer's packages are not installed: run \`npm ci --prefix tests/peers/rpc\`"
curl -V | grep -qw HTTP2 || die "curl lacks HTTP/2 support (needed to check the h2c targets)"
haproxy -vv 2>/dev/null | grep -q 'h2' || die "this haproxy has no HTTP/2 (h2) multiplexer"

# ---------------------------------------------------------------- binaries
target_dir() {
    (cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
}
if [[ -z ${SWITCHYARD_BIN:-} || -z ${RPC_BENCH_BIN:-} ]]; then
    command -v cargo >/dev/null || die "cargo not found (install Rust) and SWITCHYARD_BIN / RPC_BENCH_BIN not given"
fi
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable"
    SY_BIN=$SWITCHYARD_BIN
else
    log "building switchyard (cargo build --release, CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default>})"
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
    SY_BIN=$(target_dir)/release/switchyard
    [[ -x $SY_BIN ]] || die "built, but $SY_BIN is not there"
fi
if [[ -n ${RPC_BENCH_BIN:-} ]]; then
    [[ -x $RPC_BENCH_BIN ]] || die "RPC_BENCH_BIN=$RPC_BENCH_BIN is not an executable"
    RB_BIN=$RPC_BENCH_BIN
else
    log "building rpc-bench (cargo build --release -p switchyard-loadgen --bin rpc-bench)"
    (cd "$ROOT" && cargo build --release -p switchyard-loadgen --bin rpc-bench) || die "building rpc-bench failed"
    RB_BIN=$(target_dir)/release/rpc-bench
    [[ -x $RB_BIN ]] || die "built, but $RB_BIN is not there"
fi
log "switchyard: $SY_BIN; rpc-bench: $RB_BIN"

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d /tmp/switchyard-rpc.XXXXXX)
chmod 755 "$TMP" # nginx workers may run as another user and must read the docroot
PIDS=()
NAMES=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for i in "${!PIDS[@]}"; do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for i in "${!PIDS[@]}"; do
        if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            log "${NAMES[$i]} (pid ${PIDS[$i]}) ignored SIGTERM; SIGKILL"
            kill -KILL "${PIDS[$i]}" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "kept $TMP (configs, logs, raw outputs)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- free ports
read -r P_BOLT P_DUBBO P_NGINX P_HA_BOLT P_HA_DUBBO P_HA_H2 P_SY P_SY_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(8):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
log "ports: bolt=$P_BOLT dubbo=$P_DUBBO nginx=$P_NGINX haproxy bolt/dubbo/h2=$P_HA_BOLT/$P_HA_DUBBO/$P_HA_H2 switchyard=$P_SY (admin $P_SY_ADMIN)"

# ---------------------------------------------------------------- configs
mkdir -p "$TMP/www" "$TMP/nginx" "$TMP/raw"
python3 -c 'import sys; sys.stdout.write(("switchyard rpc benchmark payload " * 32)[:1023] + "\n")' >"$TMP/www/index.html"

cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    open_file_cache max=16 inactive=60s;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    types { text/html html; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$P_NGINX http2;
        root $TMP/www;
        location / { }
    }
}
EOF

cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096

defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend bolt
    mode tcp
    bind 127.0.0.1:$P_HA_BOLT
    default_backend bolt
backend bolt
    mode tcp
    server bolt 127.0.0.1:$P_BOLT

frontend dubbo
    mode tcp
    bind 127.0.0.1:$P_HA_DUBBO
    default_backend dubbo
backend dubbo
    mode tcp
    server dubbo 127.0.0.1:$P_DUBBO

frontend h2
    mode http
    option http-keep-alive
    timeout http-keep-alive 30s
    timeout http-request 10s
    bind 127.0.0.1:$P_HA_H2 proto h2
    default_backend nginx
backend nginx
    mode http
    http-reuse always
    server nginx 127.0.0.1:$P_NGINX proto h2
EOF

cat >"$TMP/switchyard.yaml" <<EOF
# ONE sniffing listener; routes by protocol to the two RPC servers and to nginx (h2c).
admin:
  address: 127.0.0.1:$P_SY_ADMIN
drain_timeout: 1s
listeners:
  - name: mesh
    address: 127.0.0.1:$P_SY
    protocols: [http1, http2, redis, dubbo, bolt]
    route_table: mesh
route_tables:
  - name: mesh
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - name: bolt
            match: { protocol: bolt }
            cluster: bolt
          - name: dubbo
            match: { protocol: dubbo }
            cluster: dubbo
          - name: h2
            match: { protocol: http2 }
            cluster: nginx
clusters:
  - name: bolt
    hosts: ["127.0.0.1:$P_BOLT"]
  - name: dubbo
    hosts: ["127.0.0.1:$P_DUBBO"]
  - name: nginx
    protocol: http2
    hosts: ["127.0.0.1:$P_NGINX"]
EOF

nginx -t -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" >"$TMP/nginx-check.log" 2>&1 ||
    { cat "$TMP/nginx-check.log" >&2; die "nginx rejected its config"; }
haproxy -c -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
    { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejected its config"; }
"$SY_BIN" check "$TMP/switchyard.yaml" >"$TMP/switchyard-check.log" 2>&1 ||
    { cat "$TMP/switchyard-check.log" >&2; die "switchyard rejected its config"; }

# ---------------------------------------------------------------- start peers
start() { # name cmd...   (stdout+stderr to $TMP/name.log)
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
    log "started $name (pid $!)"
}
pid_of() {
    local i
    for i in "${!NAMES[@]}"; do [[ ${NAMES[$i]} == "$1" ]] && echo "${PIDS[$i]}"; done
    return 0
}
wait_until() { # name seconds cmd...
    local name=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs)) pid
    pid=$(pid_of "$name")
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name exited during startup (log above, $TMP/$name.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name not ready after ${secs}s (log above)"
        fi
        sleep 0.1
    done
}
said_ready() { grep -qx ready "$TMP/$1.log"; }
h2_ok() { timeout 2 curl -fsS --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$1/index.html"; }
http_ok() { timeout 2 curl -fsS -o /dev/null "http://127.0.0.1:$1$2"; }
rpc_ok() { # proto port: one short run without errors
    local out
    out=$(timeout 20 "$RB_BIN" --proto "$1" --addr "127.0.0.1:$2" -c 1 -w 1 -d 0.2 --drain 2) || return 1
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["ok"] > 0 and d["errors"] == 0 else 1)' "$out"
}

start bolt-server node "$PEER_DIR/peer.js" server "$P_BOLT" bolt
start dubbo-server node "$PEER_DIR/peer.js" server "$P_DUBBO" dubbo
start nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf"
wait_until bolt-server 20 said_ready bolt-server
wait_until dubbo-server 20 said_ready dubbo-server
wait_until nginx 10 h2_ok "$P_NGINX"
start haproxy haproxy -db -f "$TMP/haproxy.cfg"
sy_env=(env RUST_LOG="${RUST_LOG:-info}")
[[ -n $SWITCHYARD_THREADS ]] && sy_env+=(TOKIO_WORKER_THREADS="$SWITCHYARD_THREADS")
start switchyard "${sy_env[@]}" "$SY_BIN" run -c "$TMP/switchyard.yaml"
wait_until haproxy 10 h2_ok "$P_HA_H2"
wait_until switchyard 20 http_ok "$P_SY_ADMIN" /ready
wait_until switchyard 5 h2_ok "$P_SY"
# Every RPC path answers plus(1, 2) without an error before anything is measured.
for t in bolt:"$P_BOLT" bolt:"$P_HA_BOLT" bolt:"$P_SY" dubbo:"$P_DUBBO" dubbo:"$P_HA_DUBBO" dubbo:"$P_SY"; do
    rpc_ok "${t%%:*}" "${t#*:}" || die "no error-free ${t%%:*} answer on port ${t#*:} (logs in $TMP)"
done
SY_PID=$(pid_of switchyard)
sy_rss_idle=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$SY_PID/status")
log "all up; switchyard RSS at idle: $sy_rss_idle"

# ---------------------------------------------------------------- benchmarks
RES=$TMP/results.tsv # workload target round rps p99_ms errors
: >"$RES"
ERRORS=()

rpc_run() { # proto target port round
    local proto=$1 target=$2 port=$3 round=$4 out="$TMP/raw/$1-$2-$4"
    local rc=0
    timeout $((DURATION + 30)) "$RB_BIN" --proto "$proto" --addr "127.0.0.1:$port" -c "$CONNS" -w "$WINDOW" \
        -d "$DURATION" >"$out.json" 2>"$out.err" || rc=$?
    local line
    line=$(python3 - "$out.json" <<'EOF' 2>/dev/null || true
import json, sys
d = json.loads(open(sys.argv[1]).read())
kinds = ";".join(f"{k.replace(' ', '_')}={v}" for k, v in sorted(d["error_kinds"].items())) or "0"
p99 = d["p99_ms"] if d["p99_ms"] is not None else "NA"
print(f'{d["requests_per_s"]}\t{p99}\t{d["errors"]}\t{kinds}')
EOF
)
    if ((rc != 0)) || [[ -z $line ]]; then
        ERRORS+=("round $round: rpc-bench $proto vs $target rc=$rc: $(cat "$out.json" "$out.err" | tr -s '\r\n' ' ' | cut -c1-300)")
        printf '%s\t%s\t%s\tNA\tNA\trc=%s\n' "$proto" "$target" "$round" "$rc" >>"$RES"
        return
    fi
    local rps p99 nerr kinds
    IFS=$'\t' read -r rps p99 nerr kinds <<<"$line"
    ((nerr == 0)) || ERRORS+=("round $round: rpc-bench $proto vs $target: $nerr errors ($kinds)")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$proto" "$target" "$round" "$rps" "$p99" "$([[ $nerr == 0 ]] && echo 0 || echo "$kinds")" >>"$RES"
    log "  $proto $target: ${rps}/s p99 ${p99}ms errors $nerr"
}

h2_run() { # target port round
    local target=$1 port=$2 round=$3 out="$TMP/raw/h2-$1-$3"
    local rc=0
    timeout $((DURATION + 30)) h2load -c "$CONNS" -m "$STREAMS" -D "$DURATION" --log-file="$out.log" \
        "http://127.0.0.1:$port/index.html" >"$out.txt" 2>&1 || rc=$?
    local line
    line=$(python3 - "$out.txt" "$out.log" <<'EOF' 2>/dev/null || true
import re, sys
txt = open(sys.argv[1]).read()
rps = re.search(r"finished in [0-9.]+\w*, ([0-9.]+) req/s", txt).group(1)
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", txt)
failed, errored, tmo = int(m.group(5)), int(m.group(6)), int(m.group(7))
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", txt)
non2xx = sum(int(codes.group(i)) for i in (2, 3, 4))  # 3xx, 4xx, 5xx
# --log-file: start time (us), status, elapsed (us) per request
lat = sorted(int(l.split("\t")[2]) for l in open(sys.argv[2]) if l.count("\t") >= 2)
p99 = lat[min(len(lat) - 1, max(0, -(-len(lat) * 99 // 100) - 1))] / 1000 if lat else "NA"
errs = failed + errored + tmo + non2xx
kinds = f"failed={failed};errored={errored};timeout={tmo};non2xx={non2xx}" if errs else "0"
print(f"{rps}\t{p99}\t{errs}\t{kinds}")
EOF
)
    rm -f "$out.log"
    if ((rc != 0)) || [[ -z $line ]]; then
        ERRORS+=("round $round: h2load vs $target rc=$rc: $(tr -s '\r\n' ' ' <"$out.txt" | cut -c1-300)")
        printf 'h2\t%s\t%s\tNA\tNA\trc=%s\n' "$target" "$round" "$rc" >>"$RES"
        return
    fi
    local rps p99 nerr kinds
    IFS=$'\t' read -r rps p99 nerr kinds <<<"$line"
    ((nerr == 0)) || ERRORS+=("round $round: h2load vs $target: $kinds")
    printf 'h2\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$rps" "$p99" "$kinds" >>"$RES"
    log "  h2    $target: ${rps}/s p99 ${p99}ms errors $nerr"
}

BOLT_TARGETS=(direct:"$P_BOLT" switchyard:"$P_SY" haproxy:"$P_HA_BOLT")
DUBBO_TARGETS=(direct:"$P_DUBBO" switchyard:"$P_SY" haproxy:"$P_HA_DUBBO")
H2_TARGETS=(direct:"$P_NGINX" switchyard:"$P_SY" haproxy:"$P_HA_H2")

log "warm-up (not measured)"
for t in "${BOLT_TARGETS[@]}"; do
    timeout 30 "$RB_BIN" --proto bolt --addr "127.0.0.1:${t#*:}" -c "$CONNS" -w "$WINDOW" -d 1 >/dev/null 2>&1 ||
        log "  warm-up bolt ${t%%:*} failed (the measured run will tell)"
done
for t in "${DUBBO_TARGETS[@]}"; do
    timeout 30 "$RB_BIN" --proto dubbo --addr "127.0.0.1:${t#*:}" -c "$CONNS" -w "$WINDOW" -d 1 >/dev/null 2>&1 ||
        log "  warm-up dubbo ${t%%:*} failed (the measured run will tell)"
done
for t in "${H2_TARGETS[@]}"; do
    timeout 30 h2load -c "$CONNS" -m "$STREAMS" -D 1 "http://127.0.0.1:${t#*:}/index.html" >/dev/null 2>&1 ||
        log "  warm-up h2 ${t%%:*} failed (the measured run will tell)"
done

rss_rounds=()
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    for t in "${BOLT_TARGETS[@]}"; do rpc_run bolt "${t%%:*}" "${t#*:}" "$r"; done
    for t in "${DUBBO_TARGETS[@]}"; do rpc_run dubbo "${t%%:*}" "${t#*:}" "$r"; done
    for t in "${H2_TARGETS[@]}"; do h2_run "${t%%:*}" "${t#*:}" "$r"; done
    kill -0 "$SY_PID" 2>/dev/null || { ERRORS+=("switchyard (pid $SY_PID) DIED during round $r"); break; }
    rss_rounds+=("$(awk '/^VmRSS/ {print $2}' "/proc/$SY_PID/status")")
    log "  switchyard RSS after round $r: ${rss_rounds[-1]} kB"
done
elapsed=$((SECONDS - t0))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

if kill -0 "$SY_PID" 2>/dev/null; then
    sy_rss=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$SY_PID/status")
    sy_threads=$(awk '/^Threads/ {print $2}' "/proc/$SY_PID/status")
    timeout 5 curl -fsS "http://127.0.0.1:$P_SY_ADMIN/metrics" >"$TMP/switchyard-metrics.txt" 2>/dev/null || true
else
    sy_rss="n/a (process gone)"; sy_threads="n/a"
    ERRORS+=("switchyard is not running after the benchmark; see $TMP/switchyard.log")
fi
sy_warn=$(grep -c -E ' (WARN|ERROR) ' "$TMP/switchyard.log" || true)

# ---------------------------------------------------------------- table
TABLE=$TMP/table.md
python3 - "$RES" >"$TABLE" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    w, t, r, rps, p99, err = line.rstrip("\n").split("\t")
    rows.setdefault((w, t), {})[int(r)] = (rps, p99, err)

def num(x):
    return None if x == "NA" else float(x)

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def ratio(a, b):
    return a / b if a is not None and b else None

def fr(x):
    return f"{x:.2f}×" if x is not None else "n/a"

def per_round(w, a, b):
    A, B = rows.get((w, a), {}), rows.get((w, b), {})
    return [num(A[r][0]) / num(B[r][0]) for r in sorted(A) if r in B and num(A[r][0]) and num(B[r][0])]

# workload key, label, goal of switchyard / direct
WORK = [("bolt", "Bolt plus(1,2), c4 w64", 0.8),
        ("dubbo", "Dubbo plus(1,2), c4 w64", 0.8),
        ("h2", "HTTP/2 h2c GET 1 KiB, c4 m16", None)]
print("| workload | target | req/s (median) | p99 ms (median) | vs direct | req/s per round | errors |")
print("|---|---|---:|---:|---:|---|---|")
summary = []
for w, label, goal in WORK:
    m = {}
    for t in ("direct", "switchyard", "haproxy"):
        runs = rows.get((w, t), {})
        m[t] = med(num(v[0]) for v in runs.values())
        p99 = med(num(v[1]) for v in runs.values())
        per = " / ".join(f"{float(v[0]):,.0f}" if v[0] != "NA" else "ERR" for _, v in sorted(runs.items()))
        errs = "; ".join(v[2] for v in runs.values() if v[2] != "0") or "none"
        rps_s = f"{m[t]:,.0f}" if m[t] is not None else "ERR"
        p99_s = f"{p99:.3f}" if p99 is not None else "n/a"
        print(f"| {label} | {t} | {rps_s} | {p99_s} | {fr(ratio(m[t], m['direct']))} | {per} | {errs} |")
    summary.append((label, m, goal, per_round(w, "switchyard", "direct"), per_round(w, "switchyard", "haproxy")))

print()
print("| workload | switchyard / direct | per round | switchyard / HAProxy | per round | goal (vs direct) |")
print("|---|---:|---|---:|---|---:|")
for label, m, goal, rd, rh in summary:
    g = f"≥ {goal:.1f}×" if goal else "report"
    pd = " / ".join(f"{x:.2f}" for x in rd) or "n/a"
    ph = " / ".join(f"{x:.2f}" for x in rh) or "n/a"
    print(f"| {label} | **{fr(ratio(m['switchyard'], m['direct']))}** | {pd} | **{fr(ratio(m['switchyard'], m['haproxy']))}** | {ph} | {g} |")
EOF

{
    echo
    echo "## Switchyard RPC-mesh benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    cat "$TABLE"
    echo
    echo "- rounds: $ROUNDS interleaved (direct, switchyard, haproxy per workload), median shown; measured part took ${elapsed}s"
    echo "- rpc-bench --proto bolt|dubbo -c $CONNS -w $WINDOW -d $DURATION (closed loop, plus(1, 2) as sofa-rpc-node sends it); h2load -c $CONNS -m $STREAMS -D $DURATION /index.html (1 KiB), p99 from --log-file"
    echo "- switchyard RSS: ${sy_rss_idle} at idle -> ${sy_rss} after the run (after each round, kB: ${rss_rounds[*]}); threads: ${sy_threads}; WARN/ERROR log lines: ${sy_warn}"
    echo "- load average (1/5/15 min) before the rounds: $load_before, after: $load_after; nproc: $(nproc)"
    echo "- switchyard worker threads: ${SWITCHYARD_THREADS:-default (one per core)}; commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)$([[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]] && echo ' + uncommitted changes')"
    echo "- versions: node $(node --version), sofa-rpc-node $(node -p 'require(process.argv[1] + "/node_modules/sofa-rpc-node/package.json").version' "$PEER_DIR" 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's/nginx version: //'), $(haproxy -v | head -1 | awk '{print "haproxy", $3}'), $(h2load --version 2>&1 | head -1), kernel $(uname -r)"
} | tee "$TMP/report.md"
[[ -n $OUT ]] && cp "$TMP/report.md" "$OUT"

if ((${#ERRORS[@]})); then
    echo
    echo "ERRORS during the benchmark (raw outputs in $TMP/raw, gateway log $TMP/switchyard.log):"
    printf '  - %s\n' "${ERRORS[@]}"
    KEEP=1
    exit 2
fi
