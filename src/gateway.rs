//! The running gateway: the compiled config snapshot behind an `ArcSwap`
//! (each new connection takes the current one; SIGHUP swaps in a new one),
//! the listeners, the admin server, and graceful drain on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_codecs::Protocol;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::{self, Config, ConfigError, Fallback};
use crate::router::RouteTable;
use crate::upstream::Cluster;

/// A listener's compiled settings, as of one snapshot.
pub struct ListenerRuntime {
    pub name: String,
    /// Sniffed protocols, or the one fixed protocol.
    pub protocols: Vec<Protocol>,
    pub fixed: bool,
    pub routes: Arc<RouteTable>,
    pub fallback: Option<Arc<Cluster>>,
    pub detect_timeout: Duration,
    pub detect_max_bytes: usize,
    pub idle_timeout: Duration,
    /// Longest time from a request head's first byte to its last (slowloris bound).
    pub request_head_timeout: Duration,
    /// HTTP/1 path policy: normalisation before routing, which path goes upstream.
    pub http1_paths: crate::config::Http1Limits,
    pub http1: switchyard_codecs::http1::Limits,
    pub redis: switchyard_codecs::redis::Limits,
    pub redis_max_pipeline: usize,
    pub memcached: switchyard_codecs::memcached::Limits,
    /// Redis client authentication at the gateway (listeners with `redis.users`).
    pub redis_auth: Option<Arc<crate::filters::redis_auth::RedisAuth>>,
    /// TLS termination, when the listener has a `tls` block.
    pub tls: Option<Arc<crate::net::tls::Terminator>>,
    /// The MQTT edge policy (listeners with `mqtt` enabled).
    pub mqtt: Option<Arc<crate::filters::mqtt::MqttPolicy>>,
    /// RTSP settings (limits, UDP relay, gateway auth).
    pub rtsp: crate::config::Rtsp,
    /// The MySQL front end (listeners with `protocol: mysql`).
    pub mysql: Option<Arc<crate::proxy::mysql::policy::Front>>,
    /// Metric handles per protocol (and `None` for passthrough), resolved once.
    pub metrics: Vec<(Option<Protocol>, crate::observe::ConnMetrics)>,
    /// Stream filters every request on this listener goes through first.
    pub filters: crate::filters::chain::FilterChain,
    /// Where `mirror` filters send copies (shared by the snapshot's listeners).
    pub mirrors: Arc<crate::proxy::mirror::Mirrors>,
    /// The listener's access log, when it has one.
    pub access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
    /// The PROXY protocol header accepted before TLS and detection.
    pub proxy_protocol: Option<crate::net::proxy_protocol::Accept>,
    /// Spans of every request, when the config has `tracing`.
    pub tracer: Option<Arc<crate::observe::trace::Tracer>>,
    /// Sidecar interception (`transparent: redirect`): each connection's
    /// original destination is read with `SO_ORIGINAL_DST`.
    pub transparent: bool,
}

impl ListenerRuntime {
    /// The metric handles of connections of `protocol` (`None`: passthrough).
    pub fn metrics_for(&self, protocol: Option<Protocol>) -> crate::observe::ConnMetrics {
        match self.metrics.iter().find(|(p, _)| *p == protocol) {
            Some((_, m)) => m.clone(),
            None => {
                crate::observe::ConnMetrics::new(&self.name, protocol.map_or("tcp", Protocol::name))
            }
        }
    }
}

/// An immutable, compiled config.
pub struct Snapshot {
    pub config: Config,
    pub listeners: HashMap<String, Arc<ListenerRuntime>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// The bearer token admin requests must carry (`admin.token`/`token_file`).
    pub admin_token: Option<Arc<str>>,
    /// What compiling found questionable in the files the config names (a
    /// certificate not valid for a server name it is listed for).
    pub warnings: Vec<config::Problem>,
    /// Stops the certificate file watchers of this snapshot when it goes.
    cert_watch: Option<tokio_util::sync::DropGuard>,
}

