#!/usr/bin/env bash
# One command, one machine, one run: every workload direct, through Switchyard and through
# the peer a user would pick instead, interleaved in rounds (issue #12, "Harness").
#
#   http1   wrk -t1 -c32, GET of a 34 B / 1 KiB / 16 KiB file: nginx | switchyard | HAProxy | nginx (proxy_pass)
#   h2      h2load -c4 -m16, the same three files over h2c:    nginx | switchyard | HAProxy (proto h2)
#   grpc    h2load -c4 -m16, gRPC unary POST /test.Echo/Unary: grpcio server (tests/peers/grpc_peer.py) | switchyard | HAProxy h2
#   redis   redis-benchmark -c50 GET, SET, MGET (10 keys) at -P 1 and -P 16: redis-server | switchyard | twemproxy
#   mqtt    mqtt-bench -c8 QoS 0 and QoS 1 publish: mosquitto | switchyard | HAProxy mode tcp
#   mysql   sysbench oltp_point_select and oltp_read_only, 8 threads: MariaDB | switchyard | HAProxy mode tcp
#   rpc     rpc-bench -c4 -w64 Bolt and Dubbo plus(1,2): sofa-rpc-node servers | switchyard | HAProxy mode tcp
#   idle    IDLE_N idle MQTT connections held open: RSS per connection of mosquitto | switchyard | HAProxy
#
# For every cell (workload, target): the per-round values, median, min, max, p50/p99 latency
# where the tool gives it, and CPU seconds per request of the proxy in front (switchyard or the
# peer) and of the origin server (utime+stime from /proc/PID/stat, before/after, / requests).
# CALLGRIND=1 adds instructions per request of switchyard's hot paths under callgrind.
#
# Output (OUT=dir, default a temp dir printed at the end): results.json, results.md, ratios.png.
# Usage and knobs: labs/bench/README.md ("One command: all.sh").
set -euo pipefail

LAB=all
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-2}; N=${N:-20000}; IDLE_N=${IDLE_N:-1000}
    CG_N=${CG_N:-500}; MYSQL_SIZE=${MYSQL_SIZE:-1000}
else
    ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; N=${N:-200000}; IDLE_N=${IDLE_N:-5000}
    CG_N=${CG_N:-2000}; MYSQL_SIZE=${MYSQL_SIZE:-10000}
fi
ALL_WORKLOADS=http1,h2,grpc,redis,mqtt,mysql,rpc,idle
ONLY=${ONLY:-$ALL_WORKLOADS}
CALLGRIND=${CALLGRIND:-0}
SWITCHYARD_THREADS=${SWITCHYARD_THREADS:-}
OUT=${OUT:-}
KEEP=${KEEP:-0}
for v in ROUNDS DURATION N IDLE_N CG_N MYSQL_SIZE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
declare -A WANT=()
for w in ${ONLY//,/ }; do
    [[ ,$ALL_WORKLOADS, == *,$w,* ]] || die "ONLY: unknown workload '$w' (known: $ALL_WORKLOADS)"
    WANT[$w]=1
done
want() { [[ -n ${WANT[$1]:-} ]]; }

# ---------------------------------------------------------------- tools (fail at once, naming the package)
tools=(python3:python3 timeout:coreutils curl:curl pgrep:procps)
want http1 && tools+=(wrk:wrk nginx:nginx-light haproxy:haproxy)
want h2 && tools+=(h2load:nghttp2-client nginx:nginx-light haproxy:haproxy)
want grpc && tools+=(h2load:nghttp2-client haproxy:haproxy)
want redis && tools+=(redis-server:redis-server redis-benchmark:redis-tools redis-cli:redis-tools nutcracker:nutcracker)
want mqtt && tools+=(mosquitto:mosquitto haproxy:haproxy)
want idle && tools+=(mosquitto:mosquitto haproxy:haproxy)
want mysql && tools+=(mariadbd:mariadb-server mariadb-install-db:mariadb-server mariadb:mariadb-client sysbench:sysbench haproxy:haproxy)
want rpc && tools+=(node:nodejs haproxy:haproxy)
[[ $CALLGRIND == 1 ]] && tools+=(valgrind:valgrind callgrind_control:valgrind redis-benchmark:redis-tools h2load:nghttp2-client nginx:nginx-light redis-server:redis-server)
need "${tools[@]}"
python3 -c 'import matplotlib' 2>/dev/null || die "python3 has no matplotlib (for ratios.png): pip install matplotlib"
if want grpc; then
    python3 -c 'import grpc' 2>/dev/null || die "python3 has no grpcio (the gRPC server): pip install grpcio"
fi
RPC_PEER_DIR=${RPC_PEER_DIR:-$ROOT/tests/peers/rpc}
if want rpc; then
    (cd "$RPC_PEER_DIR" && node -e 'require("sofa-rpc-node"); require("dubbo-remoting")') >/dev/null 2>&1 ||
        die "the Node RPC peer's packages are missing: npm ci --prefix tests/peers/rpc (or set RPC_PEER_DIR)"
fi

# ---------------------------------------------------------------- binaries
switchyard_bin "$ROOT"
if [[ -n ${LOADGEN_DIR:-} ]]; then
    LG=$LOADGEN_DIR
elif want mqtt || want rpc || want idle; then
    log "building the load generators (cargo build --release -p switchyard-loadgen)"
    (cd "$ROOT" && cargo build --release -p switchyard-loadgen) >&2 || die "building labs/loadgen failed"
    LG=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
fi
for b in mqtt-bench mqtt-idle rpc-bench; do
    case $b in mqtt-bench) want mqtt || continue ;; mqtt-idle) want idle || continue ;; rpc-bench) want rpc || continue ;; esac
    [[ -x $LG/$b ]] || die "$LG/$b is not an executable (set LOADGEN_DIR or build labs/loadgen)"
