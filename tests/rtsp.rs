//! RTSP through the gateway with real peers: GStreamer's RTSP server
//! (`tests/peers/rtsp_server.py`, H.264 video + PCMU audio, so two SETUPs)
//! and ffprobe / ffmpeg as clients over TCP-interleaved and UDP transports;
//! raw sockets (responses parsed with `rtsp-types`, not our codec) for what
//! a player does not show: rewritten URLs, error answers, Basic auth.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::rtsp_server::RtspServer;
use common::*;

/// A gateway config: one listener `media` sniffing `protocols`, the given
/// routes on the `*` virtual host, the given clusters and listener extras.
fn config(
    ports: &Ports,
    protocols: &str,
    routes: &[&str],
    clusters: &[String],
    listener: &str,
) -> String {
    let mut y = format!(
        "admin:\n  address: 127.0.0.1:{}\nlisteners:\n  - name: media\n    address: 127.0.0.1:{}\n    protocols: [{protocols}]\n    route_table: main\n",
        ports.admin, ports.listen
    );
    if !listener.is_empty() {
        y += &format!("    {listener}\n");
    }
    y += "route_tables:\n  - name: main\n    virtual_hosts:\n      - name: any\n        domains: [\"*\"]\n        routes:\n";
    for r in routes {
        y += &format!("          - {r}\n");
    }
    y += "clusters:\n";
    for c in clusters {
        y += &format!("  - {c}\n");
    }
    y
}

/// A gateway routing every RTSP request to `server`.
fn gateway_for(server: &RtspServer, listener: &str) -> Gateway {
    let ports = Ports::new();
    Gateway::start(&config(
        &ports,
        "rtsp",
        &["{match: {protocol: rtsp}, cluster: cams}"],
        &[format!("{{name: cams, hosts: [\"{}\"]}}", server.addr())],
        listener,
    ))
}

fn gw_url(gw: &Gateway, path: &str) -> String {
    format!("rtsp://{}{path}", gw.addr())
}

/// Run a command to its end, at most `limit`: (success, stdout, stderr).
fn run(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn");
    let status = wait_for(&format!("{cmd:?} to finish"), limit, || {
        child.try_wait().ok().flatten()
    });
    (
        status.success(),
        std::fs::read_to_string(out_path).unwrap_or_default(),
        std::fs::read_to_string(err_path).unwrap_or_default(),
    )
}

/// The streams ffprobe finds at `url`, one `key=value|...` line each.
fn probe(url: &str, transport: &str) -> Vec<String> {
    let (ok, out, err) = run(
        Command::new(require("ffprobe")).args([
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-show_entries",
            "stream=index,codec_type,codec_name,profile,width,height,pix_fmt,sample_rate,channels",
            "-of",
            "compact=p=0",
            url,
        ]),
        Duration::from_secs(30),
    );
    assert!(ok, "ffprobe {url} over {transport} failed: {err}");
    out.lines().map(str::to_owned).collect()
}

/// Pull `url` for `seconds` with ffmpeg, decoding to nowhere: the video
/// frames decoded (the last `frame=` of `-progress`).
fn frames(url: &str, transport: &str, seconds: u32) -> u64 {
    let (ok, out, err) = run(
        Command::new(require("ffmpeg")).args([
            "-hide_banner",
            "-nostats",
            "-rtsp_transport",
            transport,
            "-i",
            url,
            "-t",
            &seconds.to_string(),
            "-f",
            "null",
            "-progress",
            "pipe:1",
            "-",
        ]),
        Duration::from_secs(u64::from(seconds) + 30),
    );
    assert!(ok, "ffmpeg {url} over {transport} failed: {err}");
    out.lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no frame= line from ffmpeg: {out}\n{err}"))
}

/// An RTSP client on a raw socket; responses parsed by rtsp-types.
struct RawRtsp {
    stream: TcpStream,
    buf: Vec<u8>,
}

type RtspResponse = rtsp_types::Response<Vec<u8>>;

