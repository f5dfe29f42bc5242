#!/usr/bin/env bash
# DB Lab, memcached half: four private memcached servers (one the direct
# baseline, three the pool), twemproxy (nutcracker, a ketama/fnv1a_64
# memcached pool) and Switchyard (`clusters[].memcached`, the same ketama)
# over the same three, then memcslap (libmemcached-tools) set and get
# against each in interleaved rounds. Fails if memcslap reports an error;
# prints a markdown table of the medians (keys/s) and the ratios.
#
# Usage: labs/db/memcached-bench.sh
# Knobs: ROUNDS=3  N=20000 (keys per thread)  CONNS=4 (memcslap threads)
#        SWITCHYARD_BIN=...  KEEP=0
set -euo pipefail
LAB=db-memcached
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib.sh
source "$ROOT/labs/lib.sh"

ROUNDS=${ROUNDS:-3}
N=${N:-20000}
CONNS=${CONNS:-4}

need memcached:memcached memcslap:libmemcached-tools nutcracker:nutcracker python3:python3
switchyard_bin "$ROOT"
lab_tmp

read -r M0 M1 M2 M3 P_NUT P_SY P_ADMIN < <(free_ports 7)
for p in $M0 $M1 $M2 $M3; do
    spawn "memcached-$p" memcached -p "$p" -U 0 -l 127.0.0.1 -m 256 -t 1 -u root
done
cat >"$TMP/nutcracker.yml" <<YML
pool:
  listen: 127.0.0.1:$P_NUT
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  preconnect: true
  timeout: 10000
  servers:
    - 127.0.0.1:$M1:1
    - 127.0.0.1:$M2:1
    - 127.0.0.1:$M3:1
YML
cat >"$TMP/switchyard.yaml" <<YML
admin:
  address: 127.0.0.1:$P_ADMIN
listeners:
  - name: cache
    address: 127.0.0.1:$P_SY
    protocols: [memcached, redis, http1]
    route_table: db
route_tables:
  - name: db
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - {match: {protocol: memcached}, cluster: pool}
clusters:
  - name: pool
    hosts: ["127.0.0.1:$M1", "127.0.0.1:$M2", "127.0.0.1:$M3"]
    memcached: {hash: fnv1a_64}
YML
for p in $M0 $M1 $M2 $M3; do wait_port "$p" memcached; done
spawn nutcracker nutcracker -c "$TMP/nutcracker.yml" -s "$(free_ports 1)"
spawn switchyard env RUST_LOG=warn "$SY_BIN" run -c "$TMP/switchyard.yaml"
wait_port "$P_NUT" twemproxy
wait_port "$P_SY" switchyard
log "pool $M1 $M2 $M3; direct $M0; twemproxy $P_NUT; switchyard $P_SY"

TARGETS=("direct:$M0" "switchyard:$P_SY" "twemproxy:$P_NUT")
: >"$TMP/results.csv"
bench() { # target port round
    local t=$1 p=$2 r=$3 test out secs keys
    for test in set get; do
        out=$(memcslap --servers="127.0.0.1:$p" --concurrency="$CONNS" --execute-number="$N" --test="$test" 2>&1) \
            || die "memcslap --test=$test vs $t failed: $out"
        if grep -qiE 'error|fail' <<<"$out"; then die "memcslap vs $t reported: $out"; fi
        if [[ $test == set ]]; then
            # "Time to set N keys by T threads: S seconds."
            read -r keys secs < <(sed -nE 's/^Time to set +([0-9]+) keys by.*: +([0-9.]+) seconds.*/\1 \2/p' <<<"$out" | tail -1)
        else
            read -r keys secs < <(sed -nE 's/^Time to get +([0-9]+) keys by.*: +([0-9.]+) seconds.*/\1 \2/p' <<<"$out" | tail -1)
        fi
        [[ -n ${secs:-} ]] || die "no timing in memcslap's output: $out"
        echo "$t,$r,$test,$keys,$secs" >>"$TMP/results.csv"
    done
    log "  round $r $t: $(grep "^$t,$r," "$TMP/results.csv" | awk -F, '{printf "%s %.0f/s  ", $3, $4 / $5}')"
}
started=$(date +%s)
for r in $(seq "$ROUNDS"); do
    for tp in "${TARGETS[@]}"; do bench "${tp%%:*}" "${tp#*:}" "$r"; done
done
items=$(for p in $M1 $M2 $M3; do
    exec 3<>"/dev/tcp/127.0.0.1/$p"; printf 'stats\r\nquit\r\n' >&3
    sed -nE 's/^STAT curr_items ([0-9]+).*/\1/p' <&3; exec 3<&-
done | tr '\n' ' ')

python3 - "$TMP/results.csv" <<'PY'
import csv, statistics, sys
data = {}
for t, r, test, keys, secs in csv.reader(open(sys.argv[1])):
    data.setdefault((test, t), []).append(float(keys) / max(float(secs), 1e-6))
print("| test | direct (1 server) | switchyard (3 servers) | twemproxy (3 servers) | switchyard / direct | switchyard / twemproxy |")
print("|---|---|---|---|---|---|")
for test in ["set", "get"]:
    m = {t: statistics.median(data[(test, t)]) for t in ["direct", "switchyard", "twemproxy"]}
    print(f"| {test} | {m['direct']:,.0f}/s | {m['switchyard']:,.0f}/s | {m['twemproxy']:,.0f}/s "
          f"| {m['switchyard']/m['direct']:.2f}x | **{m['switchyard']/m['twemproxy']:.2f}x** |")
PY
echo
echo "- memcslap --concurrency=$CONNS --execute-number=$N (--test=set, --test=get); $ROUNDS interleaved rounds, medians; $(( $(date +%s) - started ))s"
echo "- items per pool server after the run: $items"
echo "- $(memcached -V), $(nutcracker --version 2>&1 | head -1 | sed 's/This is //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
