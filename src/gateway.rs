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

/// Protocols with a driver in this build.
pub const SERVED: [Protocol; 8] = [
    Protocol::Http1,
    Protocol::Http2,
    Protocol::Redis,
    Protocol::Mqtt,
    Protocol::Dubbo,
    Protocol::Bolt,
    Protocol::Rtsp,
    Protocol::Mysql,
];

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
    /// Redis client authentication at the gateway (listeners with `redis.users`).
    pub redis_auth: Option<Arc<crate::filters::redis_auth::RedisAuth>>,
    /// TLS termination, when the listener has a `tls` block.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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
}

impl Snapshot {
    /// Compile a validated config; `base` is the config file's folder (for
    /// files it names). Fails on files that cannot be read or parsed.
    pub fn build(config: Config, base: &Path, file: &str) -> Result<Self, ConfigError> {
        let clusters: HashMap<String, Arc<Cluster>> = config
            .clusters
            .iter()
            .map(|c| (c.name.value.clone(), Arc::new(Cluster::new(c))))
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
        let mut problems = Vec::new();
        let admin_token = config
            .admin
            .resolve_token(base)
            .map_err(|p| problems.push(p))
            .ok()
            .flatten()
            .map(Arc::from);
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
                Some(t) => match crate::net::tls::acceptor(&l.name.value, t, base) {
                    Ok(a) => Some(a),
                    Err(p) => {
                        problems.push(p);
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
        })
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
            if !SERVED.contains(&proto) && !passthrough_tls {
                problems.push(config::Problem {
                    line: p.referenced.line(),
                    column: p.referenced.column(),
                    field: format!("listeners[{}].protocols", l.name.value),
                    message: format!("{proto} has no driver in this build yet"),
                    hint: Some(
                        "served today: http1, http2, redis, mqtt, dubbo, bolt, rtsp, mysql; to terminate TLS give the listener a `tls` block; `tls` in `protocols` passes TLS through to the tcp_proxy fallback"
                            .into(),
                    ),
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
    Snapshot::build(config, base, &file)
}

/// The running gateway.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub drain: watch::Sender<bool>,
    pub connections: TaskTracker,
    /// The overload manager (thresholds follow reloads).
    pub overload: Arc<crate::net::overload::Overload>,
}

impl Gateway {
    /// Reload the config file; on any problem keep the running snapshot.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let snapshot = load(&self.config_path)?;
        let config = &snapshot.config;
        let old = self.snapshot.load();
        let old_addrs: Vec<_> = old
            .config
            .listeners
            .iter()
            .map(|l| (&l.name.value, l.address.value))
            .collect();
        let new_addrs: Vec<_> = config
            .listeners
            .iter()
            .map(|l| (&l.name.value, l.address.value))
            .collect();
        if old_addrs != new_addrs {
            tracing::warn!(
                "listener names or addresses changed: that takes a restart; routes and clusters are reloaded"
            );
        }
        for c in snapshot.clusters.values() {
            c.start_health_checks();
        }
        for (name, c) in &snapshot.clusters {
            c.inherit(old.clusters.get(name).map(|c| &**c));
        }
        self.overload.configure(&config.overload);
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    /// [`Gateway::reload`], logged and counted in
    /// `switchyard_config_reloads_total{result}` (SIGHUP and admin `POST /reload`).
    pub fn reload_counted(&self) -> Result<(), ConfigError> {
        let result = self.reload();
        match &result {
            Ok(()) => tracing::info!(file = %self.config_path.display(), "config reloaded"),
            Err(e) => tracing::error!("config reload rejected, keeping the running config:\n{e}"),
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("switchyard_config_reloads_total", "result" => outcome).increment(1);
        result
    }
}

/// Run the gateway on `path` until SIGTERM/SIGINT, then drain.
pub async fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first, so the snapshot's metric handles register with it.
    let metrics = crate::observe::install_metrics();
    let snapshot = load(path)?;
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
    let drain_timeout = config.drain_timeout.get();
    let admin_addr = config.admin.addr();
    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = crate::net::bind(l.address.value, l.backlog).map_err(|e| {
            format!(
                "listener {}: cannot bind {}: {e}",
                l.name.value, l.address.value
            )
        })?;
        tracing::info!(listener = %l.name.value, address = %l.address.value, protocols = ?l.enabled_protocols(), "listening");
        bound.push((l.name.value.clone(), l.max_connections, socket));
    }
    crate::upstream::health::register_mysql_check(crate::proxy::mysql::backend::health_check);
    for c in snapshot.clusters.values() {
        c.start_health_checks();
        let c = c.clone();
        tokio::spawn(async move { c.probe().await });
    }
    let (drain, _) = watch::channel(false);
    let overload = crate::net::overload::Overload::new(&snapshot.config.overload);
    tokio::spawn(overload.clone().monitor());
    let gateway = Arc::new(Gateway {
        overload,
        snapshot: ArcSwap::from_pointee(snapshot),
        config_path: path.to_owned(),
        drain,
        connections: TaskTracker::new(),
    });
    if let Some(addr) = admin_addr {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("admin: cannot bind {addr}: {e}"))?;
        tracing::info!(address = %addr, "admin server listening");
        tokio::spawn(crate::admin::serve(socket, gateway.clone(), metrics));
    }
    let mut accept_loops = Vec::new();
    for (name, max, socket) in bound {
        accept_loops.push(tokio::spawn(crate::net::accept_loop(
            socket,
            name,
            max,
            gateway.clone(),
        )));
    }

    wait_for_shutdown(&gateway).await;
    tracing::info!(timeout = ?drain_timeout, "draining");
    let _ = gateway.drain.send(true);
    for a in &accept_loops {
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

#[cfg(unix)]
async fn wait_for_shutdown(gateway: &Gateway) {
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
            _ = hup.recv() => {
                let _ = gateway.reload_counted();
            }
            _ = usr1.recv() => {
                crate::observe::access_log::reopen();
                tracing::info!("access logs reopened");
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = drain.wait_for(|d| *d) => return,
        }
    }
}
