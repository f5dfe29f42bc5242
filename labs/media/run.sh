#!/usr/bin/env bash
# The Media Lab: RTSP players behind Switchyard, in ONE command.
#
#   PLAYERS ffmpeg players ──RTSP──► switchyard ─┬─ /north ──► GStreamer RTSP server A (H.264 + PCMU)
#   (half TCP-interleaved, half UDP)             └─ /south ──► GStreamer RTSP server B
#
# Builds the gateway (release), starts two real RTSP servers and the gateway on
# free loopback ports, then:
#   1. startup: time to first video frame, direct vs through the gateway (ROUNDS each, alternated);
#   2. load: PLAYERS concurrent players through the gateway for DURATION s, then the same direct;
# and prints a markdown report (sessions, frames received per client, bitrate,
# startup time direct vs gateway, gateway CPU per stream) with checks.
# Everything started here is stopped on exit.
#
# Usage:   labs/media/run.sh
# Knobs (environment):
#   PLAYERS=6          concurrent players per phase (split over /north and /south, TCP and UDP)
#   DURATION=10        seconds each player pulls
#   ROUNDS=5           startup-time samples per path
#   RTSP_VIDEO=heavy   serve 640x480 noise at RTSP_KBPS (default 4000) kbit/s instead of the light
#                      320x240 test pattern (~130 kbit/s), to load the media path
#   SWITCHYARD_BIN=    use this gateway binary instead of building
#   KEEP=0             1: keep the temp dir (configs, logs, player outputs, /metrics)
#   OUT=FILE           also write the report to FILE
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
die() { printf '\n[media] FATAL: %s\n' "$*" >&2; exit 1; }

missing=()
for pair in ffmpeg:ffmpeg ffprobe:ffmpeg gst-inspect-1.0:gstreamer1.0-tools curl:curl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair%%:*} (Debian package: ${pair##*:})")
done
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null ||
    missing+=("GstRtspServer for /usr/bin/python3 (Debian packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp)")
gst-inspect-1.0 x264enc >/dev/null 2>&1 || missing+=("GStreamer x264enc (Debian package: gstreamer1.0-plugins-ugly)")
if ((${#missing[@]})); then
    printf '[media] FATAL: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    printf 'install with: apt-get install -y --no-install-recommends ffmpeg gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-tools gstreamer1.0-libav curl\n' >&2
    exit 1
fi

if [[ -z ${SWITCHYARD_BIN:-} ]]; then
    command -v cargo >/dev/null || die "cargo not found (install Rust), and SWITCHYARD_BIN not given"
    printf '[media] building (cargo build --release, CARGO_TARGET_DIR=%s)\n' "${CARGO_TARGET_DIR:-<default>}" >&2
    (cd "$ROOT" && cargo build --release -p switchyard --bin switchyard) || die "cargo build --release failed"
    TD=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    SWITCHYARD_BIN=$TD/release/switchyard
fi
[[ -x $SWITCHYARD_BIN ]] || die "$SWITCHYARD_BIN is not an executable"
export SWITCHYARD_BIN
exec /usr/bin/python3 "$HERE/lab.py"