done
log "switchyard: $SY_BIN; rounds $ROUNDS x ${DURATION}s, N=$N; workloads: $ONLY${QUICK:+ (QUICK=$QUICK)}"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
HA_MAXCONN=$(( (NOFILE - 200) / 2 ))
if want idle && ((IDLE_N > HA_MAXCONN)); then
    die "IDLE_N=$IDLE_N: a proxied connection holds 2 fds and the fd limit (ulimit -Hn) is $NOFILE: IDLE_N <= $HA_MAXCONN"
fi
lab_tmp
RAW=$TMP/raw
mkdir -p "$RAW" "$TMP/www" "$TMP/nginx" "$TMP/nginx-proxy"
if [[ -z $OUT ]]; then OUT=$(mktemp -d /tmp/switchyard-bench-all.XXXXXX); fi
mkdir -p "$OUT"
RES=$TMP/cells.tsv
IDLE_USED_PORTS=""
: >"$RES"
ERRORS=()

read -r P_NG1 P_NG2 P_NGP P_GRPC P_REDIS P_NUT P_NUT_STATS P_MQ P_DB P_BOLT P_DUBBO \
    P_HA_H1 P_HA_H2 P_HA_GRPC P_HA_MQ P_HA_DB P_HA_BOLT P_HA_DUBBO \
    P_SY_WEB P_SY_REDIS P_SY_MQ P_SY_DB P_SY_RPC P_SY_ADMIN < <(free_ports 24)

# The RPC servers (sofa-rpc-node) listen on [::]: their ports must be free on every address.
read -r P_BOLT P_DUBBO < <(python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

# ---------------------------------------------------------------- origin files
SIZES=(34 1024 16384)
size_name() { case $1 in 34) echo 34B ;; 1024) echo 1KiB ;; 16384) echo 16KiB ;; esac; }
for s in "${SIZES[@]}"; do
    python3 -c 'import sys; n=int(sys.argv[1]); sys.stdout.write(("switchyard bench " * (n // 17 + 1))[:n-1] + "\n")' "$s" \
        >"$TMP/www/b$s.html"
done
chmod -R a+rX "$TMP"

# ---------------------------------------------------------------- configs
cat >"$TMP/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 1000000; keepalive_timeout 300s; http2_max_requests 1000000;
    open_file_cache max=16 inactive=60s;
    client_body_temp_path $TMP/nginx/cb; proxy_temp_path $TMP/nginx/p; fastcgi_temp_path $TMP/nginx/f;
    uwsgi_temp_path $TMP/nginx/u; scgi_temp_path $TMP/nginx/s;
    types { text/html html; }
    server { listen 127.0.0.1:$P_NG1; root $TMP/www; location / { } }
    server { listen 127.0.0.1:$P_NG2 http2; root $TMP/www; location / { } }
}
EOF
cat >"$TMP/nginx-proxy.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx-proxy/nginx.pid;
error_log $TMP/nginx-proxy/error.log warn;
events { worker_connections 8192; }
http {
    access_log off; tcp_nodelay on; keepalive_requests 1000000; keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx-proxy/cb; proxy_temp_path $TMP/nginx-proxy/p; fastcgi_temp_path $TMP/nginx-proxy/f;
    uwsgi_temp_path $TMP/nginx-proxy/u; scgi_temp_path $TMP/nginx-proxy/s;
    upstream origin { server 127.0.0.1:$P_NG1; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$P_NGP;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; }
    }
}
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HA_MAXCONN
defaults
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 30s
    timeout http-request 10s
frontend h1
    mode http
    bind 127.0.0.1:$P_HA_H1
    default_backend h1
backend h1
    mode http
    http-reuse always
    server nginx 127.0.0.1:$P_NG1
frontend h2
    mode http
    bind 127.0.0.1:$P_HA_H2 proto h2
    default_backend h2
backend h2
    mode http
    http-reuse always
    server nginx 127.0.0.1:$P_NG2 proto h2