impl RawRtsp {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        RawRtsp {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next message that is not an interleaved frame.
    fn response(&mut self) -> RtspResponse {
        loop {
            match rtsp_types::Message::<Vec<u8>>::parse(&self.buf) {
                Ok((msg, used)) => {
                    self.buf.drain(..used);
                    match msg {
                        rtsp_types::Message::Response(r) => return r,
                        rtsp_types::Message::Data(_) => continue,
                        other => panic!("unexpected message {other:?}"),
                    }
                }
                Err(rtsp_types::ParseError::Incomplete(_)) => {}
                Err(e) => panic!(
                    "unparseable RTSP from the gateway ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("read a response");
            assert!(n > 0, "the gateway closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send one request and read its response.
    fn request(&mut self, head: &str) -> RtspResponse {
        self.send(head.as_bytes());
        self.response()
    }

    /// Read until the peer closes (panics if it stays open).
    fn closed(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return rest,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return rest,
                Err(e) => panic!("the connection is still open ({e})"),
            }
        }
    }
}

fn header(r: &RtspResponse, name: &str) -> Option<String> {
    r.headers()
        .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str().to_owned())
}

#[test]
fn stream_info_through_the_gateway_equals_direct_over_tcp_and_udp() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    for transport in ["tcp", "udp"] {
        let direct = probe(&server.url("/cam"), transport);
        assert_eq!(direct.len(), 2, "H.264 and PCMU: {direct:?}");
        assert!(direct[0].contains("codec_name=h264") && direct[0].contains("width=320"));
        let through = probe(&gw_url(&gw, "/cam"), transport);
        assert_eq!(through, direct, "over {transport}");
    }
}

#[test]
fn frames_decode_through_the_gateway_over_tcp_interleaved() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    let n = frames(&gw_url(&gw, "/cam"), "tcp", 3);
    // 25 fps for 3 s of stream time.
    assert!(n >= 50, "only {n} frames decoded in 3 s");
    let media = gw.metric(
        "switchyard_rtsp_media_bytes_total",
        &[("direction", "to_client"), ("transport", "tcp")],
    );
    assert!(media > 10_000.0, "interleaved media bytes: {media}");
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_total", &[("listener", "media")]),
        1.0
    );
}

#[test]
fn frames_decode_through_the_gateway_over_the_udp_relay() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    let n = frames(&gw_url(&gw, "/cam"), "udp", 3);
    assert!(n >= 50, "only {n} frames decoded in 3 s");
    let relayed = gw.metric(
        "switchyard_rtsp_media_bytes_total",
        &[("direction", "to_client"), ("transport", "udp")],
    );
    assert!(
        relayed > 10_000.0,
        "media must flow through the gateway's UDP ports: {relayed} bytes relayed"
    );
}

#[test]
fn udp_setup_names_gateway_ports_and_urls_only() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    let base = gw_url(&gw, "/cam");
    let upstream_port = server.port.to_string();
    let mut c = RawRtsp::connect(gw.addr());
    let describe = c.request(&format!(
        "DESCRIBE {base} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    ));
    assert_eq!(u16::from(describe.status()), 200);
    let content_base = header(&describe, "content-base").expect("Content-Base");
    assert_eq!(content_base, format!("{base}/"));
    let sdp = String::from_utf8_lossy(describe.body()).into_owned();
    assert!(sdp.contains("m=video") && !sdp.contains(&upstream_port));
    let client = (40_000 + (free_port() % 10_000) / 2 * 2).to_string();
    let setup = c.request(&format!(
        "SETUP {base}/stream=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port={client}-{}\r\n\r\n",
        client.parse::<u16>().unwrap() + 1
    ));
    assert_eq!(u16::from(setup.status()), 200);
    let transport = header(&setup, "transport").expect("Transport");
    assert!(
        transport.contains(&format!("client_port={client}-")),
        "the client's ports come back: {transport}"
    );
    let server_port = transport
        .split(';')
        .find_map(|p| p.strip_prefix("server_port="))
        .expect("server_port");
    let rtp: u16 = server_port.split('-').next().unwrap().parse().unwrap();
    assert_eq!(rtp % 2, 0, "RTP on an even port: {transport}");
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", rtp)).is_err(),
        "server_port {rtp} must be a port the gateway holds"
    );
    let session = header(&setup, "session").expect("Session");
    let sid = session.split(';').next().unwrap().trim().to_owned();
    let play = c.request(&format!(
        "PLAY {base}/ RTSP/1.0\r\nCSeq: 3\r\nSession: {sid}\r\nRange: npt=0.000-\r\n\r\n"
    ));
    assert_eq!(u16::from(play.status()), 200);
    let rtp_info = header(&play, "rtp-info").expect("RTP-Info");
    assert!(
        rtp_info.contains(&format!("url={base}/stream=0")) && !rtp_info.contains(&upstream_port),
        "RTP-Info names the gateway: {rtp_info}"
    );
    let alive = c.request(&format!(
        "GET_PARAMETER {base}/ RTSP/1.0\r\nCSeq: 4\r\nSession: {sid}\r\n\r\n"
    ));
    assert_eq!(u16::from(alive.status()), 200, "keep-alives pass");
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_active", &[("listener", "media")]),
        1.0
    );
    let down = c.request(&format!(
        "TEARDOWN {base}/ RTSP/1.0\r\nCSeq: 5\r\nSession: {sid}\r\n\r\n"
    ));
    assert_eq!(u16::from(down.status()), 200);
    wait_for("the session to be released", WAIT, || {
        (gw.metric(
            "switchyard_rtsp_sessions_released_total",
            &[("reason", "teardown")],
        ) == 1.0)
            .then_some(())
    });
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_active", &[("listener", "media")]),
        0.0
    );
    // Each request is one request of the cluster, counted and timed to its
    // response: DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN.
    let series = [("cluster", "cams")];
    assert_eq!(
        gw.metric("switchyard_upstream_requests_total", &series),
        5.0
    );
    assert_eq!(
        gw.metric(
            "switchyard_upstream_request_duration_seconds_count",
            &series
        ),
        5.0
    );
    wait_for("the relay's ports to be freed", WAIT, || {
        std::net::UdpSocket::bind(("127.0.0.1", rtp)).ok()
    });
}

