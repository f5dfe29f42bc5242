//! `mqtt-fleet`: a fleet of telemetry devices and the subscribers that watch them.
//!
//! N devices (client ids `<prefix><i>`) connect to ADDR and each publishes to
//! `devices/<client id>/telemetry` (template `--topic`) at R msgs/s for D
//! seconds, QoS 0 or 1; every payload starts with its send time in ns. One or
//! more subscribers (`--sub CLIENT_ID[@HOST:PORT]`, filter `devices/+/telemetry`)
//! count what is delivered and the publish → deliver latency. Refused CONNACKs
//! and PUBACKs with an error reason (MQTT 5: 0x87 not authorized, 0x97 quota
//! high) are counted. Prints one JSON line.
//!
//! Example (the IoT Lab's fleet):
//!   mqtt-fleet --addr 127.0.0.1:1883 --devices 200 --rate 5 --duration 20 --qos 1 \
//!     --user device --password secret --sub ops-a --sub ops-b --sub-user ops --sub-password opspw

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use switchyard_codecs::mqtt::{Body, Version};
use switchyard_loadgen::{
    Client, ConnectOpts, DISCONNECT, Hist, Json, PINGREQ, fill, json_counts, json_str,
    loopback_sources, nofile_for, now_ns, parse_version, payload, payload_ts, put_puback,
    put_publish, subscribe_packet,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "mqtt-fleet",
    about = "A fleet of MQTT telemetry devices plus subscribers; prints one JSON line"
)]
struct Args {
    /// Broker or gateway address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Number of devices.
    #[arg(long, default_value_t = 200)]
    devices: u64,
    /// Client id prefix; device i is `<prefix><first+i>`.
    #[arg(long, default_value = "dev-")]
    id_prefix: String,
    /// Index of the first device.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Device user name (`%c` client id, `%i` index substituted); none if empty.
    #[arg(long, default_value = "")]
    user: String,
    /// Device password (`%c`, `%i` substituted); none if empty.
    #[arg(long, default_value = "")]
    password: String,
    /// Topic template of each device's PUBLISHes.
    #[arg(long, default_value = "devices/%c/telemetry")]
    topic: String,
    /// PUBLISHes per second per device.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Seconds each device publishes (from its CONNACK).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// QoS of the PUBLISHes (0 or 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload bytes (at least 32: timestamp and sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// MQTT version: 3.1.1 or 5 (5 shows denied PUBACKs; 3.1.1 has no reason codes).
    #[arg(long, default_value = "5", value_parser = parse_version)]
    mqtt: Version,
    /// Keep-alive seconds (PINGREQ at half of it when otherwise silent).
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// Most unacknowledged QoS 1 PUBLISHes per device (a tick with a full window is skipped).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Spread device connects over this many seconds.
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Most connects in progress at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Bind devices to this many loopback source addresses 127.0.0.<source-first>...
    /// (0: let the kernel pick 127.0.0.1).
    #[arg(long, default_value_t = 0)]
    sources: u32,
    /// First loopback source address (last octet).
    #[arg(long, default_value_t = 2)]
    source_first: u32,
    /// A subscriber: CLIENT_ID or CLIENT_ID@HOST:PORT (default address: --addr). Repeatable.
    #[arg(long = "sub")]
    subs: Vec<String>,
    /// Subscribers' topic filter.
    #[arg(long, default_value = "devices/+/telemetry")]
    sub_filter: String,
    /// Subscribers' user name (none if empty).
    #[arg(long, default_value = "")]
    sub_user: String,
    /// Subscribers' password (none if empty).
    #[arg(long, default_value = "")]
    sub_password: String,
    /// Subscription QoS (default: --qos).
    #[arg(long)]
    sub_qos: Option<u8>,
    /// After the last device stops, wait up to this many seconds for deliveries.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Timeout of each TCP connect and of each CONNACK / SUBACK, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "fleet")]
    label: String,
    /// Write `<subscriber client id> <device id>` lines here (which subscriber,
    /// hence which broker, delivered each device's messages).
    #[arg(long)]
    seen_file: Option<std::path::PathBuf>,
}

