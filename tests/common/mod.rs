//! The integration-test harness: real peer servers (redis-server, a Python
//! HTTP/1.1 upstream, nginx) and the real gateway binary, each on its own free
//! port and each killed when its guard is dropped; raw-socket helpers for HTTP
//! and RESP; a config template.
//!
//! A missing peer binary fails the test with a message naming the package to
//! install; nothing is ever skipped.
#![allow(dead_code)]

pub mod grpc_peer;
pub mod mariadb;
pub mod pki;
pub mod rtsp_server;

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any readiness wait or socket read may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Ports, binaries, polling

/// A free TCP port on 127.0.0.1, never handed out twice within one test
/// binary. Taken below the kernel's ephemeral range when there is room, so
/// that no outgoing connection (the gateway's to its upstreams, a client's)
/// can take it between this check and the server binding it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    for attempt in 0..10_000u32 {
        let port = if ephemeral_low > 21_000 && attempt < 5_000 {
            20_000 + (random() % u64::from(ephemeral_low - 20_000)) as u16
        } else {
            TcpListener::bind("127.0.0.1:0")
                .ok()
                .and_then(|l| l.local_addr().ok())
                .map_or(0, |a| a.port())
        };
        if port == 0 || TcpListener::bind(local(port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// A random number from std's randomly seeded hasher.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The Debian package that ships each peer binary.
fn package_of(bin: &str) -> &'static str {
    match bin {
        "redis-server" => "redis-server",
        "redis-cli" | "redis-benchmark" => "redis-tools",
        "nginx" => "nginx-light",
        "curl" => "curl",
        "python3" => "python3",
        "socat" => "socat",
        "node" => "nodejs",
        "npm" => "npm",
        "mosquitto" | "mosquitto_passwd" => "mosquitto",
        "mosquitto_pub" | "mosquitto_sub" => "mosquitto-clients",
        "nghttp" | "h2load" => "nghttp2-client",
        "openssl" => "openssl",
        "ffmpeg" | "ffprobe" => "ffmpeg",
        "mariadbd" | "mariadb-install-db" => "mariadb-server",
        "mariadb" => "mariadb-client",
        "sysbench" => "sysbench",
        "haproxy" => "haproxy",
        "nutcracker" => "nutcracker",
        "memcached" => "memcached",
        "memcslap" | "memcstat" => "libmemcached-tools",
        "ss" | "ip" => "iproute2",
        "iptables" => "iptables",
        "chromium" => "chromium",
        "chromedriver" => "chromium-driver",
        _ => "(unknown)",
    }
}

/// The path of a peer binary; panics (fails the test) with an install hint when it is missing.
pub fn require(bin: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{bin} not found: install the {} package (.ci/run does)",
                package_of(bin)
            )
        })
}

/// Poll `f` until it returns `Some`, at most `limit`; panics naming `what` after that.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connectable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Kill a child process and reap it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Fail if `child` has exited, showing `log`.
fn check_alive(child: &mut Child, name: &str, log: &Path) {
    if let Ok(Some(status)) = child.try_wait() {
        let text = fs::read_to_string(log).unwrap_or_default();
        panic!("{name} exited during startup with {status}; its output:\n{text}");
    }
}

fn log_file(dir: &Path, name: &str) -> (PathBuf, Stdio, Stdio) {
    let path = dir.join(name);
    let f = fs::File::create(&path).expect("create log file");
    let g = f.try_clone().expect("clone log file");
    (path, Stdio::from(f), Stdio::from(g))
}

// ---------------------------------------------------------------------------
// Peer servers

/// twemproxy (nutcracker) on a free port, killed on drop: a ketama /
/// fnv1a_64 pool without host ejection, the peer proxy for Redis and memcached.
pub struct Twemproxy {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Twemproxy {
    /// A Redis pool over `servers` (`(address, weight)`), hash tag `{}`.
    pub fn redis(servers: &[(SocketAddr, u32)]) -> Self {
        Self::start(servers, "  hash_tag: \"{}\"\n  redis: true\n")
    }

    /// A memcached pool over `servers` (`(address, weight)`), no hash tag.
    pub fn memcached(servers: &[(SocketAddr, u32)]) -> Self {
        Self::start(servers, "")
    }

