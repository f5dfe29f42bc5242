#!/usr/bin/env bash
# End-to-end benchmark of Switchyard against the real thing and against peer proxies,
# all in ONE run so the ratios are comparable:
#
#   Redis (redis-benchmark -t set,get -P 16):  redis-server direct | switchyard | twemproxy (nutcracker)
#   HTTP/1.1 (wrk, 1 KiB static file):          nginx direct        | switchyard | HAProxy (mode http)
#
# Switchyard runs ONE sniffing listener (protocols [http1, redis]) that serves both.
# Rounds are interleaved (A B C, A B C, ...) and the median of the rounds is reported.
# Everything listens on 127.0.0.1 on free ports; everything started here is killed on exit.
#
# Usage:   labs/bench/e2e.sh
# Knobs (environment):
#   ROUNDS=3            interleaved rounds; the median is reported
#   N=2000000           redis-benchmark requests per test (-n), per target per round
#   DURATION=10         wrk seconds per target per round (-d)
#   CONNS=50            client connections (redis-benchmark -c, wrk -c)
#   PIPELINE=16         redis-benchmark -P
#   WRK_THREADS=1       wrk -t
#   SWITCHYARD_BIN=...  use this binary instead of `cargo build --release`
#   SWITCHYARD_THREADS= tokio worker threads of the gateway (TOKIO_WORKER_THREADS);
#                       empty = the gateway's default (one per core)
#   PIN=0               1: pin load generators to the last CPU, servers+proxies to the others
#                       (taskset). Off by default, see labs/bench/README.md.
#   KEEP=0              1: keep the temp dir (configs, logs, raw outputs) and print its path
#   OUT=FILE            also write the markdown table to FILE
set -euo pipefail

