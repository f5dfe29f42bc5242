//! `rpc-bench`: request throughput and latency of a Bolt or Dubbo server (or
//! of a proxy in front of one).
//!
//! C connections each keep W requests in flight for D seconds (closed loop:
//! every answer sends the next request). Every request is the same captured
//! call with a fresh request id (Bolt v1: the 4-byte id at offset 5; Dubbo:
//! the 8-byte id at offset 4), so the body, the service and the method are
//! exactly what a real client sends. Answers are matched by id. A success is
//! an answer with status OK that is not an application exception (Bolt: the
//! `SofaResponse.isError` flag; Dubbo: the Hessian response-type byte).
//! Answers after D seconds are waited for (up to `--drain`) but not counted
//! in the rate; requests never answered count as errors (`lost`).
//!
//! The default request is `com.example.Calc.plus(1, 2)` as sofa-rpc-node's
//! own client sends it (captured against `tests/peers/rpc/peer.js server`);
//! `--frame FILE` replays the first request frame of a captured client byte
//! stream instead (e.g. `shared/vectors/bolt/v1-node-client-pipelined.c2s.bin`).
//!
//! Prints one JSON line: `{"proto", "addr", "conns", "window", "duration_s",
//! "ok", "errors", "requests_per_s", "latency_ms": {"p50", "p99", ...},
//! "error_kinds": {...}}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use switchyard_codecs::Decoder as _;
use switchyard_codecs::{bolt, dubbo};
use switchyard_loadgen::{Hist, Json, json_counts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::Instant;

/// `com.example.Calc.plus(1, 2)`, SOFA Bolt v1, Hessian 2, request id 1, as
/// sofa-rpc-node's RpcClient sends it.
const BOLT_PLUS: &[u8] = &[
    0x01, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x27, 0x10, 0x00, 0x2c,
    0x00, 0x23, 0x00, 0x00, 0x00, 0xd9, 0x63, 0x6f, 0x6d, 0x2e, 0x61, 0x6c, 0x69, 0x70, 0x61, 0x79,
    0x2e, 0x73, 0x6f, 0x66, 0x61, 0x2e, 0x72, 0x70, 0x63, 0x2e, 0x63, 0x6f, 0x72, 0x65, 0x2e, 0x72,
    0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x2e, 0x53, 0x6f, 0x66, 0x61, 0x52, 0x65, 0x71, 0x75, 0x65,
    0x73, 0x74, 0x00, 0x00, 0x00, 0x07, 0x73, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x00, 0x00, 0x00,
    0x14, 0x63, 0x6f, 0x6d, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x43, 0x61, 0x6c,
    0x63, 0x3a, 0x31, 0x2e, 0x30, 0x4f, 0xbc, 0x63, 0x6f, 0x6d, 0x2e, 0x61, 0x6c, 0x69, 0x70, 0x61,
    0x79, 0x2e, 0x73, 0x6f, 0x66, 0x61, 0x2e, 0x72, 0x70, 0x63, 0x2e, 0x63, 0x6f, 0x72, 0x65, 0x2e,
    0x72, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x2e, 0x53, 0x6f, 0x66, 0x61, 0x52, 0x65, 0x71, 0x75,
    0x65, 0x73, 0x74, 0x95, 0x0a, 0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x4e, 0x61, 0x6d, 0x65, 0x0d,
    0x6d, 0x65, 0x74, 0x68, 0x6f, 0x64, 0x41, 0x72, 0x67, 0x53, 0x69, 0x67, 0x73, 0x17, 0x74, 0x61,
    0x72, 0x67, 0x65, 0x74, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x55, 0x6e, 0x69, 0x71, 0x75,
    0x65, 0x4e, 0x61, 0x6d, 0x65, 0x0d, 0x74, 0x61, 0x72, 0x67, 0x65, 0x74, 0x41, 0x70, 0x70, 0x4e,
    0x61, 0x6d, 0x65, 0x0c, 0x72, 0x65, 0x71, 0x75, 0x65, 0x73, 0x74, 0x50, 0x72, 0x6f, 0x70, 0x73,
    0x6f, 0x90, 0x04, 0x70, 0x6c, 0x75, 0x73, 0x56, 0x74, 0x00, 0x11, 0x5b, 0x6a, 0x61, 0x76, 0x61,
    0x2e, 0x6c, 0x61, 0x6e, 0x67, 0x2e, 0x53, 0x74, 0x72, 0x69, 0x6e, 0x67, 0x6e, 0x02, 0x03, 0x69,
    0x6e, 0x74, 0x03, 0x69, 0x6e, 0x74, 0x7a, 0x14, 0x63, 0x6f, 0x6d, 0x2e, 0x65, 0x78, 0x61, 0x6d,
    0x70, 0x6c, 0x65, 0x2e, 0x43, 0x61, 0x6c, 0x63, 0x3a, 0x31, 0x2e, 0x30, 0x4e, 0x4d, 0x07, 0x73,
    0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x14, 0x63, 0x6f, 0x6d, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70,
    0x6c, 0x65, 0x2e, 0x43, 0x61, 0x6c, 0x63, 0x3a, 0x31, 0x2e, 0x30, 0x7a, 0x91, 0x92,
];

/// `com.example.Calc.plus(1, 2)`, Dubbo, Hessian 2, request id 1, as
/// sofa-rpc-node's RpcClient (dubbo-remoting) sends it.
const DUBBO_PLUS: &[u8] = &[
    0xda, 0xbb, 0xc2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x7d,
    0x05, 0x35, 0x2e, 0x33, 0x2e, 0x30, 0x10, 0x63, 0x6f, 0x6d, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70,
    0x6c, 0x65, 0x2e, 0x43, 0x61, 0x6c, 0x63, 0x03, 0x31, 0x2e, 0x30, 0x04, 0x70, 0x6c, 0x75, 0x73,
    0x02, 0x49, 0x49, 0x91, 0x92, 0x48, 0x05, 0x64, 0x75, 0x62, 0x62, 0x6f, 0x05, 0x35, 0x2e, 0x33,
    0x2e, 0x30, 0x05, 0x67, 0x72, 0x6f, 0x75, 0x70, 0x04, 0x53, 0x4f, 0x46, 0x41, 0x04, 0x70, 0x61,
    0x74, 0x68, 0x10, 0x63, 0x6f, 0x6d, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x43,
    0x61, 0x6c, 0x63, 0x07, 0x73, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x14, 0x63, 0x6f, 0x6d, 0x2e,
    0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x43, 0x61, 0x6c, 0x63, 0x3a, 0x31, 0x2e, 0x30,
    0x07, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x03, 0x31, 0x2e, 0x30, 0x5a,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    Bolt,
    Dubbo,
}

#[derive(Parser, Debug)]
#[command(
    name = "rpc-bench",
    about = "Bolt / Dubbo request throughput and latency; prints one JSON line"
)]
struct Args {
    /// Server, gateway or proxy address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:12200")]
    addr: SocketAddr,
    /// Protocol.
    #[arg(long, value_enum)]
    proto: Proto,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 4)]
    conns: usize,
    /// Requests in flight per connection.
    #[arg(short = 'w', long, default_value_t = 64)]
    window: usize,
    /// Seconds of load.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait, after the load, for the answers still in flight.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Replay the first request frame of this captured client byte stream
    /// instead of the built-in `plus(1, 2)`.
    #[arg(long)]
    frame: Option<std::path::PathBuf>,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// The request to replay: its bytes, and where its id lives.
