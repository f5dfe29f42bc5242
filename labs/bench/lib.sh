# Shared parts of the benchmark scripts (source it after setting LAB): everything of
# labs/lib.sh (log, die, need, free_ports, wait_port, lab_tmp + cleanup, switchyard_bin)
# plus named background processes, readiness waits, /proc CPU and RSS sampling, medians.
# Used by labs/bench/all.sh and labs/bench/redis-p1.sh.

# shellcheck source=../lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

# start NAME CMD... — background process, output in $TMP/NAME.log, killed on exit
# (lab_cleanup of labs/lib.sh), pid remembered under NAME (pid_of NAME).
declare -A NAMED_PID=()
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    NAMED_PID[$name]=$!
    log "started $name (pid $!)"
}
pid_of() { echo "${NAMED_PID[$1]:-0}"; }

# wait_until NAME SECONDS CMD... — until CMD succeeds; dies (with NAME's log) if NAME
# exits or the deadline passes.
wait_until() {
    local name=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs)) pid
    pid=$(pid_of "$name")
    until "$@" >/dev/null 2>&1; do
        if [[ $pid != 0 ]] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name exited during startup (log above, $TMP/$name.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name not ready after ${secs}s (log above)"
        fi
        sleep 0.1
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_ok() { timeout 2 curl -fsS -o /dev/null "http://127.0.0.1:$1$2"; }
h2_ok() { timeout 2 curl -fsS --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$1$2"; }
redis_ping() { [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# cpu_ticks PID — utime + stime (clock ticks) of PID and of its direct children
# (nginx's worker, under its master; found with pgrep -P). 0 for PID 0 or a process that is gone.
# The fields are counted from the end of the command name: "(name)" may hold spaces.
cpu_ticks() {
    local pid=$1 total=0 p t
    [[ $pid == 0 ]] && { echo 0; return; }
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null); do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# cpu_s PID — the same in seconds.
cpu_s() { awk -v t="$(cpu_ticks "$1")" -v hz="$HZ" 'BEGIN {printf "%.3f\n", t / hz}'; }

# rss_kb PID — resident set of PID plus its direct children, kB.
rss_kb() {
    local pid=$1 total=0 p r
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null); do
        r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || r=0
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# median X... — the median of numbers (NA ignored; NA if none).
median() {
    printf '%s\n' "$@" | grep -v '^NA$' | sort -g |
        awk '{a[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

# stop NAME — SIGTERM the process started as NAME, SIGKILL after 3 s, and forget it.
stop() {
    local pid i
    pid=$(pid_of "$1")
    [[ $pid == 0 ]] && return 0
    if kill -TERM "$pid" 2>/dev/null; then
        for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for i in "${!PIDS[@]}"; do [[ ${PIDS[$i]} == "$pid" ]] && unset 'PIDS[i]'; done
    unset 'NAMED_PID[$1]'
}