frontend grpc
    mode http
    bind 127.0.0.1:$P_HA_GRPC proto h2
    default_backend grpc
backend grpc
    mode http
    http-reuse always
    server grpc 127.0.0.1:$P_GRPC proto h2
EOF
for t in mq:$P_HA_MQ:$P_MQ db:$P_HA_DB:$P_DB bolt:$P_HA_BOLT:$P_BOLT dubbo:$P_HA_DUBBO:$P_DUBBO; do
    IFS=: read -r name front back <<<"$t"
    printf 'frontend %s\n    mode tcp\n    bind 127.0.0.1:%s\n    default_backend %s\nbackend %s\n    mode tcp\n    server s 127.0.0.1:%s\n' \
        "$name" "$front" "$name" "$name" "$back" >>"$TMP/haproxy.cfg"
done
sed -e "s|@P_NUT@|$P_NUT|g" -e "s|@P_REDIS@|$P_REDIS|g" "$HERE/nutcracker.yml.in" >"$TMP/nutcracker.yml"
cat >"$TMP/mosquitto.conf" <<EOF
listener $P_MQ 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 0
max_inflight_messages 100
set_tcp_nodelay true
persistence false
log_dest stdout
log_type error
EOF
cat >"$TMP/switchyard.yaml" <<EOF
# labs/bench/all.sh: one gateway, one listener per workload family.
admin: { address: "127.0.0.1:$P_SY_ADMIN" }
drain_timeout: 1s
listeners:
  - { name: web, address: "127.0.0.1:$P_SY_WEB", protocols: [http1, http2], route_table: web }
  - { name: redis, address: "127.0.0.1:$P_SY_REDIS", protocols: [redis], route_table: redis }
  - { name: mqtt, address: "127.0.0.1:$P_SY_MQ", protocols: [mqtt], route_table: mqtt, max_connections: 200000 }
  - { name: rpc, address: "127.0.0.1:$P_SY_RPC", protocols: [bolt, dubbo], route_table: rpc }
  - name: db
    address: "127.0.0.1:$P_SY_DB"
    protocol: mysql
    route_table: db
    mysql: { users: [ { username: bench, password: bench-pw } ] }
route_tables:
  - name: web
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - { name: grpc, match: { protocol: http2, path_prefix: /test.Echo/ }, cluster: grpc }
          - { name: h2, match: { protocol: http2 }, cluster: nginx_h2 }
          - { name: h1, match: { protocol: http1 }, cluster: nginx_h1 }
  - { name: redis, virtual_hosts: [ { name: any, domains: ["*"], routes: [ { cluster: redis } ] } ] }
  - { name: mqtt, virtual_hosts: [ { name: any, domains: ["*"], routes: [ { cluster: mosquitto } ] } ] }
  - { name: db, virtual_hosts: [ { name: any, domains: ["*"], routes: [ { cluster: mariadb } ] } ] }
  - name: rpc
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - { name: bolt, match: { protocol: bolt }, cluster: bolt }
          - { name: dubbo, match: { protocol: dubbo }, cluster: dubbo }
clusters:
  - { name: nginx_h1, hosts: ["127.0.0.1:$P_NG1"] }
  - { name: nginx_h2, protocol: http2, hosts: ["127.0.0.1:$P_NG2"] }
  - { name: grpc, protocol: http2, hosts: ["127.0.0.1:$P_GRPC"] }
  - { name: redis, hosts: ["127.0.0.1:$P_REDIS"] }
  - { name: mosquitto, hosts: ["127.0.0.1:$P_MQ"] }
  - { name: bolt, hosts: ["127.0.0.1:$P_BOLT"] }
  - { name: dubbo, hosts: ["127.0.0.1:$P_DUBBO"] }
  - name: mariadb
    hosts: ["127.0.0.1:$P_DB"]
    max_idle_per_host: 256
    mysql: { user: sy_proxy, password: proxy-pw, max_connections: 512 }
EOF
"$SY_BIN" check "$TMP/switchyard.yaml" >"$TMP/switchyard-check.log" 2>&1 ||
    { cat "$TMP/switchyard-check.log" >&2; die "switchyard rejected its config"; }
