#!/usr/bin/env bash
# Instructions per unpipelined Redis request through a proxy, counted by
# callgrind (stable on a noisy machine where req/s and CPU time are not):
# Switchyard with shared upstream connections (redis.shared_connections:
# $SHARED) and twemproxy (server_connections: 1), each under a fixed
# redis-benchmark load. Instrumentation is switched on only around the load,
# so start-up and connection set-up are not counted.
#
# Usage:   SWITCHYARD_BIN=target/release/switchyard labs/bench/redis-callgrind.sh
# Knobs:   N=20000 CONNS=10 PIPELINE=1 TESTS=get,set SHARED=1 TARGETS="switchyard twemproxy"
set -euo pipefail
N=${N:-20000}
CONNS=${CONNS:-10}
PIPELINE=${PIPELINE:-1}
TESTS=${TESTS:-get,set}
SHARED=${SHARED:-1}
TARGETS=${TARGETS:-switchyard twemproxy}
SY=${SWITCHYARD_BIN:?set SWITCHYARD_BIN to a release switchyard binary}
PATH=$PATH:/usr/sbin
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP:-} ]] && cp "$TMP"/*.out "$KEEP"/ 2>/dev/null; rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_REDIS=$(port); P_PROXY=$(port); P_ADMIN=$(port); P_STATS=$(port)
redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
tests=$(echo "$TESTS" | tr ',' '\n' | wc -l)
echo -e "target\trequests\tinstructions\tinstructions_per_req"
for t in $TARGETS; do
    case $t in
    switchyard)
        cat >"$TMP/sy.yaml" <<YAML
admin: { address: "127.0.0.1:$P_ADMIN" }
listeners:
  - { name: bench, address: "127.0.0.1:$P_PROXY", protocols: [redis], route_table: bench }
route_tables:
  - name: bench
    virtual_hosts:
      - { name: any, domains: ["*"], routes: [ { match: { protocol: redis }, cluster: redis } ] }
clusters:
  - { name: redis, hosts: ["127.0.0.1:$P_REDIS"], redis: { shared_connections: $SHARED } }
YAML
        cmd=("$SY" run -c "$TMP/sy.yaml") ;;
    twemproxy)
        cat >"$TMP/nut.yml" <<YAML
bench:
  listen: 127.0.0.1:$P_PROXY
  hash: fnv1a_64
  distribution: ketama
  redis: true
  preconnect: true
  timeout: 10000
  server_connections: 1
  servers:
    - 127.0.0.1:$P_REDIS:1
YAML
        cmd=(nutcracker -c "$TMP/nut.yml" -s "$P_STATS" -o "$TMP/nut.log") ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/$t.out" "${cmd[@]}" >"$TMP/$t.log" 2>&1 &
    vpid=$!; PIDS+=($vpid)
    for _ in $(seq 300); do [[ $(redis-cli -p "$P_PROXY" ping 2>/dev/null) == PONG ]] && break; sleep 0.2; done
    callgrind_control -i on "$vpid" >/dev/null 2>&1
    redis-benchmark -h 127.0.0.1 -p "$P_PROXY" -t "$TESTS" -P "$PIPELINE" -n "$N" -c "$CONNS" -q >/dev/null 2>&1
    callgrind_control -i off "$vpid" >/dev/null 2>&1
    kill "$vpid"; wait "$vpid" 2>/dev/null || true
    ir=$(callgrind_annotate "$TMP/$t.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",","",$1); print $1; done=1}')
    echo -e "$t\t$((N * tests))\t$ir\t$(echo "$ir / ($N * $tests)" | bc)"
done