    fn start(servers: &[(SocketAddr, u32)], extra: &str) -> Self {
        let bin = require("nutcracker");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let list: String = servers
            .iter()
            .map(|(a, w)| format!("    - {a}:{w}\n"))
            .collect();
        let conf = dir.path().join("nutcracker.yml");
        std::fs::write(
            &conf,
            format!(
                "pool:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n{extra}  auto_eject_hosts: false\n  servers:\n{list}"
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .args(["-s", &free_port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("nutcracker to listen", Duration::from_secs(10), || {
            RawConn::try_connect(local(port)).ok().map(|_| ())
        });
        Twemproxy {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }
}

impl Drop for Twemproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private memcached on a free port, killed on drop.
pub struct MemcachedServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl MemcachedServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Self::spawn(port, dir.path());
        MemcachedServer { child, port, dir }
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let bin = require("memcached");
        let (log, out, err) = log_file(dir, "memcached.log");
        let mut child = Command::new(bin)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-m",
                "64",
                "-t",
                "1",
            ])
            .args(["-u", "root"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn memcached");
        let addr = local(port);
        wait_for(&format!("memcached on {addr} to answer"), WAIT, || {
            check_alive(&mut child, "memcached", &log);
            let mut c = RawConn::try_connect(addr).ok()?;
            c.send(b"version\r\n");
            let mut line = Vec::new();
            std::io::BufRead::read_until(&mut c.reader, b'\n', &mut line).ok()?;
            line.starts_with(b"VERSION ").then_some(())
        });
        child
    }

    /// Kill the server (it stays down until `restart`).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Kill the server and start a fresh, empty one on the same port.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        self.child = Self::spawn(self.port, self.dir.path());
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A private redis-server on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(port, dir.path(), &extra);
        RedisServer {
            child,
            port,
            dir,
            extra,
        }
    }

    /// Kill the server and start a fresh, empty one on the same port.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        self.child = Self::spawn(self.port, self.dir.path(), &self.extra);
    }

    /// Kill the server (it stays down until `restart`).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    fn spawn(port: u16, dir: &Path, extra: &[String]) -> Child {
        let bin = require("redis-server");
        let (log, out, err) = log_file(dir, "redis.log");
        let mut child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn redis-server");
        let addr = local(port);
        wait_for(
            &format!("redis-server on {addr} to answer PING"),
            WAIT,
            || {
                check_alive(&mut child, "redis-server", &log);
                let mut c = RawConn::try_connect(addr).ok()?;
                c.send(b"PING\r\n");
                let r = c.reply().ok()?;
                // A server with `--requirepass` answers NOAUTH: it is up all the same.
                (r == b"+PONG\r\n" || r.starts_with(b"-NOAUTH")).then_some(())
            },
        );
        child
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr())
    }

