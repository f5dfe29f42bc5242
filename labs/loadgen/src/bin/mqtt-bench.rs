//! `mqtt-bench`: publish throughput and PUBACK latency.
//!
//! C connections publish for D seconds to `bench/<client id>` (template
//! `--topic`):
//! * QoS 0: as fast as TCP accepts, in batches; at the end each connection
//!   sends PINGREQ and waits for PINGRESP, so every PUBLISH before it was
//!   processed by the server, and the rate is counted up to that moment.
//! * QoS 1: up to `--window` PUBLISHes in flight per connection; every PUBACK's
//!   round trip is recorded.
//!
//! `--rate R` paces each connection at R msgs/s instead (a latency probe:
//! with QoS 1 the PUBACK round trip at a load the server can carry).
//! `--sub` adds one subscriber on `--sub-filter` that counts deliveries and
//! publish → deliver latency. Prints one JSON line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_codecs::mqtt::{Body, Version};
use switchyard_loadgen::{
    Client, ConnectOpts, DISCONNECT, Hist, Json, PINGREQ, fill, json_str, nofile_for, now_ns,
    parse_version, payload, payload_ts, put_puback, put_publish, subscribe_packet,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Parser, Debug)]
#[command(
    name = "mqtt-bench",
    about = "MQTT publish throughput / PUBACK latency; prints one JSON line"
)]
struct Args {
    /// Broker or gateway address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Publishing connections.
    #[arg(short = 'c', long, default_value_t = 8)]
    conns: usize,
    /// Seconds of publishing.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// QoS 0 or 1.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// QoS 1: PUBLISHes in flight per connection.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// QoS 0: PUBLISHes per write.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Payload bytes (at least 32).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Topic template (`%c` client id, `%i` index).
    #[arg(long, default_value = "bench/%c")]
    topic: String,
    /// Per-connection msgs/s (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1", value_parser = parse_version)]
    mqtt: Version,
    /// Client id prefix.
    #[arg(long, default_value = "bench-")]
    id_prefix: String,
    /// User name (none if empty).
    #[arg(long, default_value = "")]
    user: String,
    /// Password (none if empty).
    #[arg(long, default_value = "")]
    password: String,
    /// Add one subscriber (QoS 0) on --sub-filter.
    #[arg(long)]
    sub: bool,
    /// The subscriber's filter.
    #[arg(long, default_value = "bench/#")]
    sub_filter: String,
    /// Timeout of connects, CONNACK, SUBACK and of the final drain, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "bench")]
    label: String,
}

#[derive(Default)]
struct ConnStats {
    error: Option<String>,
    sent: u64,
    acked: u64,
    ack_errors: u64,
    latency: Hist,
    /// Seconds from the common start until this connection's last PUBLISH was
    /// processed (QoS 0: PINGRESP; QoS 1: last PUBACK).
    done_s: f64,
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if args.size < 32 || args.conns == 0 {
        eprintln!("--size must be at least 32 and --conns at least 1");
        std::process::exit(2);
    }
    nofile_for("mqtt-bench", args.conns as u64 + 2);
    let timeout = Duration::from_secs_f64(args.timeout);

