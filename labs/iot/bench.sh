#!/usr/bin/env bash
# IoT Lab measurements for docs/benchmarks.md, in ONE run:
#
#  (a) publish throughput, QoS 0 and QoS 1 (mqtt-bench: CONNS connections, as fast as TCP / the
#      ack window allow), against: mosquitto direct | switchyard (plain MQTT listener) |
#      switchyard with the Lab's edge policy (auth + topic ACL + rate limit); interleaved rounds,
#      medians, ratios (target >= 0.9x direct); plus a latency probe: QoS 1 at a fixed rate,
#      PUBACK round trip p50/p99 direct vs through the gateway (= added latency).
#  (b) idle connections: gateway RSS with N idle proxied MQTT connections (keep-alive 0), for each
#      N in IDLE_NS, spread over several loopback source addresses; a fresh gateway and broker
#      per N; per-connection cost = (RSS_N - RSS_0) / N (target: 100k <= 1 GiB, <= 10 KiB each).
#      N beyond what the fd limit allows is not attempted: the largest reachable N is measured
#      and the limit is reported.
#
# Everything listens on 127.0.0.0/8 on free ports; everything started here is stopped on exit.
#
# Usage:   labs/iot/bench.sh
# Knobs (environment):
#   ROUNDS=5  DURATION=4  CONNS=8  WINDOW=64  SIZE=64      part (a)
#   LAT_RATE=250         latency probe: msgs/s per connection (x CONNS), QoS 1
#   IDLE_NS="1000 5000 10000 50000 100000"                  part (b)
#   KEEPALIVE=0          CONNECT keep-alive of the idle connections (0: none)
#   PARTS="a b"          which parts to run
#   SWITCHYARD_BIN=  LOADGEN_DIR=   use these binaries instead of building
#   KEEP=0  OUT=FILE     keep the temp dir / also write the report to FILE
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4}
CONNS=${CONNS:-8}
WINDOW=${WINDOW:-64}
SIZE=${SIZE:-64}
LAT_RATE=${LAT_RATE:-250}
IDLE_NS=${IDLE_NS:-1000 5000 10000 50000 100000}
KEEPALIVE=${KEEPALIVE:-0}
PARTS=${PARTS:-a b}
KEEP=${KEEP:-0}
OUT=${OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

log() { printf '[iot-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[iot-bench] FATAL: %s\n' "$*" >&2; exit 1; }

for v in ROUNDS DURATION CONNS WINDOW SIZE LAT_RATE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for n in $IDLE_NS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] && ((n <= 1000000)) || die "IDLE_NS: '$n' is not a count in 1..1000000"
done
((DURATION <= 120 && ROUNDS <= 20)) || die "DURATION <= 120 and ROUNDS <= 20, please"

# ---------------------------------------------------------------- tools, binaries
PATH="$PATH:/usr/sbin:/sbin"
missing=()
for b in mosquitto:mosquitto mosquitto_passwd:mosquitto curl:curl python3:python3 timeout:coreutils; do
    command -v "${b%%:*}" >/dev/null 2>&1 || missing+=("${b%%:*} (Debian package: ${b#*:})")