/// What one device saw.
#[derive(Default)]
struct DevStats {
    connect_error: Option<String>,
    published: u64,
    acked_ok: u64,
    ack_reasons: HashMap<u8, u64>,
    window_full: u64,
    unacked: u64,
    server_disconnect: Option<String>,
    ack_latency: Hist,
}

/// What one subscriber saw.
struct SubStats {
    client_id: String,
    addr: SocketAddr,
    error: Option<String>,
    suback: Vec<u8>,
    delivered: u64,
    devices: HashSet<String>,
    latency: Hist,
    first_rx: Option<Instant>,
    last_rx: Option<Instant>,
    bad_payloads: u64,
    /// Deliveries of other clients' topics (not this fleet's id prefix).
    foreign: u64,
    /// Deliveries per second since the common t0.
    per_sec: Vec<u64>,
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.size < 32 {
        eprintln!("--size must be at least 32");
        std::process::exit(2);
    }
    if !args.rate.is_finite()
        || args.rate <= 0.0
        || !args.duration.is_finite()
        || args.duration < 0.0
    {
        eprintln!("--rate must be > 0 and --duration >= 0");
        std::process::exit(2);
    }
    nofile_for("mqtt-fleet", args.devices + args.subs.len() as u64);
    let args = Arc::new(args);
    let timeout = Duration::from_secs_f64(args.timeout);
    let t0 = Instant::now();
    let publishers_done = Arc::new(AtomicBool::new(false));

    // Subscribers first: they must be subscribed before the first PUBLISH.
    let mut sub_tasks = Vec::new();
    let mut sub_ready = Vec::new();
    for spec in &args.subs {
        let (id, addr) = match spec.split_once('@') {
            Some((id, a)) => match a.parse() {
                Ok(a) => (id.to_owned(), a),
                Err(e) => {
                    eprintln!("bad --sub {spec}: {e}");
                    std::process::exit(2);
                }
            },
            None => (spec.clone(), args.addr),
        };
        let (tx, rx) = oneshot::channel();
        sub_ready.push(rx);
        let args = args.clone();
        let done = publishers_done.clone();
        sub_tasks.push(tokio::spawn(subscriber(
            id, addr, args, timeout, tx, done, t0,
        )));
    }
    for rx in sub_ready {
        let _ = tokio::time::timeout(timeout * 2, rx).await;
    }

    // Devices.
    let sources = loopback_sources(args.source_first, args.sources);
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let start = Instant::now();
    let mut dev_tasks = Vec::with_capacity(args.devices as usize);
    for k in 0..args.devices {
        let i = args.first + k;
        let at = start + Duration::from_secs_f64(args.ramp * k as f64 / args.devices.max(1) as f64);
        let source = (!sources.is_empty()).then(|| sources[(k as usize) % sources.len()]);
        let args = args.clone();
        let sem = sem.clone();
        dev_tasks.push(tokio::spawn(device(i, at, source, args, timeout, sem)));
    }
    let mut devs = Vec::with_capacity(dev_tasks.len());
    for t in dev_tasks {
        devs.push(t.await.unwrap_or_else(|e| DevStats {
            connect_error: Some(format!("task: {e}")),
            ..Default::default()
        }));
    }
    let publish_end = Instant::now();
    publishers_done.store(true, Ordering::Relaxed);
    let mut subs = Vec::new();
    for t in sub_tasks {
        if let Ok(s) = t.await {
            subs.push(s);
        }
    }