impl Snapshot {
    /// Compile a validated config; `base` is the config file's folder (for
    /// files it names). Fails on files that cannot be read or parsed.
    pub fn build(config: Config, base: &Path, file: &str) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let clusters: HashMap<String, Arc<Cluster>> = config
            .clusters
            .iter()
            .map(|c| {
                let tls = c.tls.as_ref().and_then(|t| {
                    crate::upstream::tls::client(&c.name.value, t, c.http_protocol(), base)
                        .map_err(|p| problems.push(p))
                        .ok()
                });
                (
                    c.name.value.clone(),
                    Arc::new(Cluster::new(c).with_tls(tls)),
                )
            })
            .collect();
        let tables: HashMap<String, Arc<RouteTable>> = config
            .route_tables
            .iter()
            .map(|t| {
                (
                    t.name.value.clone(),
                    Arc::new(RouteTable::new(t, &clusters)),
                )
            })
            .collect();
        let mirrors = Arc::new(crate::proxy::mirror::Mirrors::new(&config, &clusters));
        let mut warnings = Vec::new();
        let admin_token = config
            .admin
            .resolve_token(base)
            .map_err(|p| problems.push(p))
            .ok()
            .flatten()
            .map(Arc::from);
        let tracer = match &config.tracing {
            Some(t) => match crate::observe::trace::Tracer::new(t) {
                Ok(t) => Some(t),
                Err(message) => {
                    problems.push(config::Problem {
                        line: t.endpoint.referenced.line(),
                        column: t.endpoint.referenced.column(),
                        field: "tracing.endpoint".into(),
                        message,
                        hint: Some(
                            "give a collector's OTLP/HTTP URL, e.g. `http://127.0.0.1:4318/v1/traces`"
                                .into(),
                        ),
                    });
                    None
                }
            },
            None => None,
        };
        let mut listeners = HashMap::new();
        for l in &config.listeners {
            let Some(routes) = tables.get(&l.route_table.value).cloned() else {
                continue;
            };
            let fallback = match &l.detect.fallback {
                Fallback::Reject => None,
                Fallback::TcpProxy(c) => clusters.get(&c.value).cloned(),
            };
            let protocols = l.enabled_protocols();
            let mqtt = if protocols.contains(&Protocol::Mqtt) {
                match crate::filters::mqtt::MqttPolicy::new(&l.name.value, &l.mqtt, base) {
                    Ok(p) => Some(Arc::new(p)),
                    Err(p) => {
                        problems.extend(p);
                        None
                    }
                }
            } else {
                None
            };
            let tls = match &l.tls {
                Some(t) => match crate::net::tls::terminator(&l.name.value, t, base) {
                    Ok((terminator, found)) => {
                        warnings.extend(found);
                        Some(Arc::new(terminator))
                    }
                    Err(p) => {
                        problems.extend(p);
                        None
                    }
                },
                None => None,
            };
            let mysql = if protocols.contains(&Protocol::Mysql) {
                match crate::proxy::mysql::policy::Front::new(&l.name.value, &l.mysql, &clusters) {
                    Ok(f) => Some(Arc::new(f)),
                    Err(p) => {
                        problems.extend(p);
                        None
                    }
                }
            } else {
                None
            };
            let access_log = match &l.access_log {
                Some(log) => {
                    match crate::observe::access_log::AccessLog::new(&l.name.value, log, base) {
                        Ok(a) => Some(a),
                        Err(message) => {
                            problems.push(config::Problem {
                                line: log.path.referenced.line(),
                                column: log.path.referenced.column(),
                                field: format!("listeners[{}].access_log.path", l.name.value),
                                message,
                                hint: Some(
                                    "give a writable file path (its folder must exist), or `stdout`"
                                        .into(),
                                ),
                            });
                            None
                        }
                    }
                }
                None => None,
            };
            let runtime = ListenerRuntime {
                tracer: tracer.clone(),
                access_log,
                mysql,
                name: l.name.value.clone(),
                tls,
                fixed: l.protocol.is_some(),
                routes,
                fallback,
                detect_timeout: l.detect.timeout.get(),
                detect_max_bytes: l.detect.max_bytes,
                idle_timeout: l.idle_timeout.get(),
                request_head_timeout: l.request_head_timeout.get(),
                http1_paths: l.http1,
                http1: switchyard_codecs::http1::Limits {
                    max_head_bytes: l.http1.max_head_bytes,
                    max_headers: l.http1.max_headers,
                },
                redis: switchyard_codecs::redis::Limits {
                    max_bulk: l.redis.max_bulk,
                    max_elements: l.redis.max_elements,
                    max_depth: l.redis.max_depth,
                    ..Default::default()
                },
                redis_max_pipeline: l.redis.max_pipeline,
                memcached: l.memcached.codec(),
                redis_auth: crate::filters::redis_auth::RedisAuth::new(&l.redis.users)
                    .map(Arc::new),
                mqtt,
                rtsp: l.rtsp.clone(),
                filters: crate::filters::chain::FilterChain::new(
                    &l.filters_with_mqtt_limits(),
                    &format!("listener:{}", l.name.value),
                ),
                mirrors: mirrors.clone(),
                proxy_protocol: l
                    .proxy_protocol
                    .as_ref()
                    .map(crate::net::proxy_protocol::Accept::new),
                transparent: l.transparent.is_some(),
                metrics: protocols
                    .iter()
                    .copied()
                    .map(Some)
                    .chain([None])
                    .map(|p| {
                        (
                            p,
                            crate::observe::ConnMetrics::new(
                                &l.name.value,
                                p.map_or("tcp", Protocol::name),
                            ),
                        )
                    })
                    .collect(),
                protocols,
            };
            listeners.insert(l.name.value.clone(), Arc::new(runtime));
        }
        if !problems.is_empty() {
            return Err(ConfigError {
                file: file.to_owned(),
                problems,
            });
        }
        Ok(Self {
            config,
            listeners,
            clusters,
            admin_token,
            warnings,
            cert_watch: None,
        })
    }

    /// Start watching the listeners' certificate files (each `tls` block's
    /// `check_interval`); the watchers stop when this snapshot is dropped.
    /// Needs a tokio runtime.
    pub fn start_cert_watch(&mut self) {
        let stop = tokio_util::sync::CancellationToken::new();
        for l in self.listeners.values() {
            if let Some(t) = &l.tls {
                tokio::spawn(t.certificates.clone().watch(stop.clone()));
            }
        }
        self.cert_watch = Some(stop.drop_guard());
    }
}