done
if ((${#missing[@]})); then
    printf '[iot-bench] FATAL: missing binaries:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install with: apt-get install -y --no-install-recommends mosquitto mosquitto-clients curl python3\n' >&2
    exit 1
fi
if [[ -z ${SWITCHYARD_BIN:-} || -z ${LOADGEN_DIR:-} ]]; then
    command -v cargo >/dev/null || die "cargo not found, and SWITCHYARD_BIN / LOADGEN_DIR not given"
    log "building (cargo build --release, CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default>})"
    (cd "$ROOT" && cargo build --release -p switchyard -p switchyard-loadgen --bin switchyard --bin mqtt-fleet --bin mqtt-idle --bin mqtt-bench) ||
        die "cargo build --release failed"
    TD=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fi
SY_BIN=${SWITCHYARD_BIN:-$TD/release/switchyard}
LG=${LOADGEN_DIR:-$TD/release}
[[ -x $SY_BIN ]] || die "$SY_BIN is not an executable"
for b in mqtt-bench mqtt-idle; do [[ -x $LG/$b ]] || die "$LG/$b is not an executable"; done

# Every socket is a file descriptor: raise the soft limit to the hard one for
# everything started here (gateway, brokers, load generators).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
NOFILE_HARD=$(ulimit -Hn)
[[ $NOFILE_HARD == unlimited ]] && NOFILE_HARD=1048576 && NOFILE=1048576
log "gateway: $SY_BIN; load generators: $LG; ulimit -n $NOFILE (hard $NOFILE_HARD)"

# ---------------------------------------------------------------- temp dir, processes
TMP=$(mktemp -d /tmp/switchyard-iot-bench.XXXXXX)
PIDS=()
NAMES=()
forget_pid() { # pid: no longer ours to clean up (it was waited for; its number may be reused)
    local i
    for i in "${!PIDS[@]}"; do
        [[ ${PIDS[$i]} == "$1" ]] && unset 'PIDS[i]' 'NAMES[i]'
    done
    return 0
}
stop_pid() { # pid: SIGTERM, wait up to 3 s, SIGKILL
    local pid=$1
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for i in "${!PIDS[@]}"; do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
    for _ in $(seq 1 30); do
        local alive=0
        for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for i in "${!PIDS[@]}"; do kill -KILL "${PIDS[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 || $rc != 0 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name cmd...
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
    LAST_PID=$!
}
wait_until() { # pid name seconds cmd...
    local pid=$1 name=$2 secs=$3
    shift 3
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name exited during startup"; }
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name not ready after ${secs}s"; }
        sleep 0.1
    done
}
port_open() { python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' "$1" "$2"; }
http_ok() { timeout 2 curl -fsS -o /dev/null "http://127.0.0.1:$1$2"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU time (user + system) of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name in field 2 has no spaces for the processes measured here).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
free_ports() { # count -> space-separated free ports on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
mosquitto_conf() { # file port addr...
    local file=$1 port=$2
    shift 2
    {
        echo "# generated by labs/iot/bench.sh"
        local a
        for a in "$@"; do echo "listener $port $a"; done
        cat <<'EOF'
allow_anonymous true
max_connections -1
max_queued_messages 0
max_inflight_messages 100
set_tcp_nodelay true
persistence false
log_dest stdout
log_type error
log_type warning
EOF
    } >"$file"
}

RESULTS=$TMP/results.tsv # part key target round value...
: >"$RESULTS"
ERRORS=()
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$SECONDS

# ================================================================= part (a)
if [[ " $PARTS " == *" a "* ]]; then
    read -r P_BROKER P_PLAIN P_EDGE P_ADMIN < <(free_ports 4)
    mosquitto_conf "$TMP/mosquitto-a.conf" "$P_BROKER" 127.0.0.1
    mosquitto_passwd -c -b "$TMP/passwd" bench bench-secret >/dev/null 2>&1 || die "mosquitto_passwd failed"
    sed -e "s|@P_BROKER@|$P_BROKER|g" -e "s|@P_PLAIN@|$P_PLAIN|g" -e "s|@P_EDGE@|$P_EDGE|g" \
        -e "s|@P_ADMIN@|$P_ADMIN|g" "$HERE/switchyard-bench.yaml.in" >"$TMP/switchyard-bench.yaml"
    "$SY_BIN" check "$TMP/switchyard-bench.yaml" >"$TMP/check.log" 2>&1 || { cat "$TMP/check.log" >&2; die "switchyard rejected its config"; }
    start mosquitto-a mosquitto -c "$TMP/mosquitto-a.conf"
    MQ_A=$LAST_PID
    wait_until "$MQ_A" mosquitto-a 10 port_open 127.0.0.1 "$P_BROKER"
    start switchyard-a env RUST_LOG=warn "$SY_BIN" run -c "$TMP/switchyard-bench.yaml"
    SY_A=$LAST_PID
    wait_until "$SY_A" switchyard-a 20 http_ok "$P_ADMIN" /ready
    log "part (a): mosquitto :$P_BROKER, switchyard plain :$P_PLAIN, edge :$P_EDGE; $ROUNDS rounds x ${DURATION}s, $CONNS connections"

    TARGETS=(direct:"$P_BROKER": switchyard:"$P_PLAIN": edge:"$P_EDGE":auth)
    bench_run() { # kind target port auth round -> one line in RESULTS
        local kind=$1 target=$2 port=$3 auth=$4 round=$5
        local args=(--addr "127.0.0.1:$port" -c "$CONNS" -d "$DURATION" --size "$SIZE" --label "$kind-$target")
        [[ -n $auth ]] && args+=(--user bench --password bench-secret)
        case $kind in
            qos0) args+=(--qos 0) ;;
            qos1) args+=(--qos 1 --window "$WINDOW") ;;
            lat) args+=(--qos 1 --window "$WINDOW" --rate "$LAT_RATE") ;;
        esac
        local out="$TMP/raw-$kind-$target-$round.json" rc=0
        local sy0 mq0 sy1 mq1
        sy0=$(cpu_ticks "$SY_A")
        mq0=$(cpu_ticks "$MQ_A")
        timeout $((DURATION + 40)) "$LG/mqtt-bench" "${args[@]}" >"$out" 2>"$out.err" || rc=$?
        sy1=$(cpu_ticks "$SY_A")
        mq1=$(cpu_ticks "$MQ_A")
        local line
        line=$(python3 - "$out" "$kind" <<'EOF'
import json, sys
try:
    j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    print("ERR\tno JSON"); sys.exit()
lat = j["puback_latency_ms"]
err = ";".join(j["errors"]) or ("ack_errors=%d" % j["ack_errors"] if j["ack_errors"] else "")
na = lambda x: "NA" if x is None else x
counted = j["acked"] if j["qos"] == 1 else j["sent"]
print("%s\t%s\t%s\t%s\t%s\t%d" % (na(j["msgs_per_s"]), na(lat["p50"]), na(lat["p99"]), err or "0", counted,
                                  int(j.get("loadgen_cpu_s", 0) * 1000)))
EOF
)
        if ((rc != 0)) || [[ $line == ERR* ]]; then
            ERRORS+=("round $round: mqtt-bench $kind vs $target rc=$rc: $(tr -s '\n' ' ' <"$out.err" | cut -c1-200)")
            line="NA	NA	NA	rc=$rc	0	0"
        elif [[ $(cut -f4 <<<"$line") != 0 ]]; then
            ERRORS+=("round $round: mqtt-bench $kind vs $target: $(cut -f4 <<<"$line")")
        fi
        printf 'a\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$target" "$round" "$line" \
            "$(( (sy1 - sy0) * 1000 / HZ ))" "$(( (mq1 - mq0) * 1000 / HZ ))" >>"$RESULTS"
        log "  $kind $target: $(cut -f1 <<<"$line") msg/s, PUBACK p50 $(cut -f2 <<<"$line") ms p99 $(cut -f3 <<<"$line") ms"
    }
    log "warm-up (not measured)"
    for t in "${TARGETS[@]}"; do
        IFS=: read -r name port auth <<<"$t"
        a=(--addr "127.0.0.1:$port" -c "$CONNS" -d 1 --qos 1 --label warmup)
        [[ -n $auth ]] && a+=(--user bench --password bench-secret)
        timeout 30 "$LG/mqtt-bench" "${a[@]}" >/dev/null 2>&1 || log "  warm-up $name failed (the measured runs will tell)"
    done
    for ((r = 1; r <= ROUNDS; r++)); do
        log "round $r/$ROUNDS"
        for kind in qos0 qos1 lat; do
            for t in "${TARGETS[@]}"; do
                IFS=: read -r name port auth <<<"$t"
                bench_run "$kind" "$name" "$port" "$auth" "$r"
            done
        done
        kill -0 "$SY_A" 2>/dev/null || { ERRORS+=("switchyard DIED in round $r"); break; }
    done
    rss_a=$(rss_kb "$SY_A")
    timeout 5 curl -fsS "http://127.0.0.1:$P_ADMIN/metrics" >"$TMP/metrics-a.txt" 2>/dev/null || true
    sy_warn_a=$(grep -c -E ' (WARN|ERROR) ' "$TMP/switchyard-a.log" || true)
    printf 'ameta\trss_after_kb\t%s\nameta\twarn_lines\t%s\n' "$rss_a" "$sy_warn_a" >>"$RESULTS"
    stop_pid "$SY_A"
    stop_pid "$MQ_A"
fi

# ================================================================= part (b)
if [[ " $PARTS " == *" b "* ]]; then
    # What this machine allows: the gateway holds 2 fds per proxied session (client + broker),
    # the broker 1, a load generator process 1 (several processes are used when needed).
    FD_SLACK=64
    GW_MAX=$(( (NOFILE - FD_SLACK) / 2 ))
    MQ_MAX=$(( NOFILE - FD_SLACK ))
    PER_PROC=$(( NOFILE - 300 ))
    PORTS_PER_ADDR=$(( $(awk '{print $2 - $1 + 1}' /proc/sys/net/ipv4/ip_local_port_range) * 9 / 10 ))
    REACH=$(( GW_MAX < MQ_MAX ? GW_MAX : MQ_MAX ))
    REACH=$(( REACH / 100 * 100 ))
    log "part (b): fd limit $NOFILE -> gateway can hold ~$GW_MAX sessions, broker ~$MQ_MAX; measuring up to $REACH"
    measured=()
    for N in $IDLE_NS; do
        Ne=$N
        if ((N > REACH)); then
            printf 'bskip\t%s\t%s\n' "$N" "$REACH" >>"$RESULTS"
            Ne=$REACH
        fi
        # measure each effective N once
        [[ " ${measured[*]} " == *" $Ne "* ]] && continue
        measured+=("$Ne")
        read -r P_MQ P_SY P_ADMIN < <(free_ports 3)
        # broker addresses (gateway -> broker source ports) and client source addresses
        n_baddr=$(( (Ne + PORTS_PER_ADDR - 1) / PORTS_PER_ADDR ))
        n_src=$(( (Ne + PORTS_PER_ADDR - 1) / PORTS_PER_ADDR + 1 ))
        baddrs=()
        hosts=()
        for ((k = 1; k <= n_baddr; k++)); do baddrs+=("127.0.1.$k"); hosts+=("\"127.0.1.$k:$P_MQ\""); done
        mosquitto_conf "$TMP/mosquitto-b-$Ne.conf" "$P_MQ" "${baddrs[@]}"
        hosts_csv=$(IFS=,; echo "${hosts[*]}")
        sed -e "s|@P_SY@|$P_SY|g" -e "s|@P_ADMIN@|$P_ADMIN|g" -e "s|@BROKER_HOSTS@|$hosts_csv|g" \
            "$HERE/switchyard-idle.yaml.in" >"$TMP/switchyard-idle-$Ne.yaml"
        start "mosquitto-b-$Ne" mosquitto -c "$TMP/mosquitto-b-$Ne.conf"
        MQ_B=$LAST_PID
        wait_until "$MQ_B" "mosquitto-b-$Ne" 10 port_open 127.0.1.1 "$P_MQ"
        start "switchyard-b-$Ne" env RUST_LOG=warn "$SY_BIN" run -c "$TMP/switchyard-idle-$Ne.yaml"
        SY_B=$LAST_PID
        wait_until "$SY_B" "switchyard-b-$Ne" 20 http_ok "$P_ADMIN" /ready
        # warm-up: a few sessions opened and closed, so one-time allocations are in RSS_0
        timeout 30 "$LG/mqtt-idle" --addr "127.0.0.1:$P_SY" -n 20 --hold 0 --sources 1 --label warmup >/dev/null 2>&1 || true
        sleep 1
        rss0=$(rss_kb "$SY_B")
        mq_rss0=$(rss_kb "$MQ_B")
        fds0=$(fds "$SY_B")
        # load generators: as many processes as the fd limit needs, each on its own source addresses
        procs=$(( (Ne + PER_PROC - 1) / PER_PROC ))
        per=$(( (Ne + procs - 1) / procs ))
        lg_pids=()
        t0=$SECONDS
        for ((p = 0; p < procs; p++)); do
            n=$(( p == procs - 1 ? Ne - per * (procs - 1) : per ))
            srcs=$(( (n + PORTS_PER_ADDR - 1) / PORTS_PER_ADDR + 1 ))
            rm -f "$TMP/ready-$Ne-$p.json"
            timeout 400 "$LG/mqtt-idle" --addr "127.0.0.1:$P_SY" -n "$n" --first $((p * per)) \
                --sources "$srcs" --source-first $((2 + p * 8)) --keep-alive "$KEEPALIVE" \
                --concurrency 200 --ramp-timeout 240 --hold 300 --label "idle-$Ne-$p" \
                --ready-file "$TMP/ready-$Ne-$p.json" >"$TMP/idle-$Ne-$p.json" 2>"$TMP/idle-$Ne-$p.err" &
            lg_pids+=($!)
            PIDS+=($!)
            NAMES+=("mqtt-idle-$Ne-$p")
        done
        # wait for every ramp (bounded)
        deadline=$((SECONDS + 300))
        for ((p = 0; p < procs; p++)); do
            until [[ -s $TMP/ready-$Ne-$p.json ]]; do
                ((SECONDS < deadline)) || { ERRORS+=("N=$Ne: load generator $p did not finish its ramp"); break; }
                kill -0 "${lg_pids[$p]}" 2>/dev/null || { ERRORS+=("N=$Ne: load generator $p exited: $(tail -c 300 "$TMP/idle-$Ne-$p.err")"); break; }
                sleep 0.5
            done
        done
        ramp_s=$((SECONDS - t0))
        sleep 3 # settle
        rssN=$(rss_kb "$SY_B")
        mq_rssN=$(rss_kb "$MQ_B")
        fdsN=$(fds "$SY_B")
        held=0
        for ((p = 0; p < procs; p++)); do
            c=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$TMP/ready-$Ne-$p.json" 2>/dev/null || echo 0)
            held=$((held + c))
        done
        sy_alive=1
        kill -0 "$SY_B" 2>/dev/null || sy_alive=0
        for pid in "${lg_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
        for pid in "${lg_pids[@]}"; do wait "$pid" 2>/dev/null || true; forget_pid "$pid"; done
        open_end=0
        fails=""
        for ((p = 0; p < procs; p++)); do
            read -r o f < <(python3 -c '
import json,sys
j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j["open_at_end"], ",".join("%s=%d" % kv for kv in j["connect_failures"].items()) or "-")' "$TMP/idle-$Ne-$p.json" 2>/dev/null || echo "0 no-json")
            open_end=$((open_end + o))
            [[ $f != - ]] && fails+="$f "
        done
        printf 'b\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$Ne" "$held" "$rss0" "$rssN" \
            "$mq_rss0" "$mq_rssN" "$fds0" "$fdsN" "$ramp_s" "$open_end" "${fails:-none}" "$procs" "$n_baddr" "$sy_alive" >>"$RESULTS"
        log "  N=$Ne: held $held, gateway RSS $rss0 -> $rssN kB ($(( held > 0 ? (rssN - rss0) * 1024 / held : 0 )) B/conn), fds $fdsN, broker RSS $mq_rss0 -> $mq_rssN kB, ramp ${ramp_s}s${fails:+, failures: $fails}"
        ((held == Ne)) || ERRORS+=("N=$Ne: only $held of $Ne connections were established (${fails:-no failure reported})")
        ((sy_alive)) || ERRORS+=("N=$Ne: switchyard DIED")
        stop_pid "$SY_B"
        stop_pid "$MQ_B"
    done
fi

elapsed=$((SECONDS - t_start))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ================================================================= report
REPORT=$TMP/report.md
python3 - "$RESULTS" "$NOFILE" "$NOFILE_HARD" "$CONNS" "$DURATION" "$WINDOW" "$SIZE" "$LAT_RATE" "$ROUNDS" "$KEEPALIVE" >"$REPORT" <<'EOF'
import sys, statistics
res, nofile, hard, conns, duration, window, size, lat_rate, rounds, keepalive = sys.argv[1:]
a, b, bskip, meta = {}, [], [], {}
for line in open(res):
    f = line.rstrip("\n").split("\t")
    if f[0] == "a":
        kind, target, rnd, mps, p50, p99, err, count, lg_ms, sy_ms, mq_ms = f[1:]
        num = lambda x: None if x in ("NA", "null", "None") else float(x)
        n = int(count)
        # CPU microseconds per message, gateway and broker (gateway: only when in the path)
        sy_us = int(sy_ms) * 1000 / n if n and target != "direct" else None
        mq_us = int(mq_ms) * 1000 / n if n else None
        lg_us = int(lg_ms) * 1000 / n if n else None
        a.setdefault((kind, target), {})[int(rnd)] = (num(mps), num(p50), num(p99), err, sy_us, mq_us, lg_us)
    elif f[0] == "ameta":
        meta[f[1]] = f[2]
    elif f[0] == "b":
        b.append(f[1:])
    elif f[0] == "bskip":
        bskip.append((int(f[1]), int(f[2])))

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x, spec=",.0f"):
    return format(x, spec) if x is not None else "n/a"

if a:
    labels = {"qos0": "QoS 0 publish, as fast as TCP allows", "qos1": f"QoS 1 publish, window {window}/conn",
              "lat": f"QoS 1 at {int(lat_rate) * int(conns):,} msg/s (latency probe)"}
    print(f"#### (a) Publish throughput: {conns} connections, {size} B payload, MQTT 3.1.1, no subscriber, "
          f"{duration} s per run, {rounds} interleaved rounds (medians)")
    print()
    print("| workload | target | msg/s (median) | vs direct | per round | PUBACK p50 ms | PUBACK p99 ms | CPU µs/msg: gateway | mosquitto | load generator |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    ratios = []
    for kind in ("qos0", "qos1", "lat"):
        d = a.get((kind, "direct"), {})
        dm = med(v[0] for v in d.values())
        for target in ("direct", "switchyard", "edge"):
            runs = a.get((kind, target), {})
            m = med(v[0] for v in runs.values())
            p50 = med(v[1] for v in runs.values())
            p99 = med(v[2] for v in runs.values())
            per = " / ".join(fmt(v[0]) for _, v in sorted(runs.items()))
            vs = m / dm if m and dm else None
            name = {"direct": "mosquitto direct", "switchyard": "switchyard", "edge": "switchyard + edge policy"}[target]
            lat = kind != "qos0"
            sy_us = med(v[4] for v in runs.values())
            mq_us = med(v[5] for v in runs.values())
            lg_us = med(v[6] for v in runs.values())
            print(f"| {labels[kind]} | {name} | {fmt(m)} | {fmt(vs, '.2f')}× | {per} | "
                  f"{fmt(p50, '.3f') if lat else '–'} | {fmt(p99, '.3f') if lat else '–'} | "
                  f"{fmt(sy_us, '.2f') if target != 'direct' else '–'} | {fmt(mq_us, '.2f')} | {fmt(lg_us, '.2f')} |")
            if target != "direct" and kind != "lat":
                pr = [runs[r][0] / d[r][0] for r in sorted(runs) if r in d and runs[r][0] and d[r][0]]
                ratios.append((labels[kind], name, vs, pr))
    print()
    print("| workload | ratio to direct (of medians) | per round | median of per-round ratios | target |")
    print("|---|---:|---|---:|---:|")
    for label, name, vs, pr in ratios:
        print(f"| {label}: {name} | **{fmt(vs, '.2f')}×** | {' / '.join(f'{x:.2f}' for x in pr) or 'n/a'} | "
              f"{fmt(med(pr), '.2f')}× | ≥ 0.90× |")
    lat = {t: a.get(("lat", t), {}) for t in ("direct", "switchyard", "edge")}
    print()
    for t in ("switchyard", "edge"):
        added = [lat[t][r][2] - lat["direct"][r][2] for r in sorted(lat[t]) if r in lat["direct"]
                 and lat[t][r][2] is not None and lat["direct"][r][2] is not None]
        added50 = [lat[t][r][1] - lat["direct"][r][1] for r in sorted(lat[t]) if r in lat["direct"]
                   and lat[t][r][1] is not None and lat["direct"][r][1] is not None]
        name = {"switchyard": "switchyard", "edge": "switchyard + edge policy"}[t]
        print(f"- added latency ({name} − direct, QoS 1 PUBACK round trip at {int(lat_rate) * int(conns):,} msg/s): "
              f"p50 **{fmt(med(added50), '+.3f')} ms**, p99 **{fmt(med(added), '+.3f')} ms** "
              f"(median over rounds of the per-round difference; per round p99: {' / '.join(f'{x:+.3f}' for x in added)})")
    print(f"- switchyard RSS after part (a): {int(meta.get('rss_after_kb', 0)) / 1024:.1f} MiB; WARN/ERROR log lines: {meta.get('warn_lines', 'n/a')}")
    print()

if b or bskip:
    print(f"#### (b) Idle proxied MQTT connections (CONNECT keep-alive {keepalive}, fresh gateway and mosquitto per N)")
    print()
    print("| N idle connections | held | gateway RSS_0 | gateway RSS_N | per connection (RSS_N − RSS_0)/N | gateway fds | mosquitto RSS_N (per conn) | ramp | load-gen procs / broker addrs |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    best = None
    for row in b:
        (n, held, rss0, rssN, mq0, mqN, fd0, fdN, ramp, open_end, fails, procs, baddr, alive) = row
        n, held, rss0, rssN, mq0, mqN = int(n), int(held), int(rss0), int(rssN), int(mq0), int(mqN)
        per = (rssN - rss0) * 1024 / held if held else None
        mper = (mqN - mq0) * 1024 / held if held else None
        if held and (best is None or held > best[0]):
            best = (held, rss0, rssN, per)
        print(f"| {n:,} | {held:,}{'' if int(open_end) == held or not held else f' ({open_end} open at end)'} | {rss0/1024:.1f} MiB | "
              f"{rssN/1024:.1f} MiB | **{fmt(per, ',.0f')} B** ({fmt(per / 1024 if per else None, '.2f')} KiB) | {fdN} | "
              f"{mqN/1024:.1f} MiB ({fmt(mper, ',.0f')} B) | {ramp} s | {procs} / {baddr} |")
    print()
    for n, reach in bskip:
        print(f"- N = {n:,}: **not reachable on this machine**: RLIMIT_NOFILE hard limit {hard} "
              f"(a proxied session holds 2 fds in the gateway) → at most ~{(int(nofile) - 64) // 2:,} sessions; "
              f"measured at {reach:,} instead" + (f"; linear estimate from that point: "
              f"{(best[1] + best[3] * n / 1024) / 1024:,.0f} MiB for {n:,}" if best and best[3] else ""))
    if best and best[3]:
        est = (best[1] + best[3] * 100_000 / 1024) / 1024
        print(f"- per idle connection at the largest N held ({best[0]:,}): **{best[3]/1024:.2f} KiB** "
              f"(target ≤ 10 KiB); 100k × that + RSS_0 ≈ **{est:,.0f} MiB** (target ≤ 1 GiB)")
EOF

{
    echo
    echo "### Switchyard IoT benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    cat "$REPORT"
    echo "- took ${elapsed}s; load average before: $load_before, after: $load_after; nproc $(nproc); RLIMIT_NOFILE $NOFILE (hard $NOFILE_HARD); ip_local_port_range $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range)"
    echo "- $(mosquitto -h 2>/dev/null | head -1 | sed 's/ version / /'), kernel $(uname -r); switchyard commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)$([[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]] && echo ' + uncommitted changes')"
} | tee "$TMP/report-full.md"
[[ -n $OUT ]] && cp "$TMP/report-full.md" "$OUT"

if ((${#ERRORS[@]})); then
    echo
    echo "ERRORS (raw outputs in $TMP):"
    printf '  - %s\n' "${ERRORS[@]}"
    KEEP=1
    exit 2
fi
