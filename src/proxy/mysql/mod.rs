//! MySQL through the gateway (the session shape, ProxySQL's model).
//!
//! The gateway is the server to its clients: it sends its own greeting,
//! upgrades to TLS on an SSLRequest, and checks the login against the
//! listener's users (`mysql_native_password`, `caching_sha2_password` fast
//! path, and its full path over TLS). The session is routed once on user and
//! schema to a primary cluster and, optionally, a read cluster. Backends are
//! logged in with the cluster's own credentials and pooled per host.
//!
//! Per statement: plain reads outside a transaction go to a pooled read
//! connection, lent for that one statement; everything else goes to the
//! session's own primary connection, taken on the first write and kept
//! (LAST_INSERT_ID, read-your-writes). Transactions (by the server's
//! IN_TRANS status) and autocommit off (by its AUTOCOMMIT status) send
//! everything there too. Prepared statements, user variables, temporary
//! tables, table locks and other session variables pin the session: every
//! statement then goes to that connection, which is reset
//! (COM_RESET_CONNECTION) before it goes back to the pool. The character
//! set variables and autocommit do not pin: they are tracked
//! ([`SessionVars`]) and replayed on whichever connection serves the next
//! statement. Responses are streamed packet by packet; [`ResponseState`]
//! says when each ends.

pub mod backend;
pub mod policy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use switchyard_codecs::mysql::handshake::{
    Greeting, encode_auth_switch, encode_greeting, is_ssl_request, parse_change_user,
    parse_handshake_response,
};
use switchyard_codecs::mysql::response::{Expect, encode_ok};
use switchyard_codecs::mysql::session::{SessionVars, tracked_set};
use switchyard_codecs::mysql::{
    Command, ErrPacket, OkPacket, Packet, PacketDecoder, ResponseState, Step, auth, cap, classify,
    command, er, mariadb_cap, packet, status,
};
use switchyard_codecs::{Decoder, Field, Metadata, Protocol};
use tokio::io::AsyncWriteExt;

use super::Conn;
use crate::filters::chain::{Refusal, RefusalClass};
use crate::net::stream::Stream;
use crate::upstream::Cluster;
use backend::{Backend, CheckoutError, FORMAT_CAPS, Key, checkout};
use policy::{Front, User};

/// Capabilities the gateway offers clients (SSL added when the listener has TLS).
const OFFERED: u32 = cap::LONG_PASSWORD
    | cap::FOUND_ROWS
    | cap::LONG_FLAG
    | cap::CONNECT_WITH_DB
    | cap::ODBC
    | cap::LOCAL_FILES
    | cap::IGNORE_SPACE
    | cap::PROTOCOL_41
    | cap::INTERACTIVE
    | cap::IGNORE_SIGPIPE
    | cap::TRANSACTIONS
    | cap::RESERVED
    | cap::SECURE_CONNECTION
    | cap::MULTI_STATEMENTS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::CONNECT_ATTRS
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::DEPRECATE_EOF;

/// MariaDB extended capabilities the gateway can relay (offered when every
/// backend has them): progress reports (`ResponseState` skips them), bulk
/// execute (forwarded like COM_STMT_EXECUTE) and extended column metadata
/// (opaque to the gateway). Not CACHE_METADATA: it changes which packets a
/// COM_STMT_EXECUTE answer has, in a way only the client knows.
const OFFERED_EXT: u32 =
    mariadb_cap::PROGRESS | mariadb_cap::STMT_BULK_OPERATIONS | mariadb_cap::EXTENDED_METADATA;

/// The status bits a session tracks from its backends.
const SESSION_STATUS: u16 = status::AUTOCOMMIT | status::IN_TRANS;

static CONNECTION_IDS: AtomicU32 = AtomicU32::new(1);

/// What another session needs to KILL this one: its user, the backend
/// connection running its statement now, and a way to end it.
struct KillHandle {
    user: Vec<u8>,
    running: arc_swap::ArcSwapOption<backend::Running>,
    killed: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

/// Live sessions by the connection id their greeting announced (written at
/// login and at the end of a session, read by KILL: never per statement).
static SESSIONS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<u32, Arc<KillHandle>>>,
> = std::sync::LazyLock::new(Default::default);

/// A session's entry in [`SESSIONS`], removed when dropped.
struct Registered(u32);

impl Registered {
    fn new(id: u32, handle: Arc<KillHandle>) -> Self {
        if let Ok(mut map) = SESSIONS.lock() {
            map.insert(id, handle);
        }
        Registered(id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut map) = SESSIONS.lock() {
            map.remove(&self.0);
        }
    }
}

/// The client side of one connection: its stream and its packet decoder.
struct Client {
    stream: Stream,
    buf: BytesMut,
    dec: PacketDecoder,
    out: BytesMut,
    conn: Conn,
}

impl Client {
    /// The next command packet: its first byte within `idle`, the rest within
    /// `head` from then (the slowloris bound, `request_head_timeout`).
    async fn next_command(
        &mut self,
        idle: std::time::Duration,
        head: std::time::Duration,
    ) -> Result<std::io::Result<Option<Packet>>, tokio::time::error::Elapsed> {
        if self.buf.is_empty() {
            match tokio::time::timeout(idle, self.stream.read_some(&mut self.buf)).await? {
                Ok(0) => return Ok(Ok(None)),
                Ok(n) => self.conn.metrics.bytes_in.increment(n as u64),
                Err(e) => return Ok(Err(e)),
            }
        }
        tokio::time::timeout(head, self.read()).await
    }