/// Check that a config's protocols have drivers in this build.
pub fn check_served(config: &Config, file: &str) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for l in &config.listeners {
        let spans = l.protocols.iter().chain(l.protocol.iter());
        for p in spans {
            let proto = p.value.0;
            let passthrough_tls =
                proto == Protocol::Tls && !matches!(l.detect.fallback, Fallback::Reject);
            if crate::proxy::registry::driver(proto).is_none() && !passthrough_tls {
                problems.push(config::Problem {
                    line: p.referenced.line(),
                    column: p.referenced.column(),
                    field: format!("listeners[{}].protocols", l.name.value),
                    message: format!("{proto} has no driver in this build yet"),
                    hint: Some(format!(
                        "served today: {}; to terminate TLS give the listener a `tls` block; `tls` in `protocols` passes TLS through to the tcp_proxy fallback",
                        crate::proxy::registry::served_names()
                    )),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError {
            file: file.to_owned(),
            problems,
        })
    }
}

/// Load, validate and compile a config file for this build.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let file = path.display().to_string();
    let config = config::load_file(path)?;
    check_served(&config, &file)?;
    for w in config::lint::warnings(&config) {
        tracing::warn!(
            "{file}:{}:{}: {}: {} ({})",
            w.line,
            w.column,
            w.field,
            w.message,
            w.hint.unwrap_or_default()
        );
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let snapshot = Snapshot::build(config, base, &file)?;
    for w in &snapshot.warnings {
        tracing::warn!(
            "{file}:{}:{}: {}: {} ({})",
            w.line,
            w.column,
            w.field,
            w.message,
            w.hint.as_deref().unwrap_or_default()
        );
    }
    Ok(snapshot)
}

/// What a reload changed, logged and returned to whoever asked for it
/// (SIGHUP, the file watch, the admin API).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners that started accepting (a new name, or a new address).
    pub listeners_added: Vec<String>,
    /// Listeners that stopped accepting; their connections drain.
    pub listeners_removed: Vec<String>,
    /// Listeners kept whose settings changed (new connections get them).
    pub listeners_changed: Vec<String>,
    pub clusters_added: Vec<String>,
    pub clusters_removed: Vec<String>,
    /// Clusters kept whose settings changed.
    pub clusters_changed: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            ("listeners added", &self.listeners_added),
            ("listeners removed", &self.listeners_removed),
            ("listeners changed", &self.listeners_changed),
            ("clusters added", &self.clusters_added),
            ("clusters removed", &self.clusters_removed),
            ("clusters changed", &self.clusters_changed),
        ];
        let mut any = false;
        for (what, names) in parts {
            if names.is_empty() {
                continue;
            }
            if any {
                f.write_str("; ")?;
            }
            write!(f, "{what}: {}", names.join(", "))?;
            any = true;
        }
        if !any {
            f.write_str("no listener or cluster changed")?;
        }
        Ok(())
    }
}