struct Template {
    proto: Proto,
    wire: Vec<u8>,
}

impl Template {
    /// Append the request with id `id` to `out`.
    fn put(&self, out: &mut Vec<u8>, id: u64) {
        let start = out.len();
        out.extend_from_slice(&self.wire);
        let (at, bytes): (usize, Vec<u8>) = match self.proto {
            Proto::Bolt => (5, (id as u32).to_be_bytes().to_vec()),
            Proto::Dubbo => (4, id.to_be_bytes().to_vec()),
        };
        if let Some(slot) = out.get_mut(start + at..start + at + bytes.len()) {
            slot.copy_from_slice(&bytes);
        }
    }
}

/// The first request frame of a captured byte stream (or the built-in one).
fn template(proto: Proto, file: Option<&std::path::Path>) -> Result<Template, String> {
    let Some(file) = file else {
        let wire = match proto {
            Proto::Bolt => BOLT_PLUS,
            Proto::Dubbo => DUBBO_PLUS,
        };
        return Ok(Template {
            proto,
            wire: wire.to_vec(),
        });
    };
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut buf = BytesMut::from(&bytes[..]);
    loop {
        let wire = match proto {
            Proto::Bolt => {
                let frame = bolt::Decoder::default().decode(&mut buf);
                match frame {
                    Ok(Some(f)) if f.is_request() && !f.is_heartbeat() => {
                        if f.version() != bolt::Version::V1 {
                            return Err("only Bolt v1 request frames can be replayed".into());
                        }
                        Some(f.wire().to_vec())
                    }
                    Ok(Some(_)) => None,
                    Ok(None) => return Err("no Bolt request frame in the file".into()),
                    Err(e) => return Err(format!("bad Bolt stream: {e}")),
                }
            }
            Proto::Dubbo => match dubbo::Decoder::default().decode(&mut buf) {
                Ok(Some(f)) if f.is_request() && f.is_two_way() && !f.is_event() => {
                    Some(f.wire().to_vec())
                }
                Ok(Some(_)) => None,
                Ok(None) => return Err("no Dubbo request frame in the file".into()),
                Err(e) => return Err(format!("bad Dubbo stream: {e}")),
            },
        };
        if let Some(wire) = wire {
            return Ok(Template { proto, wire });
        }
    }
}