    /// The next packet; `Ok(None)` at EOF.
    async fn read(&mut self) -> std::io::Result<Option<Packet>> {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let n = self.stream.read_some(&mut self.buf).await?;
            self.conn.metrics.bytes_in.increment(n as u64);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
    /// Read one packet without reading past it (plain TCP, before TLS).
    async fn read_exact_packet(&mut self) -> Option<Packet> {
        use tokio::io::AsyncReadExt;
        let Stream::Tcp(tcp) = &mut self.stream else {
            return None;
        };
        let mut head = [0u8; 4];
        tcp.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if len > 64 * 1024 {
            return None;
        }
        let mut raw = BytesMut::with_capacity(4 + len);
        raw.extend_from_slice(&head);
        raw.resize(4 + len, 0);
        tcp.read_exact(raw.get_mut(4..)?).await.ok()?;
        self.conn.metrics.bytes_in.increment(raw.len() as u64);
        self.dec.decode(&mut raw).ok()?
    }
    fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.conn.metrics.bytes_out.increment(self.out.len() as u64);
        let mut r = self.stream.write_all(&self.out).await;
        if r.is_ok() && !matches!(self.stream, Stream::Tcp(_)) {
            // TLS holds records back until flushed.
            r = self.stream.flush().await;
        }
        self.out.clear();
        if self.out.capacity() > 256 * 1024 {
            self.out = BytesMut::new();
        }
        r
    }
    async fn send(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        self.queue(&packet(seq, payload));
        self.flush().await
    }
    async fn send_err(&mut self, seq: u8, err: &ErrPacket) -> std::io::Result<()> {
        self.conn.metrics.errors.increment(1);
        self.send(seq, &err.encode()).await
    }
    async fn send_ok(&mut self, seq: u8, status_flags: u16) -> std::io::Result<()> {
        let ok = OkPacket {
            affected_rows: 0,
            last_insert_id: 0,
            status: status_flags,
            warnings: 0,
        };
        self.send(seq, &encode_ok(&ok)).await
    }
}

/// The routing view of a session: user and schema.
struct Login<'a> {
    user: &'a [u8],
    schema: Option<&'a [u8]>,
}

impl Metadata for Login<'_> {
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::User => Some(self.user),
            Field::Database => self.schema,
            _ => None,
        }
    }
}

/// Serve one MySQL client connection (the listener has `protocol: mysql`).
pub async fn serve(stream: Stream, buf: BytesMut, conn: Conn) {
    let Some(front) = conn.listener.mysql.clone() else {
        return;
    };
    let client = Client {
        stream,
        buf,
        dec: PacketDecoder::new(front.limits),
        out: BytesMut::new(),
        conn,
    };
    let login = tokio::time::timeout(front.login_timeout, handshake(&front, client)).await;
    let Ok(Some((session, mut client))) = login else {
        front.metrics.login_failures.increment(1);
        return;
    };
    session.run(&front, &mut client).await;
}

/// The ERR packet for a request the filters refused, as MariaDB words its
/// own refusals: an authorization service's denial (1045 access denied at
/// login, 1142 command denied for a statement), other access refusals
/// (1130 host not allowed at login, 1227 for a statement), rate (1226),
/// size (1153), busy (1040); anything else 1105 with the refusal's text.
fn refusal_err(refusal: &Refusal, login: bool) -> ErrPacket {
    let text = format!("switchyard: {}", refusal.message);
    match refusal.class() {
        RefusalClass::Forbidden if refusal.denied_by_policy && login => {
            ErrPacket::new(1045, b"28000", text)
        }
        RefusalClass::Forbidden if refusal.denied_by_policy => ErrPacket::new(1142, b"42000", text),
        RefusalClass::Forbidden if login => ErrPacket::new(1130, b"HY000", text),
        RefusalClass::Forbidden => ErrPacket::new(1227, b"42000", text),
        RefusalClass::TooMany => ErrPacket::new(1226, b"42000", text),
        RefusalClass::TooLarge => ErrPacket::new(1153, b"08S01", text),
        RefusalClass::Unavailable if refusal.status == 503 => {
            ErrPacket::new(er::CON_COUNT, b"08004", text)
        }
        _ => ErrPacket::new(er::UNKNOWN, b"HY000", text),
    }
}

/// Whether a COM_QUERY payload is a `KILL` statement of any form.
fn is_kill(payload: &[u8]) -> bool {
    let sql = payload.get(1..).unwrap_or_default().trim_ascii_start();
    sql.get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"KILL"))
        && sql.get(4).is_none_or(|c| c.is_ascii_whitespace())
}

/// A fresh nonce: 20 bytes without NUL (it is sent NUL-terminated).
fn nonce() -> Vec<u8> {
    (0..20).map(|_| rand::random_range(1u8..=127)).collect()
}

fn access_denied(user: &[u8], peer: &str, with_password: bool) -> ErrPacket {
    ErrPacket::new(
        er::ACCESS_DENIED,
        b"28000",
        format!(
            "Access denied for user '{}'@'{peer}' (using password: {})",
            String::from_utf8_lossy(user),
            if with_password { "YES" } else { "NO" }
        ),
    )
}

fn peer_host(client: &Client) -> String {
    // The client's address as the gateway knows it (the PROXY header's
    // source on listeners that accept one), not necessarily the socket's peer.
    client.conn.client.to_string()
}