/// Names in `new` and not `old`, in `old` and not `new`, and in both with
/// different settings (compared as serialized config).
fn diff<'a, T: serde::Serialize + 'a>(
    old: impl Iterator<Item = (&'a str, &'a T)>,
    new: impl Iterator<Item = (&'a str, &'a T)>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let old: HashMap<&str, &T> = old.collect();
    let new: HashMap<&str, &T> = new.collect();
    let value = |t: &T| serde_json::to_value(t).ok();
    let mut added: Vec<String> = new
        .keys()
        .filter(|n| !old.contains_key(*n))
        .map(|n| (*n).to_owned())
        .collect();
    let mut removed: Vec<String> = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .map(|n| (*n).to_owned())
        .collect();
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(n, t)| old.get(*n).is_some_and(|o| value(o) != value(t)))
        .map(|(n, _)| (*n).to_owned())
        .collect();
    added.sort();
    removed.sort();
    changed.sort();
    (added, removed, changed)
}

/// The running gateway.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub drain: watch::Sender<bool>,
    pub connections: TaskTracker,
    /// The overload manager (thresholds follow reloads).
    pub overload: Arc<crate::net::overload::Overload>,
    /// The listeners accepting now (changed by reloads).
    pub listeners: crate::net::listeners::Listeners,
    /// The admin server's socket (lent to a binary upgrade's new process).
    admin_socket: Option<std::net::TcpListener>,
    /// One reload at a time (SIGHUP, the file watch and the admin API may race).
    reload_lock: std::sync::Mutex<()>,
    /// Set when a binary upgrade's new process took over: drain and exit.
    upgraded: tokio::sync::Notify,
    /// This gateway, for the tasks a reload starts.
    me: std::sync::Weak<Gateway>,
}

impl Gateway {
    /// Reload the config file; on any problem keep the running snapshot
    /// (and listeners). Listeners added start accepting, listeners removed
    /// stop and their connections drain, clusters kept keep their hosts'
    /// state and connections (`Cluster::inherit`). Returns what changed.
    /// Neither logged nor counted: see [`Gateway::reload_counted`].
    pub fn reload(&self) -> Result<ReloadSummary, ConfigError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_locked()
    }

    /// [`Gateway::reload`], logged (with what changed) and counted in
    /// `switchyard_config_reloads_total{result="ok|error"}`; `why` names
    /// the trigger in the log.
    pub fn reload_logged(&self, why: &str) -> Result<ReloadSummary, ConfigError> {
        let result = self.reload();
        match &result {
            Ok(summary) => tracing::info!(
                file = %self.config_path.display(),
                trigger = why,
                "config reloaded: {summary}"
            ),
            Err(e) => tracing::error!(
                trigger = why,
                "config reload rejected, keeping the running config:\n{e}"
            ),
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("switchyard_config_reloads_total", "result" => outcome).increment(1);
        result
    }

    /// [`Gateway::reload`], logged and counted (the admin's `POST /reload`).
    pub fn reload_counted(&self) -> Result<(), ConfigError> {
        self.reload_logged("admin").map(|_| ())
    }

    fn reload_locked(&self) -> Result<ReloadSummary, ConfigError> {
        let mut snapshot = load(&self.config_path)?;
        let file = self.config_path.display().to_string();
        let bound = self
            .listeners
            .prepare(&snapshot.config)
            .map_err(|p| ConfigError {
                file: file.clone(),
                problems: vec![p],
            })?;
        let config = &snapshot.config;
        let old = self.snapshot.load_full();
        let (_, _, listeners_changed) = diff(
            old.config
                .listeners
                .iter()
                .map(|l| (l.name.value.as_str(), l)),
            config.listeners.iter().map(|l| (l.name.value.as_str(), l)),
        );
        let (clusters_added, clusters_removed, clusters_changed) = diff(
            old.config
                .clusters
                .iter()
                .map(|c| (c.name.value.as_str(), c)),
            config.clusters.iter().map(|c| (c.name.value.as_str(), c)),
        );
        for c in snapshot.clusters.values() {
            c.start_health_checks();
        }
        for (name, c) in &snapshot.clusters {
            c.inherit(old.clusters.get(name).map(|c| &**c));
        }
        self.overload.configure(&config.overload);
        let config = snapshot.config.clone();
        snapshot.start_cert_watch();
        self.snapshot.store(Arc::new(snapshot));
        let mut summary = ReloadSummary {
            listeners_changed,
            clusters_added,
            clusters_removed,
            clusters_changed,
            ..Default::default()
        };
        if let Some(me) = self.me.upgrade() {
            let changes = self.listeners.apply(&config, bound, &me);
            summary
                .listeners_changed
                .retain(|n| !changes.added.contains(n) && !changes.removed.contains(n));
            summary.listeners_added = changes.added;
            summary.listeners_removed = changes.removed;
        }
        Ok(summary)
    }

    /// Reload, log and count (SIGHUP, the file watch).
    pub fn reload_and_log(&self, why: &str) {
        let _ = self.reload_logged(why);
    }
}