if want http1 || want h2 || want grpc || want mqtt || want mysql || want rpc; then
    haproxy -c -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
        { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejected its config"; }
fi

# ---------------------------------------------------------------- origins and peers
if want http1 || want h2; then
    start nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf"
    wait_until nginx 10 http_ok "$P_NG1" /b34.html
    wait_until nginx 10 h2_ok "$P_NG2" /b34.html
fi
if want http1; then
    start nginx-proxy nginx -p "$TMP/nginx-proxy" -e "$TMP/nginx-proxy/error.log" -c "$TMP/nginx-proxy.conf"
    wait_until nginx-proxy 10 http_ok "$P_NGP" /b34.html
fi
if want grpc; then
    start grpc python3 "$ROOT/tests/peers/grpc_peer.py" server "$P_GRPC"
    wait_until grpc 20 port_open "$P_GRPC"
    printf '\0\0\0\0\x05hello' >"$TMP/grpc-body.bin"
fi
if want redis; then
    start redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no --protected-mode no --dir "$TMP"
    wait_until redis 10 redis_ping "$P_REDIS"
    start twemproxy nutcracker -c "$TMP/nutcracker.yml" -s "$P_NUT_STATS" -a 127.0.0.1 -p "$TMP/nutcracker.pid"
    wait_until twemproxy 10 redis_ping "$P_NUT"
    MGET_KEYS=()
    for i in $(seq 1 10); do MGET_KEYS+=("mkey:$i"); redis-cli -p "$P_REDIS" set "mkey:$i" "$(printf 'v%.0s' $(seq 32))" >/dev/null; done
fi
if want mqtt; then
    start mosquitto mosquitto -c "$TMP/mosquitto.conf"
    wait_until mosquitto 10 port_open "$P_MQ"
fi
if want rpc; then
    start bolt-server node "$RPC_PEER_DIR/peer.js" server "$P_BOLT" bolt
    start dubbo-server node "$RPC_PEER_DIR/peer.js" server "$P_DUBBO" dubbo
    wait_until bolt-server 30 grep -qx ready "$TMP/bolt-server.log"
    wait_until dubbo-server 30 grep -qx ready "$TMP/dubbo-server.log"
fi
if want mysql; then
    SB=(--mysql-host=127.0.0.1 --mysql-user=bench --mysql-password=bench-pw --mysql-db=sbtest --tables=4 --table-size="$MYSQL_SIZE")
    mariadb-install-db --no-defaults --datadir="$TMP/data" --auth-root-authentication-method=normal \
        --skip-test-db --user="$(id -un)" >"$TMP/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($TMP/mariadb-install.log)"
    start mariadb mariadbd --no-defaults --datadir="$TMP/data" --socket="$TMP/mysql.sock" --port="$P_DB" \
        --bind-address=127.0.0.1 --user="$(id -un)" --innodb-buffer-pool-size=128M --skip-log-bin \
        --skip-name-resolve --max-connections=1000
    wait_until mariadb 60 mariadb --no-defaults -uroot -h127.0.0.1 -P"$P_DB" -e 'SELECT 1'
    mariadb --no-defaults -uroot -h127.0.0.1 -P"$P_DB" -e "
        CREATE USER bench@'%' IDENTIFIED BY 'bench-pw'; GRANT ALL ON *.* TO bench@'%';
        CREATE USER sy_proxy@'%' IDENTIFIED BY 'proxy-pw'; GRANT ALL ON *.* TO sy_proxy@'%';
        CREATE DATABASE sbtest;" || die "cannot set up MariaDB"
    log "sysbench prepare (4 tables x $MYSQL_SIZE rows)"
    sysbench oltp_read_only "${SB[@]}" --mysql-port="$P_DB" prepare >"$TMP/sysbench-prepare.log" 2>&1 ||
        die "sysbench prepare failed ($TMP/sysbench-prepare.log)"
fi
HA_PID=0
if want http1 || want h2 || want grpc || want mqtt || want mysql || want rpc; then
    start haproxy haproxy -db -f "$TMP/haproxy.cfg"
    HA_PID=$(pid_of haproxy)
    wait_until haproxy 10 port_open "$P_HA_H1"
fi
sy_env=(env RUST_LOG="${RUST_LOG:-warn}")
[[ -n $SWITCHYARD_THREADS ]] && sy_env+=(TOKIO_WORKER_THREADS="$SWITCHYARD_THREADS")
start switchyard "${sy_env[@]}" "$SY_BIN" run -c "$TMP/switchyard.yaml"
wait_until switchyard 20 http_ok "$P_SY_ADMIN" /ready
SY_PID=$(pid_of switchyard)
want http1 && { wait_until switchyard 5 http_ok "$P_SY_WEB" /b34.html; wait_until haproxy 5 http_ok "$P_HA_H1" /b34.html; }
want h2 && { wait_until switchyard 5 h2_ok "$P_SY_WEB" /b34.html; wait_until haproxy 5 h2_ok "$P_HA_H2" /b34.html; }
want redis && wait_until switchyard 5 redis_ping "$P_SY_REDIS"
grpc_ok() { timeout 10 python3 "$ROOT/tests/peers/grpc_peer.py" call "127.0.0.1:$1" Unary hello 5 | grep -q '"code": "OK"'; }
if want grpc; then # every gRPC path answers Unary with grpc-status 0 (h2load only sees HTTP 200)
    wait_until grpc 20 grpc_ok "$P_GRPC"
    wait_until switchyard 10 grpc_ok "$P_SY_WEB"
    wait_until haproxy 10 grpc_ok "$P_HA_GRPC"
fi
if want mysql; then
    wait_until switchyard 20 mariadb --no-defaults -ubench -pbench-pw -h127.0.0.1 -P"$P_SY_DB" -e 'SELECT 1'
    wait_until haproxy 20 mariadb --no-defaults -ubench -pbench-pw -h127.0.0.1 -P"$P_HA_DB" -e 'SELECT 1'
fi
sy_rss_idle=$(rss_kb "$SY_PID")
log "all up; switchyard RSS at idle: $sy_rss_idle kB"

# ---------------------------------------------------------------- one cell
# cell WORKLOAD TARGET ROUND PROXY_PID ORIGIN_PID PARSER PARSER_EXTRA CMD...
# Runs CMD (output in $RAW), parses it, records value, p50, p99, requests and the CPU
# seconds per request of the proxy in front (0: none, direct) and of the origin server.
cell() {
    local w=$1 t=$2 r=$3 pp=$4 op=$5 parser=$6 extra=$7
    shift 7
    local out="$RAW/${w//[^A-Za-z0-9_.-]/_}-$t-$r.txt" rc=0 p0 p1 o0 o1
    p0=$(cpu_ticks "$pp"); o0=$(cpu_ticks "$op")
    timeout $((DURATION + 120)) "$@" >"$out" 2>&1 || rc=$?
    p1=$(cpu_ticks "$pp"); o1=$(cpu_ticks "$op")
    local v p50 p99 n err
    IFS=$'\t' read -r v p50 p99 n err < <(python3 "$HERE/parse.py" "$parser" "$out" "$extra")
    if ((rc != 0)); then err="rc=$rc${err:+;$err}"; fi
    [[ $err == 0 ]] || ERRORS+=("round $r: $w vs $t: $err (output: $out)")
    local pcpu=NA ocpu=NA
    if ((n > 0)); then
        [[ $pp != 0 ]] && pcpu=$(awk -v d=$((p1 - p0)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.9f", d / hz / n}')
        [[ $op != 0 ]] && ocpu=$(awk -v d=$((o1 - o0)) -v hz="$HZ" -v n="$n" 'BEGIN {printf "%.9f", d / hz / n}')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$t" "$r" "$v" "$p50" "$p99" "$n" "$pcpu" "$ocpu" "$err" >>"$RES"
    log "  $w | $t: $v/s p50 $p50 p99 $p99 ms; proxy CPU/req ${pcpu} s, origin ${ocpu} s$([[ $err == 0 ]] || echo " ($err)")"
}

# order TARGET... — the targets in round order: forward in odd rounds, reversed in even ones.
order() {
    local -a a=("$@")
    if ((ROUND % 2 == 0)); then
        local i
        for ((i = ${#a[@]} - 1; i >= 0; i--)); do echo "${a[$i]}"; done
    else
        printf '%s\n' "${a[@]}"
    fi
}

run_round() {
    local s t pp
    if want http1; then
        for s in "${SIZES[@]}"; do
            for t in $(order direct switchyard haproxy nginx); do
                local port=$P_NG1 proxy=0
                case $t in switchyard) port=$P_SY_WEB proxy=$SY_PID ;; haproxy) port=$P_HA_H1 proxy=$HA_PID ;;
                    nginx) port=$P_NGP proxy=$(pid_of nginx-proxy) ;; esac
                cell "http1 GET $(size_name "$s")" "$t" "$ROUND" "$proxy" "$(pid_of nginx)" wrk "" \
                    wrk -t1 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$port/b$s.html"
            done
        done
    fi
    if want h2; then
        for s in "${SIZES[@]}"; do
            for t in $(order direct switchyard haproxy); do
                local port=$P_NG2 proxy=0
                case $t in switchyard) port=$P_SY_WEB proxy=$SY_PID ;; haproxy) port=$P_HA_H2 proxy=$HA_PID ;; esac
                H2LOG="$RAW/h2-$s-$t-$ROUND.log"
                cell "h2 GET $(size_name "$s")" "$t" "$ROUND" "$proxy" "$(pid_of nginx)" h2load "$H2LOG" \
                    h2load -c 4 -m 16 -D "$DURATION" --log-file="$H2LOG" "http://127.0.0.1:$port/b$s.html"
                rm -f "$H2LOG"
            done
        done
    fi
    if want grpc; then
        for t in $(order direct switchyard haproxy); do
            local port=$P_GRPC proxy=0
            case $t in switchyard) port=$P_SY_WEB proxy=$SY_PID ;; haproxy) port=$P_HA_GRPC proxy=$HA_PID ;; esac
            H2LOG="$RAW/grpc-$t-$ROUND.log"
            cell "grpc unary" "$t" "$ROUND" "$proxy" "$(pid_of grpc)" h2load "$H2LOG" \
                h2load -c 4 -m 16 -D "$DURATION" --log-file="$H2LOG" -d "$TMP/grpc-body.bin" \
                -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$port/test.Echo/Unary"
            rm -f "$H2LOG"
        done
    fi
    if want redis; then
        local p test
        for p in 1 16; do
            for test in GET SET MGET; do
                for t in $(order direct switchyard twemproxy); do
                    local port=$P_REDIS proxy=0
                    case $t in switchyard) port=$P_SY_REDIS proxy=$SY_PID ;; twemproxy) port=$P_NUT proxy=$(pid_of twemproxy) ;; esac
                    local args=(-t "${test,,}")
                    [[ $test == MGET ]] && args=(MGET "${MGET_KEYS[@]}")
                    cell "redis $test -P$p" "$t" "$ROUND" "$proxy" "$(pid_of redis)" redis "$N" \
                        redis-benchmark -h 127.0.0.1 -p "$port" -P "$p" -c 50 -n "$N" -q --csv "${args[@]}"
                done
            done
        done
    fi
    if want mqtt; then
        local q
        for q in 0 1; do
            for t in $(order direct switchyard haproxy); do
                local port=$P_MQ proxy=0
                case $t in switchyard) port=$P_SY_MQ proxy=$SY_PID ;; haproxy) port=$P_HA_MQ proxy=$HA_PID ;; esac
                local a=(--addr "127.0.0.1:$port" -c 8 -d "$DURATION" --size 64 --qos "$q" --label "qos$q-$t")
                ((q == 1)) && a+=(--window 64)
                cell "mqtt publish QoS$q" "$t" "$ROUND" "$proxy" "$(pid_of mosquitto)" mqtt "" "$LG/mqtt-bench" "${a[@]}"
            done
        done
    fi
    if want mysql; then
        local test
        for test in oltp_point_select oltp_read_only; do
            for t in $(order direct switchyard haproxy); do
                local port=$P_DB proxy=0
                case $t in switchyard) port=$P_SY_DB proxy=$SY_PID ;; haproxy) port=$P_HA_DB proxy=$HA_PID ;; esac
                cell "mysql $test" "$t" "$ROUND" "$proxy" "$(pid_of mariadb)" sysbench "" \
                    sysbench "$test" "${SB[@]}" --mysql-port="$port" --threads=8 --time="$DURATION" \
                    --percentile=99 --report-interval=0 run
            done
        done
    fi
    if want rpc; then
        local proto
        for proto in bolt dubbo; do
            for t in $(order direct switchyard haproxy); do
                local port proxy=0
                if [[ $proto == bolt ]]; then port=$P_BOLT; else port=$P_DUBBO; fi
                case $t in switchyard) port=$P_SY_RPC proxy=$SY_PID ;;
                    haproxy) proxy=$HA_PID; if [[ $proto == bolt ]]; then port=$P_HA_BOLT; else port=$P_HA_DUBBO; fi ;; esac
                cell "rpc $proto unary" "$t" "$ROUND" "$proxy" "$(pid_of "$proto-server")" rpc "" \
                    "$LG/rpc-bench" --proto "$proto" --addr "127.0.0.1:$port" -c 4 -w 64 -d "$DURATION"
            done
        done
    fi
    if want idle; then
        for t in $(order direct switchyard haproxy); do idle_cell "$t"; done
    fi
}