    /// An async connection straight to this server (not through the gateway).
    pub async fn direct(&self) -> redis::aio::MultiplexedConnection {
        redis_conn(self.addr()).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// The Python HTTP/1.1 upstream (`tests/peers/http_upstream.py`), killed on drop.
pub struct HttpUpstream {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl HttpUpstream {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Self::spawn(port, dir.path());
        HttpUpstream { child, port, dir }
    }

    /// Kill the server and start a fresh one on the same port.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        self.child = Self::spawn(self.port, self.dir.path());
    }

    /// Kill the server (`restart` brings it back on the same port).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let python = require("python3");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/http_upstream.py");
        let (log, out, err) = log_file(dir, "upstream.log");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn python3 http_upstream.py");
        let addr = local(port);
        wait_for(&format!("the Python upstream on {addr}"), WAIT, || {
            check_alive(&mut child, "http_upstream.py", &log);
            connectable(addr).then_some(())
        });
        child
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An OTLP/HTTP trace receiver (`tests/peers/otlp_receiver.py`): decodes
/// what it is sent with the OpenTelemetry project's protobuf classes (PyPI
/// `opentelemetry-proto`) and keeps one JSON object per span; killed on drop.
pub struct OtlpReceiver {
    child: Child,
    pub port: u16,
    spans: PathBuf,
    _dir: tempfile::TempDir,
}

impl OtlpReceiver {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let spans = dir.path().join("spans.jsonl");
        let python = require("python3");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/otlp_receiver.py");
        let (log, out, err) = log_file(dir.path(), "receiver.log");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&spans)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn python3 otlp_receiver.py");
        let addr = local(port);
        wait_for(
            &format!("the OTLP receiver on {addr} (needs: pip install opentelemetry-proto)"),
            WAIT,
            || {
                check_alive(&mut child, "otlp_receiver.py", &log);
                connectable(addr).then_some(())
            },
        );
        OtlpReceiver {
            child,
            port,
            spans,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .inspect(|v: &serde_json::Value| {
                assert!(
                    v.get("error").is_none(),
                    "the receiver could not decode: {v}"
                )
            })
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A private nginx serving static files, killed on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Serve `files` (relative path, content) from a fresh document root.
    pub fn start(files: &[(&str, &[u8])]) -> Self {
        Self::start_with(files, "", "keepalive_requests 10000;", "")
    }

    /// Answer every request with `status` (nginx's `return`), e.g. a host
    /// that fails everything with 503.
    pub fn start_answering(status: u16) -> Self {
        Self::start_with(
            &[],
            "",
            "keepalive_requests 10000;",
            &format!("return {status};"),
        )
    }

    /// Serve `files` and log every request as `METHOD HOST_HEADER URI` to
    /// the access log [`Nginx::access_log`] reads (a mirror's shadow).
    pub fn start_logging(files: &[(&str, &[u8])]) -> Self {
        Self::start_with(
            files,
            "",
            "keepalive_requests 10000; log_format mirror '$request_method $http_host $request_uri';",
            "access_log access.log mirror;",
        )
    }

    /// The lines of the access log of [`Nginx::start_logging`].
    pub fn access_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// As [`Nginx::start_answering`], logging every request it sees (count
    /// them with [`Nginx::requests`]).
    pub fn start_answering_logged(status: u16) -> Self {
        Self::start_with(
            &[],
            "",
            "keepalive_requests 10000;",
            &format!("access_log access.log; return {status};"),
        )
    }

    /// Requests logged so far (by a server from [`Nginx::start_answering_logged`]).
    pub fn requests(&self) -> usize {
        self.access_log().len()
    }

    /// Serve `files` over HTTP/2 with prior knowledge (h2c, `listen ... http2`).
    /// `keepalive_requests` streams per connection, then nginx sends GOAWAY.
    pub fn start_h2c(files: &[(&str, &[u8])], keepalive_requests: u32) -> Self {
        Self::start_with(
            files,
            " http2",
            &format!("keepalive_requests {keepalive_requests};"),
            "",
        )
    }

    /// Answer every request with `<name> <request_uri> <host>` and the
    /// request's `x-env`, `x-tag`, `x-internal`, `x-forwarded-for` and
    /// `x-request-id` (one per line, `-` when absent), plus an `X-Upstream:
    /// <name>` response header: what a request looked like when it came.
    /// `h2c`: over HTTP/2 with prior knowledge.
    pub fn start_echo(name: &str, h2c: bool) -> Self {
        Self::start_with(
            &[],
            if h2c { " http2" } else { "" },
            "keepalive_requests 10000; map $http_x_env $env { \"\" -; default $http_x_env; } \
             map $http_x_tag $tag { \"\" -; default $http_x_tag; } \
             map $http_x_internal $internal { \"\" -; default $http_x_internal; } \
             map $http_x_forwarded_for $xff { \"\" -; default $http_x_forwarded_for; } \
             map $http_x_request_id $rid { \"\" -; default $http_x_request_id; }",
            &format!(
                "default_type text/plain; add_header X-Upstream {name} always; \
                 return 200 \"{name} $request_uri $http_host\nx-env: $env\nx-tag: $tag\n\
                 x-internal: $internal\nx-forwarded-for: $xff\nx-request-id: $rid\n\";"
            ),
        )
    }

    /// `listen` gets `listen_opts` after the address; `extra` goes into
    /// `http {}`, `location` into `location / {}`.
    pub fn start_with(
        files: &[(&str, &[u8])],
        listen_opts: &str,
        extra: &str,
        location: &str,
    ) -> Self {
        let bin = require("nginx");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let root = d.join("www");
        for (name, content) in files {
            let path = root.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        fs::create_dir_all(&root).unwrap();
        let port = free_port();
        let p = d.display();
        let conf = format!(
            r#"master_process off;
pid {p}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ text/html html; text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    keepalive_timeout 60s;
    {extra}
    server {{
        listen 127.0.0.1:{port}{listen_opts};
        root {root};
        location / {{ {location} }}
    }}
}}
"#,
            root = root.display()
        );
        fs::write(d.join("nginx.conf"), conf).unwrap();
        let (log, out, err) = log_file(d, "nginx.log");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off; error_log stderr;"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn nginx");
        let addr = local(port);
        wait_for(&format!("nginx on {addr}"), WAIT, || {
            check_alive(&mut child, "nginx", &log);
            connectable(addr).then_some(())
        });
        Nginx { child, port, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    /// The document root (files may be added or removed while it runs).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A private mosquitto broker on a free port (anonymous clients allowed, no
/// persistence), killed on drop. Its log (connects, disconnects) is kept.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Start with extra `mosquitto.conf` lines (e.g. `max_queued_messages 0`).
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
            extra: extra.to_owned(),
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let bin = require("mosquitto");
        let d = self.dir.path();
        let conf = d.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\nconnection_messages true\n{}\n",
                self.port, self.extra
            ),
        )
        .unwrap();
        // Append: a restarted broker keeps the earlier log.
        let log = d.join("mosquitto.log");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the mosquitto log");
        let g = f.try_clone().expect("clone log file");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(g))
            .spawn()
            .expect("spawn mosquitto");
        let addr = local(self.port);
        wait_for(
            &format!("mosquitto on {addr} to answer CONNECT"),
            WAIT,
            || {
                check_alive(&mut child, "mosquitto", &log);
                let mut c = RawConn::try_connect(addr).ok()?;
                // MQTT 3.1.1 CONNECT, clean session, empty client id.
                c.send_lossy(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
                let mut connack = [0u8; 4];
                c.reader.read_exact(&mut connack).ok()?;
                c.send_lossy(b"\xe0\x00");
                (connack == [0x20, 0x02, 0x00, 0x00]).then_some(())
            },
        );
        self.child = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    /// Kill the broker (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }

    /// Kill the broker and start a fresh one (no sessions, no retained
    /// messages) on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What the broker has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The temp dir of this broker (for files a test writes beside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- mosquitto log (port {}) ----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// A TCP echo server on a free port, on a thread (for the tcp_proxy fallback).
pub struct EchoServer {
    pub port: u16,
}

impl EchoServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoServer { port }
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }
}