/// What came back for one request.
enum Answer {
    /// Answered OK.
    Ok(u64),
    /// Answered with an error of this kind.
    Err(u64, String),
    /// A heartbeat from the peer, to answer with these bytes.
    Ping(Bytes),
    /// Something else (a heartbeat answer, ...): ignored.
    Other,
}

fn contains(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The next answer in `buf`, if a whole frame is there.
fn next_answer(proto: Proto, buf: &mut BytesMut) -> Result<Option<Answer>, String> {
    match proto {
        Proto::Bolt => {
            let Some(f) = bolt::Decoder::default()
                .decode(buf)
                .map_err(|e| format!("bolt decode: {e}"))?
            else {
                return Ok(None);
            };
            if f.is_request() {
                return Ok(Some(if f.is_heartbeat() {
                    Answer::Ping(bolt::heartbeat_response(f.version(), f.request_id()))
                } else {
                    Answer::Other
                }));
            }
            if f.is_heartbeat() {
                return Ok(Some(Answer::Other));
            }
            let id = u64::from(f.request_id());
            let st = f.status().unwrap_or(u16::MAX);
            if st != bolt::status::SUCCESS {
                return Ok(Some(Answer::Err(id, format!("bolt status {st}"))));
            }
            // SofaResponse { isError, errorMsg, appResponse, responseProps }:
            // the first field of the object instance (`o` + class ref) is the flag.
            let content = f.content();
            if let Some(at) = contains(&content, b"o\x90")
                && content.get(at + 2) == Some(&b'T')
            {
                return Ok(Some(Answer::Err(id, "bolt isError".into())));
            }
            Ok(Some(Answer::Ok(id)))
        }
        Proto::Dubbo => {
            let Some(f) = dubbo::Decoder::default()
                .decode(buf)
                .map_err(|e| format!("dubbo decode: {e}"))?
            else {
                return Ok(None);
            };
            if f.is_request() {
                return Ok(Some(if f.is_heartbeat() && f.is_two_way() {
                    Answer::Ping(dubbo::heartbeat_response(
                        f.request_id(),
                        f.serialization_id(),
                    ))
                } else {
                    Answer::Other
                }));
            }
            if f.is_event() {
                return Ok(Some(Answer::Other));
            }
            let id = f.request_id();
            let st = f.status().unwrap_or(0);
            if st != dubbo::status::OK {
                return Ok(Some(Answer::Err(id, format!("dubbo status {st}"))));
            }
            // Hessian int 0 (RESPONSE_WITH_EXCEPTION) or 3 (… WITH_ATTACHMENTS).
            match f.body().first() {
                Some(0x90) | Some(0x93) => Ok(Some(Answer::Err(id, "dubbo exception".into()))),
                _ => Ok(Some(Answer::Ok(id))),
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    sent: u64,
    ok: u64,
    errors: u64,
    late: u64,
    kinds: HashMap<String, u64>,
    hist: Hist,
}

impl Stats {
    fn error(&mut self, kind: &str, n: u64) {
        if n > 0 {
            self.errors += n;
            *self.kinds.entry(kind.to_string()).or_default() += n;
        }
    }
}

/// One connection: connect, wait for the others, then keep `window` requests
/// in flight until `duration` is over; then wait up to `drain` for the rest.
async fn connection(
    addr: SocketAddr,
    tpl: Arc<Template>,
    window: usize,
    duration: Duration,
    drain: Duration,
    start: Arc<Barrier>,
) -> Stats {
    let mut st = Stats::default();
    let stream = TcpStream::connect(addr).await;
    start.wait().await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            st.error(&format!("connect: {}", e.kind()), 1);
            return st;
        }
    };
    let _ = stream.set_nodelay(true);
    let t0 = Instant::now();
    let stop = t0 + duration;
    let give_up = stop + drain;
    let mut pending: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut next_id: u64 = 1;
    let mut out = Vec::with_capacity(window * (tpl.wire.len() + 32));
    let mut buf = BytesMut::with_capacity(64 * 1024);

    let send = |out: &mut Vec<u8>, pending: &mut HashMap<u64, Instant>, id: &mut u64, now| {
        tpl.put(out, *id);
        pending.insert(*id, now);
        // Bolt ids are 32 bits; skip 0 (never a real id).
        *id = if tpl.proto == Proto::Bolt {
            u64::from((*id as u32).wrapping_add(1).max(1))
        } else {
            id.wrapping_add(1).max(1)
        };
    };
    let now = Instant::now();
    for _ in 0..window {
        send(&mut out, &mut pending, &mut next_id, now);
        st.sent += 1;
    }
    if let Err(e) = stream.write_all(&out).await {
        st.error(&format!("write: {}", e.kind()), pending.len() as u64);
        return st;
    }
    out.clear();

    loop {
        let now = Instant::now();
        if now >= stop && pending.is_empty() {
            break;
        }
        let until = if now < stop { stop } else { give_up };
        let read = tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await;
        match read {
            Err(_) if until == give_up => break,
            Err(_) => continue, // the load is over; drain
            Ok(Ok(0)) => {
                st.error("closed by peer", pending.len() as u64);
                pending.clear();
                break;
            }
            Ok(Err(e)) => {
                st.error(&format!("read: {}", e.kind()), pending.len() as u64);
                pending.clear();
                break;
            }
            Ok(Ok(_)) => {}
        }
        let now = Instant::now();
        loop {
            let answer = match next_answer(tpl.proto, &mut buf) {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(e) => {
                    st.error(&e, pending.len() as u64);
                    return st;
                }
            };
            let (id, ok, kind) = match answer {
                Answer::Ok(id) => (id, true, None),
                Answer::Err(id, kind) => (id, false, Some(kind)),
                Answer::Ping(bytes) => {
                    out.extend_from_slice(&bytes);
                    continue;
                }
                Answer::Other => continue,
            };
            let Some(sent_at) = pending.remove(&id) else {
                st.error("unknown id", 1);
                continue;
            };
            if now <= stop {
                if ok {
                    st.ok += 1;
                    st.hist
                        .record(now.duration_since(sent_at).as_nanos() as u64);
                }
                send(&mut out, &mut pending, &mut next_id, now);
                st.sent += 1;
            } else if ok {
                st.late += 1;
            }
            if let Some(kind) = kind {
                st.error(&kind, 1);
            }
        }
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                st.error(&format!("write: {}", e.kind()), pending.len() as u64);
                return st;
            }
            out.clear();
        }
    }
    st.error("lost (never answered)", pending.len() as u64);
    st
}

