//! MySQL backend connections: logging in with the cluster's credentials,
//! simple commands, and the per-host pool that lends them to client sessions.
//!
//! Two backend connections are interchangeable when they were opened with the
//! same collation and the same format-relevant capabilities (the pool's
//! [`Key`], after Pingora's `reuse_hash`): a client that negotiated
//! CLIENT_DEPRECATE_EOF must never get a connection that sends classic EOFs.
//! A connection that carried session state goes back only after
//! COM_RESET_CONNECTION, except the tracked session variables (character
//! sets, autocommit): a connection keeps those, the pool keys it by their
//! fingerprint, and a session that gets one with other variables replays its
//! own (one `SET`) before its statement.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard_codecs::Decoder;
use switchyard_codecs::Protocol;
use switchyard_codecs::mysql::handshake::{
    HandshakeResponse, encode_handshake_response, parse_auth_switch, parse_greeting,
};
use switchyard_codecs::mysql::response::{parse_err, parse_ok};
use switchyard_codecs::mysql::session::SessionVars;
use switchyard_codecs::mysql::{
    ErrPacket, Limits, OkPacket, Packet, PacketDecoder, auth, cap, command, er, packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// The client's MariaDB extended capabilities (all change the wire format).
    pub ext: u32,
    /// [`SessionVars::fingerprint`] of the tracked variables set on it.
    pub vars: u64,
}

impl Key {
    /// Same wire format (the variables may differ: a replay fixes those).
    fn same_format(&self, other: &Key) -> bool {
        self.collation == other.collation && self.caps == other.caps && self.ext == other.ext
    }
}

/// What a backend server says of itself in its greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: Vec<u8>,
    pub caps: u32,
    pub ext: u32,
    /// The greeting's status flags (AUTOCOMMIT: new sessions' default).
    pub status: u16,
}

impl ServerInfo {
    /// The numeric version (`5.5.5-10.11.6-MariaDB` → 10.11.6), for "lowest".
    fn number(&self) -> (u32, u32, u32) {
        let v = self
            .version
            .strip_prefix(b"5.5.5-")
            .unwrap_or(&self.version);
        let mut n = v.split(|c| !c.is_ascii_digit()).map(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0)
        });
        (
            n.next().unwrap_or(0),
            n.next().unwrap_or(0),
            n.next().unwrap_or(0),
        )
    }
    /// What every one of `infos` supports: the lowest version, the common
    /// capabilities.
    pub fn common(infos: &[Arc<ServerInfo>]) -> Option<ServerInfo> {
        let lowest = infos.iter().min_by_key(|i| i.number())?;
        Some(ServerInfo {
            version: lowest.version.clone(),
            caps: infos.iter().fold(u32::MAX, |c, i| c & i.caps),
            ext: infos.iter().fold(u32::MAX, |c, i| c & i.ext),
            status: infos.iter().fold(u16::MAX, |c, i| c & i.status),
        })
    }
}

/// Why a backend could not be used, as the ERR the client gets.
pub fn backend_err(code: u16, state: &[u8; 5], message: String) -> ErrPacket {
    ErrPacket::new(code, state, message)
}

/// Where one backend connection lives: what a KILL for it needs.
pub struct Running {
    pub cluster: Arc<Cluster>,
    pub host: usize,
    pub connection_id: u32,
}

/// One logged-in backend connection.
pub struct Backend {
    stream: crate::upstream::UpstreamConn,
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
    /// The status flags of its last OK / EOF.
    pub status: u16,
    /// Its host and backend connection id, shared with the session's kill
    /// handle while it runs a statement.
    pub running: Arc<Running>,
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
            Some(0x00) | Some(0xFE) => {
                let ok = parse_ok(&body).unwrap_or(OkPacket {
                    affected_rows: 0,
                    last_insert_id: 0,
                    status: self.status,
                    warnings: 0,
                });
                self.status = ok.status;
                Ok(ok)
            }
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