# idle_cell TARGET — IDLE_N idle MQTT connections through TARGET; the value is the RSS growth
# per connection (bytes) of the process that holds them (the broker when direct, else the
# proxy). Fresh processes for every cell: a process that held connections before would reuse
# freed memory and look cheaper.
idle_cell() {
    local t=$1 p_mq p_px p_adm
    # never a port an earlier idle cell used: its closed connections may sit in TIME_WAIT
    # there, and a listener without SO_REUSEADDR (mosquitto) then cannot bind it
    while :; do
        read -r p_mq p_px p_adm < <(free_ports 3)
        [[ " $IDLE_USED_PORTS " == *" $p_mq "* || " $IDLE_USED_PORTS " == *" $p_px "* ||
            " $IDLE_USED_PORTS " == *" $p_adm "* ]] || break
    done
    IDLE_USED_PORTS+=" $p_mq $p_px $p_adm"
    sed -e "s|^listener .*|listener $p_mq 127.0.0.1|" "$TMP/mosquitto.conf" >"$TMP/mosquitto-idle.conf"
    start mosquitto-idle mosquitto -c "$TMP/mosquitto-idle.conf"
    wait_until mosquitto-idle 10 port_open "$p_mq"
    local port=$p_mq name=mosquitto-idle
    case $t in
        switchyard)
            cat >"$TMP/switchyard-idle.yaml" <<YAML