// ---------------------------------------------------------------------------
// The gateway

/// The gateway binary running a config, killed on drop.
pub struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Every listener, by name, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
}

impl Gateway {
    /// Write `yaml` to a temp dir and run `switchyard run -c FILE` on it; returns
    /// once `GET /ready` on the admin address answers 200. The yaml must set
    /// `admin: {address: 127.0.0.1:<free port>}`.
    pub fn start(yaml: &str) -> Self {
        let config = switchyard::config::load_str(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("the test config does not load:\n{e}\n---\n{yaml}"));
        let admin = config
            .admin
            .addr()
            .expect("the test config must set admin.address");
        assert!(
            admin.port() != 9901,
            "give the admin server a free port, not the default 9901"
        );
        let listeners = config
            .listeners
            .iter()
            .map(|l| (l.name.value.clone(), l.address.value))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("switchyard.yaml");
        fs::write(&config_path, yaml).unwrap();
        let (log_path, out, err) = log_file(dir.path(), "gateway.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("SWITCHYARD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the switchyard binary");
        wait_for("the gateway's /ready to answer 200", WAIT, || {
            check_alive(&mut child, "switchyard", &log_path);
            let (status, _) = http_get(admin, "/ready").ok()?;
            (status == 200).then_some(())
        });
        Gateway {
            child,
            dir,
            config_path,
            log_path,
            listeners,
            admin,
        }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// A listener's address by name.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
            .1
    }

    /// `http://<first listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the gateway has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` on the admin server: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// The value of one sample of `/metrics` (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels).unwrap_or(0.0)
    }

    /// Send a signal with `kill -SIG PID`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Wait for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_for("the gateway to exit", limit, || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop(&mut self.child);
        let log = self.log();
        if std::thread::panicking() {
            eprintln!("---- gateway log ({}) ----\n{log}", self.log_path.display());
        } else if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
            // Whatever the test checked, a panic in the gateway fails it.
            panic!("the gateway panicked during this test: {line}\n---- gateway log ----\n{log}");
        }
    }
}

/// One sample of a Prometheus text exposition: `name{labels} value`, where all
/// of `labels` are among the sample's labels.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if all { value.parse().ok() } else { None }
        })
}

// ---------------------------------------------------------------------------
// Config template

