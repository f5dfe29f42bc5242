#!/usr/bin/env bash
# DB Lab in one command: three private redis-server shards, twemproxy
# (nutcracker) and Switchyard sharding over the same three (ketama), then
# redis-benchmark -P 16 (SET, GET, MGET of 10 keys) against one server directly,
# Switchyard and twemproxy, in interleaved rounds; then the MySQL half
# (labs/db/mysql-bench.sh: MariaDB, sysbench through Switchyard and HAProxy)
# when it is present. Prints a markdown report.
#
# Usage: labs/db/run.sh
# Knobs: ROUNDS=3  N=1000000 (requests per test)  CONNS=50  PIPELINE=16
#        KEYSPACE=100000 (-r)  MYSQL=1 (0: Redis only)  SWITCHYARD_BIN=...  KEEP=0
#        SWITCHYARD_THREADS= (the gateway's worker threads; empty: one per core)
set -euo pipefail
LAB=db
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib.sh
source "$ROOT/labs/lib.sh"

ROUNDS=${ROUNDS:-3}
N=${N:-1000000}
CONNS=${CONNS:-50}
PIPELINE=${PIPELINE:-16}
KEYSPACE=${KEYSPACE:-100000}
MYSQL=${MYSQL:-1}

need redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools \
    nutcracker:nutcracker python3:python3
switchyard_bin "$ROOT"
lab_tmp

read -r R0 R1 R2 R3 P_NUT P_SY P_ADMIN < <(free_ports 7)
# R0: the direct baseline (one server); R1-R3: the shards behind both proxies.
for p in $R0 $R1 $R2 $R3; do
    spawn "redis-$p" redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP"
done
cat >"$TMP/nutcracker.yml" <<YML
shards:
  listen: 127.0.0.1:$P_NUT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  preconnect: true
  timeout: 10000
  server_connections: 1
  servers:
    - 127.0.0.1:$R1:1
    - 127.0.0.1:$R2:1
    - 127.0.0.1:$R3:1
YML
sed -e "s/@P_SY@/$P_SY/; s/@P_ADMIN@/$P_ADMIN/; s/@R1@/$R1/; s/@R2@/$R2/; s/@R3@/$R3/" \
    "$HERE/switchyard-redis.yaml.in" >"$TMP/switchyard.yaml"
for p in $R0 $R1 $R2 $R3; do wait_port "$p" "redis-server"; done
spawn nutcracker nutcracker -c "$TMP/nutcracker.yml" -s "$(free_ports 1)"
NUT_PID=${PIDS[-1]}
threads=()
[[ -n ${SWITCHYARD_THREADS:-} ]] && threads=(TOKIO_WORKER_THREADS="$SWITCHYARD_THREADS")
spawn switchyard env RUST_LOG=warn "${threads[@]}" "$SY_BIN" run -c "$TMP/switchyard.yaml"
SY_PID=${PIDS[-1]}
wait_port "$P_NUT" twemproxy
wait_port "$P_SY" switchyard
log "shards $R1 $R2 $R3; twemproxy $P_NUT; switchyard $P_SY"

