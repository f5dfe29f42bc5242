#!/usr/bin/env bash
# MySQL benchmark of Switchyard against the real server and against HAProxy, in ONE run:
#
#   sysbench oltp_read_only (--threads $THREADS, --time $DURATION, prepared statements):
#     MariaDB direct | switchyard (protocol: mysql, gateway-side auth, pooled backends) | HAProxy mode tcp
#
# A private mariadbd (its own datadir from mariadb-install-db) on a free port; the gateway
# logs in to it as its own backend user. Rounds are interleaved (direct, switchyard,
# haproxy, ...) and the median transactions/s of the rounds is reported with the ratios.
# Everything listens on 127.0.0.1 on free ports; everything started here is killed on exit.
#
# Usage:   labs/db/mysql-bench.sh          (the lead's labs/db/run.sh calls it)
# Knobs (environment):
#   ROUNDS=3           interleaved rounds; the median is reported
#   DURATION=20        sysbench seconds per target per round
#   THREADS=8          sysbench threads (client connections)
#   TABLES=4 SIZE=10000  sysbench tables and rows per table
#   SWITCHYARD_BIN=... use this binary instead of `cargo build --release`
#   KEEP=0             1: keep the temp dir (configs, logs, raw outputs)
#   OUT=FILE           also write the markdown table to FILE
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20}
THREADS=${THREADS:-8}
TABLES=${TABLES:-4}
SIZE=${SIZE:-10000}
KEEP=${KEEP:-0}
OUT=${OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PATH="$PATH:/usr/sbin:/usr/local/sbin"

log() { printf '[mysql-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[mysql-bench] FATAL: %s\n' "$*" >&2; exit 1; }

for v in ROUNDS DURATION THREADS TABLES SIZE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

declare -A PKG=([mariadbd]=mariadb-server [mariadb-install-db]=mariadb-server [mariadb]=mariadb-client
                [sysbench]=sysbench [haproxy]=haproxy [python3]=python3)
missing=()
for b in mariadbd mariadb-install-db mariadb sysbench haproxy python3; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b (Debian package: ${PKG[$b]})")
done
if ((${#missing[@]})); then
    printf '[mysql-bench] FATAL: missing peer binaries:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install with: apt-get install -y --no-install-recommends mariadb-server mariadb-client sysbench haproxy\n' >&2
    exit 1
fi

if [[ -n ${SWITCHYARD_BIN:-} ]]; then
    [[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable"
    SY_BIN=$SWITCHYARD_BIN
else
    command -v cargo >/dev/null || die "cargo not found and SWITCHYARD_BIN not given"
    log "building switchyard (cargo build --release)"
    (cd "$ROOT" && cargo build --release --bin switchyard) || die "cargo build --release failed"
    SY_BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/switchyard
    [[ -x $SY_BIN ]] || die "built, but $SY_BIN is not there"
fi

TMP=$(mktemp -d /tmp/switchyard-mysql.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 || $rc != 0 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r P_DB P_SY P_SY_ADMIN P_HA < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
log "ports: mariadb=$P_DB switchyard=$P_SY (admin $P_SY_ADMIN) haproxy=$P_HA"

# ---------------------------------------------------------------- MariaDB
mariadb-install-db --no-defaults --datadir="$TMP/data" --auth-root-authentication-method=normal \
    --skip-test-db --user="$(id -un)" >"$TMP/install.log" 2>&1 || die "mariadb-install-db failed (see $TMP/install.log)"
mariadbd --no-defaults --datadir="$TMP/data" --socket="$TMP/s.sock" --port="$P_DB" --bind-address=127.0.0.1 \
    --user="$(id -un)" --innodb-buffer-pool-size=256M --skip-log-bin --skip-name-resolve \
    --max-connections=1000 >"$TMP/mariadbd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    mariadb --no-defaults -uroot -h127.0.0.1 -P"$P_DB" -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done
mariadb --no-defaults -uroot -h127.0.0.1 -P"$P_DB" -e "
    CREATE USER bench@'%' IDENTIFIED BY 'bench-pw'; GRANT ALL ON *.* TO bench@'%';
    CREATE USER sy_proxy@'%' IDENTIFIED BY 'proxy-pw'; GRANT ALL ON *.* TO sy_proxy@'%';
    CREATE DATABASE sbtest;" || die "cannot set up MariaDB (see $TMP/mariadbd.log)"

SB_COMMON=(--mysql-host=127.0.0.1 --mysql-user=bench --mysql-password=bench-pw --mysql-db=sbtest
           --tables="$TABLES" --table-size="$SIZE")
log "sysbench prepare ($TABLES tables x $SIZE rows)"
sysbench oltp_read_only "${SB_COMMON[@]}" --mysql-port="$P_DB" prepare >"$TMP/prepare.log" 2>&1 ||
    die "sysbench prepare failed (see $TMP/prepare.log)"

# ---------------------------------------------------------------- switchyard, haproxy
cat >"$TMP/switchyard.yaml" <<YAML
admin: { address: "127.0.0.1:$P_SY_ADMIN" }
listeners:
  - name: db
    address: "127.0.0.1:$P_SY"
    protocol: mysql
    route_table: sql
    mysql:
      users:
        - { username: bench, password: bench-pw }
route_tables:
  - name: sql
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - cluster: mariadb
clusters:
  - name: mariadb
    hosts: ["127.0.0.1:$P_DB"]
    max_idle_per_host: 256
    mysql: { user: sy_proxy, password: proxy-pw, max_connections: 512 }
YAML
"$SY_BIN" check "$TMP/switchyard.yaml" >/dev/null || die "switchyard rejects its config"
RUST_LOG=warn "$SY_BIN" run -c "$TMP/switchyard.yaml" >"$TMP/switchyard.log" 2>&1 &
PIDS+=($!)

cat >"$TMP/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend mysql
    bind 127.0.0.1:$P_HA
    default_backend mysql
backend mysql
    server db 127.0.0.1:$P_DB
CFG
haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    mariadb --no-defaults -ubench -pbench-pw -h127.0.0.1 -P"$P_SY" -e 'SELECT 1' >/dev/null 2>&1 &&
        mariadb --no-defaults -ubench -pbench-pw -h127.0.0.1 -P"$P_HA" -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done

# ---------------------------------------------------------------- rounds
declare -A TPS
run_one() { # name port round
    local out="$TMP/raw/$1-$3.txt"
    mkdir -p "$TMP/raw"
    sysbench oltp_read_only "${SB_COMMON[@]}" --mysql-port="$2" --threads="$THREADS" --time="$DURATION" \
        --report-interval=0 run >"$out" 2>&1 || die "sysbench against $1 failed (see $out)"
    local errors tps
    errors=$(awk '/ignored errors:/ {print $3}' "$out")
    tps=$(awk '/transactions:/ {gsub(/[()]/, "", $3); print $3}' "$out")
    [[ $errors == 0 ]] || die "sysbench against $1 reported $errors errors (see $out)"
    TPS[$1]+="$tps "
    log "round $3 $1: $tps transactions/s"
}
for r in $(seq "$ROUNDS"); do
    run_one direct "$P_DB" "$r"
    run_one switchyard "$P_SY" "$r"
    run_one haproxy "$P_HA" "$r"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
D=$(median <<<"${TPS[direct]}")
S=$(median <<<"${TPS[switchyard]}")
H=$(median <<<"${TPS[haproxy]}")
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
VERSION=$(mariadbd --version | awk '{print $3}')
TABLE="sysbench oltp_read_only, $THREADS threads, ${DURATION}s per run, $ROUNDS interleaved rounds, MariaDB $VERSION, $TABLES tables x $SIZE rows

| target | transactions/s (median) | vs direct | per round |
|---|---:|---:|---|
| MariaDB direct | $D | 1.00x | ${TPS[direct]}|
| switchyard (protocol: mysql) | $S | $(ratio "$S" "$D") | ${TPS[switchyard]}|
| HAProxy mode tcp | $H | $(ratio "$H" "$D") | ${TPS[haproxy]}|

switchyard / HAProxy: $(ratio "$S" "$H")"
printf '%s\n' "$TABLE"
[[ -z $OUT ]] || printf '%s\n' "$TABLE" >"$OUT"