    // ---------------------------------------------------------------- report
    let mut connected = 0u64;
    let mut connect_failures: HashMap<String, u64> = HashMap::new();
    let mut published = 0;
    let mut acked_ok = 0;
    let mut reasons: HashMap<String, u64> = HashMap::new();
    let mut denied = 0;
    let mut rate_limited = 0;
    let mut window_full = 0;
    let mut unacked = 0;
    let mut disconnects: HashMap<String, u64> = HashMap::new();
    let mut ack_latency = Hist::new();
    for d in &devs {
        match &d.connect_error {
            Some(e) => *connect_failures.entry(e.clone()).or_default() += 1,
            None => connected += 1,
        }
        published += d.published;
        acked_ok += d.acked_ok;
        window_full += d.window_full;
        unacked += d.unacked;
        for (r, n) in &d.ack_reasons {
            *reasons.entry(format!("0x{r:02x}")).or_default() += n;
            match *r {
                0x87 => denied += n,
                // 0x97 quota exceeded (0x96 message rate too high: older gateways)
                0x96 | 0x97 => rate_limited += n,
                _ => {}
            }
        }
        if let Some(why) = &d.server_disconnect {
            *disconnects.entry(why.clone()).or_default() += 1;
        }
        ack_latency.merge(&d.ack_latency);
    }
    let mut latency = Hist::new();
    let mut delivered = 0;
    let mut first_rx: Option<Instant> = None;
    let mut last_rx: Option<Instant> = None;
    let mut sub_json = Vec::new();
    let mut all_devices = HashSet::new();
    for s in &subs {
        latency.merge(&s.latency);
        delivered += s.delivered;
        first_rx = match (first_rx, s.first_rx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_rx = match (last_rx, s.last_rx) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        all_devices.extend(s.devices.iter().cloned());
        let codes: Vec<String> = s.suback.iter().map(|c| format!("\"0x{c:02x}\"")).collect();
        sub_json.push(
            Json::new()
                .str("client_id", &s.client_id)
                .str("addr", &s.addr.to_string())
                .raw(
                    "error",
                    s.error.as_deref().map(json_str).unwrap_or("null".into()),
                )
                .raw("suback", format!("[{}]", codes.join(",")))
                .raw("delivered", s.delivered)
                .raw("devices_seen", s.devices.len())
                .raw("bad_payloads", s.bad_payloads)
                .raw("foreign_delivered", s.foreign)
                .raw("latency_ms", s.latency.json_ms())
                .finish(),
        );
    }
    // Steady state: the whole seconds in which every device was publishing
    // (after the ramp and a second to settle, before the first device stops).
    let mut per_sec: Vec<u64> = Vec::new();
    for s in &subs {
        if per_sec.len() < s.per_sec.len() {
            per_sec.resize(s.per_sec.len(), 0);
        }
        for (a, b) in per_sec.iter_mut().zip(&s.per_sec) {
            *a += b;
        }
    }
    let offset = (start - t0).as_secs_f64();
    let lo = (offset + args.ramp + 1.0).ceil() as usize;
    let hi = (offset + args.duration).floor() as usize; // exclusive
    let steady: Vec<u64> = per_sec
        .get(lo..hi.min(per_sec.len()))
        .map(<[u64]>::to_vec)
        .unwrap_or_default();
    let steady_rate = if steady.is_empty() {
        None
    } else {
        Some(steady.iter().sum::<u64>() as f64 / steady.len() as f64)
    };
    if let Some(path) = &args.seen_file {
        let mut lines = Vec::new();
        for s in &subs {
            let mut devs: Vec<&String> = s.devices.iter().collect();
            devs.sort();
            for d in devs {
                lines.push(format!("{} {}\n", s.client_id, d));
            }
        }
        if let Err(e) = std::fs::write(path, lines.concat()) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    let window_s = match (first_rx, last_rx) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let expected = if args.qos == 1 { acked_ok } else { published };
    let mut j = Json::new();
    j.str("tool", "mqtt-fleet")
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
        .raw("devices", args.devices)
        .f64("rate_per_device", args.rate, 2)
        .f64("duration_s", args.duration, 1)
        .raw("payload_bytes", args.size)
        .raw("connected", connected)
        .raw("connect_failures", json_counts(&connect_failures))
        .raw("published", published)
        .raw("acked_ok", acked_ok)
        .raw("acks_with_error", json_counts(&reasons))
        .raw("denied_acks", denied)
        .raw("rate_limited_acks", rate_limited)
        .raw("unacked", unacked)
        .raw("window_full_skips", window_full)
        .raw("server_disconnects", json_counts(&disconnects))
        .raw("puback_latency_ms", ack_latency.json_ms())
        .raw("subscribers", format!("[{}]", sub_json.join(",")))
        .raw("delivered", delivered)
        .raw("devices_seen", all_devices.len())
        .f64("offered_per_s", connected as f64 * args.rate, 1)
        .f64(
            "delivered_per_s",
            steady_rate.unwrap_or(if window_s > 0.0 {
                delivered as f64 / window_s
            } else {
                0.0
            }),
            1,
        )
        .raw(
            "delivered_per_s_window",
            if steady.is_empty() {
                "\"first to last delivery\"".to_owned()
            } else {
                format!("\"steady {}s\"", steady.len())
            },
        )
        .f64(
            "delivered_per_s_overall",
            if window_s > 0.0 {
                delivered as f64 / window_s
            } else {
                0.0
            },
            1,
        )
        .f64(
            "delivery_ratio",
            if expected > 0 {
                delivered as f64 / expected as f64
            } else {
                0.0
            },
            4,
        )
        .raw("latency_ms", latency.json_ms())
        .f64("publish_phase_s", (publish_end - start).as_secs_f64(), 2)
        .f64("elapsed_s", t0.elapsed().as_secs_f64(), 2);
    println!("{}", j.finish());
}

/// A cheap per-device phase in [0, 1).
fn phase(i: u64) -> f64 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

async fn device(
    i: u64,
    at: Instant,
    source: Option<IpAddr>,
    args: Arc<Args>,
    timeout: Duration,
    sem: Arc<Semaphore>,
) -> DevStats {
    let mut st = DevStats::default();
    tokio::time::sleep_until(at).await;
    let client_id = format!("{}{}", args.id_prefix, i);
    let opts = ConnectOpts {
        version: args.mqtt,
        client_id: client_id.clone(),
        user: opt(&fill(&args.user, &client_id, i)),
        password: opt(&fill(&args.password, &client_id, i)),
        keep_alive: args.keep_alive,
        clean: true,
    };
    let permit = sem.acquire().await;
    let mut c = match Client::connect(args.addr, source, &opts, timeout).await {
        Ok(c) => c,
        Err(e) => {
            st.connect_error = Some(e.label());
            return st;
        }
    };
    drop(permit);
    let window = match c.receive_maximum {
        Some(m) => args.window.min(usize::from(m)),
        None => args.window,
    }
    .max(1);
    let topic = fill(&args.topic, &client_id, i).into_bytes();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let begin = Instant::now();
    let end = begin + Duration::from_secs_f64(args.duration);
    let mut tick = tokio::time::interval_at(begin + period.mul_f64(phase(i)), period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let ping_every =
        (args.keep_alive > 0).then(|| Duration::from_secs(u64::from(args.keep_alive)) / 2);
    let mut last_write = Instant::now();
    // QoS 1: send time of each packet id in flight.
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut next_pid: u16 = 0;
    let mut seq = 0u64;
    let mut out = Vec::with_capacity(args.size + topic.len() + 16);
    let mut stopping = false;
    let hard_end = end + timeout;
    loop {
        if stopping && in_flight.is_empty() {
            break;
        }
        let ping_at = ping_every.map(|p| last_write + p);
        tokio::select! {
            () = tokio::time::sleep_until(if stopping { hard_end } else { end }) => {
                if stopping { break; }
                stopping = true;
                continue;
            }
            () = sleep_opt(ping_at) => {
                if c.stream.write_all(&PINGREQ).await.is_err() {
                    st.server_disconnect = Some("write_error".into());
                    break;
                }
                last_write = Instant::now();
            }
            _ = tick.tick(), if !stopping => {
                if args.qos == 1 && in_flight.len() >= window {
                    st.window_full += 1;
                    continue;
                }
                out.clear();
                seq += 1;
                let mut body = Vec::with_capacity(args.size);
                payload(&mut body, now_ns(), seq, args.size);
                let pid = if args.qos == 1 {
                    next_pid = next_pid.checked_add(1).unwrap_or(1);
                    in_flight.insert(next_pid, Instant::now());
                    next_pid
                } else { 0 };
                put_publish(&mut out, args.mqtt, &topic, args.qos, pid, &body);
                if c.stream.write_all(&out).await.is_err() {
                    st.server_disconnect = Some("write_error".into());
                    break;
                }
                st.published += 1;
                last_write = Instant::now();
            }
            r = c.fill() => {
                match r {
                    Ok(true) => {}
                    Ok(false) => { st.server_disconnect = Some("eof".into()); break; }
                    Err(_) => { st.server_disconnect = Some("read_error".into()); break; }
                }
                let mut closed = false;
                loop {
                    match c.try_decode() {
                        Ok(Some(p)) => match p.body() {
                            Body::Puback(a) => {
                                if let Some(sent) = in_flight.remove(&a.packet_id()) {
                                    st.ack_latency.record(sent.elapsed().as_nanos() as u64);
                                }
                                if a.reason() < 0x80 {
                                    st.acked_ok += 1;
                                } else {
                                    *st.ack_reasons.entry(a.reason()).or_default() += 1;
                                }
                            }
                            Body::Disconnect(d) => {
                                st.server_disconnect = Some(format!("disconnect_0x{:02x}", d.reason()));
                                closed = true;
                                break;
                            }
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(_) => { st.server_disconnect = Some("malformed".into()); closed = true; break; }
                    }
                }
                if closed { break; }
            }
        }
    }
    st.unacked = in_flight.len() as u64;
    let _ = c.stream.write_all(&DISCONNECT).await;
    let _ = c.stream.shutdown().await;
    st
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn subscriber(
    client_id: String,
    addr: SocketAddr,
    args: Arc<Args>,
    timeout: Duration,
    ready: oneshot::Sender<()>,
    publishers_done: Arc<AtomicBool>,
    t0: Instant,
) -> SubStats {
    let mut st = SubStats {
        client_id: client_id.clone(),
        addr,
        error: None,
        suback: Vec::new(),
        delivered: 0,
        devices: HashSet::new(),
        latency: Hist::new(),
        first_rx: None,
        last_rx: None,
        bad_payloads: 0,
        foreign: 0,
        per_sec: Vec::new(),
    };
    let opts = ConnectOpts {
        version: args.mqtt,
        client_id,
        user: opt(&args.sub_user),
        password: opt(&args.sub_password),
        keep_alive: args.keep_alive,
        clean: true,
    };
    let mut c = match Client::connect(addr, None, &opts, timeout).await {
        Ok(c) => c,
        Err(e) => {
            st.error = Some(e.label());
            let _ = ready.send(());
            return st;
        }
    };
    let qos = args.sub_qos.unwrap_or(args.qos).min(1);
    if c.stream
        .write_all(&subscribe_packet(args.mqtt, 1, &[&args.sub_filter], qos))
        .await
        .is_err()
    {
        st.error = Some("write SUBSCRIBE".into());
        let _ = ready.send(());
        return st;
    }
    match tokio::time::timeout(timeout, c.next_packet()).await {
        Ok(Ok(Some(p))) => match p.body() {
            Body::Suback(s) => {
                st.suback = s.codes().to_vec();
                if s.codes().iter().any(|c| *c >= 0x80) {
                    st.error = Some("subscription refused".into());
                }
            }
            _ => st.error = Some(format!("{} instead of SUBACK", p.kind().name())),
        },
        _ => st.error = Some("no SUBACK".into()),
    }
    let _ = ready.send(());
    if st.error.is_some() {
        return st;
    }
    // Runs until the devices are done and nothing arrived for a second, or
    // the hard deadline: ramp + duration + grace (+ connect timeouts).
    let hard_end = Instant::now()
        + Duration::from_secs_f64(args.ramp + args.duration + args.grace)
        + timeout * 2;
    let quiet = Duration::from_secs_f64(args.grace.min(1.0));
    let mut check = tokio::time::interval(Duration::from_millis(200));
    let mut last_heard = Instant::now();
    let mut last_write = Instant::now();
    let ping_every =
        (args.keep_alive > 0).then(|| Duration::from_secs(u64::from(args.keep_alive)) / 2);
    let mut grace_end: Option<Instant> = None;
    let mut out = Vec::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(hard_end) => break,
            _ = check.tick() => {
                if publishers_done.load(Ordering::Relaxed) {
                    let g = *grace_end.get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(args.grace));
                    if last_heard.elapsed() >= quiet || Instant::now() >= g {
                        break;
                    }
                }
                if let Some(p) = ping_every
                    && last_write.elapsed() >= p
                {
                    if c.stream.write_all(&PINGREQ).await.is_err() {
                        st.error = Some("write_error".into());
                        break;
                    }
                    last_write = Instant::now();
                }
            }
            r = c.fill() => {
                match r {
                    Ok(true) => {}
                    Ok(false) => { st.error = Some("eof".into()); break; }
                    Err(e) => { st.error = Some(format!("read: {e}")); break; }
                }
                let now = Instant::now();
                let now_wall = now_ns();
                last_heard = now;
                out.clear();
                let mut fatal = None;
                loop {
                    match c.try_decode() {
                        Ok(Some(p)) => match p.body() {
                            Body::Publish(pb) => {
                                // Only this fleet's devices count (others, e.g. a
                                // second fleet on the same broker, are tallied apart).
                                let topic = pb.topic().clone();
                                let mut levels = topic.split(|b| *b == b'/');
                                let dev = match (levels.next(), levels.next()) {
                                    (Some(_), Some(dev)) => String::from_utf8_lossy(dev).into_owned(),
                                    _ => String::new(),
                                };
                                if !dev.starts_with(&args.id_prefix) {
                                    st.foreign += 1;
                                } else {
                                    st.delivered += 1;
                                    st.first_rx.get_or_insert(now);
                                    st.last_rx = Some(now);
                                    let sec = (now - t0).as_secs() as usize;
                                    if sec < 100_000 {
                                        if st.per_sec.len() <= sec {
                                            st.per_sec.resize(sec + 1, 0);
                                        }
                                        st.per_sec[sec] += 1;
                                    }
                                    match payload_ts(&pb.payload()[..]) {
                                        Some(ts) => st.latency.record(now_wall.saturating_sub(ts)),
                                        None => st.bad_payloads += 1,
                                    }
                                    if !st.devices.contains(&dev) {
                                        st.devices.insert(dev);
                                    }
                                }
                                if let Some(pid) = pb.packet_id() {
                                    put_puback(&mut out, pid);
                                }
                            }
                            Body::Disconnect(d) => {
                                fatal = Some(format!("disconnect_0x{:02x}", d.reason()));
                                break;
                            }
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(e) => { fatal = Some(format!("malformed: {e}")); break; }
                    }
                }
                if !out.is_empty() {
                    if c.stream.write_all(&out).await.is_err() {
                        st.error = Some("write_error".into());
                        break;
                    }
                    last_write = Instant::now();
                }
                if let Some(f) = fatal {
                    st.error = Some(f);
                    break;
                }
            }
        }
    }
    let _ = c.stream.write_all(&DISCONNECT).await;
    st
}