#[test]
fn two_streams_on_two_servers_are_routed_by_path() {
    let north = RtspServer::start(&["/north"]);
    let south = RtspServer::start(&["/south"]);
    let ports = Ports::new();
    let gw = Gateway::start(&config(
        &ports,
        "rtsp",
        &[
            "{match: {protocol: rtsp, path_prefix: /north}, cluster: north}",
            "{match: {protocol: rtsp, path_prefix: /south}, cluster: south}",
        ],
        &[
            format!("{{name: north, hosts: [\"{}\"]}}", north.addr()),
            format!("{{name: south, hosts: [\"{}\"]}}", south.addr()),
        ],
        "",
    ));
    // Each server has only its own mount, so a wrong route would be a 404.
    let mut c = RawRtsp::connect(south.addr());
    let wrong = c.request(&format!(
        "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        south.url("/north")
    ));
    assert_eq!(u16::from(wrong.status()), 404);
    let a = frames(&gw_url(&gw, "/north"), "tcp", 2);
    let b = frames(&gw_url(&gw, "/south"), "udp", 2);
    assert!(a >= 25 && b >= 25, "north {a}, south {b} frames");
    // One client connection, two routes: each gets its own upstream connection.
    let mut c = RawRtsp::connect(gw.addr());
    for (cseq, path) in [(1, "/north"), (2, "/south"), (3, "/north")] {
        let r = c.request(&format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n",
            gw_url(&gw, path)
        ));
        assert_eq!(
            u16::from(r.status()),
            200,
            "{path} on a shared client connection"
        );
        assert_eq!(
            header(&r, "content-base"),
            Some(format!("{}/", gw_url(&gw, path)))
        );
    }
    let none = c.request(&format!(
        "DESCRIBE {} RTSP/1.0\r\nCSeq: 9\r\n\r\n",
        gw_url(&gw, "/west")
    ));
    assert_eq!(u16::from(none.status()), 404, "no route");
    assert_eq!(header(&none, "cseq").as_deref(), Some("9"));
}

#[test]
fn a_server_killed_mid_stream_ends_the_client_and_releases_the_session() {
    let mut server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    let mut player = Command::new(require("ffmpeg"))
        .args(["-hide_banner", "-nostats", "-rtsp_transport", "tcp", "-i"])
        .arg(gw_url(&gw, "/cam"))
        .args(["-t", "60", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("media to flow", WAIT, || {
        (gw.metric(
            "switchyard_rtsp_media_bytes_total",
            &[("direction", "to_client"), ("transport", "tcp")],
        ) > 20_000.0)
            .then_some(())
    });
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_active", &[("listener", "media")]),
        1.0
    );
    server.kill();
    wait_for("the player to see the end of the stream", WAIT, || {
        player.try_wait().ok().flatten()
    });
    wait_for("the gateway to release the session", WAIT, || {
        (gw.metric(
            "switchyard_rtsp_sessions_released_total",
            &[("reason", "upstream_closed")],
        ) == 1.0)
            .then_some(())
    });
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_active", &[("listener", "media")]),
        0.0
    );
    assert!(gw.log().contains("RTSP upstream closed"));
}

