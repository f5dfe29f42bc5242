//! MySQL backend connections: logging in with the cluster's credentials,
//! simple commands, and the per-host pool that lends them to client sessions.
//!
//! Two backend connections are interchangeable when they were opened with the
//! same collation and the same format-relevant capabilities (the pool's
//! [`Key`], after Pingora's `reuse_hash`): a client that negotiated
//! CLIENT_DEPRECATE_EOF must never get a connection that sends classic EOFs.
//! A connection that carried session state goes back only after
//! COM_RESET_CONNECTION.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard_codecs::Decoder;
use switchyard_codecs::Protocol;
use switchyard_codecs::mysql::handshake::{
    HandshakeResponse, encode_handshake_response, parse_auth_switch, parse_greeting,
};
use switchyard_codecs::mysql::response::{parse_err, parse_ok};
use switchyard_codecs::mysql::{
    ErrPacket, Limits, OkPacket, Packet, PacketDecoder, auth, cap, command, er, packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::upstream::Cluster;

/// Capabilities that change the bytes of responses: a pooled connection
/// must match the client's on these.
pub const FORMAT_CAPS: u32 = cap::DEPRECATE_EOF
    | cap::MULTI_STATEMENTS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::FOUND_ROWS
    | cap::LOCAL_FILES
    | cap::SESSION_TRACK
    | cap::IGNORE_SPACE
    | cap::ODBC
    | cap::LONG_FLAG;

/// What makes two backend connections interchangeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub collation: u8,
    /// The client's capabilities, masked to [`FORMAT_CAPS`].
    pub caps: u32,
}

/// Why a backend could not be used, as the ERR the client gets.
pub fn backend_err(code: u16, state: &[u8; 5], message: String) -> ErrPacket {
    ErrPacket::new(code, state, message)
}

/// One logged-in backend connection.
pub struct Backend {
    stream: TcpStream,
    buf: BytesMut,
    dec: PacketDecoder,
    pub host: usize,
    pub address: std::net::SocketAddr,
    pub cluster: Arc<Cluster>,
    pub key: Key,
    /// The current schema, as far as the gateway knows (`None`: unknown).
    pub schema: Option<Vec<u8>>,
    /// It carried session state: reset before lending it again.
    pub dirty: bool,
    /// The backend's connection id (for logs and KILL).
    pub connection_id: u32,
    /// The server announced itself as MariaDB (`5.5.5-` prefix).
    _permit: OwnedSemaphorePermit,
    pool: Arc<HostPool>,
}