/// The connection phase: greeting, optional TLS, login check, routing and a
/// first backend connection (so an unknown schema or a dead backend is an
/// ERR at login, as from a real server). `None`: the client was answered
/// and the connection ends.
async fn handshake(front: &Arc<Front>, mut client: Client) -> Option<(Session, Client)> {
    let nonce = nonce();
    let tls = client
        .conn
        .listener
        .tls
        .as_ref()
        .map(|t| t.acceptor.clone());
    // What the backends say of themselves (learned on every backend login;
    // probed once when none was reached yet).
    let backends = backend::server_info(&front.backends).await;
    let mut offered = OFFERED;
    let mut offered_ext = 0;
    if let Some(info) = &backends {
        // Keep what every backend has (CLIENT_MYSQL, bit 0, is not a feature).
        offered &= info.caps | cap::LONG_PASSWORD;
        offered_ext = OFFERED_EXT & info.ext;
    }
    if tls.is_some() {
        offered |= cap::SSL;
    }
    let server_version = match (&front.server_version, &backends) {
        (Some(v), _) => v.clone(),
        (None, Some(info)) => info.version.clone(),
        (None, None) => policy::FALLBACK_VERSION.to_vec(),
    };
    let connection_id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
    let greeting = Greeting {
        server_version,
        connection_id,
        nonce: nonce.clone(),
        capabilities: offered,
        ext_capabilities: offered_ext,
        collation: 45,
        // New sessions' autocommit default, as the backends greet.
        status: backends
            .as_ref()
            .map_or(status::AUTOCOMMIT, |i| i.status & status::AUTOCOMMIT),
        plugin: front.plugin.to_vec(),
    };
    client.send(0, &encode_greeting(&greeting)).await.ok()?;
    let mut first = if tls.is_some() {
        // Read exactly one packet: a ClientHello may follow an SSLRequest
        // at once, and those bytes belong to TLS, not to this buffer.
        client.read_exact_packet().await?
    } else {
        client.read().await.ok()??
    };
    if is_ssl_request(&first.payload()) {
        // The client sends nothing more until TLS is up.
        let (acceptor, true) = (tls?, client.buf.is_empty()) else {
            return None;
        };
        let Client {
            stream: Stream::Tcp(tcp),
            buf,
            dec,
            out,
            conn,
        } = client
        else {
            return None;
        };
        let tls = acceptor.accept(tcp).await.ok()?;
        client = Client {
            stream: Stream::Tls(Box::new(tls)),
            buf,
            dec,
            out,
            conn,
        };
        first = client.read().await.ok()??;
    }
    let session = login(
        front,
        &mut client,
        first,
        &nonce,
        (offered, offered_ext),
        connection_id,
    )
    .await?;
    Some((session, client))
}

/// The login check, routing and first backend connection (see [`handshake`]).
async fn login(
    front: &Arc<Front>,
    client: &mut Client,
    first: Packet,
    nonce: &[u8],
    (offered, offered_ext): (u32, u32),
    connection_id: u32,
) -> Option<Session> {
    let peer = peer_host(client);
    let mut seq = first.seq().wrapping_add(1);
    let login = match parse_handshake_response(&first.payload()) {
        Ok(l) => l,
        Err(e) => {
            let err = ErrPacket::new(er::HANDSHAKE, b"08S01", format!("Bad handshake: {e}"));
            let _ = client.send_err(seq, &err).await;
            return None;
        }
    };
    let over_tls = matches!(client.stream, Stream::Tls(_));
    let Some(user) = front.users.get(&login.user) else {
        let err = access_denied(&login.user, &peer, !login.auth.is_empty());
        let _ = client.send_err(seq, &err).await;
        return None;
    };
    let used = login
        .plugin
        .clone()
        .unwrap_or_else(|| auth::NATIVE.to_vec());
    match authenticate(client, user, &used, &login.auth, nonce, seq, over_tls).await {
        Ok(next) => seq = next,
        Err(next) => {
            let err = access_denied(&login.user, &peer, !login.auth.is_empty());
            let _ = client.send_err(next, &err).await;
            return None;
        }
    }
    let schema = login
        .database
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| user.default_schema.clone());
    let key = Key {
        collation: login.collation,
        caps: login.capabilities & offered & FORMAT_CAPS,
        ext: login.ext_capabilities & offered_ext,
        vars: 0,
    };
    let handle = Arc::new(KillHandle {
        user: login.user.clone(),
        running: arc_swap::ArcSwapOption::empty(),
        killed: std::sync::atomic::AtomicBool::new(false),
        wake: tokio::sync::Notify::new(),
    });
    let mut session = Session {
        id: connection_id,
        _registered: Registered::new(connection_id, handle.clone()),
        handle,
        user: login.user.clone(),
        peer,
        schema: None,
        key,
        deprecate_eof: login.capabilities & offered & cap::DEPRECATE_EOF != 0,
        primary: None,
        replicas: None,
        bound: None,
        pinned: false,
        status: status::AUTOCOMMIT,
        login_status: status::AUTOCOMMIT,
        vars: SessionVars::default(),
        digests: std::collections::HashMap::new(),
        queries: 0,
    };
    match session
        .start(front, client, user, schema.as_deref(), seq)
        .await
    {
        Ok(true) => Some(session),
        _ => None,
    }
}