/// A one-listener config: listener `edge` (http1 + redis) with route table
/// `main`; cluster `redis` (if redis hosts are given) takes every Redis
/// command, cluster `web` (if HTTP hosts are given) every HTTP request, and
/// otherwise HTTP gets a direct response "gateway". Extra YAML lines are
/// spliced in at the right indentation: put routes and clusters in flow style
/// (`{match: {path_prefix: /x}, cluster: web}`); extra routes come first.
#[derive(Default)]
pub struct Template<'a> {
    pub redis: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    /// Extra listener fields, e.g. `detect: {timeout: 500ms}`.
    pub listener: Vec<&'a str>,
    /// Extra routes of the `*` virtual host, before the default ones.
    pub routes: Vec<String>,
    /// Extra virtual hosts, before the `*` one, each a flow mapping.
    pub virtual_hosts: Vec<String>,
    /// Extra clusters, each a flow mapping.
    pub clusters: Vec<String>,
    /// Extra fields of the `redis` and `web` clusters, e.g. `request_timeout: 300ms`.
    pub cluster_fields: Vec<&'a str>,
    /// Top-level extras, e.g. `drain_timeout: 5s`.
    pub top: Vec<&'a str>,
    /// Leave out the default HTTP route (so unmatched requests get 404).
    pub no_http_default: bool,
}

/// Fresh ports for a config: (listener, admin).
pub struct Ports {
    pub listen: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Self {
        Ports {
            listen: free_port(),
            admin: free_port(),
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

impl Template<'_> {
    pub fn render(&self, ports: &Ports) -> String {
        let hosts = |h: &[SocketAddr]| {
            h.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut y = String::new();
        y += &format!("admin:\n  address: 127.0.0.1:{}\n", ports.admin);
        for t in &self.top {
            y += &format!("{t}\n");
        }
        y += &format!(
            "listeners:\n  - name: edge\n    address: 127.0.0.1:{}\n    protocols: [http1, redis]\n    route_table: main\n",
            ports.listen
        );
        for l in &self.listener {
            y += &format!("    {l}\n");
        }
        y += "route_tables:\n  - name: main\n    virtual_hosts:\n";
        for v in &self.virtual_hosts {
            y += &format!("      - {v}\n");
        }
        y += "      - name: any\n        domains: [\"*\"]\n        routes:\n";
        for r in &self.routes {
            y += &format!("          - {r}\n");
        }
        if !self.redis.is_empty() {
            y += "          - {match: {protocol: redis}, cluster: redis}\n";
        }
        if !self.no_http_default {
            y += if self.http.is_empty() {
                "          - {match: {protocol: http1}, direct_response: {status: 200, body: gateway}}\n"
            } else {
                "          - {match: {protocol: http1}, cluster: web}\n"
            };
        }
        let mut clusters = Vec::new();
        for (name, h) in [("redis", &self.redis), ("web", &self.http)] {
            if !h.is_empty() {
                let mut c = format!("  - name: {name}\n    hosts: [{}]\n", hosts(h));
                for f in &self.cluster_fields {
                    c += &format!("    {f}\n");
                }
                clusters.push(c);
            }
        }
        for c in &self.clusters {
            clusters.push(format!("  - {c}\n"));
        }
        if !clusters.is_empty() {
            y += "clusters:\n";
            y += &clusters.concat();
        }
        y
    }

    /// Render with fresh ports and start the gateway.
    pub fn start(&self) -> Gateway {
        Gateway::start(&self.render(&Ports::new()))
    }
}

// ---------------------------------------------------------------------------
// Raw sockets: HTTP/1 and RESP

/// A blocking client connection with a read timeout of [`WAIT`].
pub struct RawConn {
    pub reader: BufReader<TcpStream>,
}

/// How waiting for the peer to close ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A clean EOF.
    Eof,
    /// A reset (the peer closed with unread data).
    Reset,
}

impl RawConn {
    pub fn try_connect(addr: SocketAddr) -> io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(WAIT))?;
        s.set_nodelay(true)?;
        Ok(RawConn {
            reader: BufReader::new(s),
        })
    }