admin: { address: "127.0.0.1:$p_adm" }
drain_timeout: 1s
listeners:
  - { name: mqtt, address: "127.0.0.1:$p_px", protocols: [mqtt], route_table: mqtt, max_connections: 200000 }
route_tables:
  - { name: mqtt, virtual_hosts: [ { name: any, domains: ["*"], routes: [ { cluster: mosquitto } ] } ] }
clusters:
  - { name: mosquitto, hosts: ["127.0.0.1:$p_mq"] }
YAML
            start switchyard-idle "${sy_env[@]}" "$SY_BIN" run -c "$TMP/switchyard-idle.yaml"
            wait_until switchyard-idle 20 http_ok "$p_adm" /ready
            port=$p_px name=switchyard-idle ;;
        haproxy)
            printf 'global\n    nbthread 1\n    maxconn %s\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 300s\n    timeout server 300s\nfrontend mq\n    bind 127.0.0.1:%s\n    default_backend mq\nbackend mq\n    server s 127.0.0.1:%s\n' \
                "$HA_MAXCONN" "$p_px" "$p_mq" >"$TMP/haproxy-idle.cfg"
            start haproxy-idle haproxy -db -f "$TMP/haproxy-idle.cfg"
            wait_until haproxy-idle 10 port_open "$p_px"
            port=$p_px name=haproxy-idle ;;
    esac
    local pid out="$RAW/idle-$t-$ROUND" rss0 rss1 held=0 err=0
    pid=$(pid_of "$name")
    # warm-up: a few sessions opened and closed, so one-time allocations are in the baseline
    timeout 30 "$LG/mqtt-idle" --addr "127.0.0.1:$port" -n 20 --hold 0 --sources 1 --label warmup >/dev/null 2>&1 || true
    sleep 1
    rss0=$(rss_kb "$pid")
    rm -f "$out.ready"
    timeout 300 "$LG/mqtt-idle" --addr "127.0.0.1:$port" -n "$IDLE_N" --sources 1 --keep-alive 0 \
        --concurrency 200 --ramp-timeout 120 --hold 300 --label "idle-$t" \
        --ready-file "$out.ready" >"$out.json" 2>"$out.err" &
    local lg=$!
    local deadline=$((SECONDS + 150))
    until [[ -s $out.ready ]]; do
        if ! kill -0 "$lg" 2>/dev/null || ((SECONDS >= deadline)); then err="mqtt-idle: no ramp ($(tail -c 200 "$out.err" | tr '\n' ' '))"; break; fi
        sleep 0.3
    done
    sleep 2
    rss1=$(rss_kb "$pid")
    [[ -s $out.ready ]] && held=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["connected"])' "$out.ready")
    kill -INT "$lg" 2>/dev/null || true
    wait "$lg" 2>/dev/null || true
    ((held == IDLE_N)) || { [[ $err != 0 ]] || err="held $held of $IDLE_N"; }
    [[ $err == 0 ]] || ERRORS+=("round $ROUND: idle vs $t: $err")
    local v=NA
    ((held > 0)) && v=$(( (rss1 - rss0) * 1024 / held ))
    printf '%s\t%s\t%s\t%s\tNA\tNA\t%s\tNA\tNA\t%s\n' "mqtt idle conn" "$t" "$ROUND" "$v" "$held" "$err" >>"$RES"
    log "  idle | $t: $held connections, RSS of $name $rss0 -> $rss1 kB: $v B each"
    [[ $name == mosquitto-idle ]] || stop "$name"
    stop mosquitto-idle
}