#[test]
fn malformed_rtsp_is_answered_400_and_closed_while_others_play_on() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    let mut c = RawRtsp::connect(gw.addr());
    c.send(
        format!(
            "OPTIONS {} RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            gw_url(&gw, "/cam")
        )
        .as_bytes(),
    );
    assert_eq!(u16::from(c.response().status()), 200);
    c.send(b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq 2\r\n\r\n");
    let rest = c.closed();
    assert!(
        rest.starts_with(b"RTSP/1.0 400 Bad Request\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(frames(&gw_url(&gw, "/cam"), "tcp", 1) > 0);
}

#[test]
fn rtsp_2_requests_are_refused_with_505() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "");
    let mut c = RawRtsp::connect(gw.addr());
    let r = c.request(&format!(
        "OPTIONS {} RTSP/2.0\r\nCSeq: 1\r\n\r\n",
        gw_url(&gw, "/cam")
    ));
    assert_eq!(u16::from(r.status()), 505);
    assert_eq!(header(&r, "cseq").as_deref(), Some("1"));
    // The connection stays usable for RTSP/1.0.
    let r = c.request(&format!(
        "OPTIONS {} RTSP/1.0\r\nCSeq: 2\r\n\r\n",
        gw_url(&gw, "/cam")
    ));
    assert_eq!(u16::from(r.status()), 200);
    assert!(header(&r, "public").is_some_and(|p| p.contains("DESCRIBE")));
}

#[test]
fn gateway_basic_auth_challenges_and_admits() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(
        &server,
        "rtsp: {auth: {realm: media-lab, users: [{username: viewer, password: s3cret}]}}",
    );
    let mut c = RawRtsp::connect(gw.addr());
    let r = c.request(&format!(
        "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        gw_url(&gw, "/cam")
    ));
    assert_eq!(u16::from(r.status()), 401);
    assert_eq!(
        header(&r, "www-authenticate").as_deref(),
        Some("Basic realm=\"media-lab\"")
    );
    let (ok, _, _) = run(
        Command::new(require("ffprobe"))
            .args(["-v", "error", "-rtsp_transport", "tcp", "-i"])
            .arg(format!("rtsp://viewer:wrong@{}/cam", gw.addr())),
        Duration::from_secs(30),
    );
    assert!(!ok, "a wrong password must not pass");
    let url = format!("rtsp://viewer:s3cret@{}/cam", gw.addr());
    assert_eq!(probe(&url, "tcp"), probe(&server.url("/cam"), "tcp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_shares_the_sniffing_port_with_http_and_redis() {
    let server = RtspServer::start(&["/cam"]);
    let redis = RedisServer::start();
    let web = HttpUpstream::start();
    let ports = Ports::new();
    let gw = Gateway::start(&config(
        &ports,
        "http1, redis, rtsp",
        &[
            "{match: {protocol: rtsp}, cluster: cams}",
            "{match: {protocol: redis}, cluster: redis}",
            "{match: {protocol: http1}, cluster: web}",
        ],
        &[
            format!("{{name: cams, hosts: [\"{}\"]}}", server.addr()),
            format!("{{name: redis, hosts: [\"{}\"]}}", redis.addr()),
            format!("{{name: web, hosts: [\"{}\"]}}", web.addr()),
        ],
        "",
    ));
    let addr = gw.addr();
    let url = gw_url(&gw, "/cam");
    let player = tokio::task::spawn_blocking(move || frames(&url, "tcp", 2));
    let mut con = redis_conn(addr).await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "v");
    let (status, body) = http_get(addr, "/hello").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from upstream\n"));
    assert!(player.await.unwrap() >= 25);
    assert_eq!(
        probe(&gw_url(&gw, "/cam"), "udp"),
        probe(&server.url("/cam"), "udp")
    );
}

#[test]
fn the_rtsp_listener_block_is_checked_and_the_media_lab_config_is_ok() {
    let check = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .arg(path)
            .output()
            .expect("run switchyard check")
    };
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("labs/media/switchyard.yaml");
    let out = check(&lab);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    let ports = Ports::new();
    let yaml = config(
        &ports,
        "rtsp, http1",
        &["{match: {protocol: rtsp}, cluster: cams}"],
        &["{name: cams, hosts: [\"127.0.0.1:8554\"]}".to_owned()],
        "rtsp: {auth: {realm: lab, users: []}}",
    );
    std::fs::write(&path, &yaml).unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", path.display()))
            && stderr.contains("listeners[media].rtsp.auth.users")
            && stderr.contains("username"),
        "{stderr}"
    );
    std::fs::write(
        &path,
        yaml.replace("users: []", "users: [{username: a, password: b}]"),
    )
    .unwrap();
    assert!(check(&path).status.success());
}