ROUNDS=${ROUNDS:-3}
N=${N:-2000000}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
PIPELINE=${PIPELINE:-16}
WRK_THREADS=${WRK_THREADS:-1}
SWITCHYARD_THREADS=${SWITCHYARD_THREADS:-}
PIN=${PIN:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[e2e] FATAL: %s\n' "$*" >&2; exit 1; }

for v in ROUNDS N DURATION CONNS PIPELINE WRK_THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

# ---------------------------------------------------------------- peers present?
declare -A PKG=(
    [redis-server]=redis-server [redis-benchmark]=redis-tools [redis-cli]=redis-tools
    [nutcracker]=nutcracker [nginx]="nginx-full (or nginx-light)" [haproxy]=haproxy
    [wrk]=wrk [curl]=curl [python3]=python3 [timeout]=coreutils [taskset]=util-linux
)
missing=()
for b in redis-server redis-benchmark redis-cli nutcracker nginx haproxy wrk curl python3 timeout taskset; do
    # nginx, haproxy and nutcracker live in /usr/sbin, which is not always on PATH.
    if ! command -v "$b" >/dev/null 2>&1; then
        if [[ -x /usr/sbin/$b ]]; then PATH="$PATH:/usr/sbin"; else missing+=("$b (Debian package: ${PKG[$b]})"); fi
    fi
done
if ((${#missing[@]})); then
    printf '[e2e] FATAL: missing peer binaries:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install with: apt-get install -y --no-install-recommends redis-server redis-tools nutcracker nginx-full haproxy wrk curl\n' >&2
    exit 1
fi

# ---------------------------------------------------------------- switchyard binary
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable"
    SY_BIN=$SWITCHYARD_BIN
else
    command -v cargo >/dev/null || die "cargo not found (install Rust) and SWITCHYARD_BIN not given"
    log "building switchyard (cargo build --release, CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default>})"
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
    target_dir=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    SY_BIN=$target_dir/release/switchyard
    [[ -x $SY_BIN ]] || die "built, but $SY_BIN is not there"
fi
log "switchyard binary: $SY_BIN"

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d /tmp/switchyard-e2e.XXXXXX)
chmod 755 "$TMP"   # nginx workers may run as another user and must read the docroot
PIDS=()
NAMES=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for i in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    done
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

# ---------------------------------------------------------------- CPU pinning
NCPU=$(nproc)
LOADGEN=()
SERVER=()
if [[ $PIN == 1 ]]; then
    ((NCPU >= 2)) || die "PIN=1 needs at least 2 CPUs"
    LOADGEN=(taskset -c "$((NCPU - 1))")
    SERVER=(taskset -c "0-$((NCPU - 2))")
fi

# ---------------------------------------------------------------- free ports
read -r P_REDIS P_NUT P_NUT_STATS P_NGINX P_HAPROXY P_SY P_SY_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(7):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
log "ports: redis=$P_REDIS twemproxy=$P_NUT nginx=$P_NGINX haproxy=$P_HAPROXY switchyard=$P_SY (admin $P_SY_ADMIN)"

# ---------------------------------------------------------------- configs (from templates)
render() { # template -> file, substituting @VARS@
    sed -e "s|@TMP@|$TMP|g" -e "s|@P_REDIS@|$P_REDIS|g" -e "s|@P_NUT@|$P_NUT|g" \
        -e "s|@P_NGINX@|$P_NGINX|g" -e "s|@P_HAPROXY@|$P_HAPROXY|g" \
        -e "s|@P_SY@|$P_SY|g" -e "s|@P_SY_ADMIN@|$P_SY_ADMIN|g" "$HERE/$1" >"$TMP/$2"
}
render nutcracker.yml.in nutcracker.yml
render nginx.conf.in nginx.conf
render haproxy.cfg.in haproxy.cfg
render switchyard.yaml.in switchyard.yaml
mkdir -p "$TMP/www" "$TMP/nginx"
# 1 KiB body
python3 -c 'import sys; sys.stdout.write(("switchyard e2e benchmark payload " * 32)[:1023] + "\n")' >"$TMP/www/index.html"

# ---------------------------------------------------------------- start peers
start() { # name cmd...   (foreground processes; stdout+stderr to $TMP/name.log)
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
redis_ping() { [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }
http_ok() { timeout 2 curl -fsS -o /dev/null "http://127.0.0.1:$1$2"; }

nginx -t -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" >"$TMP/nginx-check.log" 2>&1 ||
    { cat "$TMP/nginx-check.log" >&2; die "nginx rejected its config"; }
haproxy -c -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
    { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejected its config"; }
nutcracker -t -c "$TMP/nutcracker.yml" >"$TMP/nutcracker-check.log" 2>&1 ||
    { cat "$TMP/nutcracker-check.log" >&2; die "nutcracker rejected its config"; }
"$SY_BIN" check "$TMP/switchyard.yaml" >"$TMP/switchyard-check.log" 2>&1 ||
    { cat "$TMP/switchyard-check.log" >&2; die "switchyard rejected its config"; }

start redis "${SERVER[@]}" redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no \
    --protected-mode no --dir "$TMP" --logfile ""
start nginx "${SERVER[@]}" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf"
wait_until redis 10 redis_ping "$P_REDIS"
wait_until nginx 10 http_ok "$P_NGINX" /index.html
start twemproxy "${SERVER[@]}" nutcracker -c "$TMP/nutcracker.yml" -s "$P_NUT_STATS" -a 127.0.0.1 -p "$TMP/nutcracker.pid"
start haproxy "${SERVER[@]}" haproxy -db -f "$TMP/haproxy.cfg"
sy_env=(env RUST_LOG="${RUST_LOG:-info}")
[[ -n $SWITCHYARD_THREADS ]] && sy_env+=(TOKIO_WORKER_THREADS="$SWITCHYARD_THREADS")
start switchyard "${SERVER[@]}" "${sy_env[@]}" "$SY_BIN" run -c "$TMP/switchyard.yaml"
wait_until twemproxy 10 redis_ping "$P_NUT"
wait_until haproxy 10 http_ok "$P_HAPROXY" /index.html
wait_until switchyard 20 http_ok "$P_SY_ADMIN" /ready
wait_until switchyard 5 redis_ping "$P_SY"
wait_until switchyard 5 http_ok "$P_SY" /index.html
SY_PID=$(pid_of switchyard)
sy_rss_idle=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$SY_PID/status")
log "all up; switchyard RSS at idle: $sy_rss_idle"

# ---------------------------------------------------------------- benchmarks
RES=$TMP/results.tsv   # workload target round rps p99_ms errors
: >"$RES"
ERRORS=()

redis_run() { # target port round
    local target=$1 port=$2 round=$3 out="$TMP/raw/redis-$1-$3"
    local rc=0
    timeout 300 "${LOADGEN[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -P "$PIPELINE" \
        -n "$N" -c "$CONNS" -q --csv >"$out.csv" 2>"$out.err" || rc=$?
    local test
    for test in SET GET; do
        local line rps p99
        line=$(grep "^\"$test\"," "$out.csv" || true)
        if ((rc != 0)) || [[ -z $line ]]; then
            local why
            why=$(tr -s '\r\n' ' ' <"$out.err" | cut -c1-300)
            ERRORS+=("round $round: redis-benchmark vs $target ($test) rc=$rc: ${why:-no CSV line}")
            printf 'redis-%s\t%s\t%s\tNA\tNA\trc=%s\n' "$test" "$target" "$round" "$rc" >>"$RES"
            continue
        fi
        rps=$(tr -d '"' <<<"$line" | cut -d, -f2)
        p99=$(tr -d '"' <<<"$line" | cut -d, -f7)
        printf 'redis-%s\t%s\t%s\t%s\t%s\t0\n' "$test" "$target" "$round" "$rps" "$p99" >>"$RES"
    done
    log "  redis  $target: $(tr -d '"' <"$out.csv" | awk -F, 'NR>1 {printf "%s %.0f/s p99 %sms  ", $1, $2, $7}')"
}

wrk_run() { # target port round
    local target=$1 port=$2 round=$3 out="$TMP/raw/http-$1-$3.txt"
    local rc=0
    timeout $((DURATION + 60)) "${LOADGEN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$port/index.html" >"$out" 2>&1 || rc=$?
    local rps p99 non2xx sockerr errs=0
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    # "     99%    1.23ms" -> milliseconds
    p99=$(awk '$1 == "99%" {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
              f = (u=="us") ? 0.001 : (u=="ms") ? 1 : (u=="s") ? 1000 : (u=="m") ? 60000 : -1;
              printf "%.3f", v*f}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sockerr=$(grep -o 'Socket errors:.*' "$out" || true)
    if ((rc != 0)) || [[ -z $rps ]]; then
        ERRORS+=("round $round: wrk vs $target rc=$rc: $(tr -s '\r\n' ' ' <"$out" | cut -c1-300)")
        printf 'http\t%s\t%s\tNA\tNA\trc=%s\n' "$target" "$round" "$rc" >>"$RES"
        return
    fi
    if [[ -n $non2xx ]]; then
        errs=1
        ERRORS+=("round $round: wrk vs $target: Non-2xx or 3xx responses: $non2xx")
    fi
    if [[ -n $sockerr ]]; then
        errs=1
        ERRORS+=("round $round: wrk vs $target: $sockerr")
    fi
    local tag=0
    ((errs)) && tag="non2xx=${non2xx:-0};${sockerr:+${sockerr// /_}}"
    printf 'http\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$rps" "$p99" "$tag" >>"$RES"
    log "  http   $target: ${rps}/s p99 ${p99}ms${non2xx:+ non-2xx=$non2xx}${sockerr:+ $sockerr}"
}

mkdir -p "$TMP/raw"
REDIS_TARGETS=(direct:"$P_REDIS" switchyard:"$P_SY" twemproxy:"$P_NUT")
HTTP_TARGETS=(direct:"$P_NGINX" switchyard:"$P_SY" haproxy:"$P_HAPROXY")

log "warm-up (not measured)"
for t in "${REDIS_TARGETS[@]}"; do
    timeout 60 "${LOADGEN[@]}" redis-benchmark -h 127.0.0.1 -p "${t#*:}" -t set,get -P "$PIPELINE" \
        -n 50000 -c "$CONNS" -q --csv >/dev/null 2>&1 || log "  warm-up redis ${t%%:*} failed (the measured run will tell)"
done
for t in "${HTTP_TARGETS[@]}"; do
    timeout 30 "${LOADGEN[@]}" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${t#*:}/index.html" >/dev/null 2>&1 ||
        log "  warm-up http ${t%%:*} failed (the measured run will tell)"
done

rss_rounds=()
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    for t in "${REDIS_TARGETS[@]}"; do redis_run "${t%%:*}" "${t#*:}" "$r"; done
    for t in "${HTTP_TARGETS[@]}"; do wrk_run "${t%%:*}" "${t#*:}" "$r"; done
    kill -0 "$SY_PID" 2>/dev/null || { ERRORS+=("switchyard (pid $SY_PID) DIED during round $r"); break; }
    rss_rounds+=("$(awk '/^VmRSS/ {print $2}' "/proc/$SY_PID/status")")
    log "  switchyard RSS after round $r: ${rss_rounds[-1]} kB"
done
elapsed=$((SECONDS - t0))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- gateway state after the run
if kill -0 "$SY_PID" 2>/dev/null; then
    sy_rss=$(awk '/^VmRSS/ {print $2, $3}' "/proc/$SY_PID/status")
    sy_hwm=$(awk '/^VmHWM/ {print $2, $3}' "/proc/$SY_PID/status")
    sy_threads=$(awk '/^Threads/ {print $2}' "/proc/$SY_PID/status")
    timeout 5 curl -fsS "http://127.0.0.1:$P_SY_ADMIN/metrics" >"$TMP/switchyard-metrics.txt" 2>/dev/null || true
else
    sy_rss="n/a (process gone)"; sy_hwm="n/a"; sy_threads="n/a"
    ERRORS+=("switchyard is not running after the benchmark; see $TMP/switchyard.log")
fi
peer_rss() { local p; p=$(pid_of "$1"); awk '/^VmRSS/ {print $2, $3}' "/proc/$p/status" 2>/dev/null || echo n/a; }
nut_rss=$(peer_rss twemproxy)
hap_rss=$(peer_rss haproxy)
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

def fmt_ratio(x):
    return f"{x:.2f}×" if x is not None else "n/a"

# workload key, label, peer proxy, goal for switchyard / peer
WORK = [("redis-SET", "Redis SET (-P 16)", "twemproxy", 1.2),
        ("redis-GET", "Redis GET (-P 16)", "twemproxy", 1.2),
        ("http", "HTTP/1.1 GET 1 KiB", "haproxy", 1.0)]
ratios = []
print("| workload | target | req/s (median) | p99 ms (median) | vs direct | req/s per round | errors |")
print("|---|---|---:|---:|---:|---|---|")
for w, label, peer, goal in WORK:
    m = {}
    for t in ("direct", "switchyard", peer):
        runs = rows.get((w, t), {})
        m[t] = med(num(v[0]) for v in runs.values())
        p99 = med(num(v[1]) for v in runs.values())
        vs = m[t] / m["direct"] if m[t] and m["direct"] else None
        per = " / ".join(f"{float(v[0]):,.0f}" if v[0] != "NA" else "ERR" for _, v in sorted(runs.items()))
        errs = "; ".join(v[2] for v in runs.values() if v[2] != "0") or "none"
        rps_s = f"{m[t]:,.0f}" if m[t] is not None else "ERR"
        p99_s = f"{p99:.3f}" if p99 is not None else "n/a"
        print(f"| {label} | {t} | {rps_s} | {p99_s} | {fmt_ratio(vs)} | {per} | {errs} |")
    sy, pe = rows.get((w, "switchyard"), {}), rows.get((w, peer), {})
    per_round = [num(sy[r][0]) / num(pe[r][0]) for r in sorted(sy)
                 if r in pe and num(sy[r][0]) and num(pe[r][0])]
    of_medians = m["switchyard"] / m[peer] if m["switchyard"] and m[peer] else None
    ratios.append((label, peer, of_medians, per_round, goal))

print()
print("| workload | switchyard / peer (ratio of medians) | per round | median of per-round ratios | goal |")
print("|---|---:|---|---:|---:|")
for label, peer, of_medians, per_round, goal in ratios:
    pr = " / ".join(f"{x:.2f}" for x in per_round) or "n/a"
    print(f"| {label}: switchyard / {peer} | **{fmt_ratio(of_medians)}** | {pr} | {fmt_ratio(med(per_round))} | ≥ {goal:.1f}× |")
EOF

{
    echo
    echo "## Switchyard end-to-end benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    cat "$TABLE"
    echo
    echo "- rounds: $ROUNDS interleaved (direct, switchyard, peer), median shown; measured part took ${elapsed}s"
    echo "- redis-benchmark -t set,get -P $PIPELINE -n $N -c $CONNS; wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency /index.html (1 KiB)"
    echo "- switchyard RSS: ${sy_rss_idle} at idle -> ${sy_rss} after the run (peak VmHWM ${sy_hwm}; after each round, kB: ${rss_rounds[*]}); threads: ${sy_threads}; WARN/ERROR log lines: ${sy_warn}"
    echo "- peer RSS after the run: twemproxy ${nut_rss}, haproxy ${hap_rss}"
    echo "- load average (1/5/15 min) before the rounds: $load_before, after: $load_after"
    echo "- nproc: $NCPU; pinning: $([[ $PIN == 1 ]] && echo "load generators on CPU $((NCPU - 1)), servers/proxies on 0-$((NCPU - 2))" || echo none)"
    echo "- switchyard worker threads: ${SWITCHYARD_THREADS:-default (one per core)}; commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)$( [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]] && echo ' + uncommitted changes')"
    echo "- versions: $(redis-server --version | sed 's/ sha=.*//; s/v=//'), $(redis-benchmark --version), $(nutcracker --version 2>&1 | head -1 | sed 's/This is //'), $(nginx -v 2>&1 | sed 's/nginx version: //'), $(haproxy -v | head -1 | awk '{print "haproxy", $3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), kernel $(uname -r)"
} | tee "$TMP/report.md"
[[ -n $OUT ]] && cp "$TMP/report.md" "$OUT"

if ((${#ERRORS[@]})); then
    echo
    echo "ERRORS during the benchmark (raw outputs in $TMP/raw, gateway log $TMP/switchyard.log):"
    printf '  - %s\n' "${ERRORS[@]}"
    KEEP=1
    exit 2
fi