mget=(MGET)
for _ in $(seq 10); do mget+=("key:__rand_int__"); done
TARGETS=("direct:$R0" "switchyard:$P_SY" "twemproxy:$P_NUT")
: >"$TMP/results.csv"
# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
bench() { # target port round
    local t=$1 p=$2 r=$3 pid= before=0
    case $t in switchyard) pid=$SY_PID ;; twemproxy) pid=$NUT_PID ;; esac
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    redis-benchmark -h 127.0.0.1 -p "$p" -t set,get -P "$PIPELINE" -n "$N" -c "$CONNS" \
        -r "$KEYSPACE" -q --csv >"$TMP/$t-$r-sg.csv" 2>"$TMP/$t-$r.err" || die "redis-benchmark vs $t failed: $(cat "$TMP/$t-$r.err")"
    redis-benchmark -h 127.0.0.1 -p "$p" -P "$PIPELINE" -n "$((N / 2))" -c "$CONNS" \
        -r "$KEYSPACE" -q --csv "${mget[@]}" >"$TMP/$t-$r-mget.csv" 2>>"$TMP/$t-$r.err" || die "redis-benchmark MGET vs $t failed"
    for f in "$TMP/$t-$r-sg.csv" "$TMP/$t-$r-mget.csv"; do
        tail -n +2 "$f" | tr -d '"' | awk -F, -v t="$t" -v r="$r" '{split($1, w, " "); print t "," r "," w[1] "," $2}' >>"$TMP/results.csv"
    done
    if [[ -n $pid ]]; then # µs of proxy CPU per request, over SET + GET + MGET
        echo "$t,$r,CPU,$(( ($(cpu_ticks "$pid") - before) * 1000000 / $(getconf CLK_TCK) * 1000 / (2 * N + N / 2) ))" >>"$TMP/results.csv"
    fi
    log "  round $r $t: $(grep "^$t,$r," "$TMP/results.csv" | awk -F, '{printf "%s %.0f/s  ", $3, $4}')"
}
log "warm-up (fills $KEYSPACE keys on every target)"
for tp in "${TARGETS[@]}"; do
    redis-benchmark -h 127.0.0.1 -p "${tp#*:}" -t set -n 200000 -r "$KEYSPACE" -P 16 -q >/dev/null 2>&1
done
started=$(date +%s)
for r in $(seq "$ROUNDS"); do
    for tp in "${TARGETS[@]}"; do bench "${tp%%:*}" "${tp#*:}" "$r"; done
done
# Every shard holds part of the data set through both proxies.
sizes=$(for p in $R1 $R2 $R3; do redis-cli -p "$p" DBSIZE; done | tr '\n' ' ')

python3 - "$TMP/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
data = {}
for t, r, test, rps in rows:
    data.setdefault((test, t), []).append(float(rps))
print("| test | direct (1 server) | switchyard (3 shards) | twemproxy (3 shards) | switchyard / direct | switchyard / twemproxy |")
print("|---|---|---|---|---|---|")
for test in ["SET", "GET", "MGET"]:
    m = {t: statistics.median(data.get((test, t), [0])) for t in ["direct", "switchyard", "twemproxy"]}
    rnd = lambda a, b: "/".join(f"{x/y:.2f}" for x, y in zip(data[(test, a)], data[(test, b)]))
    print(f"| {test} | {m['direct']:,.0f}/s | {m['switchyard']:,.0f}/s | {m['twemproxy']:,.0f}/s "
          f"| {m['switchyard']/m['direct']:.2f}x | **{m['switchyard']/m['twemproxy']:.2f}x** (rounds {rnd('switchyard', 'twemproxy')}) |")
cpu = {t: statistics.median(data.get(("CPU", t), [0])) / 1000 for t in ["switchyard", "twemproxy"]}
if cpu["switchyard"] and cpu["twemproxy"]:
    print(f"| proxy CPU per request (SET+GET+MGET) | | {cpu['switchyard']:.2f} µs | {cpu['twemproxy']:.2f} µs | | "
          f"**{cpu['twemproxy']/cpu['switchyard']:.2f}x** less CPU per request |")
PY
echo
echo "- gateway worker threads: ${SWITCHYARD_THREADS:-one per core}"
echo "- redis-benchmark -P $PIPELINE -c $CONNS -n $N -r $KEYSPACE (MGET: 10 keys, -n $((N / 2))); $ROUNDS interleaved rounds, medians; $(( $(date +%s) - started ))s"
echo "- keys per shard after the run (DBSIZE): $sizes"
echo "- $(redis-server --version | sed 's/ sha=.*//'), $(nutcracker --version 2>&1 | head -1 | sed 's/This is //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $MYSQL == 1 ]]; then
    if [[ -x $HERE/mysql-bench.sh ]]; then
        echo
        SWITCHYARD_BIN=$SY_BIN "$HERE/mysql-bench.sh"
    else
        log "labs/db/mysql-bench.sh not present: MySQL part skipped"
    fi
fi