#[test]
fn an_idle_udp_session_times_out_and_frees_its_relay_ports() {
    let server = RtspServer::start(&["/cam"]);
    let gw = gateway_for(&server, "rtsp: {session_timeout: 1s}");
    let base = gw_url(&gw, "/cam");
    let mut c = RawRtsp::connect(gw.addr());
    let setup = c.request(&format!(
        "SETUP {base}/stream=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;unicast;client_port=40100-40101\r\n\r\n"
    ));
    assert_eq!(u16::from(setup.status()), 200);
    let transport = header(&setup, "transport").expect("Transport");
    let rtp: u16 = transport
        .split(';')
        .find_map(|p| p.strip_prefix("server_port="))
        .and_then(|p| p.split('-').next()?.parse().ok())
        .expect("server_port");
    assert!(std::net::UdpSocket::bind(("127.0.0.1", rtp)).is_err());
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_active", &[("listener", "media")]),
        1.0
    );
    // No request naming the session and no RTCP from the client for 1 s.
    wait_for("the idle session to time out", WAIT, || {
        (gw.metric(
            "switchyard_rtsp_sessions_released_total",
            &[("reason", "timeout")],
        ) == 1.0)
            .then_some(())
    });
    assert_eq!(
        gw.metric("switchyard_rtsp_sessions_active", &[("listener", "media")]),
        0.0
    );
    wait_for("the relay's ports to be freed", WAIT, || {
        std::net::UdpSocket::bind(("127.0.0.1", rtp)).ok()
    });
}

/// `health_check: {kind: rtsp}` sends OPTIONS to each server: a dead one
/// leaves the cluster (with `failover: false` every session then reaches the
/// live one) and comes back once it answers. Only server `a` has the mount
/// `/only-a`, so a DESCRIBE of it tells which server a session reached.
#[test]
fn rtsp_health_checks_take_a_dead_server_out_and_bring_it_back() {
    let mut a = RtspServer::start(&["/cam", "/only-a"]);
    let b = RtspServer::start(&["/cam"]);
    let port_a = a.port;
    let ports = Ports::new();
    let gw = Gateway::start(&config(
        &ports,
        "rtsp",
        &["{match: {protocol: rtsp}, cluster: cams}"],
        &[format!(
            "{{name: cams, failover: false, hosts: [\"{}\", \"{}\"], health_check: {{kind: rtsp, interval: 200ms, timeout: 2s, unhealthy_threshold: 2, healthy_threshold: 2}}}}",
            a.addr(),
            b.addr()
        )],
        "",
    ));
    // Six sessions, one request each: their statuses. (DESCRIBE of a mount
    // makes GStreamer prepare its media, which may answer 503 under load:
    // OPTIONS shows reachability, DESCRIBE of `/only-a` which server it was.)
    let sessions = |method: &str, path: &str| -> Vec<u16> {
        (0..6)
            .map(|_| {
                let mut c = RawRtsp::connect(gw.addr());
                let r = c.request(&format!(
                    "{method} {} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n",
                    gw_url(&gw, path)
                ));
                u16::from(r.status())
            })
            .collect()
    };
    let describe = |path: &str| sessions("DESCRIBE", path);
    let limit = Duration::from_secs(30);
    wait_for("sessions on both servers", limit, || {
        let s = describe("/only-a");
        (s.contains(&200) && s.contains(&404)).then_some(())
    });
    a.kill();
    wait_for("the dead server to leave the cluster", limit, || {
        sessions("OPTIONS", "/cam")
            .iter()
            .all(|s| *s == 200)
            .then_some(())
    });
    assert_eq!(sessions("OPTIONS", "/cam"), [200; 6]);
    assert_eq!(describe("/only-a"), [404; 6], "every session reaches b");
    drop(a);
    let _a = RtspServer::start_on(port_a, &["/cam", "/only-a"]);
    wait_for("the server to come back", limit, || {
        describe("/only-a").contains(&200).then_some(())
    });
}
