#!/usr/bin/env bash
# User vs system CPU µs/request of several Switchyard release binaries
# (shared_connections: 1) on one redis-server, interleaved per round, with
# voluntary context switches per request. Usage: redis-cpu-split.sh BIN... (N=100000 C=50)
set -euo pipefail
N=${N:-100000}; C=${C:-50}
TMP=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PR=$(port)
redis-server --bind 127.0.0.1 --port $PR --save "" --appendonly no >/dev/null 2>&1 & RP=$!
declare -A PORT PID
for b in "$@"; do
  PP=$(port); PA=$(port)
  cat >$TMP/$(basename $b).yaml <<YAML
admin: { address: "127.0.0.1:$PA" }
listeners:
  - { name: bench, address: "127.0.0.1:$PP", protocols: [redis], route_table: bench }
route_tables:
  - name: bench
    virtual_hosts:
      - { name: any, domains: ["*"], routes: [ { match: { protocol: redis }, cluster: redis } ] }
clusters:
  - { name: redis, hosts: ["127.0.0.1:$PR"], redis: { shared_connections: 1 } }
YAML
  $b run -c $TMP/$(basename $b).yaml >/dev/null 2>&1 & PID[$b]=$!; PORT[$b]=$PP
done
sleep 1
for b in "$@"; do for _ in $(seq 50); do [[ $(redis-cli -p ${PORT[$b]} ping 2>/dev/null) == PONG ]] && break; sleep 0.2; done; done
hz=$(getconf CLK_TCK)
echo -e "round\tbin\treq_s_set\treq_s_get\tuser_us\tsys_us\tvol_ctxsw_per_req"
for r in 1 2 3; do for b in "$@"; do
  p=${PID[$b]}
  read u0 s0 < <(awk '{print $14, $15}' /proc/$p/stat)
  c0=$(awk '/^voluntary_ctxt_switches/ {print $2}' /proc/$p/status)
  c0=$(cat /proc/$p/task/*/status | awk '/^voluntary_ctxt_switches/ {s+=$2} END {print s}')
  out=$(redis-benchmark -p ${PORT[$b]} -t set,get -P 1 -n $N -c $C -q --csv 2>/dev/null | grep -v '"test"' | cut -d, -f2 | tr -d '"' | paste -sd' ')
  read u1 s1 < <(awk '{print $14, $15}' /proc/$p/stat)
  c1=$(cat /proc/$p/task/*/status | awk '/^voluntary_ctxt_switches/ {s+=$2} END {print s}')
  echo -e "$r\t$(basename $b)\t${out// /\\t}\t$(echo "($u1-$u0)*1000000/$hz/($N*2)" | bc -l | xargs printf %.2f)\t$(echo "($s1-$s0)*1000000/$hz/($N*2)" | bc -l | xargs printf %.2f)\t$(echo "($c1-$c0)/($N*2)" | bc -l | xargs printf %.2f)"
done; done
kill ${PID[@]} $RP; wait 2>/dev/null; rm -rf $TMP