    // Subscriber (optional), subscribed before anything is published.
    let sub = if args.sub {
        let opts = ConnectOpts {
            version: args.mqtt,
            client_id: format!("{}sub", args.id_prefix),
            user: (!args.user.is_empty()).then(|| args.user.clone()),
            password: (!args.password.is_empty()).then(|| args.password.clone()),
            keep_alive: 0,
            clean: true,
        };
        match Client::connect(args.addr, None, &opts, timeout).await {
            Ok(mut c) => {
                let ok = c
                    .stream
                    .write_all(&subscribe_packet(args.mqtt, 1, &[&args.sub_filter], 0))
                    .await
                    .is_ok()
                    && matches!(
                        tokio::time::timeout(timeout, c.next_packet()).await,
                        Ok(Ok(Some(ref p))) if matches!(p.body(), Body::Suback(_))
                    );
                if !ok {
                    eprintln!("[mqtt-bench] subscriber got no SUBACK");
                    std::process::exit(1);
                }
                Some(c)
            }
            Err(e) => {
                eprintln!("[mqtt-bench] subscriber: {}", e.label());
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    let stop_sub = Arc::new(tokio::sync::Notify::new());
    let sub_task = sub.map(|c| tokio::spawn(subscriber(c, stop_sub.clone(), timeout)));

    let cpu0 = switchyard_loadgen::cpu_seconds();
    let barrier = Arc::new(Barrier::new(args.conns + 1));
    let mut tasks = Vec::new();
    for i in 0..args.conns {
        let args = args.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let client_id = format!("{}{}", args.id_prefix, i);
            let opts = ConnectOpts {
                version: args.mqtt,
                client_id: client_id.clone(),
                user: (!args.user.is_empty()).then(|| args.user.clone()),
                password: (!args.password.is_empty()).then(|| args.password.clone()),
                keep_alive: 0,
                clean: true,
            };
            let c = Client::connect(args.addr, None, &opts, timeout).await;
            let start = barrier.wait().await;
            let _ = start;
            match c {
                Ok(c) => {
                    publisher(c, fill(&args.topic, &client_id, i as u64), &args, timeout).await
                }
                Err(e) => ConnStats {
                    error: Some(e.label()),
                    ..Default::default()
                },
            }
        }));
    }
    barrier.wait().await;
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await.unwrap_or_else(|e| ConnStats {
            error: Some(format!("task: {e}")),
            ..Default::default()
        }));
    }
    stop_sub.notify_one();
    let sub_stats = match sub_task {
        Some(t) => t.await.ok(),
        None => None,
    };

    let mut sent = 0;
    let mut acked = 0;
    let mut ack_errors = 0;
    let mut errors = Vec::new();
    let mut latency = Hist::new();
    let mut done_s: f64 = 0.0;
    for s in &stats {
        sent += s.sent;
        acked += s.acked;
        ack_errors += s.ack_errors;
        latency.merge(&s.latency);
        done_s = done_s.max(s.done_s);
        if let Some(e) = &s.error {
            errors.push(json_str(e));
        }
    }
    let counted = if args.qos == 1 { acked } else { sent };
    let mut j = Json::new();
    j.str("tool", "mqtt-bench")
        .str("label", &args.label)
        .str("addr", &args.addr.to_string())
        .str(
            "mqtt",
            if args.mqtt == Version::V5 {
                "5"
            } else {
                "3.1.1"
            },
        )
        .raw("qos", args.qos)
        .raw("conns", args.conns)
        .raw("window", if args.qos == 1 { args.window } else { 0 })
        .f64("rate_per_conn", args.rate, 1)
        .raw("payload_bytes", args.size)
        .f64("duration_s", args.duration, 1)
        .raw("sent", sent)
        .raw("acked", acked)
        .raw("ack_errors", ack_errors)
        .f64("done_s", done_s, 3)
        .f64(
            "msgs_per_s",
            if done_s > 0.0 {
                counted as f64 / done_s
            } else {
                0.0
            },
            0,
        )
        .raw("puback_latency_ms", latency.json_ms())
        .raw("errors", format!("[{}]", errors.join(",")))
        .f64("loadgen_cpu_s", switchyard_loadgen::cpu_seconds() - cpu0, 3);
    if let Some((delivered, lat)) = sub_stats {
        j.raw("delivered", delivered)
            .raw("deliver_latency_ms", lat.json_ms());
    }
    println!("{}", j.finish());
}

