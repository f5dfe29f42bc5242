#!/usr/bin/env bash
# Fuzz campaign (after `cargo fuzz build -s none`), e.g. STOP=$(date -d 14:45 +%s) SLOT=480 fuzz/campaign.sh:
# one fuzzer at a time at nice 19, rotating over the codec
# targets until STOP (epoch seconds). CPU time per slot from /usr/bin/time.
set -u
cd "$(dirname "$0")/.."   # repo root
STOP=${STOP:?}
SLOT=${SLOT:-480}
targets=(${TARGETS:-detect redis http1 mqtt dubbo bolt hessian2 mysql rtsp proxy_protocol})
bin=fuzz/target/campaign/bin   # copies of the built targets (a rebuild meanwhile does not disturb them)
mkdir -p "$bin"; for t in "${targets[@]}"; do [ -x "$bin/$t" ] || cp "fuzz/target/x86_64-unknown-linux-gnu/release/$t" "$bin/"; done
log=fuzz/target/campaign/slots.tsv
[ -f "$log" ] || printf 'start\ttarget\twall_s\tcpu_user_s\tcpu_sys_s\texecs\tcorpus\texit\n' > "$log"
while :; do
  for t in "${targets[@]}"; do
    now=$(date +%s); left=$(( STOP - now ))
    [ "$left" -lt 60 ] && exit 0
    secs=$(( left < SLOT ? left : SLOT ))
    c=fuzz/target/campaign/$t; mkdir -p "$c" "fuzz/target/campaign/artifacts/$t"
    start=$(date -u +%H:%M:%S)
    /usr/bin/time -f '%e %U %S' -o "fuzz/target/campaign/$t.time" \
      nice -n 19 "$bin/$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="fuzz/target/campaign/artifacts/$t/" "$c" "fuzz/seeds/$t" \
      > "fuzz/target/campaign/$t.$start.log" 2>&1
    rc=$?
    read -r wall u s < <(tail -1 "fuzz/target/campaign/$t.time")
    execs=$(grep -E '^stat::number_of_executed_units' "fuzz/target/campaign/$t.$start.log" | awk '{print $2}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$start" "$t" "$wall" "$u" "$s" "${execs:-?}" "$(ls "$c" | wc -l)" "$rc" >> "$log"
  done
done