/// Poll the config file (modification time, size and a hash of its
/// contents) while `reload.watch` is on, and reload when it changed.
async fn watch_file(gateway: Arc<Gateway>) {
    use std::hash::{Hash, Hasher};
    let stamp = |path: &Path| -> Option<(Option<std::time::SystemTime>, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        let text = std::fs::read(path).ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        Some((meta.modified().ok(), h.finish()))
    };
    // The file as the gateway loaded it (read right after loading: an edit
    // in between is seen at the next change).
    let mut last = if gateway.snapshot.load().config.reload.watch {
        stamp(&gateway.config_path)
    } else {
        None
    };
    loop {
        let reload = gateway.snapshot.load().config.reload.clone();
        let interval = reload.interval.get().max(Duration::from_millis(100));
        tokio::time::sleep(interval).await;
        if !gateway.snapshot.load().config.reload.watch {
            // Off: the file is not read. Turned on by a reload: the file
            // as it is then is the one running.
            last = None;
            continue;
        }
        if last.is_none() {
            last = stamp(&gateway.config_path);
            continue;
        }
        let now = stamp(&gateway.config_path);
        // Compare contents, not only times: an edit within the file system's
        // time granularity still changes the hash; a touch alone does not reload.
        let changed = match (&last, &now) {
            (Some((_, a)), Some((_, b))) => a != b,
            _ => false,
        };
        if now.is_some() {
            last = now;
        }
        if changed {
            gateway.reload_and_log("file changed");
        }
    }
}

/// Run the gateway on `path` until SIGTERM/SIGINT, then drain.
pub async fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    run_with(path, None).await
}