/// Check the client's auth response for `user` (switching plugins when
/// needed). `Ok(next seq)` when accepted; `Err(next seq)` when refused.
async fn authenticate(
    client: &mut Client,
    user: &User,
    plugin: &[u8],
    response: &[u8],
    nonce: &[u8],
    mut seq: u8,
    over_tls: bool,
) -> Result<u8, u8> {
    if plugin == auth::CACHING_SHA2 && user.has_sha2() {
        if !auth::sha2_verify(user.sha2.as_ref(), nonce, response) {
            return Err(seq);
        }
        if user.empty {
            return Ok(seq);
        }
        // Fast path: tell the client its cached scramble matched; OK follows.
        client
            .send(seq, &[0x01, auth::FAST_AUTH_SUCCESS])
            .await
            .map_err(|_| seq)?;
        return Ok(seq.wrapping_add(1));
    }
    if plugin == auth::CACHING_SHA2 && over_tls {
        // Full path: the client sends its password in clear text over TLS,
        // checked against the stored native hash.
        client
            .send(seq, &[0x01, auth::PERFORM_FULL_AUTH])
            .await
            .map_err(|_| seq)?;
        let p = client.read().await.ok().flatten().ok_or(seq)?;
        let payload = p.payload();
        let password = payload.strip_suffix(&[0]).unwrap_or(&payload);
        let next = p.seq().wrapping_add(1);
        let ok = match &user.native {
            Some(stored) => auth::native_hash(password) == *stored,
            None => password.is_empty(),
        };
        return if ok { Ok(next) } else { Err(next) };
    }
    if plugin == auth::NATIVE {
        return if auth::native_verify(user.native.as_ref(), nonce, response) {
            Ok(seq)
        } else {
            Err(seq)
        };
    }
    // Another plugin (or caching_sha2 without a way to check it here):
    // switch the client to mysql_native_password with a fresh nonce.
    let fresh = self::nonce();
    client
        .send(seq, &encode_auth_switch(auth::NATIVE, &fresh))
        .await
        .map_err(|_| seq)?;
    let p = client.read().await.ok().flatten().ok_or(seq)?;
    seq = p.seq().wrapping_add(1);
    if auth::native_verify(user.native.as_ref(), &fresh, &p.payload()) {
        Ok(seq)
    } else {
        Err(seq)
    }
}

/// Where one statement runs.
enum Target {
    /// The session's own primary connection.
    Bound,
    /// A connection of this cluster lent for one statement.
    Lent(Arc<Cluster>, Lane),
}

#[derive(Clone, Copy)]
enum Lane {
    Replica,
    Rule,
    Primary,
}

/// What went wrong in one exchange.
enum Failure {
    /// The backend failed; `sent`: the last sequence id forwarded to the client.
    Backend(String, u8),
    /// The client went away.
    Client,
}

/// One client session after login.
struct Session {
    /// The connection id the greeting announced (KILL, CONNECTION_ID()).
    id: u32,
    handle: Arc<KillHandle>,
    _registered: Registered,
    user: Vec<u8>,
    peer: String,
    schema: Option<Vec<u8>>,
    key: Key,
    deprecate_eof: bool,
    primary: Option<Arc<Cluster>>,
    replicas: Option<Arc<Cluster>>,
    /// The session's primary connection, once it has written or been pinned.
    bound: Option<Backend>,
    /// Session state lives on `bound`: every statement goes there.
    pinned: bool,
    /// AUTOCOMMIT and IN_TRANS as the backend said last (the OKs the
    /// gateway writes itself carry them).
    status: u16,
    /// The status the session's first backend connection had at login.
    login_status: u16,
    /// Tracked session variables, replayed on every connection it uses.
    vars: SessionVars,
    /// Queries per digest not yet merged into the listener's table.
    digests: std::collections::HashMap<String, u64>,
    queries: u64,
}

impl Session {
    /// Route the session and check its schema on a primary connection.
    /// `Ok(true)`: the client got its OK.
    async fn start(
        &mut self,
        front: &Front,
        client: &mut Client,
        user: &User,
        schema: Option<&[u8]>,
        seq: u8,
    ) -> std::io::Result<bool> {
        if let Some(s) = schema
            && !user.may_use(s)
        {
            let err = self.db_denied(s);
            client.send_err(seq, &err).await?;
            return Ok(false);
        }
        let login = Login {
            user: &self.user,
            schema,
        };
        let route =
            client
                .conn
                .listener
                .routes
                .route_to(Protocol::Mysql, &login, client.conn.destination);
        // A login is a request to the filters too (access, rate), refused
        // before any backend is touched; it holds no place once answered.
        if let Err(refusal) = client
            .conn
            .admit(Protocol::Mysql, &login, route, None)
            .await
        {
            client.send_err(seq, &refusal_err(&refusal, true)).await?;
            return Ok(false);
        }
        let Some((primary, replicas)) = route.and_then(|r| {
            let primary = r.action.cluster()?.for_destination(client.conn.destination);
            Some((primary, r.read_cluster.clone()))
        }) else {
            let err = ErrPacket::new(
                er::UNKNOWN,
                b"HY000",
                format!(
                    "switchyard: no route for MySQL user '{}' and schema '{}'",
                    String::from_utf8_lossy(&self.user),
                    String::from_utf8_lossy(schema.unwrap_or_default())
                ),
            );
            client.send_err(seq, &err).await?;
            return Ok(false);
        };
        let status_now = match checkout(&primary, self.key, &self.vars, schema).await {
            Ok((b, _)) => {
                let status_now = b.status & SESSION_STATUS;
                b.release().await;
                status_now
            }
            Err(CheckoutError::Schema(e)) | Err(CheckoutError::Unavailable(e)) => {
                front.metrics.backend_errors.increment(1);
                client.send_err(seq, &e).await?;
                return Ok(false);
            }
        };
        self.schema = schema.map(<[u8]>::to_vec);
        self.primary = Some(primary);
        self.replicas = replicas;
        self.status = status_now;
        self.login_status = status_now;
        client.send_ok(seq, self.status).await?;
        Ok(true)
    }

