#!/usr/bin/python3
"""A real RTSP server for the integration tests and the Media Lab:
GStreamer's gst-rtsp-server (python3-gi, gir1.2-gst-rtsp-server-1.0).

Usage: rtsp_server.py PORT MOUNT [MOUNT ...]

Each mount serves a live H.264 test pattern (320x240, 25 fps) and a PCMU
audio tone, so a client makes two SETUPs (RTSP_VIDEO=heavy: 640x480 noise at
RTSP_KBPS kbit/s instead). Prints "ready" once listening.
Run it with Debian's /usr/bin/python3 (it has gi), not a venv.
"""
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# RTSP_VIDEO=heavy (the Media Lab's throughput runs): 640x480 noise, which
# x264 cannot compress, at RTSP_KBPS (default 4000) kbit/s.
if os.environ.get("RTSP_VIDEO") == "heavy":
    VIDEO = (
        "videotestsrc is-live=true pattern=snow ! video/x-raw,width=640,height=480,framerate=25/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate={int(os.environ.get('RTSP_KBPS', '4000'))} "
    )
else:
    VIDEO = (
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
    )
PIPELINE = (
    f"( {VIDEO}! rtph264pay name=pay0 pt=96 "
    "audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=8000,channels=1 ! mulawenc "
    "! rtppcmupay name=pay1 pt=0 )"
)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: rtsp_server.py PORT MOUNT [MOUNT ...]")
    port, mounts = sys.argv[1], sys.argv[2:]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    table = server.get_mount_points()
    for mount in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(PIPELINE)
        factory.set_shared(True)
        table.add_factory(mount if mount.startswith("/") else "/" + mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
