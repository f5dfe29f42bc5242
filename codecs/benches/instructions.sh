#!/usr/bin/env bash
# Instructions per decode of the rpc/mysql/http1 bench inputs, under
# callgrind (load does not change them, unlike criterion's wall clock).
#
#   codecs/benches/instructions.sh [BINARY...]
#
# Each BINARY is a build of `cargo build --release -p switchyard-codecs
# --example decode_loop` (default: the one in $CARGO_TARGET_DIR or target/);
# give two (old, new) to compare. Prints one row per case: instructions per
# decode of the whole input, as (Ir(N) - Ir(0)) / N.
set -euo pipefail
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    bins=("${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/release/examples/decode_loop")
fi
ir() { # binary case n -> instructions executed
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for case in $("${bins[0]}" list); do
    case $case in
        mysql/result-set-10000-rows) n=3 ;;
        hessian2/string/*) n=50 ;;
        *) n=200 ;;
    esac
    row="$case"
    for bin in "${bins[@]}"; do
        base=$(ir "$bin" "$case" 0)
        total=$(ir "$bin" "$case" "$n")
        row="$row $(( (total - base) / n ))"
    done
    echo "$row"
done
