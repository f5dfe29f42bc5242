#!/usr/bin/env bash
# The IoT Lab: a device fleet behind Switchyard, in ONE command.
#
#   200 devices ──MQTT 5──► switchyard (auth, topic ACL, rate limit, ring hash on client id)
#                                ├──► mosquitto A ──► ops-a subscriber (devices/+/telemetry)
#                                └──► mosquitto B ──► ops-b subscriber
#   + misbehaving clients: wrong password, no credentials, publishing into another
#     device's topic, subscribing to everything, publishing faster than the rate limit.
#
# Builds (release), starts two private mosquitto brokers and the gateway on free loopback
# ports, runs the fleet, prints a markdown report (connected devices, delivered msgs/s,
# publish->deliver latency, ACL denials, auth failures, rate limiting, devices per broker,
# gateway RSS) and checks it. Everything started here is stopped on exit.
#
# Usage:   labs/iot/run.sh
# Knobs (environment):
#   DEVICES=200        devices in the fleet
#   RATE=5             PUBLISH/s per device
#   DURATION=20        seconds each device publishes
#   QOS=1              0 or 1
#   SIZE=64            payload bytes
#   SWITCHYARD_BIN=    use this gateway binary instead of building
#   LOADGEN_DIR=       use the mqtt-* binaries from this folder instead of building
#   KEEP=0             1: keep the temp dir (configs, logs, JSON outputs, /metrics)
#   OUT=FILE           also write the report to FILE
set -euo pipefail

DEVICES=${DEVICES:-200}
RATE=${RATE:-5}
DURATION=${DURATION:-20}
QOS=${QOS:-1}
SIZE=${SIZE:-64}
KEEP=${KEEP:-0}
OUT=${OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

log() { printf '[iot %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[iot] FATAL: %s\n' "$*" >&2; exit 1; }

for v in DEVICES RATE DURATION SIZE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $QOS == 0 || $QOS == 1 ]] || die "QOS must be 0 or 1"
((SIZE >= 32)) || die "SIZE must be at least 32 (timestamp and sequence number)"
((DURATION <= 600)) || die "DURATION is capped at 600 s"