    fn db_denied(&self, schema: &[u8]) -> ErrPacket {
        ErrPacket::new(
            er::DBACCESS_DENIED,
            b"42000",
            format!(
                "Access denied for user '{}'@'{}' to database '{}'",
                String::from_utf8_lossy(&self.user),
                self.peer,
                String::from_utf8_lossy(schema)
            ),
        )
    }

    fn status_flags(&self) -> u16 {
        self.status
    }

    fn in_trans(&self) -> bool {
        self.status & status::IN_TRANS != 0
    }

    /// Statements must stay on the session's own connection: a transaction
    /// is open, or autocommit is off (every statement is part of one).
    fn transactional(&self) -> bool {
        self.in_trans() || self.status & status::AUTOCOMMIT == 0
    }

    /// The command loop.
    async fn run(mut self, front: &Front, client: &mut Client) {
        let idle = client.conn.listener.idle_timeout;
        let head = client.conn.listener.request_head_timeout;
        let mut drain = client.conn.drain.clone();
        loop {
            let next = tokio::select! {
                r = client.next_command(idle, head) => r,
                _ = super::drained(&mut drain) => break,
                _ = self.handle.wake.notified() => break,
            };
            let Ok(Ok(Some(p))) = next else { break };
            client.conn.metrics.requests.increment(1);
            let started = std::time::Instant::now();
            let keep = self.command(front, client, p).await;
            client
                .conn
                .metrics
                .latency
                .record(started.elapsed().as_secs_f64());
            if !keep || self.handle.killed.load(Ordering::Relaxed) {
                break;
            }
        }
        front.merge_digests(&mut self.digests);
        if let Some(b) = self.bound.take() {
            b.release().await;
        }
    }

    /// Handle one client command; `false` ends the session.
    async fn command(&mut self, front: &Front, client: &mut Client, p: Packet) -> bool {
        let reply = p.seq().wrapping_add(1);
        let Some(cmd) = p.first_byte() else {
            let err = ErrPacket::new(er::HANDSHAKE, b"08S01", "empty command packet");
            let _ = client.send_err(reply, &err).await;
            return false;
        };
        // Statements are the requests the filters see (with the session's
        // user and schema); held until their results are relayed.
        let _permit = if cmd == command::QUERY || cmd == command::STMT_EXECUTE {
            let login = Login {
                user: &self.user,
                schema: self.schema.as_deref(),
            };
            let routes = &client.conn.listener.routes;
            let route = routes
                .has_filters()
                .then(|| routes.route_to(Protocol::Mysql, &login, client.conn.destination))
                .flatten();
            let size = Some(p.payload().len() as u64);
            match client
                .conn
                .admit(Protocol::Mysql, &login, route, size)
                .await
            {
                Ok(mut permit) => {
                    if let Some(r) = permit.log() {
                        if cmd == command::QUERY {
                            let payload = p.payload();
                            let sql = payload.get(1..).unwrap_or_default();
                            r.digest = Some(switchyard_codecs::mysql::digest(sql, 512).into());
                            r.packet = Some("COM_QUERY");
                        } else {
                            r.packet = Some("COM_STMT_EXECUTE");
                        }
                    }
                    Some(permit)
                }
                Err(refusal) => {
                    let err = refusal_err(&refusal, false);
                    return self.skip_rest(client, &p).await
                        && client.send_err(reply, &err).await.is_ok()
                        && !refusal.close;
                }
            }
        } else {
            None
        };
        match cmd {
            command::QUIT => false,
            command::PING => client.send_ok(reply, self.status_flags()).await.is_ok(),
            command::INIT_DB => {
                let payload = p.payload();
                let schema = payload.get(1..).unwrap_or_default().to_vec();
                if front
                    .users
                    .get(&self.user)
                    .is_some_and(|u| !u.may_use(&schema))
                {
                    let err = self.db_denied(&schema);
                    return client.send_err(reply, &err).await.is_ok();
                }
                let result = match self.bound.as_mut() {
                    Some(b) => b.use_schema(Some(&schema)).await.map_err(|e| e.to_string()),
                    None => match self.lend(self.primary.clone(), Some(&schema)).await {
                        Ok(b) => {
                            b.release().await;
                            Ok(Ok(()))
                        }
                        Err(CheckoutError::Schema(e)) => Ok(Err(e)),
                        Err(CheckoutError::Unavailable(e)) => {
                            return client.send_err(reply, &e).await.is_ok();
                        }
                    },
                };
                match result {
                    Ok(Ok(())) => {
                        self.schema = Some(schema);
                        client.send_ok(reply, self.status_flags()).await.is_ok()
                    }
                    Ok(Err(e)) => client.send_err(reply, &e).await.is_ok(),
                    Err(e) => self.backend_lost(front, client, reply, e).await,
                }
            }
            command::RESET_CONNECTION => {
                if let Some(mut b) = self.bound.take() {
                    b.dirty = true;
                    b.release().await;
                }
                self.pinned = false;
                self.vars = SessionVars::default();
                self.key.vars = 0;
                self.status = self.login_status;
                client.send_ok(reply, self.status).await.is_ok()
            }
            command::CHANGE_USER => self.change_user(front, client, &p).await,
            command::PROCESS_KILL => {
                let payload = p.payload();
                let id = payload
                    .get(1..5)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(0, u32::from_le_bytes);
                self.kill(client, reply, u64::from(id), false).await
            }
            command::QUERY
                if let Some(k) = command::kill(p.payload().get(1..).unwrap_or_default()) =>
            {
                self.kill(client, reply, k.id, k.query).await
            }
            command::QUERY if is_kill(&p.payload()) => {
                // Any other KILL (`KILL USER`, expressions) would run as the
                // gateway's backend account and could end other sessions.
                let err = ErrPacket::new(
                    1227,
                    b"42000",
                    "Access denied; through switchyard KILL takes a connection id it announced",
                );
                self.skip_rest(client, &p).await && client.send_err(reply, &err).await.is_ok()
            }
            command::BINLOG_DUMP | 0x13..=0x15 | 0x1E => {
                let err = ErrPacket::new(
                    er::UNKNOWN_COM,
                    b"08S01",
                    format!(
                        "switchyard does not proxy {} (replication)",
                        Command(cmd).name()
                    ),
                );
                client.send_err(reply, &err).await.is_ok()
            }
            _ => {
                let Some(expect) = Command(cmd).expect() else {
                    let err = ErrPacket::new(er::UNKNOWN_COM, b"08S01", "Unknown command");
                    return client.send_err(reply, &err).await.is_ok();
                };
                self.forward(front, client, p, cmd, expect).await
            }
        }
    }

