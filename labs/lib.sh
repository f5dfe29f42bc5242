# Shared helpers of the labs' scripts (source it): logging, peer checks,
# free ports, background processes killed on exit, the release binary.
# The caller sets LAB (a short name for log lines) before sourcing.

log() { printf '[%s %s] %s\n' "${LAB:-lab}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[%s] FATAL: %s\n' "${LAB:-lab}" "$*" >&2; exit 1; }

# need BIN:PACKAGE ... — fail naming the Debian package of every missing binary.
need() {
    local missing=() pair bin pkg
    for pair in "$@"; do
        bin=${pair%%:*}; pkg=${pair#*:}
        if ! command -v "$bin" >/dev/null 2>&1; then
            if [[ -x /usr/sbin/$bin ]]; then PATH="$PATH:/usr/sbin"; else missing+=("$bin (package: $pkg)"); fi
        fi
    done
    if ((${#missing[@]})); then
        printf '[%s] FATAL: missing peer binaries:\n' "${LAB:-lab}" >&2
        printf '  - %s\n' "${missing[@]}" >&2
        exit 1
    fi
}

# free_ports N — N free TCP ports on 127.0.0.1, space separated.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_port PORT WHAT — wait up to 15 s for 127.0.0.1:PORT to accept.
wait_port() {
    local i
    for i in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 did not listen on 127.0.0.1:$1"
}

# spawn NAME CMD... — run in the background (log in $TMP/NAME.log), killed on exit.
PIDS=()
spawn() {
    local name=$1; shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
}

lab_tmp() {
    TMP=$(mktemp -d "/tmp/switchyard-${LAB:-lab}.XXXXXX")
    chmod 755 "$TMP"
    trap lab_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

lab_cleanup() {
    local rc=$? p
    trap - EXIT
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then log "kept $TMP (configs, logs)"; else rm -rf "$TMP"; fi
    exit "$rc"
}

# switchyard_bin — build (release) unless SWITCHYARD_BIN is given; sets SY_BIN.
switchyard_bin() {
    local root=$1
    if [[ -n ${SWITCHYARD_BIN:-} ]]; then
        SY_BIN=$SWITCHYARD_BIN
    else
        log "building switchyard (cargo build --release)"
        (cd "$root" && cargo build --release --bin switchyard) >&2 || die "cargo build --release failed"
        SY_BIN=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/switchyard
    fi
    [[ -x $SY_BIN ]] || die "$SY_BIN is not an executable"
}