    /// Give this connection the session's tracked variables (one `SET`
    /// when they differ; a reset when the session has none). `Ok(Err)`: the
    /// backend refused them (its own ERR, for the client).
    pub async fn sync(&mut self, vars: &SessionVars) -> std::io::Result<Result<(), ErrPacket>> {
        let want = vars.fingerprint();
        if self.key.vars == want {
            return Ok(Ok(()));
        }
        let Some(sql) = vars.replay() else {
            return match self.simple(&[command::RESET_CONNECTION]).await? {
                Ok(_) => {
                    self.key.vars = 0;
                    self.schema = None;
                    Ok(Ok(()))
                }
                Err(e) => Ok(Err(e)),
            };
        };
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(command::QUERY);
        payload.extend_from_slice(sql.as_bytes());
        match self.simple(&payload).await? {
            Ok(_) => {
                self.key.vars = want;
                Ok(Ok(()))
            }
            Err(e) => {
                // Some of it may have been applied: reset before reuse.
                self.dirty = true;
                Ok(Err(e))
            }
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
                    self.key.vars = 0;
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
    /// What the host's greeting said last (learned on every new connection).
    info: ArcSwapOption<ServerInfo>,
}

impl HostPool {
    /// An idle connection with `key`, else one of the same wire format
    /// (the caller replays the session's variables on it).
    fn take(&self, key: Key) -> Option<Backend> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        idle.retain(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        let i = idle
            .iter()
            .rposition(|(b, _)| b.key == key)
            .or_else(|| idle.iter().rposition(|(b, _)| b.key.same_format(&key)))?;
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
            info: ArcSwapOption::empty(),
        }))
    });
    entry.downcast_ref::<Arc<HostPool>>().cloned()
}

/// How a checkout failed.
pub enum CheckoutError {
    /// No host could be reached or logged in to (the ERR to send).
    Unavailable(ErrPacket),
    /// The schema or the session's variables were refused (the backend's
    /// own ERR, e.g. 1049, 1231).
    Schema(ErrPacket),
}

/// Send `KILL [QUERY] <backend id>` for `running` on another connection to
/// the same host (pooled or new, opened with `key`).
pub async fn kill(running: &Running, key: Key, query: bool) -> Result<(), ErrPacket> {
    let cluster = &running.cluster;
    let pool = host_pool(cluster, running.host)
        .ok_or_else(|| backend_err(er::UNKNOWN, b"HY000", "no such MySQL host".into()))?;
    let mut b = match pool.take(key) {
        Some(b) => b,
        None => open(cluster, running.host, pool, key).await?,
    };
    let sql = format!(
        "{}KILL {}{}",
        char::from(command::QUERY),
        if query { "QUERY " } else { "" },
        running.connection_id
    );
    match b.simple(sql.as_bytes()).await {
        Ok(Ok(_)) => {
            b.release().await;
            Ok(())
        }
        Ok(Err(e)) => {
            b.release().await;
            Err(e)
        }
        Err(e) => Err(backend_err(
            er::UNKNOWN,
            b"HY000",
            format!("MySQL backend {} failed: {e}", b.describe()),
        )),
    }
}

/// What the backends of `clusters` support in common, from their greetings
/// (a cluster whose hosts were never reached yet is probed now: connect and
/// read the greeting). `None` when no backend could be reached.
pub async fn server_info(clusters: &[Arc<Cluster>]) -> Option<ServerInfo> {
    let mut infos = Vec::new();
    for cluster in clusters {
        let hosts = 0..cluster.hosts.len();
        let known: Vec<Arc<ServerInfo>> = hosts
            .clone()
            .filter_map(|h| host_pool(cluster, h)?.info.load_full())
            .collect();
        if !known.is_empty() {
            infos.extend(known);
            continue;
        }
        for host in hosts {
            if let Some(info) = probe(cluster, host).await {
                infos.push(info);
                break;
            }
        }
    }
    ServerInfo::common(&infos)
}

/// Connect to `host` and read its greeting (then hang up).
async fn probe(cluster: &Arc<Cluster>, host: usize) -> Option<Arc<ServerInfo>> {
    let pool = host_pool(cluster, host)?;
    let read = async {
        let mut stream = cluster.connect(host).await.ok()?;
        let mut buf = BytesMut::with_capacity(256);
        let mut dec = PacketDecoder::new(Limits::default());
        loop {
            if let Some(p) = dec.decode(&mut buf).ok()? {
                return parse_greeting(&p.payload()).ok();
            }
            if stream.read_buf(&mut buf).await.ok()? == 0 || buf.len() > 64 * 1024 {
                return None;
            }
        }
    };
    let g = tokio::time::timeout(cluster.connect_timeout, read)
        .await
        .ok()??;
    let info = Arc::new(ServerInfo {
        version: g.server_version,
        caps: g.capabilities,
        ext: g.ext_capabilities,
        status: g.status,
    });
    pool.info.store(Some(info.clone()));
    Some(info)
}

