#!/usr/bin/env bash
# Fuzzing as a CI gate: build every cargo-fuzz target (stable, no sanitizer)
# and run each one for a short smoke time from its committed seeds. Any crash,
# panic, hang (-timeout) or leak of memory past -rss_limit_mb fails the run.
#
#   fuzz/smoke.sh            # every target, FUZZ_SMOKE_SECONDS (default 20) each
#   fuzz/smoke.sh redis rtsp # some targets
#
# Driver targets (driver_<protocol>) start from the seeds of their protocol's
# codec target (fuzz/seeds/<protocol>/). Each run grows a scratch corpus under
# fuzz/target/smoke/ (git-ignored), never the committed seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SMOKE_SECONDS:-20}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing: cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
# The fuzz crate has its own Cargo.lock: check it is up to date (cargo fuzz
# build has no --locked of its own).
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null
cargo fuzz build -s none

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
bin=fuzz/target/x86_64-unknown-linux-gnu/release
failed=()
for t in "${targets[@]}"; do
  seeds=fuzz/seeds/$t
  [ -d "$seeds" ] || seeds=fuzz/seeds/${t#driver_}
  [ -d "$seeds" ] || { echo "FATAL: no seeds for fuzz target $t ($seeds)" >&2; exit 1; }
  work=fuzz/target/smoke/$t
  rm -rf "$work"; mkdir -p "$work/corpus" "$work/artifacts"
  echo "fuzz smoke: $t for ${secs}s from $seeds ($(find "$seeds" -type f | wc -l) seeds)"
  if "$bin/$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" >"$work/log" 2>&1; then
    grep -E '^stat::number_of_executed_units' "$work/log" | sed "s/^/  $t: /" || true
  else
    echo "FUZZ FAILURE in $t: last lines of $work/log:" >&2
    tail -40 "$work/log" >&2
    for a in "$work"/artifacts/*; do
      [ -e "$a" ] && { echo "input $a (base64):" >&2; base64 -w0 "$a" >&2; echo >&2; }
    done
    failed+=("$t")
  fi
done
echo "fuzz smoke: ${secs}s per target; failed: ${failed[*]:-none}"
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