fn main() {
    let args = Args::parse();
    if args.conns == 0 || args.window == 0 || args.duration <= 0.0 || args.drain < 0.0 {
        eprintln!("rpc-bench: --conns, --window and --duration must be positive");
        std::process::exit(2);
    }
    let tpl = match template(args.proto, args.frame.as_deref()) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("rpc-bench: tokio runtime: {e}");
            std::process::exit(2);
        });
    let duration = Duration::from_secs_f64(args.duration);
    let drain = Duration::from_secs_f64(args.drain);
    let total = rt.block_on(async {
        let start = Arc::new(Barrier::new(args.conns));
        let tasks: Vec<_> = (0..args.conns)
            .map(|_| {
                tokio::spawn(connection(
                    args.addr,
                    tpl.clone(),
                    args.window,
                    duration,
                    drain,
                    start.clone(),
                ))
            })
            .collect();
        let mut total = Stats::default();
        for t in tasks {
            match t.await {
                Ok(s) => {
                    total.sent += s.sent;
                    total.ok += s.ok;
                    total.late += s.late;
                    total.errors += s.errors;
                    for (k, v) in s.kinds {
                        *total.kinds.entry(k).or_default() += v;
                    }
                    total.hist.merge(&s.hist);
                }
                Err(e) => total.error(&format!("task: {e}"), 1),
            }
        }
        total
    });
    let p = |q: f64| total.hist.quantile(q).map_or(f64::NAN, |v| v as f64 / 1e6);
    let line = Json::new()
        .str("proto", &format!("{:?}", args.proto).to_lowercase())
        .str("addr", &args.addr.to_string())
        .raw("conns", args.conns)
        .raw("window", args.window)
        .f64("duration_s", args.duration, 3)
        .raw("sent", total.sent)
        .raw("ok", total.ok)
        .raw("late_ok", total.late)
        .raw("errors", total.errors)
        .f64("requests_per_s", total.ok as f64 / args.duration, 1)
        .f64("p50_ms", p(0.5), 3)
        .f64("p99_ms", p(0.99), 3)
        .raw("latency_ms", total.hist.json_ms())
        .raw("error_kinds", json_counts(&total.kinds))
        .finish();
    println!("{line}");
    if total.ok == 0 {
        std::process::exit(1);
    }
}