# callgrind_run — CALLGRIND=1: a second switchyard (one worker thread) under
# `valgrind --tool=callgrind`, one listener [http1, redis] in front of the same redis-server
# and nginx. For each hot path: warm up, zero the counters (callgrind_control -z), send CG_N
# requests on one connection, dump (callgrind_control -d): the dump holds only what ran
# between the two, so instructions / CG_N is the cost of one request (startup excluded).
callgrind_run() {
    if [[ $(pid_of redis) == 0 ]]; then
        start redis redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no --protected-mode no --dir "$TMP"
        wait_until redis 10 redis_ping "$P_REDIS"
    fi
    if [[ $(pid_of nginx) == 0 ]]; then
        start nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf"
        wait_until nginx 10 http_ok "$P_NG1" /b34.html
    fi
    local p_cg p_cg_admin
    read -r p_cg p_cg_admin < <(free_ports 2)
    cat >"$TMP/switchyard-cg.yaml" <<YAML
admin: { address: "127.0.0.1:$p_cg_admin" }
drain_timeout: 1s
listeners:
  - { name: cg, address: "127.0.0.1:$p_cg", protocols: [http1, redis], route_table: cg }
route_tables:
  - name: cg
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - { name: redis, match: { protocol: redis }, cluster: redis }
          - { name: h1, match: { protocol: http1 }, cluster: nginx_h1 }
clusters:
  - { name: redis, hosts: ["127.0.0.1:$P_REDIS"] }
  - { name: nginx_h1, hosts: ["127.0.0.1:$P_NG1"] }
YAML
    mkdir -p "$TMP/cg"
    log "CALLGRIND=1: switchyard under valgrind --tool=callgrind, $CG_N requests per hot path"
    start switchyard-cg env RUST_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind \
        --callgrind-out-file="$TMP/cg/callgrind.out" "$SY_BIN" run -c "$TMP/switchyard-cg.yaml"
    local vpid
    vpid=$(pid_of switchyard-cg)
    wait_until switchyard-cg 180 http_ok "$p_cg_admin" /ready
    local name
    for name in "redis GET -P1" "http1 GET 34B"; do
        local load=()
        case $name in
            redis*) load=(redis-benchmark -h 127.0.0.1 -p "$p_cg" -t get -P 1 -c 1 -q --csv -n) ;;
            http1*) load=(h2load --h1 -c 1 -m 1 "http://127.0.0.1:$p_cg/b34.html" -n) ;;
        esac
        timeout 300 "${load[@]}" 200 >/dev/null 2>&1 || die "callgrind warm-up of '$name' failed"
        callgrind_control -z "$vpid" >/dev/null 2>&1 || die "callgrind_control -z $vpid failed"
        local before after
        before=$(ls "$TMP/cg" | wc -l)
        timeout 600 "${load[@]}" "$CG_N" >"$RAW/callgrind-${name// /_}.txt" 2>&1 || die "callgrind run of '$name' failed"
        callgrind_control -d "$vpid" >/dev/null 2>&1 || die "callgrind_control -d $vpid failed"
        local f="" i
        for i in $(seq 100); do
            after=$(ls "$TMP/cg" | wc -l)
            ((after > before)) && { f=$(ls -t "$TMP/cg"/callgrind.out* | head -1); break; }
            sleep 0.2
        done
        [[ -n $f ]] || die "callgrind wrote no dump for '$name'"
        local ir
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$f")
        [[ -n $ir ]] || die "no instruction total in $f"
        printf '%s\t%s\t%s\n' "$name" "$CG_N" "$ir" >>"$CG"
        log "  callgrind $name: $ir instructions / $CG_N requests = $((ir / CG_N)) per request"
    done
    kill -TERM "$vpid" 2>/dev/null || true
}