# ---------------------------------------------------------------- tools present?
PATH="$PATH:/usr/sbin:/sbin"
declare -A PKG=(
    [mosquitto]=mosquitto [mosquitto_passwd]=mosquitto [mosquitto_sub]=mosquitto-clients
    [curl]=curl [python3]=python3 [timeout]=coreutils
)
missing=()
for b in mosquitto mosquitto_passwd mosquitto_sub curl python3 timeout; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b (Debian package: ${PKG[$b]})")
done
if ((${#missing[@]})); then
    printf '[iot] FATAL: missing binaries:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install with: apt-get install -y --no-install-recommends mosquitto mosquitto-clients curl python3\n' >&2
    exit 1
fi

# ---------------------------------------------------------------- binaries
target_dir() {
    (cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
}
if [[ -z ${SWITCHYARD_BIN:-} || -z ${LOADGEN_DIR:-} ]]; then
    command -v cargo >/dev/null || die "cargo not found (install Rust), and SWITCHYARD_BIN / LOADGEN_DIR not given"
    log "building (cargo build --release, CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default>})"
    (cd "$ROOT" && cargo build --release -p switchyard -p switchyard-loadgen --bin switchyard --bin mqtt-fleet --bin mqtt-idle --bin mqtt-bench) ||
        die "cargo build --release failed"
    TD=$(target_dir)
fi
SY_BIN=${SWITCHYARD_BIN:-$TD/release/switchyard}
LG=${LOADGEN_DIR:-$TD/release}
[[ -x $SY_BIN ]] || die "$SY_BIN is not an executable"
for b in mqtt-fleet mqtt-idle mqtt-bench; do [[ -x $LG/$b ]] || die "$LG/$b is not an executable"; done
log "gateway: $SY_BIN; load generators: $LG"

# Sockets are files: give every process started here the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d /tmp/switchyard-iot.XXXXXX)
PIDS=()
NAMES=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    for i in "${!PIDS[@]}"; do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
        local alive=0
        for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for i in "${!PIDS[@]}"; do
        if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            log "${NAMES[$i]} (pid ${PIDS[$i]}) ignored SIGTERM; SIGKILL"
            kill -KILL "${PIDS[$i]}" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "kept $TMP (configs, logs, JSON outputs)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name cmd...   (stdout+stderr to $TMP/name.log)
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
    log "started $name (pid $!)"
}
forget_pid() { # pid: waited for, no longer ours to clean up (its number may be reused)
    local i
    for i in "${!PIDS[@]}"; do
        [[ ${PIDS[$i]} == "$1" ]] && unset 'PIDS[i]' 'NAMES[i]'
    done
    return 0
}
pid_of() {
    local i
    for i in "${!NAMES[@]}"; do [[ ${NAMES[$i]} == "$1" ]] && echo "${PIDS[$i]}"; done
    return 0
}
wait_until() { # name seconds cmd...
    local name=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs)) pid
    pid=$(pid_of "$name")
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name exited during startup (log above, $TMP/$name.log)"
        fi
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name not ready after ${secs}s"; }
        sleep 0.1
    done
}
port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }
http_ok() { timeout 2 curl -fsS -o /dev/null "http://127.0.0.1:$1$2"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- ports, configs
read -r P_A P_B P_SY P_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
log "ports: mosquitto A=$P_A B=$P_B switchyard=$P_SY (admin $P_ADMIN); ulimit -n $NOFILE"

for b in a b; do
    port=$P_A
    [[ $b == b ]] && port=$P_B
    cat >"$TMP/mosquitto-$b.conf" <<EOF
# IoT Lab broker $b (generated by labs/iot/run.sh)
listener $port 127.0.0.1
# The gateway authenticates; the brokers listen on loopback only.
allow_anonymous true
max_connections -1
# No drops for a slow QoS 1 subscriber under load (default: 1000 queued, then dropped).
max_queued_messages 0
max_inflight_messages 100
# Without it small PUBACKs and deliveries wait for the peer's delayed ACK (~40 ms).
set_tcp_nodelay true
persistence false
# \$SYS/broker/clients/connected, refreshed every second.
sys_interval 1
log_dest stdout
log_type error
log_type warning
EOF
done

PW_DEVICE=device-secret
PW_OPS=ops-secret
mosquitto_passwd -c -b "$TMP/passwd" device "$PW_DEVICE" >/dev/null 2>&1 || die "mosquitto_passwd failed"
mosquitto_passwd -b "$TMP/passwd" ops "$PW_OPS" >/dev/null 2>&1 || die "mosquitto_passwd failed"
chmod 600 "$TMP/passwd"

sed -e "s|@P_A@|$P_A|g" -e "s|@P_B@|$P_B|g" -e "s|@P_SY@|$P_SY|g" -e "s|@P_ADMIN@|$P_ADMIN|g" \
    "$HERE/switchyard.yaml.in" >"$TMP/switchyard.yaml"
"$SY_BIN" check "$TMP/switchyard.yaml" >"$TMP/switchyard-check.log" 2>&1 ||
    { cat "$TMP/switchyard-check.log" >&2; die "switchyard rejected its config"; }

# ---------------------------------------------------------------- start
start mosquitto-a mosquitto -c "$TMP/mosquitto-a.conf"
start mosquitto-b mosquitto -c "$TMP/mosquitto-b.conf"
wait_until mosquitto-a 10 port_open "$P_A"
wait_until mosquitto-b 10 port_open "$P_B"
start switchyard env RUST_LOG="${RUST_LOG:-info}" "$SY_BIN" run -c "$TMP/switchyard.yaml"
wait_until switchyard 20 http_ok "$P_ADMIN" /ready
wait_until switchyard 5 port_open "$P_SY"
SY_PID=$(pid_of switchyard)
rss_idle=$(rss_kb "$SY_PID")
log "all up; switchyard RSS at idle: $rss_idle kB"

# ---------------------------------------------------------------- the fleet and the misbehaving
ADDR=127.0.0.1:$P_SY
FLEET=(--addr "$ADDR" --qos "$QOS" --size "$SIZE" --mqtt 5)
T_FLEET=$((DURATION + 60))
log "fleet: $DEVICES devices x $RATE msg/s x ${DURATION}s, QoS $QOS, MQTT 5; subscribers ops-a (broker A), ops-b (broker B)"
timeout "$T_FLEET" "$LG/mqtt-fleet" "${FLEET[@]}" --label fleet --devices "$DEVICES" --rate "$RATE" \
    --duration "$DURATION" --user device --password "$PW_DEVICE" --ramp 2 \
    --sub ops-a --sub ops-b --sub-user ops --sub-password "$PW_OPS" --seen-file "$TMP/seen-1.txt" \
    >"$TMP/fleet.json" 2>"$TMP/fleet.err" &
FLEET_PID=$!
PIDS+=("$FLEET_PID"); NAMES+=(mqtt-fleet)
sleep 3 # the fleet is connected and publishing
MIS_D=$(( DURATION < 10 ? DURATION : 10 ))
# wrong password (3 devices), no credentials at all (1)
timeout 60 "$LG/mqtt-fleet" "${FLEET[@]}" --label bad-password --devices 3 --id-prefix rogue- \
    --user device --password not-the-password --duration 1 >"$TMP/bad-password.json" 2>&1 &
M1=$!
PIDS+=("$M1"); NAMES+=(mqtt-fleet-M1)
timeout 60 "$LG/mqtt-fleet" "${FLEET[@]}" --label anonymous --devices 1 --id-prefix anon- \
    --duration 1 >"$TMP/anonymous.json" 2>&1 &
M2=$!
PIDS+=("$M2"); NAMES+=(mqtt-fleet-M2)
# authenticated, but publishing into dev-0's and dev-1's topics (2 devices x 2 msg/s)
timeout 60 "$LG/mqtt-fleet" "${FLEET[@]}" --label spoofer --devices 2 --id-prefix spoof- \
    --user device --password "$PW_DEVICE" --topic 'devices/dev-%i/telemetry' --rate 2 --duration "$MIS_D" \
    >"$TMP/spoofer.json" 2>&1 &
M3=$!
PIDS+=("$M3"); NAMES+=(mqtt-fleet-M3)
# authenticated device subscribing to every device's topics
timeout 60 "$LG/mqtt-fleet" "${FLEET[@]}" --label snoop --devices 0 --sub snoop-0 \
    --sub-user device --sub-password "$PW_DEVICE" --duration 1 >"$TMP/snoop.json" 2>&1 &
M4=$!
PIDS+=("$M4"); NAMES+=(mqtt-fleet-M4)
# a device publishing 100 msg/s, over the 20/s (burst 40) limit
timeout 60 "$LG/mqtt-fleet" "${FLEET[@]}" --label chatty --devices 1 --id-prefix chatty- \
    --user device --password "$PW_DEVICE" --rate 100 --duration "$MIS_D" >"$TMP/chatty.json" 2>&1 &
M5=$!
PIDS+=("$M5"); NAMES+=(mqtt-fleet-M5)

# Mid-run: clients connected to each broker ($SYS, published every second), gateway RSS.
sleep $(( DURATION / 2 > 4 ? DURATION / 2 - 3 : 1 ))
sys_a=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$P_A" -t '$SYS/broker/clients/connected' -C 1 -W 5 2>/dev/null || echo n/a)
sys_b=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$P_B" -t '$SYS/broker/clients/connected' -C 1 -W 5 2>/dev/null || echo n/a)
rss_mid=$(rss_kb "$SY_PID")
log "mid-run: broker A $sys_a clients, broker B $sys_b clients; switchyard RSS $rss_mid kB"

rc_fleet=0
wait "$FLEET_PID" || rc_fleet=$?
forget_pid "$FLEET_PID"
for p in $M1 $M2 $M3 $M4 $M5; do wait "$p" || true; forget_pid "$p"; done
[[ $rc_fleet == 0 && -s $TMP/fleet.json ]] || { cat "$TMP/fleet.err" >&2; die "mqtt-fleet failed (rc=$rc_fleet)"; }

kill -0 "$SY_PID" 2>/dev/null || die "switchyard DIED during the run (log: $TMP/switchyard.log)"
rss_end=$(rss_kb "$SY_PID")
rss_hwm=$(hwm_kb "$SY_PID")
sy_threads=$(awk '/^Threads/ {print $2}' "/proc/$SY_PID/status")
timeout 5 curl -fsS "http://127.0.0.1:$P_ADMIN/metrics" >"$TMP/metrics.txt" || die "cannot scrape /metrics"
sy_warn=$(grep -c -E ' (WARN|ERROR) ' "$TMP/switchyard.log" || true)

# (The numbers above are of the main run.) Reconnect the whole fleet (new TCP connections, same client ids) for 2 s:
# ring hash on the client id must send every device to the broker it had.
log "reconnect pass: $DEVICES devices, 2 s, checking each lands on the same broker"
timeout 60 "$LG/mqtt-fleet" "${FLEET[@]}" --label reconnect --devices "$DEVICES" --rate 2 --duration 2 \
    --user device --password "$PW_DEVICE" --ramp 1 --grace 2 \
    --sub ops-a --sub ops-b --sub-user ops --sub-password "$PW_OPS" --seen-file "$TMP/seen-2.txt" \
    >"$TMP/reconnect.json" 2>"$TMP/reconnect.err" || log "reconnect pass failed (see $TMP/reconnect.err)"

# ---------------------------------------------------------------- report
REPORT=$TMP/report.md
rc=0
python3 - "$TMP" "$DEVICES" "$RATE" "$DURATION" "$QOS" "$SIZE" "$rss_idle" "$rss_mid" "$rss_end" "$rss_hwm" \
    "$sy_threads" "$sys_a" "$sys_b" "$sy_warn" >"$REPORT" <<'EOF' || rc=$?
import json, re, sys, os
(tmp, devices, rate, duration, qos, size, rss_idle, rss_mid, rss_end, rss_hwm,
 threads, sys_a, sys_b, warn) = sys.argv[1:]
devices, rate, duration = int(devices), int(rate), int(duration)

def load(name):
    try:
        return json.loads(open(os.path.join(tmp, name + ".json")).read().strip().splitlines()[-1])
    except Exception as e:
        return {"error": f"no result ({e})"}

fleet, bad, anon, spoof, snoop, chatty = (load(n) for n in
    ("fleet", "bad-password", "anonymous", "spoofer", "snoop", "chatty"))

metrics = {}
for line in open(os.path.join(tmp, "metrics.txt")):
    m = re.match(r'^(switchyard_mqtt_[a-z_]+)(\{[^}]*\})?\s+([0-9.e+-]+)$', line.strip())
    if m:
        metrics.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
def metric(name, **labels):
    total = 0.0
    for lab, v in metrics.get(name, []):
        if all(f'{k}="{val}"' in lab for k, val in labels.items()):
            total += v
    return int(total)

accepted = metric("switchyard_mqtt_connects_total", outcome="accepted")
bad_cred = metric("switchyard_mqtt_connects_total", outcome="bad_credentials")
not_auth = metric("switchyard_mqtt_connects_total", outcome="not_authorized")
acl_denied = metric("switchyard_mqtt_acl_denied_total")
rate_limited = metric("switchyard_filter_verdicts_total", filter="rate_limit", verdict="refuse")
pub_in = metric("switchyard_mqtt_publishes_total", direction="client_to_broker")
pub_out = metric("switchyard_mqtt_publishes_total", direction="broker_to_client")

def g(d, *path, default="n/a"):
    for p in path:
        if not isinstance(d, dict) or p not in d or d[p] is None:
            return default
        d = d[p]
    return d

subs = {s["client_id"]: s for s in fleet.get("subscribers", [])}

def seen(name):
    m = {}
    try:
        for line in open(os.path.join(tmp, name)):
            sub, dev = line.split()
            m.setdefault(dev, set()).add(sub)
    except OSError:
        pass
    return m
seen1, seen2 = seen("seen-1.txt"), seen("seen-2.txt")
same = sum(1 for d, s in seen2.items() if seen1.get(d) == s)
moved = sum(1 for d, s in seen2.items() if d in seen1 and seen1[d] != s)
both = sum(1 for s in list(seen1.values()) + list(seen2.values()) if len(s) > 1)
seen_a = g(subs.get("ops-a", {}), "devices_seen")
seen_b = g(subs.get("ops-b", {}), "devices_seen")
failures = lambda d: ", ".join(f"{k}×{v}" for k, v in g(d, "connect_failures", default={}).items()) or "none"
snoop_sub = (snoop.get("subscribers") or [{}])[0]

rows = [
    ("devices connected (fleet)", f"{g(fleet,'connected')} / {devices}", "mqtt-fleet"),
    ("sessions accepted by the gateway", f"{accepted}", "`switchyard_mqtt_connects_total{outcome=\"accepted\"}` (the fleet + ops-a, ops-b + 2 spoofers, snoop, chatty)"),
    ("offered load", f"{g(fleet,'offered_per_s')} msg/s", f"{devices} devices × {rate} msg/s, QoS {qos}, {size} B payload, MQTT 5"),
    ("delivered", f"**{g(fleet,'delivered_per_s')} msg/s** ({g(fleet,'delivered_per_s_window')})", f"{g(fleet,'delivered')} messages to ops-a + ops-b; delivery ratio {g(fleet,'delivery_ratio')} of acknowledged publishes"),
    ("publish → deliver latency", f"p50 {g(fleet,'latency_ms','p50')} ms, **p99 {g(fleet,'latency_ms','p99')} ms**, max {g(fleet,'latency_ms','max')} ms", "device → gateway → broker → gateway → subscriber (payload timestamp)"),
    ("PUBACK round trip", f"p50 {g(fleet,'puback_latency_ms','p50')} ms, p99 {g(fleet,'puback_latency_ms','p99')} ms", "device → gateway → broker → gateway → device"),
    ("auth failures", f"**{bad_cred + not_auth}** (bad_credentials {bad_cred}, not_authorized {not_auth})", f"`switchyard_mqtt_connects_total`; the clients saw: wrong password {failures(bad)}; no credentials {failures(anon)}"),
    ("ACL denials", f"**{acl_denied}**", f"`switchyard_mqtt_acl_denied_total`; the clients saw: spoofers {g(spoof,'denied_acks')} PUBACKs 0x87 of {g(spoof,'published')} publishes into dev-0/dev-1's topics; snoop SUBACK {g(snoop_sub,'suback')} for devices/+/telemetry"),
    ("rate limited", f"**{rate_limited}**", f"`switchyard_filter_verdicts_total{{filter=rate_limit,verdict=refuse}}`; chatty device (100 msg/s, limit 20/s burst 40): {g(chatty,'rate_limited_acks')} refused (PUBACK reason codes {', '.join(f'{k}×{v}' for k, v in g(chatty, 'acks_with_error', default={}).items()) or 'none'}), {g(chatty,'acked_ok')} accepted"),
    ("devices per broker (ring hash)", f"A: **{seen_a}**, B: **{seen_b}**", f"distinct devices delivered by ops-a / ops-b; `$SYS/broker/clients/connected` mid-run: A {sys_a}, B {sys_b} (devices + ops subscriber + misbehaving clients on it)"),
    ("same broker after reconnect", f"**{same} / {len(seen2)}** devices (moved: {moved})", "a second pass of the whole fleet, new connections, same client ids"),
    ("PUBLISH through the gateway", f"{pub_in} in, {pub_out} out", "`switchyard_mqtt_publishes_total` client_to_broker / broker_to_client"),
    ("gateway RSS", f"{int(rss_idle)/1024:.1f} MiB idle → {int(rss_mid)/1024:.1f} MiB mid-run → {int(rss_end)/1024:.1f} MiB after (peak {int(rss_hwm)/1024:.1f} MiB)", f"threads: {threads}; WARN/ERROR log lines: {warn}"),
]
print("| what | result | from |")
print("|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")

# Checks: what the Lab is meant to show.
checks = []
def check(ok, what):
    checks.append((ok, what))
check(g(fleet, "connected", default=0) == devices, f"all {devices} devices connected")
ratio = g(fleet, "delivery_ratio", default=0)
check(isinstance(ratio, (int, float)) and ratio >= 0.99, "≥ 99 % of acknowledged publishes delivered")
check(g(bad, "connected", default=-1) == 0 and g(anon, "connected", default=-1) == 0, "wrong-password and anonymous clients refused")
check(bad_cred >= 3 and not_auth >= 1, "auth failures counted by the gateway")
check(g(spoof, "denied_acks", default=0) > 0 and g(spoof, "acked_ok", default=1) == 0, "every spoofed publish denied (PUBACK 0x87)")
check(any(c != "0x00" and c != "0x01" for c in g(snoop_sub, "suback", default=[])), "device subscribing to devices/+/telemetry refused")
check(acl_denied >= g(spoof, "published", default=0) + 1, "ACL denials counted by the gateway")
check(g(chatty, "rate_limited_acks", default=0) > 0 and rate_limited > 0, "chatty device rate limited")
check(isinstance(seen_a, int) and isinstance(seen_b, int) and seen_a > 0 and seen_b > 0
      and seen_a + seen_b == devices and both == 0, "every device on exactly one broker, both brokers used")
check(len(seen2) == devices and same == devices, "after reconnecting, every device reached the same broker")
print()
for ok, what in checks:
    print(f"- {'PASS' if ok else 'FAIL'}: {what}")
sys.exit(0 if all(ok for ok, _ in checks) else 2)
EOF

{
    echo
    echo "## Switchyard IoT Lab ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    cat "$REPORT"
    echo
    echo "- gateway: one MQTT listener, auth (mosquitto_passwd file), ACL \`devices/%c/#\` + \`ops\` may subscribe \`devices/#\`, 20 msg/s per client (drop), \`ring_hash\` on \`client_id\` over 2 mosquitto brokers; config: labs/iot/switchyard.yaml.in"
    echo "- $(mosquitto -h 2>/dev/null | head -1 | sed 's/ version / /'); kernel $(uname -r); nproc $(nproc); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- switchyard commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)$([[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]] && echo ' + uncommitted changes')"
} | tee "$TMP/report-full.md"
[[ -n $OUT ]] && cp "$TMP/report-full.md" "$OUT"
if ((rc != 0)); then
    echo
    echo "Some checks FAILED (raw JSON, logs and /metrics in $TMP)."
    KEEP=1
    exit 2
fi
