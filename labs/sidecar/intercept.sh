#!/usr/bin/env bash
# Sidecar interception with iptables (nat table; Debian's `iptables`, the
# nf_tables backend works: SO_ORIGINAL_DST comes from conntrack either way).
#
#   intercept.sh up   [--ports 80,6379,1883 [--gateway-port 15001] [--mark 1337] [--uid UID]]
#                     [--inbound-ports 8080 [--inbound-port 15006]]
#   intercept.sh down
#   intercept.sh show
#
# Outbound (application -> world): locally made TCP connections to --ports
# are REDIRECTed to the gateway's outbound listener (--gateway-port, a
# `transparent: redirect` listener), except the gateway's own connections:
# those carrying --mark (the clusters' `mark:`, SO_MARK) and, with --uid,
# those of that user (`-m owner --uid-owner`). Either exemption prevents the
# loop in which the gateway's connection to the original destination is
# redirected back to itself.
#
# Inbound (world -> application): TCP connections arriving from other hosts
# for --inbound-ports are REDIRECTed to --inbound-port (the inbound listener).
#
# Idempotent: `up` creates (or empties and refills) its own chains
# SWITCHYARD_OUTPUT and SWITCHYARD_INBOUND and adds the one jump to each
# from OUTPUT / PREROUTING only if it is not there yet, so running it twice,
# or again with other ports, leaves one set of rules. `down` removes exactly
# those jumps and chains, nothing else. Needs root (CAP_NET_ADMIN).
set -euo pipefail

OUT_CHAIN=SWITCHYARD_OUTPUT
IN_CHAIN=SWITCHYARD_INBOUND

usage() {
    sed -n '4,10p' "$0" >&2
    exit 2
}

die() { echo "intercept.sh: $*" >&2; exit 1; }

command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] \
    || die "iptables is missing (apt-get install iptables)"
PATH="$PATH:/usr/sbin"

action=${1:-}
[ -n "$action" ] || usage
shift
ports="" gateway_port=15001 mark=1337 uid="" inbound_ports="" inbound_port=15006
while [ $# -gt 0 ]; do
    case "$1" in
        --ports) ports=${2:?}; shift 2 ;;
        --gateway-port) gateway_port=${2:?}; shift 2 ;;
        --mark) mark=${2:?}; shift 2 ;;
        --uid) uid=${2:?}; shift 2 ;;
        --inbound-ports) inbound_ports=${2:?}; shift 2 ;;
        --inbound-port) inbound_port=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) die "unknown argument $1" ;;
    esac
done

is_list() { [[ $1 =~ ^[0-9]+(:[0-9]+)?(,[0-9]+(:[0-9]+)?)*$ ]]; }
is_num() { [[ $1 =~ ^[0-9]+$ ]]; }

nat() { iptables -w -t nat "$@"; }

# ensure_jump FROM CHAIN: one `-p tcp -j CHAIN` rule in FROM.
ensure_jump() {
    nat -C "$1" -p tcp -j "$2" 2>/dev/null || nat -A "$1" -p tcp -j "$2"
}

# remove_jump FROM CHAIN: every such rule (there is one unless edited by hand).
remove_jump() {
    while nat -C "$1" -p tcp -j "$2" 2>/dev/null; do nat -D "$1" -p tcp -j "$2"; done
}

# fresh CHAIN: create it, or empty it when it exists.
fresh() {
    nat -N "$1" 2>/dev/null || nat -F "$1"
}

# drop CHAIN: empty and delete it, if it exists.
drop() {
    if nat -L "$1" -n >/dev/null 2>&1; then
        nat -F "$1"
        nat -X "$1"
    fi
}

case "$action" in
    up)
        [ -n "$ports$inbound_ports" ] \
            || die "give the outbound destination ports (--ports 80,6379; ranges as 8000:8099) and/or --inbound-ports"
        is_num "$mark" && [ "$mark" -gt 0 ] || die "--mark: '$mark' is not a mark above 0"
        [ -z "$uid" ] || is_num "$uid" || die "--uid: '$uid' is not a numeric uid"
        if [ -n "$ports" ]; then
            is_list "$ports" || die "--ports: '$ports' is not a list of ports (80,6379 or 8000:8099)"
            is_num "$gateway_port" || die "--gateway-port: '$gateway_port' is not a port"
            fresh "$OUT_CHAIN"
            # The gateway's own connections pass: its clusters set SO_MARK $mark.
            nat -A "$OUT_CHAIN" -m mark --mark "$mark" -j RETURN
            [ -z "$uid" ] || nat -A "$OUT_CHAIN" -m owner --uid-owner "$uid" -j RETURN
            # Never redirect connections to the gateway's own port.
            nat -A "$OUT_CHAIN" -p tcp --dport "$gateway_port" -j RETURN
            nat -A "$OUT_CHAIN" -p tcp -m multiport --dports "$ports" -j REDIRECT --to-ports "$gateway_port"
            ensure_jump OUTPUT "$OUT_CHAIN"
        else
            remove_jump OUTPUT "$OUT_CHAIN"
            drop "$OUT_CHAIN"
        fi
        if [ -n "$inbound_ports" ]; then
            is_list "$inbound_ports" || die "--inbound-ports: '$inbound_ports' is not a list of ports"
            is_num "$inbound_port" || die "--inbound-port: '$inbound_port' is not a port"
            fresh "$IN_CHAIN"
            nat -A "$IN_CHAIN" -p tcp -m multiport --dports "$inbound_ports" -j REDIRECT --to-ports "$inbound_port"
            ensure_jump PREROUTING "$IN_CHAIN"
        else
            remove_jump PREROUTING "$IN_CHAIN"
            drop "$IN_CHAIN"
        fi
        ;;
    down)
        remove_jump OUTPUT "$OUT_CHAIN"
        drop "$OUT_CHAIN"
        remove_jump PREROUTING "$IN_CHAIN"
        drop "$IN_CHAIN"
        ;;
    show)
        nat -S | grep -E "SWITCHYARD_(OUTPUT|INBOUND)" || true
        ;;
    *) usage ;;
esac