    /// KILL [QUERY] with a connection id this gateway announced: the
    /// target's backend statement is killed on its own host; KILL
    /// (CONNECTION) also ends the target session. Only the same user's
    /// sessions; errors as the server's own (1094, 1095).
    async fn kill(&mut self, client: &mut Client, reply: u8, id: u64, query: bool) -> bool {
        let target = u32::try_from(id)
            .ok()
            .and_then(|id| SESSIONS.lock().ok()?.get(&id).cloned());
        let Some(target) = target else {
            let err = ErrPacket::new(1094, b"HY000", format!("Unknown thread id: {id}"));
            return client.send_err(reply, &err).await.is_ok();
        };
        if target.user != self.user {
            let err = ErrPacket::new(1095, b"HY000", format!("You are not owner of thread {id}"));
            return client.send_err(reply, &err).await.is_ok();
        }
        if id == u64::from(self.id) {
            if query {
                return client.send_ok(reply, self.status_flags()).await.is_ok();
            }
            let err = ErrPacket::new(1927, b"70100", "Connection was killed");
            let _ = client.send_err(reply, &err).await;
            return false;
        }
        if !query {
            target.killed.store(true, Ordering::Relaxed);
            target.wake.notify_one();
        }
        if let Some(running) = target.running.load_full()
            && let Err(e) = backend::kill(&running, self.key, query).await
            // The statement ended meanwhile: nothing left to kill.
            && e.code != 1094
        {
            return client.send_err(reply, &e).await.is_ok();
        }
        client.send_ok(reply, self.status_flags()).await.is_ok()
    }

    /// A connection of `cluster` for one statement.
    async fn lend(
        &self,
        cluster: Option<Arc<Cluster>>,
        schema: Option<&[u8]>,
    ) -> Result<Backend, CheckoutError> {
        let Some(cluster) = cluster else {
            return Err(CheckoutError::Unavailable(ErrPacket::new(
                er::UNKNOWN,
                b"HY000",
                "session has no route",
            )));
        };
        checkout(&cluster, self.key, &self.vars, schema)
            .await
            .map(|(b, _)| b)
    }

    /// Decide where a command runs (`tracked`: it is a SET of tracked
    /// session variables).
    fn target(&self, front: &Front, cmd: u8, sql: &[u8], tracked: bool) -> (Target, bool) {
        let primary = || self.primary.clone();
        if cmd != command::QUERY {
            // Prepared statements live on one connection: pin.
            let pins = cmd == command::STMT_PREPARE;
            return (Target::Bound, pins);
        }
        if tracked {
            // Replayed wherever the next statement runs: no pin. It runs on
            // the session's own connection when it has one, else on a lent
            // primary connection (which keeps the variables in the pool).
            return match (&self.bound, primary()) {
                (None, Some(p)) if !self.pinned && !self.transactional() => {
                    (Target::Lent(p, Lane::Primary), false)
                }
                _ => (Target::Bound, false),
            };
        }
        let stmt = classify(sql);
        if self.pinned || self.transactional() {
            return (Target::Bound, stmt.pins);
        }
        if stmt.read
            && let Some((_, cluster)) = front.rules.iter().find(|(re, _)| re.is_match(sql))
        {
            return (Target::Lent(cluster.clone(), Lane::Rule), false);
        }
        if stmt.read {
            return match (&self.replicas, &self.bound) {
                (Some(r), _) => (Target::Lent(r.clone(), Lane::Replica), false),
                (None, Some(_)) => (Target::Bound, false),
                (None, None) => match primary() {
                    Some(p) => (Target::Lent(p, Lane::Primary), false),
                    None => (Target::Bound, false),
                },
            };
        }
        (Target::Bound, stmt.pins)
    }

