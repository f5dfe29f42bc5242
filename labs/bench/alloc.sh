#!/usr/bin/env bash
# Allocations per request on the Redis and HTTP/1 paths, counted by heaptrack:
# the gateway runs N1 then N2 requests in two runs; (allocs(N2) - allocs(N1)) / (N2 - N1)
# is what one request costs, start-up and connection set-up cancelling out.
# Usage: labs/bench/alloc.sh BINARY [ACCESS_LOG_YAML]   (e.g. "{path: /tmp/a.log, format: json}")
set -euo pipefail
bin=${1:?switchyard binary}
log=${2:-}
N1=${N1:-20000}; N2=${N2:-60000}
for b in heaptrack heaptrack_print redis-server redis-benchmark h2load curl; do
  command -v "$b" >/dev/null || { echo "FATAL: $b missing (apt heaptrack redis-server redis-tools nghttp2-client curl)" >&2; exit 1; }
done
dir=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(port); gport=$(port); aport=$(port)
redis-server --port "$rport" --save '' --appendonly no >/dev/null &
sleep 0.5
{
  echo "admin: {address: 127.0.0.1:$aport}"
  echo "listeners:"
  echo "  - name: edge"
  echo "    address: 127.0.0.1:$gport"
  echo "    protocols: [http1, redis]"
  echo "    route_table: main"
  [ -n "$log" ] && echo "    access_log: $log"
  echo "route_tables:"
  echo "  - name: main"
  echo "    virtual_hosts:"
  echo "      - {name: any, domains: [\"*\"], routes: [{match: {protocol: redis}, cluster: redis}, {match: {protocol: http1}, direct_response: {status: 200, body: ok}}]}"
  echo "clusters:"
  echo "  - {name: redis, hosts: [\"127.0.0.1:$rport\"]}"
} > "$dir/cfg.yaml"
allocs() { # $1: what, $2: n
  heaptrack -o "$dir/ht" "$bin" run -c "$dir/cfg.yaml" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$aport/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  if [ "$1" = redis ]; then
    redis-benchmark -p "$gport" -t get -n "$2" -P 16 -c 4 -q >/dev/null
  else
    h2load --h1 -n "$2" -c 4 -m 1 "http://127.0.0.1:$gport/" >/dev/null
  fi
  # The gateway is heaptrack's child (found by its config path, killed by its pid).
  local gw; gw=$(pgrep -f -- "run -c $dir/cfg.yaml" | grep -vx "$pid" | head -1 || true)
  kill -TERM "${gw:-$pid}"
  wait "$pid" || true
  heaptrack_print "$dir"/ht.*zst 2>/dev/null | sed -n 's/^calls to allocation functions: \([0-9]*\).*/\1/p'
  rm -f "$dir"/ht.*
}
for what in redis http1; do
  a=$(allocs "$what" "$N1"); b=$(allocs "$what" "$N2")
  python3 -c "print('$what: %s allocs at $N1, %s at $N2: %.3f per request' % ($a, $b, ($b-$a)/($N2-$N1)))"
done
