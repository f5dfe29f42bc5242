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
LAB=redis-p1
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
need redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools nutcracker:nutcracker bc:bc
lab_tmp

read -r P_REDIS P_NUT P_NUT_STATS P_SY0 P_SY1 P_A0 P_A1 < <(free_ports 7)

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

start redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no
start twemproxy nutcracker -c "$TMP/nut.yml" -s "$P_NUT_STATS" -o "$TMP/nut.log"
start switchyard-own "$SY" run -c "$TMP/sy0.yaml"
start switchyard-shared "$SY" run -c "$TMP/sy1.yaml"
PID_NUT=$(pid_of twemproxy); PID_SY0=$(pid_of switchyard-own); PID_SY1=$(pid_of switchyard-shared)
wait_until redis 10 redis_ping "$P_REDIS"
wait_until twemproxy 10 redis_ping "$P_NUT"
wait_until switchyard-own 20 redis_ping "$P_SY0"
wait_until switchyard-shared 20 redis_ping "$P_SY1"

cpu() { cpu_s "$1"; } # pid -> CPU seconds (utime + stime), labs/bench/lib.sh
declare -A PID=([direct]=0 [switchyard-own]=$PID_SY0 [switchyard-shared]=$PID_SY1 [twemproxy]=$PID_NUT)
declare -A PORT=([direct]=$P_REDIS [switchyard-own]=$P_SY0 [switchyard-shared]=$P_SY1 [twemproxy]=$P_NUT)
ORDER=(direct switchyard-own switchyard-shared twemproxy)
PID_REDIS=$(pid_of redis)

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