    /// Forward one command to its backend and stream the response back.
    async fn forward(
        &mut self,
        front: &Front,
        client: &mut Client,
        p: Packet,
        cmd: u8,
        expect: Expect,
    ) -> bool {
        let reply = p.seq().wrapping_add(1);
        // CONNECTION_ID() is the id this gateway announced, not the backend's.
        let p = match (cmd == command::QUERY && !p.continues())
            .then(|| {
                switchyard_codecs::mysql::command::rewrite_connection_id(
                    p.payload().get(1..).unwrap_or_default(),
                    self.id,
                )
            })
            .flatten()
        {
            Some(sql) => {
                let mut payload = Vec::with_capacity(1 + sql.len());
                payload.push(command::QUERY);
                payload.extend_from_slice(&sql);
                let mut wire = BytesMut::from(packet(p.seq(), &payload).as_ref());
                match PacketDecoder::new(front.limits).decode(&mut wire) {
                    Ok(Some(rewritten)) => rewritten,
                    _ => p,
                }
            }
            None => p,
        };
        let payload = p.payload();
        let sql = if cmd == command::QUERY {
            payload.get(1..).unwrap_or_default()
        } else {
            &[][..]
        };
        if cmd == command::QUERY && front.max_digests > 0 {
            let digest = switchyard_codecs::mysql::digest(sql, 512);
            *self.digests.entry(digest).or_insert(0) += 1;
            self.queries += 1;
            if self.queries.is_multiple_of(256) || self.digests.len() >= 64 {
                front.merge_digests(&mut self.digests);
            }
        }
        let tracked = if cmd == command::QUERY {
            tracked_set(sql)
        } else {
            None
        };
        let (target, pins) = self.target(front, cmd, sql, tracked.is_some());
        let statement_cmd = matches!(
            cmd,
            command::STMT_EXECUTE
                | command::STMT_BULK_EXECUTE
                | command::STMT_CLOSE
                | command::STMT_RESET
                | command::STMT_FETCH
                | command::STMT_SEND_LONG_DATA
        );
        match target {
            Target::Lent(cluster, lane) => {
                match lane {
                    Lane::Replica => front.metrics.to_replica.increment(1),
                    Lane::Rule => front.metrics.to_rule.increment(1),
                    Lane::Primary => front.metrics.to_primary.increment(1),
                }
                let mut b = match self.lend(Some(cluster), self.schema.as_deref()).await {
                    Ok(b) => b,
                    Err(CheckoutError::Schema(e) | CheckoutError::Unavailable(e)) => {
                        front.metrics.backend_errors.increment(1);
                        return self.skip_rest(client, &p).await
                            && client.send_err(reply, &e).await.is_ok();
                    }
                };
                self.handle.running.store(Some(b.running.clone()));
                let result = exchange(&mut b, client, &p, expect, self.deprecate_eof).await;
                self.handle.running.store(None);
                match result {
                    Ok(flags) => {
                        if let Some(flags) = flags {
                            self.status = flags & SESSION_STATUS;
                            b.status = flags;
                            if let Some(set) = tracked {
                                self.vars.apply(set);
                                self.key.vars = self.vars.fingerprint();
                                b.key.vars = self.key.vars;
                            }
                        }
                        b.release().await;
                        true
                    }
                    Err(Failure::Client) => false,
                    Err(Failure::Backend(e, sent)) => {
                        let e = format!("{}: {e}", b.describe());
                        self.backend_lost(front, client, sent.wrapping_add(1), e)
                            .await
                    }
                }
            }
            Target::Bound => {
                front.metrics.to_primary.increment(1);
                if self.bound.is_none() {
                    if statement_cmd {
                        // COM_STMT_CLOSE/SEND_LONG_DATA have no answer.
                        if expect == Expect::Nothing {
                            return true;
                        }
                        let err = ErrPacket::new(
                            1243,
                            b"HY000",
                            "Unknown prepared statement handler given to mysqld_stmt",
                        );
                        return self.skip_rest(client, &p).await
                            && client.send_err(reply, &err).await.is_ok();
                    }
                    match self
                        .lend(self.primary.clone(), self.schema.as_deref())
                        .await
                    {
                        Ok(mut b) => {
                            b.dirty = true;
                            self.bound = Some(b);
                        }
                        Err(CheckoutError::Schema(e) | CheckoutError::Unavailable(e)) => {
                            front.metrics.backend_errors.increment(1);
                            return self.skip_rest(client, &p).await
                                && client.send_err(reply, &e).await.is_ok();
                        }
                    }
                }
                let Some(b) = self.bound.as_mut() else {
                    return false;
                };
                // The session's variables may have changed on a lent connection.
                match b.sync(&self.vars).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return self.skip_rest(client, &p).await
                            && client.send_err(reply, &e).await.is_ok();
                    }
                    Err(e) => {
                        let e = format!("{}: {e}", b.describe());
                        self.bound = None;
                        let stateful = self.pinned || self.in_trans();
                        let keep = self.backend_lost(front, client, reply, e).await;
                        return keep && !stateful;
                    }
                }
                let Some(b) = self.bound.as_mut() else {
                    return false;
                };
                if pins {
                    self.pinned = true;
                }
                self.handle.running.store(Some(b.running.clone()));
                let result = exchange(b, client, &p, expect, self.deprecate_eof).await;
                self.handle.running.store(None);
                match result {
                    Ok(flags) => {
                        if let Some(flags) = flags {
                            self.status = flags & SESSION_STATUS;
                            b.status = flags;
                            if let Some(set) = tracked {
                                self.vars.apply(set);
                                self.key.vars = self.vars.fingerprint();
                                b.key.vars = self.key.vars;
                            }
                        }
                        if cmd == command::QUERY
                            && flags.is_some()
                            && let Some(db) = switchyard_codecs::mysql::command::use_schema(sql)
                        {
                            b.schema = Some(db.to_vec());
                            self.schema = Some(db.to_vec());
                        } else if cmd == command::QUERY && classify(sql).is_use {
                            b.schema = None;
                        }
                        true
                    }
                    Err(Failure::Client) => false,
                    Err(Failure::Backend(e, sent)) => {
                        let e = format!("{}: {e}", b.describe());
                        self.bound = None;
                        let stateful = self.pinned || self.in_trans();
                        let keep = self
                            .backend_lost(front, client, sent.wrapping_add(1), e)
                            .await;
                        // Session state (transaction, variables, statements) died with it.
                        keep && !stateful
                    }
                }
            }
        }
    }

    /// Read and drop the continuation packets of a command that is answered
    /// without a backend. `false` when the client is gone.
    async fn skip_rest(&self, client: &mut Client, first: &Packet) -> bool {
        let mut more = first.continues();
        while more {
            match client.read().await {
                Ok(Some(p)) => more = p.continues(),
                _ => return false,
            }
        }
        true
    }

    /// Tell the client its backend is gone (ERR 2013, naming the backend).
    async fn backend_lost(
        &mut self,
        front: &Front,
        client: &mut Client,
        seq: u8,
        what: String,
    ) -> bool {
        front.metrics.backend_errors.increment(1);
        tracing::warn!(error = %what, "MySQL backend lost");
        let err = ErrPacket::new(
            er::SERVER_LOST,
            b"HY000",
            format!("Lost connection to MySQL backend {what}"),
        );
        client.send_err(seq, &err).await.is_ok()
    }

    /// COM_CHANGE_USER: check the new user, reset the session's state,
    /// route again.
    async fn change_user(&mut self, front: &Front, client: &mut Client, p: &Packet) -> bool {
        let caps = OFFERED;
        let mut seq = p.seq().wrapping_add(1);
        let Ok(change) = parse_change_user(&p.payload(), caps) else {
            let err = ErrPacket::new(er::HANDSHAKE, b"08S01", "malformed COM_CHANGE_USER");
            let _ = client.send_err(seq, &err).await;
            return false;
        };
        if let Some(mut b) = self.bound.take() {
            b.dirty = true;
            b.release().await;
        }
        self.pinned = false;
        self.status = self.login_status;
        self.vars = SessionVars::default();
        self.key.vars = 0;
        let Some(user) = front.users.get(&change.user) else {
            let err = access_denied(&change.user, &self.peer, !change.auth.is_empty());
            let _ = client.send_err(seq, &err).await;
            return false;
        };
        // The client scrambled with the greeting's nonce, which this session
        // no longer has: always switch, with a fresh nonce.
        let fresh = nonce();
        if client
            .send(seq, &encode_auth_switch(auth::NATIVE, &fresh))
            .await
            .is_err()
        {
            return false;
        }
        let Ok(Some(answer)) = client.read().await else {
            return false;
        };
        seq = answer.seq().wrapping_add(1);
        if !auth::native_verify(user.native.as_ref(), &fresh, &answer.payload()) {
            let err = access_denied(&change.user, &self.peer, true);
            let _ = client.send_err(seq, &err).await;
            return false;
        }
        self.user = change.user.clone();
        let schema = Some(change.database.clone())
            .filter(|d| !d.is_empty())
            .or_else(|| user.default_schema.clone());
        if let Some(c) = change.collation {
            self.key.collation = c as u8;
        }
        matches!(
            self.start(front, client, user, schema.as_deref(), seq)
                .await,
            Ok(true)
        )
    }
}

