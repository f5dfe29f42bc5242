#!/usr/bin/env bash
# Unpipelined Redis (redis-benchmark -P 1): redis-server direct, Switchyard with
# per-session upstream connections (redis.shared_connections: 0), Switchyard
# with shared connections (redis.shared_connections: $SHARED), twemproxy
# (server_connections: 1), interleaved in rounds, in ONE run. Reports req/s and
# the proxy's CPU seconds per request (utime+stime from /proc/PID/stat, stable
# on a noisy machine where req/s is not).
#
# Usage:   SWITCHYARD_BIN=target/release/switchyard labs/bench/redis-p1.sh
# Knobs:   ROUNDS=3 N=200000 CONNS=50 SHARED=1 TESTS=get,set PIPELINE=1
set -euo pipefail
ROUNDS=${ROUNDS:-3}
N=${N:-200000}
CONNS=${CONNS:-50}
SHARED=${SHARED:-1}
TESTS=${TESTS:-get,set}
PIPELINE=${PIPELINE:-1}
SY=${SWITCHYARD_BIN:?set SWITCHYARD_BIN to a release switchyard binary}
PATH=$PATH:/usr/sbin
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_REDIS=$(port); P_NUT=$(port); P_NUT_STATS=$(port); P_SY0=$(port); P_SY1=$(port); P_A0=$(port); P_A1=$(port)

sy_config() { # listen admin shared
    cat <<EOF
admin: { address: "127.0.0.1:$2" }
listeners:
  - { name: bench, address: "127.0.0.1:$1", protocols: [redis], route_table: bench }
route_tables:
  - name: bench
    virtual_hosts:
      - { name: any, domains: ["*"], routes: [ { match: { protocol: redis }, cluster: redis } ] }
clusters:
  - { name: redis, hosts: ["127.0.0.1:$P_REDIS"], redis: { shared_connections: $3 } }
EOF
}
sy_config "$P_SY0" "$P_A0" 0 >"$TMP/sy0.yaml"
sy_config "$P_SY1" "$P_A1" "$SHARED" >"$TMP/sy1.yaml"
cat >"$TMP/nut.yml" <<EOF
bench:
  listen: 127.0.0.1:$P_NUT
  hash: fnv1a_64
  distribution: ketama
  redis: true
  preconnect: true
  timeout: 10000
  server_connections: 1
  servers:
    - 127.0.0.1:$P_REDIS:1
EOF

redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
nutcracker -c "$TMP/nut.yml" -s "$P_NUT_STATS" -o "$TMP/nut.log" &
PID_NUT=$!; PIDS+=($PID_NUT)
"$SY" run -c "$TMP/sy0.yaml" >"$TMP/sy0.log" 2>&1 &
PID_SY0=$!; PIDS+=($PID_SY0)
"$SY" run -c "$TMP/sy1.yaml" >"$TMP/sy1.log" 2>&1 &
PID_SY1=$!; PIDS+=($PID_SY1)
for p in $P_REDIS $P_NUT $P_SY0 $P_SY1; do
    for _ in $(seq 50); do [[ $(redis-cli -p "$p" ping 2>/dev/null) == PONG ]] && break; sleep 0.2; done
done

cpu() { # pid -> CPU seconds (utime + stime)
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
declare -A PID=([direct]=0 [switchyard-own]=$PID_SY0 [switchyard-shared]=$PID_SY1 [twemproxy]=$PID_NUT)
declare -A PORT=([direct]=$P_REDIS [switchyard-own]=$P_SY0 [switchyard-shared]=$P_SY1 [twemproxy]=$P_NUT)
ORDER=(direct switchyard-own switchyard-shared twemproxy)
PID_REDIS=${PIDS[0]}

echo -e "round\ttarget\ttest\treq_per_s\tproxy_cpu_us_per_req\tredis_cpu_us_per_req"
for r in $(seq "$ROUNDS"); do
    for t in "${ORDER[@]}"; do
        p=${PID[$t]}
        before=0; [[ $p != 0 ]] && before=$(cpu "$p")
        rbefore=$(cpu "$PID_REDIS")
        out=$(redis-benchmark -h 127.0.0.1 -p "${PORT[$t]}" -t "$TESTS" -P "$PIPELINE" -n "$N" -c "$CONNS" -q --csv)
        after=0; [[ $p != 0 ]] && after=$(cpu "$p")
        rafter=$(cpu "$PID_REDIS")
        # Requests in this run: N per test.
        tests=$(echo "$TESTS" | tr ',' '\n' | wc -l)
        while IFS=, read -r name rps _; do
            name=${name//\"/}; rps=${rps//\"/}
            [[ $name == test ]] && continue
            echo -e "$r\t$t\t$name\t$rps\t$(echo "($after - $before) * 1000000 / ($N * $tests)" | bc -l | xargs printf '%.2f')\t$(echo "($rafter - $rbefore) * 1000000 / ($N * $tests)" | bc -l | xargs printf '%.2f')"
        done <<<"$out"
    done
done
