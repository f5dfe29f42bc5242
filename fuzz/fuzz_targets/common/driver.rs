//! Shared harness of the driver targets: the real protocol driver of
//! `switchyard::proxy` serves one loopback connection per input, its upstream
//! is an in-process echo server on loopback, and the client's side of the
//! exchange comes back to the target for its invariants.
//!
//! Everything runs on one current-thread tokio runtime per fuzzing process,
//! so an input's tasks (the driver, its writer task, the upstream's
//! connection tasks) run only while that input is being served. A panic in
//! any of them aborts the process (libFuzzer's panic hook), which is the
//! crash the fuzzer reports.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchyard::gateway::{ListenerRuntime, Snapshot};
use switchyard::net::stream::Stream;
use switchyard::proxy::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// The longest an exchange may take before the target calls it a hang: well
/// above every timeout in the targets' configs (the driver must have closed
/// the connection by then).
pub const HANG: Duration = Duration::from_secs(20);

/// What the client saw.
pub struct Exchange {
    /// Every byte the gateway wrote to the client, until it closed.
    pub output: Vec<u8>,
    /// The connection ended in a reset rather than a clean close (the gateway
    /// closed with client bytes unread): `output` may then miss a tail.
    pub reset: bool,
}

pub struct Harness {
    pub rt: Runtime,
    pub listener: Arc<ListenerRuntime>,
    /// Where the client connects; the accepted side goes to the driver.
    front: TcpListener,
    _drain: watch::Sender<bool>,
    drain: watch::Receiver<bool>,
    /// Keeps the snapshot's clusters (and their pools) alive.
    _snapshot: Snapshot,
}

impl Harness {
    /// Start `upstream` (given its bound listener) and compile `yaml`, in
    /// which `{UPSTREAM}` stands for the upstream's `IP:port`.
    pub fn new<F, Fut>(yaml: &str, upstream: F) -> Self
    where
        F: FnOnce(TcpListener) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (front, up) = rt.block_on(async {
            let front = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
            let up = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind upstream");
            (front, up)
        });
        let up_addr = up.local_addr().expect("upstream address");
        rt.spawn(upstream(up));
        let yaml = yaml.replace("{UPSTREAM}", &up_addr.to_string());
        let config = switchyard::config::load_str(&yaml, "fuzz.yaml")
            .unwrap_or_else(|e| panic!("the fuzz config does not load:\n{e}"));
        let snapshot = Snapshot::build(config, std::path::Path::new("."), "fuzz.yaml")
            .unwrap_or_else(|e| panic!("the fuzz config does not compile:\n{e}"));
        let listener = snapshot
            .listeners
            .get("fuzz")
            .cloned()
            .expect("a listener named fuzz");
        let (tx, rx) = watch::channel(false);
        Harness {
            rt,
            listener,
            front,
            _drain: tx,
            drain: rx,
            _snapshot: snapshot,
        }
    }

    /// Serve `input` from one client connection through `serve` (a driver
    /// entry point). With `half_close` the client shuts its write side after
    /// the input (a clean end of requests); without it the client keeps the
    /// connection open, so only the driver can end the exchange.
    pub fn exchange<S, Fut>(&self, input: &[u8], half_close: bool, serve: S) -> Exchange
    where
        S: FnOnce(Stream, BytesMut, Conn) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.rt.block_on(async {
            let addr = self.front.local_addr().expect("front address");
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), self.front.accept());
            let mut client = client.expect("connect to the front listener");
            let (server, _) = accepted.expect("accept the client");
            let conn = Conn {
                listener: self.listener.clone(),
                metrics: self.listener.metrics_for(self.listener.protocols.first().copied()),
                drain: self.drain.clone(),
                client: std::net::Ipv4Addr::LOCALHOST.into(),
                source: (std::net::Ipv4Addr::LOCALHOST, 40000).into(),
                destination: None,
                local: None,
                tls: None,
                overload: switchyard::net::overload::Overload::new(&Default::default()),
                sni: None,
            };
            let driver = tokio::spawn(serve(Stream::Tcp(server), BytesMut::new(), conn));
            let (mut rd, mut wr) = client.split();
            let write = async {
                // The driver may close early (a protocol error): a failed
                // write is not the driver's fault.
                if wr.write_all(input).await.is_ok() && half_close {
                    let _ = wr.shutdown().await;
                }
            };
            let read = async {
                let mut output = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    match rd.read(&mut chunk).await {
                        Ok(0) => return Exchange { output, reset: false },
                        Ok(n) => output.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            return Exchange { output, reset: true };
                        }
                        Err(e) => panic!("client read failed: {e}"),
                    }
                }
            };
            let ((), seen) = tokio::time::timeout(HANG, async { tokio::join!(write, read) })
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the driver neither answered nor closed within {HANG:?} (half_close: {half_close})"
                    )
                });
            drop(client);
            match tokio::time::timeout(HANG, driver).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the driver task failed: {e}"),
                Err(_) => panic!("the driver task outlived its client connection by {HANG:?}"),
            }
            seen
        })
    }
}

/// Accept connections forever, serving each with `conn`.
pub async fn accept_each<F, Fut>(listener: TcpListener, conn: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        if let Ok((s, _)) = listener.accept().await {
            tokio::spawn(conn(s));
        }
    }
}