/// Send one command (with its continuation packets) to `b` and stream the
/// response to the client, relaying a LOCAL INFILE upload when asked.
/// `Ok(final status flags)` when the response ended.
async fn exchange(
    b: &mut Backend,
    client: &mut Client,
    first: &Packet,
    expect: Expect,
    deprecate_eof: bool,
) -> Result<Option<u16>, Failure> {
    // Each command forwarded is one request of its cluster, timed to the
    // end of its response.
    let _request = b.cluster.begin(b.host);
    let mut sent = first.seq();
    let lost = |e: std::io::Error, sent: u8| Failure::Backend(e.to_string(), sent);
    b.send(first.wire()).await.map_err(|e| lost(e, sent))?;
    let mut more = first.continues();
    while more {
        let p = client.read().await.ok().flatten().ok_or(Failure::Client)?;
        more = p.continues();
        sent = p.seq();
        b.send(p.wire()).await.map_err(|e| lost(e, sent))?;
    }
    let mut state = ResponseState::new(expect, deprecate_eof);
    if state.is_done() {
        return Ok(None);
    }
    loop {
        let p = match b.read_packet().await {
            Ok(p) => p,
            Err(e) => {
                let _ = client.flush().await;
                return Err(lost(e, sent));
            }
        };
        let step = match state.feed(&p) {
            Ok(s) => s,
            Err(e) => {
                let _ = client.flush().await;
                return Err(Failure::Backend(e.to_string(), sent));
            }
        };
        sent = p.seq();
        client.queue(p.wire());
        match step {
            Step::More => {
                if client.out.len() >= 64 * 1024 || !b.has_buffered_packet() {
                    client.flush().await.map_err(|_| Failure::Client)?;
                }
            }
            Step::LocalInfile => {
                client.flush().await.map_err(|_| Failure::Client)?;
                loop {
                    let p = client.read().await.ok().flatten().ok_or(Failure::Client)?;
                    b.send(p.wire()).await.map_err(|e| lost(e, sent))?;
                    if p.payload_len() == 0 {
                        break;
                    }
                }
            }
            Step::Done(flags) => {
                client.flush().await.map_err(|_| Failure::Client)?;
                return Ok(flags);
            }
        }
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn a_policy_denial_is_access_denied_and_an_address_refusal_host_not_allowed() {
        let address = Refusal::new(403, "client address not allowed");
        let policy = Refusal::new(403, "denied by policy").by_policy();
        let codes = |r: &Refusal| (refusal_err(r, true).code, refusal_err(r, false).code);
        assert_eq!(codes(&address), (1130, 1227));
        assert_eq!(codes(&policy), (1045, 1142));
        assert_eq!(&refusal_err(&policy, true).sql_state, b"28000");
        assert_eq!(
            refusal_err(&policy, false).message,
            b"switchyard: denied by policy".to_vec()
        );
    }
}