    pub fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write to the connection");
    }

    /// Write, tolerating a peer that closed early (returns whether all was written).
    pub fn send_lossy(&mut self, bytes: &[u8]) -> bool {
        self.reader.get_mut().write_all(bytes).is_ok()
    }

    /// Read one HTTP/1 response (interim 1xx responses are returned too).
    pub fn response(&mut self) -> Response {
        read_response(&mut self.reader, false)
            .unwrap_or_else(|e| panic!("reading an HTTP response: {e}"))
    }

    /// Read one HTTP/1 response to a HEAD request (no body).
    pub fn head_response(&mut self) -> Response {
        read_response(&mut self.reader, true)
            .unwrap_or_else(|e| panic!("reading an HTTP response: {e}"))
    }

    /// Read one complete RESP reply, raw.
    pub fn reply(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        read_resp(&mut self.reader, &mut out)?;
        Ok(out)
    }

    /// Send a command (RESP array of bulk strings) and read the raw reply.
    pub fn command(&mut self, args: &[&str]) -> Vec<u8> {
        self.send(&resp(args));
        self.reply()
            .unwrap_or_else(|e| panic!("reading the reply to {args:?}: {e}"))
    }

    /// Read whatever arrives until the peer closes; panics if it is still
    /// open after [`WAIT`]. Returns the bytes read and how it closed.
    pub fn read_until_closed(&mut self) -> (Vec<u8>, Closed) {
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return (got, Closed::Eof),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return (got, Closed::Reset);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "the connection is still open after {WAIT:?} (read so far: {:?})",
                        String::from_utf8_lossy(&got)
                    )
                }
                Err(e) => panic!("reading until close: {e}"),
            }
        }
    }
}

/// An HTTP/1 response read off a raw connection.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line and header lines, as received.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"));
    }
    Ok(line)
}

/// Read one HTTP/1 response; `head_only` for a HEAD request.
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> io::Result<Response> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut head = status_line.clone();
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        head += &line;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut resp = Response {
        status,
        head,
        headers,
        body: Vec::new(),
        chunked: false,
    };
    if head_only || status < 200 || status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        resp.chunked = true;
        loop {
            let line = read_line(r)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if size == 0 {
                while !read_line(r)?.trim().is_empty() {}
                break;
            }
            let at = resp.body.len();
            resp.body.resize(at + size, 0);
            r.read_exact(&mut resp.body[at..])?;
            read_line(r)?;
        }
    } else if let Some(n) = resp.header("content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        resp.body.resize(n, 0);
        r.read_exact(&mut resp.body)?;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// `GET path` with `Connection: close`: (status, body as text).
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut c = RawConn::try_connect(addr)?;
    c.reader.get_mut().write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let r = read_response(&mut c.reader, false)?;
    Ok((r.status, r.text()))
}

/// A keep-alive GET request's bytes.
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").into_bytes()
}

