//! `mqtt-idle`: open N MQTT connections and hold them idle.
//!
//! Each connection: TCP connect from one of the loopback source addresses
//! 127.0.0.<first>.. (bound before connect, so N can exceed the ~28k
//! ephemeral ports of one source address towards one destination), CONNECT
//! (keep-alive 0 by default: nobody pings), wait for CONNACK, then nothing.
//! After the ramp the count is printed on stderr and written to
//! `--ready-file`; the connections are held `--hold` seconds (or until
//! SIGINT/SIGTERM), then checked (still open?) and closed. Prints one JSON line.
//!
//! The process raises its own RLIMIT_NOFILE soft limit to what it needs (up to
//! the hard limit). The server side needs the same: `ulimit -n` the gateway
//! and the broker before starting them (the Lab's bench.sh does).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use switchyard_codecs::mqtt::Version;
use switchyard_loadgen::{
    Client, ConnectOpts, Json, json_counts, loopback_sources, nofile_for, parse_version,
};
use tokio::net::TcpStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "mqtt-idle",
    about = "Open N idle MQTT connections, hold them, print one JSON line"
)]
struct Args {
    /// Broker or gateway address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    conns: u64,
    /// Client id prefix (`<prefix><i>`).
    #[arg(long, default_value = "idle-")]
    id_prefix: String,
    /// Index of the first client.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Spread over this many loopback source addresses 127.0.0.<source-first>..
    /// (0: the kernel picks 127.0.0.1 for all).
    #[arg(long, default_value_t = 4)]
    sources: u32,
    /// First source address (last octet; wraps into the next octets).
    #[arg(long, default_value_t = 2)]
    source_first: u32,
    /// Keep-alive in CONNECT, seconds (0 = none; a long one also works: nobody pings).
    #[arg(long, default_value_t = 0)]
    keep_alive: u16,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1", value_parser = parse_version)]
    mqtt: Version,
    /// User name (none if empty).
    #[arg(long, default_value = "")]
    user: String,
    /// Password (none if empty).
    #[arg(long, default_value = "")]
    password: String,
    /// Connects in progress at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Most new connections per second (0: as fast as the concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Give up opening after this many seconds (whatever is open is held).
    #[arg(long, default_value_t = 120.0)]
    ramp_timeout: f64,
    /// Timeout of each TCP connect and each CONNACK, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Hold the connections this many seconds after the ramp (SIGINT/SIGTERM end it sooner).
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// Write `{"connected":N,...}` here once the ramp is over.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "idle")]
    label: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Arc::new(Args::parse());
    let (soft, hard) = nofile_for("mqtt-idle", args.conns);
    let sources = Arc::new(loopback_sources(args.source_first, args.sources));
    let timeout = Duration::from_secs_f64(args.timeout);
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let t0 = Instant::now();
    let ramp_deadline = t0 + Duration::from_secs_f64(args.ramp_timeout);
    let progress = Arc::new(AtomicU64::new(0));

    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();

    // Ramp: one task per connection, at most `concurrency` in flight,
    // optionally paced; each returns its stream or a failure label.
    let mut tasks = Vec::with_capacity(args.conns as usize);
    let pace = (args.connect_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.connect_rate));
    let mut interrupted = false;
    for k in 0..args.conns {
        if let Some(p) = pace {
            tokio::time::sleep_until(t0 + p.mul_f64(k as f64)).await;
        }
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p,
            () = tokio::time::sleep_until(ramp_deadline) => break,
            _ = recv(&mut sigint) => { interrupted = true; break; }
            _ = recv(&mut sigterm) => { interrupted = true; break; }
        };
        let Ok(permit) = permit else { break };
        let args_ = args.clone();
        let sources = sources.clone();
        let progress_ = progress.clone();
        tasks.push(tokio::spawn(async move {
            let (args, progress) = (args_, progress_);
            let i = args.first + k;
            let source = (!sources.is_empty()).then(|| sources[(k as usize) % sources.len()]);
            let opts = ConnectOpts {
                version: args.mqtt,
                client_id: format!("{}{}", args.id_prefix, i),
                user: (!args.user.is_empty()).then(|| args.user.clone()),
                password: (!args.password.is_empty()).then(|| args.password.clone()),
                keep_alive: args.keep_alive,
                clean: true,
            };
            let r = tokio::time::timeout_at(
                ramp_deadline.max(Instant::now() + timeout),
                Client::connect(args.addr, source, &opts, timeout),
            )
            .await;
            drop(permit);
            match r {
                Ok(Ok(c)) => {
                    progress.fetch_add(1, Ordering::Relaxed);
                    Ok(c.stream)
                }
                Ok(Err(e)) => Err(e.label()),
                Err(_) => Err("ramp_timeout".to_owned()),
            }
        }));
        if k > 0 && k % 10_000 == 0 {
            eprintln!(
                "[mqtt-idle {}] {} started, {} connected, {:.1}s",
                args.label,
                k,
                progress.load(Ordering::Relaxed),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let mut streams: Vec<TcpStream> = Vec::with_capacity(tasks.len());
    let mut failures: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(label)) => *failures.entry(label).or_default() += 1,
            Err(_) => *failures.entry("task_panic".into()).or_default() += 1,
        }
    }
    let ramp_s = t0.elapsed().as_secs_f64();
    let connected = streams.len() as u64;
    eprintln!(
        "[mqtt-idle {}] ramp done: {connected}/{} connected in {ramp_s:.1}s; failures {}",
        args.label,
        args.conns,
        json_counts(&failures)
    );
    if let Some(path) = &args.ready_file {
        let body = Json::new()
            .raw("connected", connected)
            .raw("attempted", args.conns)
            .f64("ramp_s", ramp_s, 2)
            .finish();
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, format!("{body}\n")).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    // Hold.
    let hold_start = Instant::now();
    if !interrupted {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(args.hold)) => {}
            _ = recv(&mut sigint) => {}
            _ = recv(&mut sigterm) => {}
        }
    }
    let held_s = hold_start.elapsed().as_secs_f64();

    // Which are still open? (idle: nothing to read, so WouldBlock = open).
    let mut open = 0u64;
    let mut closed = 0u64;
    let mut buf = [0u8; 64];
    for s in &streams {
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            Ok(n) if n > 0 => open += 1, // something arrived (e.g. a DISCONNECT): count as open, see below
            _ => closed += 1,
        }
    }
    drop(streams);
    let mut j = Json::new();
    j.str("tool", "mqtt-idle")
        .str("label", &args.label)
        .str("addr", &args.addr.to_string())
        .raw("attempted", args.conns)
        .raw("connected", connected)
        .raw("connect_failures", json_counts(&failures))
        .raw("open_at_end", open)
        .raw("closed_by_peer", closed)
        .f64("ramp_s", ramp_s, 2)
        .f64(
            "connects_per_s",
            if ramp_s > 0.0 {
                connected as f64 / ramp_s
            } else {
                0.0
            },
            0,
        )
        .f64("held_s", held_s, 1)
        .raw("sources", args.sources)
        .raw("keep_alive", args.keep_alive)
        .raw("nofile_soft", soft)
        .raw("nofile_hard", hard);
    println!("{}", j.finish());
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