/// Run the gateway on `path`; with `takeover`, take the listening sockets
/// of the gateway serving on that Unix socket (a binary upgrade, see
/// [`crate::net::takeover`]), and serve the next upgrade there.
pub async fn run_with(
    path: &Path,
    takeover: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first, so the snapshot's metric handles register with it.
    let metrics = crate::observe::install_metrics();
    let mut snapshot = load(path)?;
    snapshot.start_cert_watch();
    let config = &snapshot.config;
    if let Some(handle) = metrics.clone() {
        // Histograms keep raw samples until they are drained into buckets:
        // drain them every few seconds, so memory stays flat without a scraper.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let taken = match takeover {
        Some(sock) => crate::net::takeover::request(sock)
            .map_err(|e| format!("takeover {}: {e}", sock.display()))?,
        None => None,
    };
    let mut inherited = HashMap::new();
    if let Some(t) = &taken {
        tracing::info!(
            sockets = t.sockets.len(),
            "binary upgrade: took the old process's listening sockets"
        );
    }
    let taken = taken.map(|mut t| {
        inherited = std::mem::take(&mut t.sockets);
        t
    });
    let bound = crate::net::listeners::Listeners::bind_all(config, &mut inherited)?;
    let admin_addr = config.admin.addr();
    let admin_socket = match admin_addr {
        Some(addr) => {
            let socket = match inherited.remove(&addr) {
                Some(s) => s,
                None => TcpListener::bind(addr)
                    .await
                    .and_then(TcpListener::into_std)
                    .map_err(|e| format!("admin: cannot bind {addr}: {e}"))?,
            };
            socket.set_nonblocking(true)?;
            tracing::info!(address = %addr, "admin server listening");
            Some(socket)
        }
        None => None,
    };
    // Sockets the old process had that this config does not name close here.
    drop(inherited);
    crate::upstream::health::register_mysql_check(crate::proxy::mysql::backend::health_check);
    for c in snapshot.clusters.values() {
        c.start_health_checks();
        let c = c.clone();
        tokio::spawn(async move { c.probe().await });
    }
    let (drain, _) = watch::channel(false);
    let overload = crate::net::overload::Overload::new(&snapshot.config.overload);
    tokio::spawn(overload.clone().monitor());
    let gateway = Arc::new_cyclic(|me| Gateway {
        overload,
        snapshot: ArcSwap::from_pointee(snapshot),
        config_path: path.to_owned(),
        drain,
        connections: TaskTracker::new(),
        listeners: crate::net::listeners::Listeners::default(),
        admin_socket,
        reload_lock: std::sync::Mutex::new(()),
        upgraded: tokio::sync::Notify::new(),
        me: me.clone(),
    });
    // The admin server accepts on its own descriptor of the socket; the
    // gateway keeps the first to lend it to a binary upgrade.
    let admin = match &gateway.admin_socket {
        Some(s) => {
            let socket = TcpListener::from_std(s.try_clone()?)?;
            Some(tokio::spawn(crate::admin::serve(
                socket,
                gateway.clone(),
                metrics,
            )))
        }
        None => None,
    };
    gateway.listeners.start(bound, &gateway);
    tokio::spawn(watch_file(gateway.clone()));
    if let Some(t) = taken {
        // Serving on the old sockets: the old process may drain now.
        if let Err(e) = t.finish() {
            tracing::warn!(error = %e, "binary upgrade: telling the old process to drain failed");
        }
    }
    if let Some(sock) = takeover {
        let lender = gateway.clone();
        let lend: crate::net::takeover::Lend = Arc::new(move || {
            use std::os::fd::AsFd;
            lender
                .listeners
                .sockets()
                .into_iter()
                .filter_map(|(a, s)| Some((a, s.as_fd().try_clone_to_owned().ok()?)))
                .chain(lender.admin_socket.as_ref().and_then(|s| {
                    Some((s.local_addr().ok()?, s.as_fd().try_clone_to_owned().ok()?))
                }))
                .collect()
        });
        let notify = gateway.clone();
        crate::net::takeover::serve(
            sock.to_owned(),
            lend,
            Box::new(move || notify.upgraded.notify_one()),
        )
        .map_err(|e| format!("takeover: cannot listen on {}: {e}", sock.display()))?;
    }

    let upgraded = wait_for_shutdown(&gateway).await;
    let drain_timeout = gateway.snapshot.load().config.drain_timeout.get();
    tracing::info!(timeout = ?drain_timeout, "draining");
    gateway.drain.send_replace(true);
    gateway.listeners.drain_all();
    if upgraded && let Some(a) = &admin {
        // The new process answers the admin API now (after a SIGTERM the
        // old one keeps answering `/ready` 503 while it drains).
        a.abort();
    }
    gateway.connections.close();
    if tokio::time::timeout(drain_timeout, gateway.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = gateway.connections.len(),
            "drain timeout: closing the remaining connections"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Wait for SIGTERM/SIGINT (`false`) or a binary upgrade's new process
/// taking over (`true`), reloading on SIGHUP meanwhile.
#[cfg(unix)]
async fn wait_for_shutdown(gateway: &Gateway) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    // The admin's `POST /drain` sets the drain flag: drain as on SIGTERM.
    let mut drain = gateway.drain.subscribe();
    loop {
        tokio::select! {
            _ = hup.recv() => gateway.reload_and_log("SIGHUP"),
            _ = usr1.recv() => {
                crate::observe::access_log::reopen();
                tracing::info!("access logs reopened");
            }
            () = gateway.upgraded.notified() => return true,
            _ = term.recv() => return false,
            _ = int.recv() => return false,
            _ = drain.wait_for(|d| *d) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_added_removed_and_changed() {
        let old = [("a", 1), ("b", 2), ("c", 3)];
        let new = [("b", 2), ("c", 4), ("d", 5)];
        let (added, removed, changed) = diff(
            old.iter().map(|(n, v)| (*n, v)),
            new.iter().map(|(n, v)| (*n, v)),
        );
        assert_eq!(added, ["d"]);
        assert_eq!(removed, ["a"]);
        assert_eq!(changed, ["c"]);
    }

    #[test]
    fn summary_says_what_changed() {
        let s = ReloadSummary {
            listeners_added: vec!["extra".into()],
            clusters_removed: vec!["old".into(), "older".into()],
            ..Default::default()
        };
        assert_eq!(
            s.to_string(),
            "listeners added: extra; clusters removed: old, older"
        );
        assert_eq!(
            ReloadSummary::default().to_string(),
            "no listener or cluster changed"
        );
    }
}