/// A backend connection of `cluster` for a session with `key` and `vars`
/// on `schema`: an idle pooled one when there is one, else a new one, trying
/// the hosts in the balancer's order.
pub async fn checkout(
    cluster: &Arc<Cluster>,
    key: Key,
    vars: &SessionVars,
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
        let ready = match backend.sync(vars).await {
            Ok(Ok(())) => backend.use_schema(schema).await,
            other => other,
        };
        match ready {
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
                    && let Ok(Ok(())) = b.sync(vars).await
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

/// The active health check of a MySQL host (`health_check.kind: mysql`): a
/// new connection logged in with the cluster's credentials, then `COM_PING`
/// and `COM_QUIT`. Registered with the upstream layer by the gateway.
pub fn health_check(
    cluster: Arc<Cluster>,
    host: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    Box::pin(async move {
        let Some(pool) = host_pool(&cluster, host) else {
            return false;
        };
        // utf8mb4_general_ci, no format capabilities: only an OK comes back.
        let key = Key {
            collation: 45,
            caps: 0,
            ext: 0,
            vars: 0,
        };
        let Ok(mut b) = open(&cluster, host, pool, key).await else {
            return false;
        };
        let pinged = matches!(b.simple(&[command::PING]).await, Ok(Ok(_)));
        let _ = b.send(&packet(0, &[command::QUIT])).await;
        pinged
    })
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
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut dec = PacketDecoder::new(Limits::default());
    // A TLS cluster: the greeting, the SSLRequest and the TLS handshake
    // first, then the login below goes on over TLS.
    let (stream, greeting) = if cluster.speaks_tls() {
        let upgrade = start_tls(cluster, stream, address, key, &mut buf, &mut dec);
        match tokio::time::timeout(cluster.connect_timeout, upgrade).await {
            Ok(Ok((stream, greeting))) => (stream, Some(greeting)),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(backend_err(
                    er::UNKNOWN,
                    b"HY000",
                    format!(
                        "MySQL backend {describe} did not finish the TLS handshake within {:?}",
                        cluster.connect_timeout
                    ),
                ));
            }
        }
    } else {
        (stream, None)
    };
    let mut b = Backend {
        stream,
        buf,
        dec,
        host,
        address,
        cluster: cluster.clone(),
        key: Key { vars: 0, ..key },
        schema: None,
        dirty: false,
        connection_id: 0,
        status: 0,
        running: Arc::new(Running {
            cluster: cluster.clone(),
            host,
            connection_id: 0,
        }),
        _permit: permit,
        pool,
    };
    match tokio::time::timeout(cluster.connect_timeout, login(&mut b, greeting)).await {
        Ok(Ok(())) => {
            b.running = Arc::new(Running {
                cluster: cluster.clone(),
                host,
                connection_id: b.connection_id,
            });
            Ok(b)
        }
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

/// The capabilities the gateway logs in to a backend with: the client's
/// format capabilities the server has, and what the login needs (`SSL` on
/// a TLS cluster).
fn login_caps(key: &Key, server: u32, tls: bool) -> u32 {
    (key.caps & server)
        | cap::LONG_PASSWORD
        | cap::PROTOCOL_41
        | cap::TRANSACTIONS
        | cap::SECURE_CONNECTION
        | cap::PLUGIN_AUTH
        | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
        | if tls { cap::SSL } else { 0 }
}

/// On a TLS cluster: read the backend's greeting, send the SSLRequest (the
/// first 32 bytes of the handshake response, `CLIENT_SSL` set) and do the
/// TLS handshake. The greeting is returned for the login that follows.
async fn start_tls(
    cluster: &Arc<Cluster>,
    mut stream: crate::upstream::UpstreamConn,
    address: std::net::SocketAddr,
    key: Key,
    buf: &mut BytesMut,
    dec: &mut PacketDecoder,
) -> Result<(crate::upstream::UpstreamConn, Packet), ErrPacket> {
    let describe = format!("{address} (cluster {})", cluster.name);
    let failed = |what: String| backend_err(er::UNKNOWN, b"HY000", what);
    let greeting = loop {
        match dec.decode(buf) {
            Ok(Some(p)) => break p,
            Ok(None) => {}
            Err(e) => return Err(failed(format!("MySQL backend {describe}: {e}"))),
        }
        match stream.read_buf(buf).await {
            Ok(n) if n > 0 && buf.len() <= 64 * 1024 => {}
            _ => {
                return Err(failed(format!(
                    "MySQL backend {describe} closed before its greeting"
                )));
            }
        }
    };
    // An ERR instead of a greeting: the login reports it.
    if greeting.first_byte() == Some(0xFF) {
        return Ok((stream, greeting));
    }
    let g = parse_greeting(&greeting.payload())
        .map_err(|e| failed(format!("MySQL backend {describe}: {e}")))?;
    if g.capabilities & cap::SSL == 0 {
        return Err(failed(format!(
            "MySQL backend {describe} does not offer SSL, and the cluster speaks TLS to its hosts (`tls`); configure the server with ssl_cert/ssl_key"
        )));
    }
    let request = HandshakeResponse {
        capabilities: login_caps(&key, g.capabilities, true),
        ext_capabilities: key.ext & g.ext_capabilities,
        max_packet: 1 << 30,
        collation: key.collation,
        user: Vec::new(),
        auth: Vec::new(),
        database: None,
        plugin: Some(auth::NATIVE.to_vec()),
        attrs: None,
    };
    let fixed = encode_handshake_response(&request);
    let ssl_request = fixed.get(..32).unwrap_or(&fixed);
    stream
        .write_all(&packet(greeting.seq().wrapping_add(1), ssl_request))
        .await
        .map_err(|e| failed(format!("MySQL backend {describe}: {e}")))?;
    let stream = cluster.start_tls(stream, address).await.map_err(|e| {
        tracing::warn!(cluster = %cluster.name, backend = %address, error = %e, "MySQL backend TLS handshake failed");
        failed(format!("cannot reach MySQL backend {describe}: {e}"))
    })?;
    Ok((stream, greeting))
}

/// The client side of the connection phase, with the cluster's credentials
/// (`greeting`: read already, before TLS started).
async fn login(b: &mut Backend, greeting: Option<Packet>) -> Result<(), ErrPacket> {
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
    let tls = greeting.is_some();
    let greeting = match greeting {
        Some(g) => g,
        None => b.read_packet().await.map_err(lost)?,
    };
    if greeting.first_byte() == Some(0xFF) {
        // e.g. 1040 too many connections, 1129 host blocked: no account in it.
        let e = parse_err(&greeting.payload())
            .unwrap_or_else(|_| ErrPacket::new(er::UNKNOWN, b"HY000", ""));
        return Err(backend_err(
            e.code,
            &e.sql_state,
            format!(
                "MySQL backend {describe} refused the connection: {}",
                String::from_utf8_lossy(&e.message)
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
    b.pool.info.store(Some(Arc::new(ServerInfo {
        version: g.server_version.clone(),
        caps: g.capabilities,
        ext: g.ext_capabilities,
        status: g.status,
    })));
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
    let caps = login_caps(&b.key, g.capabilities, tls);
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
        ext_capabilities: b.key.ext & g.ext_capabilities,
        max_packet: 1 << 30,
        collation: b.key.collation,
        user: creds.user.value.as_bytes().to_vec(),
        auth: scramble(plugin, &g.nonce).unwrap_or_default(),
        database: None,
        plugin: Some(plugin.to_vec()),
        attrs: None,
    };
    // After an SSLRequest the response is the packet after it.
    let mut seq = greeting.seq().wrapping_add(if tls { 2 } else { 1 });
    b.send(&packet(seq, &encode_handshake_response(&response)))
        .await
        .map_err(lost)?;
    loop {
        let p = b.read_packet().await.map_err(lost)?;
        seq = p.seq().wrapping_add(1);
        let body = p.payload();
        match p.first_byte() {
            Some(0x00) => {
                b.status = parse_ok(&body).map_or(0, |ok| ok.status);
                return Ok(());
            }
            Some(0xFF) => {
                // The backend's code and SQLSTATE go to the client; its text
                // names the gateway's own account, so it goes to the log only.
                let e =
                    parse_err(&body).unwrap_or_else(|_| ErrPacket::new(er::UNKNOWN, b"HY000", ""));
                tracing::warn!(
                    backend = %describe,
                    user = %creds.user.value,
                    code = e.code,
                    message = %String::from_utf8_lossy(&e.message),
                    "MySQL backend refused the gateway's login"
                );
                return Err(backend_err(
                    e.code,
                    &e.sql_state,
                    format!(
                        "MySQL backend {describe} refused the gateway's login (error {}); see the gateway's log",
                        e.code
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
