#!/usr/bin/python3
"""The Media Lab's orchestrator (started by labs/media/run.sh; stdlib only).

Starts two GStreamer RTSP servers (tests/peers/rtsp_server.py) and the gateway
with labs/media/switchyard.yaml on free loopback ports, measures time to the
first video frame direct vs through the gateway, runs PLAYERS concurrent ffmpeg
players through the gateway and then direct, and prints a markdown report.
"""
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PLAYERS = int(os.environ.get("PLAYERS", "6"))
DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
KEEP = os.environ.get("KEEP", "0") == "1"
OUT = os.environ.get("OUT", "")
BIN = os.environ["SWITCHYARD_BIN"]
FPS = 25  # the test pattern's frame rate (tests/peers/rtsp_server.py)

children = []
work = tempfile.mkdtemp(prefix="media-lab-")


def log(msg):
    print(f"[media {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cleanup(*_):
    for p in children:
        if p.poll() is None:
            p.terminate()
    for p in children:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"kept {work}")


def fatal(msg):
    print(f"\n[media] FATAL: {msg}", file=sys.stderr)
    cleanup()
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, proc, logfile, limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            fatal(f"{what} exited: {open(logfile).read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    fatal(f"{what} did not listen on {port} within {limit}s")


def spawn(args, logname):
    path = os.path.join(work, logname)
    f = open(path, "w")
    p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    children.append(p)
    return p, path


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def first_frame(url, transport="tcp"):
    """Seconds from starting ffmpeg to its first decoded video frame (exit)."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-rtsp_transport", transport,
         "-i", url, "-map", "0:v", "-frames:v", "1", "-f", "null", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    took = time.monotonic() - t0
    if r.returncode != 0:
        fatal(f"ffmpeg {url}: {r.stderr.decode()[-1000:]}")
    return took


def handshake(url):
    """Seconds for OPTIONS, DESCRIBE, SETUP (video, TCP-interleaved) and PLAY,
    each waiting for its response, on a raw socket; then TEARDOWN."""
    host, port = url.split("/")[2].split(":")
    t0 = time.monotonic()
    s = socket.create_connection((host, int(port)), timeout=10)
    buf = b""

    def ask(head):
        nonlocal buf
        s.sendall(head.encode())
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?i)content-length:\s*(\d+)", buf[:end])
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) >= total and buf.startswith(b"RTSP/1.0 "):
                    head, buf = buf[:total], buf[total:]
                    if not head.startswith(b"RTSP/1.0 200"):
                        fatal(f"{url}: {head[:200]!r}")
                    return head.decode("latin1")
                if len(buf) >= total and buf.startswith(b"$"):
                    buf = buf[4 + int.from_bytes(buf[2:4], "big"):]
                    continue
            if buf.startswith(b"$") and len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[2:4], "big"):
                buf = buf[4 + int.from_bytes(buf[2:4], "big"):]
                continue
            chunk = s.recv(65536)
            if not chunk:
                fatal(f"{url}: closed during the handshake")
            buf += chunk

    ask(f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n")
    ask(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n")
    setup = ask(f"SETUP {url}/stream=0 RTSP/1.0\r\nCSeq: 3\r\n"
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    sid = re.search(r"(?i)session:\s*([^;\r\n]+)", setup).group(1).strip()
    ask(f"PLAY {url}/ RTSP/1.0\r\nCSeq: 4\r\nSession: {sid}\r\nRange: npt=0.000-\r\n\r\n")
    took = time.monotonic() - t0
    s.sendall(f"TEARDOWN {url}/ RTSP/1.0\r\nCSeq: 5\r\nSession: {sid}\r\n\r\n".encode())
    s.close()
    return took


def players(urls, tag):
    """Run one ffmpeg per (url, transport) for DURATION s of video (stream
    copy, no decoding; both tracks are still SETUP and streamed, but only
    video is kept: with audio kept, ffmpeg's `-t` sometimes waits forever for
    an audio track GStreamer's shared media stopped feeding): per player
    (url, transport, ok, frames, video kbit/s)."""
    procs = []
    for i, (url, transport) in enumerate(urls):
        progress = os.path.join(work, f"{tag}-{i}.progress")
        err = os.path.join(work, f"{tag}-{i}.log")
        p = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-nostats", "-rtsp_transport", transport, "-i", url,
             "-map", "0:v", "-c", "copy", "-t", str(DURATION), "-f", "null", "-progress", progress, "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        children.append(p)
        procs.append((url, transport, p, progress, err))
    out = []
    for url, transport, p, progress, err in procs:
        try:
            code = p.wait(timeout=DURATION + 30)
        except subprocess.TimeoutExpired:
            p.kill()
            code = -1
        text = open(progress).read() if os.path.exists(progress) else ""
        frames = [int(x) for x in re.findall(r"^frame=(\d+)", text, re.M)]
        stats = open(err).read()
        sizes = re.findall(r"video:(\d+)kB", stats)
        kbits = int(sizes[-1]) * 1024 * 8 / 1000 / DURATION if sizes else 0.0
        out.append((url, transport, code == 0, frames[-1] if frames else 0, kbits))
    return out


def main():
    signal.signal(signal.SIGTERM, lambda *_: fatal("terminated"))
    ports = {k: free_port() for k in ("listen", "admin", "north", "south")}
    server = os.path.join(ROOT, "tests", "peers", "rtsp_server.py")
    for name in ("north", "south"):
        p, path = spawn(["/usr/bin/python3", server, str(ports[name]), f"/{name}"], f"rtsp-{name}.log")
        wait_port(ports[name], f"RTSP server {name}", p, path)
    cfg = open(os.path.join(HERE, "switchyard.yaml")).read()
    for old, key in (("127.0.0.1:8554", "listen"), ("127.0.0.1:9911", "admin"),
                     ("127.0.0.1:18554", "north"), ("127.0.0.1:18555", "south")):
        cfg = cfg.replace(old, f"127.0.0.1:{ports[key]}")
    cfg_path = os.path.join(work, "switchyard.yaml")
    open(cfg_path, "w").write(cfg)
    gw, gw_log = spawn([BIN, "run", "-c", cfg_path], "gateway.log")
    wait_port(ports["listen"], "the gateway", gw, gw_log)
    wait_port(ports["admin"], "the gateway's admin server", gw, gw_log)
    log(f"servers on :{ports['north']} :{ports['south']}, gateway on :{ports['listen']}")

    def gw_url(path):
        return f"rtsp://127.0.0.1:{ports['listen']}/{path}"

    def direct_url(path):
        return f"rtsp://127.0.0.1:{ports[path]}/{path}"

    # 1. Startup time, alternated so drift hits both equally.
    first_frame(direct_url("north"))  # warm both servers' pipelines
    first_frame(gw_url("south"))
    direct, through = [], []
    for i in range(ROUNDS):
        path = ("north", "south")[i % 2]
        direct.append(first_frame(direct_url(path)))
        through.append(first_frame(gw_url(path)))
    log(f"startup: direct {statistics.median(direct):.3f}s, gateway {statistics.median(through):.3f}s")
    hs_direct, hs_through = [], []
    for i in range(ROUNDS * 4):
        path = ("north", "south")[i % 2]
        hs_direct.append(handshake(direct_url(path)))
        hs_through.append(handshake(gw_url(path)))
    log(f"handshake: direct {statistics.median(hs_direct) * 1000:.1f} ms, "
        f"gateway {statistics.median(hs_through) * 1000:.1f} ms")

    # 2. Load through the gateway, then direct.
    plan = [(("north", "south")[i % 2], ("tcp", "udp")[(i // 2) % 2]) for i in range(PLAYERS)]
    deadline = time.time() + 10  # the handshakes' sessions are released first
    while time.time() < deadline and metric(metrics(ports["admin"]), "switchyard_rtsp_sessions_active") > 0:
        time.sleep(0.2)
    before = metrics(ports["admin"])
    ticks0, t0 = cpu_ticks(gw.pid), time.monotonic()
    log(f"{PLAYERS} players through the gateway for {DURATION}s")
    gw_players = players([(gw_url(p), t) for p, t in plan], "gw")
    gw_secs = time.monotonic() - t0
    gw_cpu = (cpu_ticks(gw.pid) - ticks0) / os.sysconf("SC_CLK_TCK")
    deadline = time.time() + 10
    while time.time() < deadline and metric(metrics(ports["admin"]), "switchyard_rtsp_sessions_active") > 0:
        time.sleep(0.2)
    after = metrics(ports["admin"])
    log(f"{PLAYERS} players direct for {DURATION}s")
    direct_players = players([(direct_url(p), t) for p, t in plan], "direct")

    d = lambda name, **l: metric(after, name, **l) - metric(before, name, **l)  # noqa: E731
    sessions = d("switchyard_rtsp_sessions_total")
    active = metric(after, "switchyard_rtsp_sessions_active")
    media = {(dirn, tr): d("switchyard_rtsp_media_bytes_total", direction=dirn, transport=tr)
             for dirn in ("to_client", "to_upstream") for tr in ("tcp", "udp")}
    released = {r: d("switchyard_rtsp_sessions_released_total", reason=r)
                for r in ("teardown", "client_closed", "upstream_closed", "timeout")}

    lines = []
    w = lines.append
    w(f"## Media Lab report ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    w("")
    video = ("H.264 640x480 noise at " + os.environ.get("RTSP_KBPS", "4000") + " kbit/s"
             if os.environ.get("RTSP_VIDEO") == "heavy" else "H.264 320x240 test pattern")
    w(f"{PLAYERS} ffmpeg players, {DURATION} s of video each (stream copy, no decoding), over two GStreamer RTSP "
      f"servers ({video}, {FPS} fps, + PCMU 8 kHz); half TCP-interleaved, half UDP (relayed by the gateway).")
    w("")
    w("| player | path | transport | frames via gateway | frames direct | video kbit/s via gateway | video kbit/s direct |")
    w("|---|---|---|---:|---:|---:|---:|")
    for i, ((p, t), g, dr) in enumerate(zip(plan, gw_players, direct_players)):
        w(f"| {i} | /{p} | {t} | {g[3]}{'' if g[2] else ' (failed)'} | {dr[3]}{'' if dr[2] else ' (failed)'} "
          f"| {g[4]:.0f} | {dr[4]:.0f} |")
    gw_frames = sum(g[3] for g in gw_players)
    direct_frames = sum(x[3] for x in direct_players)
    gw_kbits = sum(g[4] for g in gw_players)
    direct_kbits = sum(x[4] for x in direct_players)
    w(f"| all | | | {gw_frames} | {direct_frames} | {gw_kbits:.0f} | {direct_kbits:.0f} |")
    w("")
    w("| measure | value |")
    w("|---|---|")
    w(f"| RTSP sessions opened through the gateway | {sessions:.0f} |")
    w(f"| sessions still active after the players left | {active:.0f} |")
    w(f"| sessions released by reason | " + ", ".join(f"{k} {v:.0f}" for k, v in released.items()) + " |")
    w(f"| media relayed to clients | TCP {media[('to_client', 'tcp')] / 1e6:.2f} MB, UDP {media[('to_client', 'udp')] / 1e6:.2f} MB |")
    w(f"| media relayed to servers (RTCP) | TCP {media[('to_upstream', 'tcp')] / 1e3:.1f} kB, UDP {media[('to_upstream', 'udp')] / 1e3:.1f} kB |")
    total_bytes = media[("to_client", "tcp")] + media[("to_client", "udp")]
    w(f"| gateway media throughput | {total_bytes * 8 / gw_secs / 1e6:.2f} Mbit/s over {gw_secs:.1f} s |")
    mbits = total_bytes * 8 / gw_secs / 1e6
    w(f"| gateway CPU | {gw_cpu:.2f} s in {gw_secs:.1f} s = {100 * gw_cpu / gw_secs:.1f} % of a core, "
      f"{100 * gw_cpu / gw_secs / PLAYERS:.2f} % per stream, "
      f"{(100 * gw_cpu / gw_secs / mbits) if mbits else 0:.2f} % per Mbit/s relayed |")
    w(f"| time to first video frame, direct (median of {ROUNDS}) | {statistics.median(direct) * 1000:.0f} ms "
      f"(min {min(direct) * 1000:.0f}, max {max(direct) * 1000:.0f}) |")
    w(f"| time to first video frame, via gateway (median of {ROUNDS}) | {statistics.median(through) * 1000:.0f} ms "
      f"(min {min(through) * 1000:.0f}, max {max(through) * 1000:.0f}) |")
    w(f"| added by the gateway (median) | {(statistics.median(through) - statistics.median(direct)) * 1000:+.0f} ms |")
    w(f"| RTSP handshake OPTIONS..PLAY, direct (median of {ROUNDS * 4}) | {statistics.median(hs_direct) * 1000:.1f} ms |")
    w(f"| RTSP handshake OPTIONS..PLAY, via gateway (median of {ROUNDS * 4}) | {statistics.median(hs_through) * 1000:.1f} ms "
      f"({(statistics.median(hs_through) - statistics.median(hs_direct)) * 1000:+.1f} ms) |")

    checks = [
        ("every player through the gateway ended cleanly", all(g[2] for g in gw_players)),
        ("every direct player ended cleanly", all(x[2] for x in direct_players)),
        (f"one session per player ({PLAYERS})", sessions == PLAYERS),
        ("no session left active", active == 0),
        ("each player through the gateway got >= 80% of the frames of the same player direct",
         all(g[3] >= 0.8 * x[3] and g[3] > 0 for g, x in zip(gw_players, direct_players))),
        ("UDP media went through the gateway's relay", media[("to_client", "udp")] > 0 or "udp" not in [t for _, t in plan]),
    ]
    w("")
    w("| check | result |")
    w("|---|---|")
    for name, ok in checks:
        w(f"| {name} | {'PASS' if ok else 'FAIL'} |")
    report = "\n".join(lines)
    print(report)
    if OUT:
        open(OUT, "w").write(report + "\n")
    cleanup()
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        fatal(repr(e))