/// A RESP command: an array of bulk strings.
pub fn resp(args: &[&str]) -> Vec<u8> {
    resp_bytes(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
}

pub fn resp_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Read one complete RESP2/RESP3 value, appending its raw bytes to `out`.
pub fn read_resp(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "EOF before a reply",
        ));
    }
    out.extend_from_slice(&line);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad RESP line {:?}", String::from_utf8_lossy(&line)),
        )
    };
    let body = std::str::from_utf8(&line[1..])
        .map_err(|_| bad())?
        .trim_end();
    let n = || body.parse::<i64>().map_err(|_| bad());
    match line[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
        b'$' | b'=' | b'!' => {
            let len = n()?;
            if len >= 0 {
                let at = out.len();
                out.resize(at + len as usize + 2, 0);
                r.read_exact(&mut out[at..])?;
            }
        }
        b'*' | b'~' | b'>' => {
            for _ in 0..n()?.max(0) {
                read_resp(r, out)?;
            }
        }
        b'%' | b'|' => {
            for _ in 0..n()?.max(0) * 2 {
                read_resp(r, out)?;
            }
            if line[0] == b'|' {
                read_resp(r, out)?; // the attributed value
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clients

/// A reqwest client that ignores proxy settings in the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// An async Redis connection to `addr`.
pub async fn redis_conn(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("redis client");
    tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
        .await
        .unwrap_or_else(|_| panic!("connecting to redis at {addr} timed out"))
        .unwrap_or_else(|e| panic!("connecting to redis at {addr}: {e}"))
}

/// Run `cmds` one by one; each result (value or error) rendered as text, to
/// compare a session through the gateway with a direct one.
pub async fn run_commands(
    con: &mut redis::aio::MultiplexedConnection,
    cmds: Vec<redis::Cmd>,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in cmds {
        let r: redis::RedisResult<redis::Value> = c.query_async(con).await;
        out.push(match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error {:?} {}", e.code(), e.detail().unwrap_or("")),
        });
    }
    out
}

/// A `curl` command preset: silent but showing errors, no proxies, bounded time.
pub fn curl() -> Command {
    let mut c = Command::new(require("curl"));
    c.args(["-sS", "--noproxy", "*", "--max-time", "30"]);
    c
}

/// `redis-cli -h 127.0.0.1 -p PORT` plus `args`.
pub fn redis_cli(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(require("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

/// Run a command, failing with its output if it does not exit 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The deterministic body pattern of the Python upstream: byte i = i % 251.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Byte equality with a readable failure (no 10 MB dumps).
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

// ---------------------------------------------------------------------------
// RPC peers: Dubbo and SOFA Bolt servers and clients in Node
// (`tests/peers/rpc/peer.js` on sofa-rpc-node and dubbo-remoting)

/// Which RPC protocol a Node peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    Bolt,
    Dubbo,
}

impl RpcKind {
    /// The name `peer.js` and the gateway's config use.
    pub fn name(self) -> &'static str {
        match self {
            RpcKind::Bolt => "bolt",
            RpcKind::Dubbo => "dubbo",
        }
    }

    /// The value a route's `services` matches for `interface`: Dubbo clients
    /// send the interface name, SOFA Bolt clients `interface:version` (the
    /// peers use sofa-rpc-node's default version, 1.0).
    pub fn service(self, interface: &str) -> String {
        match self {
            RpcKind::Bolt => format!("{interface}:1.0"),
            RpcKind::Dubbo => interface.to_owned(),
        }
    }
}

/// `node tests/peers/rpc/peer.js` (node and the npm packages checked).
fn rpc_peer() -> Command {
    let node = require("node");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rpc");
    for package in ["sofa-rpc-node", "dubbo-remoting"] {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "{} is missing: run `npm ci --prefix tests/peers/rpc` — .ci/run does",
            dir.join("node_modules").join(package).display()
        );
    }
    let mut c = Command::new(node);
    c.arg(dir.join("peer.js"));
    c
}

/// A Node RPC server (`peer.js server PORT KIND`) on a free port, killed on
/// drop: service `com.example.Calc` with `plus(a, b)`, `echo(s)` and
/// `slow(ms)`, and `com.example.Other` with `whoami()`, which answers the
/// server's port.
pub struct RpcServer {
    child: Option<Child>,
    pub port: u16,
    pub kind: RpcKind,
    dir: tempfile::TempDir,
    /// `peer.js server` words after the protocol (`close-after-response`).
    mode: Option<&'static str>,
}

impl RpcServer {
    pub fn start(kind: RpcKind) -> Self {
        Self::start_mode(kind, None)
    }

    /// A server that closes each connection as soon as it has answered every
    /// request it read on it (`peer.js server PORT KIND close-after-response`).
    pub fn start_closing_after_response(kind: RpcKind) -> Self {
        Self::start_mode(kind, Some("close-after-response"))
    }

    /// A server whose `whoami()` throws (`peer.js server PORT KIND failing`):
    /// Bolt answers it with SERVER_EXCEPTION.
    pub fn start_failing(kind: RpcKind) -> Self {
        Self::start_mode(kind, Some("failing"))
    }

    fn start_mode(kind: RpcKind, mode: Option<&'static str>) -> Self {
        let mut s = RpcServer {
            child: None,
            port: free_port(),
            kind,
            dir: tempfile::tempdir().expect("tempdir"),
            mode,
        };
        s.spawn();
        s
    }

    /// How many requests a `close-after-response` server read on connections
    /// it had already closed (it cannot answer them).
    pub fn late_requests(&self) -> usize {
        self.log().lines().filter(|l| *l == "late request").count()
    }

    /// How many connections a `close-after-response` server has closed.
    pub fn connections_closed(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("closed "))
            .count()
    }

    fn spawn(&mut self) {
        // Append: a restarted server keeps the earlier log.
        let log = self.dir.path().join("server.log");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the RPC server log");
        let g = f.try_clone().expect("clone log file");
        let ready_before = self.log().matches("ready\n").count();
        let mut child = rpc_peer()
            .args(["server", &self.port.to_string(), self.kind.name()])
            .args(self.mode)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(g))
            .spawn()
            .expect("spawn node peer.js server");
        let what = format!("the {} server on port {}", self.kind.name(), self.port);
        wait_for(&format!("{what} to print \"ready\""), WAIT, || {
            check_alive(&mut child, &what, &log);
            (self.log().matches("ready\n").count() > ready_before).then_some(())
        });
        self.child = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    /// Kill the server (SIGKILL: its connections are dropped mid-call).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }

    /// Kill the server and start a fresh one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What the server has printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// How many `slow()` calls have started on this server.
    pub fn slow_calls_started(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("slow "))
            .count()
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} server log (port {}) ----\n{}",
                self.kind.name(),
                self.port,
                self.log()
            );
        }
    }
}