# ---------------------------------------------------------------- warm-up, rounds
log "warm-up (not measured)"
SAVE_DURATION=$DURATION
DURATION=1
ROUND=0
want http1 && for p in $P_NG1 $P_SY_WEB $P_HA_H1 $P_NGP; do timeout 20 wrk -t1 -c8 -d1s "http://127.0.0.1:$p/b1024.html" >/dev/null 2>&1 || true; done
want h2 && for p in $P_NG2 $P_SY_WEB $P_HA_H2; do timeout 20 h2load -c2 -m4 -n 2000 "http://127.0.0.1:$p/b1024.html" >/dev/null 2>&1 || true; done
want redis && for p in $P_REDIS $P_SY_REDIS $P_NUT; do timeout 30 redis-benchmark -p "$p" -t get -n 20000 -c 50 -q >/dev/null 2>&1 || true; done
DURATION=$SAVE_DURATION
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$SECONDS
rss_rounds=()
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "round $ROUND/$ROUNDS"
    run_round
    kill -0 "$SY_PID" 2>/dev/null || { ERRORS+=("switchyard (pid $SY_PID) DIED during round $ROUND"); break; }
    rss_rounds+=("$(rss_kb "$SY_PID")")
done
elapsed=$((SECONDS - t0))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
kill -0 "$SY_PID" 2>/dev/null && timeout 5 curl -fsS "http://127.0.0.1:$P_SY_ADMIN/metrics" >"$TMP/switchyard-metrics.txt" 2>/dev/null || true

# ---------------------------------------------------------------- CALLGRIND=1: instructions per request
CG=$TMP/callgrind.tsv
: >"$CG"
if [[ $CALLGRIND == 1 ]]; then
    callgrind_run
fi

# ---------------------------------------------------------------- report
cat >"$TMP/meta.json" <<EOF
{"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)$([[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]] && echo '+dirty')",
 "rounds": $ROUNDS, "duration_s": $DURATION, "n": $N, "idle_n": $IDLE_N, "quick": $QUICK, "only": "$ONLY",
 "nproc": $(nproc), "load_before": "$load_before", "load_after": "$load_after", "elapsed_s": $elapsed,
 "switchyard_threads": "${SWITCHYARD_THREADS:-default}", "switchyard_rss_idle_kb": $sy_rss_idle,
 "switchyard_rss_after_rounds_kb": [$(IFS=,; echo "${rss_rounds[*]:-}")], "kernel": "$(uname -r)"}
EOF
python3 "$HERE/report.py" "$RES" "$CG" "$TMP/meta.json" "$OUT" || die "report.py failed (raw cells in $RES)"
cp "$RES" "$OUT/cells.tsv"
cat "$OUT/results.md"
log "results: $OUT/results.json, $OUT/results.md, $OUT/ratios.png"
if ((${#ERRORS[@]})); then
    printf '\nERRORS during the benchmark (raw outputs kept in %s):\n' "$RAW" >&2
    printf '  - %s\n' "${ERRORS[@]}" >&2
    KEEP=1
    exit 2
fi