async fn publisher(mut c: Client, topic: String, args: &Args, timeout: Duration) -> ConnStats {
    let mut st = ConnStats::default();
    let topic = topic.into_bytes();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let mut out: Vec<u8> =
        Vec::with_capacity(args.batch.max(args.window) * (args.size + topic.len() + 8));
    let mut body = Vec::with_capacity(args.size);
    let mut seq = 0u64;
    // QoS 1: send time (ns since start) per packet id.
    let mut sent_at = vec![0u64; if args.qos == 1 { 65_536 } else { 0 }];
    let mut in_flight = 0usize;
    let mut next_pid: u16 = 0;
    let window = match c.receive_maximum {
        Some(m) => args.window.min(usize::from(m)),
        None => args.window,
    }
    .max(1);
    let mut tick = (args.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
        t
    });
    let hard_end = end + timeout;

    macro_rules! publish {
        () => {{
            seq += 1;
            body.clear();
            payload(&mut body, now_ns(), seq, args.size);
            let pid = if args.qos == 1 {
                next_pid = next_pid.checked_add(1).unwrap_or(1);
                if let Some(slot) = sent_at.get_mut(usize::from(next_pid)) {
                    *slot = start.elapsed().as_nanos() as u64;
                }
                in_flight += 1;
                next_pid
            } else {
                0
            };
            put_publish(&mut out, args.mqtt, &topic, args.qos, pid, &body);
            st.sent += 1;
        }};
    }

    // Handle what was read; false on a fatal problem.
    let handle = |c: &mut Client,
                  st: &mut ConnStats,
                  in_flight: &mut usize,
                  sent_at: &[u64],
                  pingresp: &mut bool|
     -> bool {
        loop {
            match c.try_decode() {
                Ok(Some(p)) => match p.body() {
                    Body::Puback(a) => {
                        *in_flight = in_flight.saturating_sub(1);
                        if a.reason() < 0x80 {
                            st.acked += 1;
                        } else {
                            st.ack_errors += 1;
                        }
                        if let Some(t) = sent_at.get(usize::from(a.packet_id())) {
                            let now = start.elapsed().as_nanos() as u64;
                            st.latency.record(now.saturating_sub(*t));
                        }
                    }
                    Body::Pingresp => *pingresp = true,
                    Body::Disconnect(d) => {
                        st.error = Some(format!("disconnect_0x{:02x}", d.reason()));
                        return false;
                    }
                    _ => {}
                },
                Ok(None) => return true,
                Err(e) => {
                    st.error = Some(format!("malformed: {e}"));
                    return false;
                }
            }
        }
    };

    let mut pingresp = false;
    'run: loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match (&mut tick, args.qos) {
            (None, 0) => {
                out.clear();
                for _ in 0..args.batch {
                    publish!();
                }
                if c.stream.write_all(&out).await.is_err() {
                    st.error = Some("write_error".into());
                    break 'run;
                }
            }
            (None, _) => {
                out.clear();
                while in_flight < window {
                    publish!();
                }
                if !out.is_empty() && c.stream.write_all(&out).await.is_err() {
                    st.error = Some("write_error".into());
                    break 'run;
                }
                match tokio::time::timeout_at(hard_end, c.fill()).await {
                    Ok(Ok(true)) => {}
                    _ => {
                        st.error = Some("read_error_or_timeout".into());
                        break 'run;
                    }
                }
                if !handle(&mut c, &mut st, &mut in_flight, &sent_at, &mut pingresp) {
                    break 'run;
                }
            }
            (Some(t), qos) => {
                tokio::select! {
                    () = tokio::time::sleep_until(end) => break 'run,
                    _ = t.tick() => {
                        if qos == 1 && in_flight >= window {
                            continue;
                        }
                        out.clear();
                        publish!();
                        if c.stream.write_all(&out).await.is_err() {
                            st.error = Some("write_error".into());
                            break 'run;
                        }
                    }
                    r = c.fill() => {
                        if !matches!(r, Ok(true)) {
                            st.error = Some("read_error".into());
                            break 'run;
                        }
                        if !handle(&mut c, &mut st, &mut in_flight, &sent_at, &mut pingresp) {
                            break 'run;
                        }
                    }
                }
            }
        }
    }
    // Drain: QoS 1 waits for the outstanding PUBACKs; QoS 0 for a PINGRESP
    // (the server answers it after everything sent before it).
    if st.error.is_none() {
        if args.qos == 0 && c.stream.write_all(&PINGREQ).await.is_err() {
            st.error = Some("write_error".into());
        }
        while st.error.is_none()
            && ((args.qos == 0 && !pingresp) || (args.qos == 1 && in_flight > 0))
        {
            match tokio::time::timeout_at(hard_end, c.fill()).await {
                Ok(Ok(true)) => {
                    if !handle(&mut c, &mut st, &mut in_flight, &sent_at, &mut pingresp) {
                        break;
                    }
                }
                _ => {
                    st.error = Some("drain_timeout".into());
                    break;
                }
            }
        }
    }
    st.done_s = start.elapsed().as_secs_f64();
    let _ = c.stream.write_all(&DISCONNECT).await;
    st
}

async fn subscriber(
    mut c: Client,
    stop: Arc<tokio::sync::Notify>,
    timeout: Duration,
) -> (u64, Hist) {
    let mut delivered = 0u64;
    let mut lat = Hist::new();
    let mut out = Vec::new();
    let mut stopping: Option<Instant> = None;
    loop {
        let quiet_deadline = stopping.map(|s| s + timeout);
        tokio::select! {
            () = stop.notified(), if stopping.is_none() => { stopping = Some(Instant::now()); }
            () = async { match quiet_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            r = tokio::time::timeout(Duration::from_millis(500), c.fill()) => {
                match r {
                    Err(_) if stopping.is_some() => break,
                    Err(_) => continue,
                    Ok(Ok(true)) => {}
                    Ok(_) => break,
                }
                let now = now_ns();
                out.clear();
                while let Ok(Some(p)) = c.try_decode() {
                    if let Body::Publish(pb) = p.body() {
                        delivered += 1;
                        if let Some(ts) = payload_ts(&pb.payload()[..]) {
                            lat.record(now.saturating_sub(ts));
                        }
                        if let Some(pid) = pb.packet_id() {
                            put_puback(&mut out, pid);
                        }
                    }
                }
                if !out.is_empty() && c.stream.write_all(&out).await.is_err() {
                    break;
                }
            }
        }
    }
    (delivered, lat)
}