/// What a batch of calls (one step of `peer.js client`) came to.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RpcStep {
    pub ok: usize,
    pub errors: usize,
    /// Error messages ("ErrorName: message") and how many calls got each.
    pub messages: std::collections::BTreeMap<String, usize>,
    /// Each call's result as text, in call order (`None` for an error).
    pub values: Vec<Option<String>>,
}

impl RpcStep {
    /// The error messages, one per line, for assertion messages.
    pub fn error_text(&self) -> String {
        self.messages
            .iter()
            .map(|(m, n)| format!("{n} × {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What one `peer.js client` run printed.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RpcRun {
    pub steps: Vec<RpcStep>,
    /// TCP connections the client opened.
    pub connections: usize,
    /// Of those, how many it saw closed.
    pub closed: usize,
}

/// A `peer.js client` process still running.
pub struct RpcClientRun {
    child: Option<Child>,
    dir: tempfile::TempDir,
    limit: Duration,
    what: String,
}

/// Start `peer.js client ADDR KIND --timeout MS ARGS...` without waiting:
/// `args` are steps (`CALLS METHOD ARGS...`, `$i` standing for the call's
/// index) separated by `--then`; `timeout` is the client's own per-call
/// response timeout.
pub fn spawn_rpc_client(
    addr: SocketAddr,
    kind: RpcKind,
    timeout: Duration,
    args: &[&str],
) -> RpcClientRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, out, _) = log_file(dir.path(), "stdout");
    let (_, err, _) = log_file(dir.path(), "stderr");
    let ms = timeout.as_millis().to_string();
    let child = rpc_peer()
        .args(["client", &addr.to_string(), kind.name(), "--timeout", &ms])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn node peer.js client");
    // Every call ends by the client's own timeout at the latest; steps run
    // one after the other.
    let steps = 1 + args.iter().filter(|a| **a == "--then").count() as u32;
    RpcClientRun {
        child: Some(child),
        dir,
        limit: timeout * steps + Duration::from_secs(30),
        what: format!("{} client of {addr} {args:?}", kind.name()),
    }
}

impl RpcClientRun {
    /// Wait for the client to finish (bounded) and read its results.
    pub fn wait(mut self) -> RpcRun {
        let mut child = self.child.take().expect("the client is running");
        let status = {
            let deadline = Instant::now() + self.limit;
            loop {
                if let Some(status) = child.try_wait().expect("wait for the RPC client") {
                    break status;
                }
                if Instant::now() > deadline {
                    stop(&mut child);
                    panic!(
                        "the {} did not finish within {:?}; stderr:\n{}",
                        self.what,
                        self.limit,
                        self.read("stderr")
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let stdout = self.read("stdout");
        assert!(
            status.success(),
            "the {} failed with {status}:\nstdout: {stdout}\nstderr: {}",
            self.what,
            self.read("stderr")
        );
        let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
        // JSON is YAML: the crate's YAML parser reads the line.
        line.and_then(|l| serde_saphyr::from_str(l).ok())
            .unwrap_or_else(|| panic!("the {} printed no results: {stdout:?}", self.what))
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for RpcClientRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

/// Run `peer.js client` to the end: see [`spawn_rpc_client`].
pub fn rpc_client(addr: SocketAddr, kind: RpcKind, timeout: Duration, args: &[&str]) -> RpcRun {
    spawn_rpc_client(addr, kind, timeout, args).wait()
}

/// Send one heartbeat with the Node library's own encoder
/// (`peer.js heartbeat`) and return the id of the answer it decoded.
pub fn rpc_heartbeat(addr: SocketAddr, kind: RpcKind, id: u32) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, out, _) = log_file(dir.path(), "stdout");
    let (_, err, _) = log_file(dir.path(), "stderr");
    let mut child = rpc_peer()
        .args(["heartbeat", &addr.to_string(), kind.name(), &id.to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn node peer.js heartbeat");
    // The script gives up by itself after 10 s.
    let status = wait_for("peer.js heartbeat to finish", WAIT * 2, || {
        child.try_wait().expect("wait for peer.js heartbeat")
    });
    let read = |name| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "no {} heartbeat answer through {addr}: {}",
        kind.name(),
        read("stderr")
    );
    #[derive(serde::Deserialize)]
    struct Ack {
        ack: u64,
    }
    let stdout = read("stdout");
    serde_saphyr::from_str::<Ack>(stdout.trim())
        .unwrap_or_else(|e| panic!("peer.js heartbeat printed {stdout:?}: {e}"))
        .ack
}