impl Backend {
    /// Send bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next packet from the backend (EOF is an error: it is gone).
    pub async fn read_packet(&mut self) -> std::io::Result<Packet> {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Whether a whole packet is already buffered (so a caller may keep
    /// batching writes before waiting on the socket).
    pub fn has_buffered_packet(&self) -> bool {
        self.buf.len() >= 4 && {
            let len = usize::from(self.buf[0])
                | usize::from(self.buf[1]) << 8
                | usize::from(self.buf[2]) << 16;
            self.buf.len() >= 4 + len
        }
    }

    /// Run a one-packet-answer command (COM_INIT_DB, COM_RESET_CONNECTION, ...).
    pub async fn simple(&mut self, payload: &[u8]) -> std::io::Result<Result<OkPacket, ErrPacket>> {
        self.send(&packet(0, payload)).await?;
        let p = self.read_packet().await?;
        let body = p.payload();
        Ok(match p.first_byte() {
            Some(0x00) | Some(0xFE) => Ok(parse_ok(&body).unwrap_or(OkPacket {
                affected_rows: 0,
                last_insert_id: 0,
                status: 0,
                warnings: 0,
            })),
            _ => Err(parse_err(&body).unwrap_or_else(|_| {
                ErrPacket::new(
                    er::UNKNOWN,
                    b"HY000",
                    "malformed answer from the MySQL backend",
                )
            })),
        })
    }

    /// Make `schema` the current one (COM_INIT_DB) unless it already is.
    pub async fn use_schema(
        &mut self,
        schema: Option<&[u8]>,
    ) -> std::io::Result<Result<(), ErrPacket>> {
        let Some(schema) = schema else {
            return Ok(Ok(()));
        };
        if self.schema.as_deref() == Some(schema) {
            return Ok(Ok(()));
        }
        let mut payload = vec![command::INIT_DB];
        payload.extend_from_slice(schema);
        match self.simple(&payload).await? {
            Ok(_) => {
                self.schema = Some(schema.to_vec());
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// A name for errors: `address (cluster name)`.
    pub fn describe(&self) -> String {
        format!("{} (cluster {})", self.address, self.cluster.name)
    }

    /// Give the connection back to its host's pool (after a reset when it
    /// carried session state); dropped when that fails or the pool is full.
    pub async fn release(mut self) {
        if self.dirty {
            match tokio::time::timeout(
                self.cluster.connect_timeout,
                self.simple(&[command::RESET_CONNECTION]),
            )
            .await
            {
                Ok(Ok(Ok(_))) => {
                    self.dirty = false;
                    self.schema = None;
                }
                _ => return,
            }
        }
        let pool = self.pool.clone();
        pool.put(self);
    }
}

/// Idle connections to one host, and the limit on all connections to it.
pub struct HostPool {
    idle: Mutex<Vec<(Backend, Instant)>>,
    limit: Arc<Semaphore>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl HostPool {
    fn take(&self, key: Key) -> Option<Backend> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        idle.retain(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        let i = idle.iter().rposition(|(b, _)| b.key == key)?;
        Some(idle.swap_remove(i).0)
    }
    /// Close one idle connection (of any key), freeing its slot under `max_connections`.
    fn evict_one(&self) {
        let evicted = self.idle.lock().ok().and_then(|mut idle| {
            if idle.is_empty() {
                None
            } else {
                Some(idle.remove(0))
            }
        });
        drop(evicted);
    }
    fn put(&self, b: Backend) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push((b, Instant::now()));
        }
    }
}

/// The pool of host `host` of `cluster` (created on first use).
fn host_pool(cluster: &Cluster, host: usize) -> Option<Arc<HostPool>> {
    let creds = cluster.mysql.as_ref()?;
    let mut shared = cluster.shared.lock().ok()?;
    let entry = shared.entry((Protocol::Mysql, host)).or_insert_with(|| {
        Box::new(Arc::new(HostPool {
            idle: Mutex::new(Vec::new()),
            limit: Arc::new(Semaphore::new(creds.max_connections.max(1))),
            max_idle: cluster.max_idle_per_host,
            idle_timeout: cluster.idle_timeout,
        }))
    });
    entry.downcast_ref::<Arc<HostPool>>().cloned()
}

/// How a checkout failed.
pub enum CheckoutError {
    /// No host could be reached or logged in to (the ERR to send).
    Unavailable(ErrPacket),
    /// The schema was refused (the backend's own ERR, e.g. 1049).
    Schema(ErrPacket),
}

/// A backend connection of `cluster` for a session with `key` on `schema`:
/// an idle pooled one when there is one, else a new one, trying the hosts in
/// the balancer's order.
pub async fn checkout(
    cluster: &Arc<Cluster>,
    key: Key,
    schema: Option<&[u8]>,
) -> Result<(Backend, bool), CheckoutError> {
    let mut last = None;
    for host in cluster.pick() {
        let Some(pool) = host_pool(cluster, host) else {
            break;
        };
        let (mut backend, reused) = match pool.take(key) {
            Some(b) => (b, true),
            None => match open(cluster, host, pool, key).await {
                Ok(b) => (b, false),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            },
        };
        match backend.use_schema(schema).await {
            Ok(Ok(())) => return Ok((backend, reused)),
            Ok(Err(e)) => {
                backend.release().await;
                return Err(CheckoutError::Schema(e));
            }
            // A pooled connection the server closed meanwhile: try again.
            Err(e) => {
                last = Some(backend_err(
                    er::UNKNOWN,
                    b"HY000",
                    format!("MySQL backend {} failed: {e}", backend.describe()),
                ));
                drop(backend);
                if reused
                    && let Some(pool) = host_pool(cluster, host)
                    && let Ok(mut b) = open(cluster, host, pool, key).await
                    && let Ok(Ok(())) = b.use_schema(schema).await
                {
                    return Ok((b, false));
                }
            }
        }
    }
    Err(CheckoutError::Unavailable(last.unwrap_or_else(|| {
        backend_err(
            er::UNKNOWN,
            b"HY000",
            format!("cluster {} has no MySQL hosts", cluster.name),
        )
    })))
}

/// Open and log in a new connection to host `host`.
async fn open(
    cluster: &Arc<Cluster>,
    host: usize,
    pool: Arc<HostPool>,
    key: Key,
) -> Result<Backend, ErrPacket> {
    let address = cluster.hosts.get(host).map(|h| h.address);
    let address =
        address.ok_or_else(|| backend_err(er::UNKNOWN, b"HY000", "no such host".into()))?;
    let describe = format!("{address} (cluster {})", cluster.name);
    // At the limit, an idle connection opened for other clients (another
    // collation or capability set) gives way to this one.
    if pool.limit.available_permits() == 0 {
        pool.evict_one();
    }
    let permit = match tokio::time::timeout(
        cluster.connect_timeout,
        pool.limit.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return Err(backend_err(
                er::CON_COUNT,
                b"08004",
                format!(
                    "too many connections to MySQL backend {describe}: its max_connections are all busy"
                ),
            ));
        }
    };
    let stream = cluster.connect(host).await.map_err(|e| {
        backend_err(
            er::UNKNOWN,
            b"HY000",
            format!("cannot reach MySQL backend {describe}: {e}"),
        )
    })?;
    let mut b = Backend {
        stream,
        buf: BytesMut::with_capacity(16 * 1024),
        dec: PacketDecoder::new(Limits::default()),
        host,
        address,
        cluster: cluster.clone(),
        key,
        schema: None,
        dirty: false,
        connection_id: 0,
        _permit: permit,
        pool,
    };
    match tokio::time::timeout(cluster.connect_timeout, login(&mut b)).await {
        Ok(Ok(())) => Ok(b),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(backend_err(
            er::UNKNOWN,
            b"HY000",
            format!(
                "MySQL backend {describe} did not finish the login within {:?}",
                cluster.connect_timeout
            ),
        )),
    }
}

/// The client side of the connection phase, with the cluster's credentials.
async fn login(b: &mut Backend) -> Result<(), ErrPacket> {
    let describe = b.describe();
    let lost = |e: std::io::Error| {
        backend_err(
            er::UNKNOWN,
            b"HY000",
            format!("MySQL backend {describe} failed during login: {e}"),
        )
    };
    let Some(creds) = b.cluster.mysql.clone() else {
        return Err(backend_err(
            er::UNKNOWN,
            b"HY000",
            "cluster has no MySQL credentials".into(),
        ));
    };
    let greeting = b.read_packet().await.map_err(lost)?;
    if greeting.first_byte() == Some(0xFF) {
        let e = parse_err(&greeting.payload())
            .map(|e| String::from_utf8_lossy(&e.message).into_owned());
        return Err(backend_err(
            er::UNKNOWN,
            b"HY000",
            format!(
                "MySQL backend {describe} refused the connection: {}",
                e.unwrap_or_default()
            ),
        ));
    }
    let g = parse_greeting(&greeting.payload()).map_err(|e| {
        backend_err(
            er::UNKNOWN,
            b"HY000",
            format!("MySQL backend {describe}: {e}"),
        )
    })?;
    b.connection_id = g.connection_id;
    let missing = b.key.caps & !g.capabilities & FORMAT_CAPS;
    if missing & (cap::DEPRECATE_EOF | cap::MULTI_RESULTS | cap::PS_MULTI_RESULTS) != 0 {
        return Err(backend_err(
            er::UNKNOWN,
            b"HY000",
            format!(
                "MySQL backend {describe} lacks capabilities the client negotiated ({missing:#x})"
            ),
        ));
    }
    let caps = (b.key.caps & g.capabilities)
        | cap::LONG_PASSWORD
        | cap::PROTOCOL_41
        | cap::TRANSACTIONS
        | cap::SECURE_CONNECTION
        | cap::PLUGIN_AUTH
        | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let password = creds.password.as_bytes();
    let scramble = |plugin: &[u8], nonce: &[u8]| -> Option<Vec<u8>> {
        if plugin == auth::NATIVE {
            Some(auth::native_scramble(password, nonce))
        } else if plugin == auth::CACHING_SHA2 {
            Some(auth::sha2_scramble(password, nonce))
        } else {
            None
        }
    };
    let plugin = if g.plugin == auth::CACHING_SHA2 {
        auth::CACHING_SHA2
    } else {
        auth::NATIVE
    };
    let response = HandshakeResponse {
        capabilities: caps,
        max_packet: 1 << 30,
        collation: b.key.collation,
        user: creds.user.value.as_bytes().to_vec(),
        auth: scramble(plugin, &g.nonce).unwrap_or_default(),
        database: None,
        plugin: Some(plugin.to_vec()),
        attrs: None,
    };
    let mut seq = greeting.seq().wrapping_add(1);
    b.send(&packet(seq, &encode_handshake_response(&response)))
        .await
        .map_err(lost)?;
    loop {
        let p = b.read_packet().await.map_err(lost)?;
        seq = p.seq().wrapping_add(1);
        let body = p.payload();
        match p.first_byte() {
            Some(0x00) => return Ok(()),
            Some(0xFF) => {
                let e =
                    parse_err(&body).unwrap_or_else(|_| ErrPacket::new(er::UNKNOWN, b"HY000", ""));
                return Err(backend_err(
                    er::UNKNOWN,
                    b"HY000",
                    format!(
                        "MySQL backend {describe} refused the gateway's login as `{}`: {} {}",
                        creds.user.value,
                        e.code,
                        String::from_utf8_lossy(&e.message)
                    ),
                ));
            }
            Some(0xFE) => {
                let (plugin, nonce) = parse_auth_switch(&body).map_err(|e| {
                    backend_err(
                        er::UNKNOWN,
                        b"HY000",
                        format!("MySQL backend {describe}: {e}"),
                    )
                })?;
                let Some(answer) = scramble(&plugin, &nonce) else {
                    return Err(backend_err(
                        er::NOT_SUPPORTED_AUTH_MODE,
                        b"08004",
                        format!(
                            "MySQL backend {describe} asks for auth plugin {}, which the gateway does not speak",
                            String::from_utf8_lossy(&plugin)
                        ),
                    ));
                };
                b.send(&packet(seq, &answer)).await.map_err(lost)?;
            }
            Some(0x01) if body.get(1) == Some(&auth::FAST_AUTH_SUCCESS) => {}
            Some(0x01) => {
                return Err(backend_err(
                    er::NOT_SUPPORTED_AUTH_MODE,
                    b"08004",
                    format!(
                        "MySQL backend {describe} wants caching_sha2_password full authentication, which needs TLS or RSA to the backend; give the gateway's user mysql_native_password"
                    ),
                ));
            }
            _ => {
                return Err(backend_err(
                    er::UNKNOWN,
                    b"HY000",
                    format!("MySQL backend {describe}: unexpected login packet"),
                ));
            }
        }
    }
}
