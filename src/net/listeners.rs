//! The running listeners, changed in place on reload: a listener added
//! starts accepting, one removed stops accepting and its connections drain
//! (then are cut after `drain_timeout`), one changed keeps its socket (a new
//! backlog and connection limit apply at once; every other setting applies
//! to the connections it accepts from then on, through the snapshot). A
//! listener is its name and address: a new address is a removal and an
//! addition.
//!
//! The listening sockets can also be handed to another process (a binary
//! upgrade, [`crate::net::takeover`]): they are kept here as `Arc`s so their
//! file descriptors can be lent out while the accept loops run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::gateway::Gateway;

/// What the accept loop of one listener and its connections share with the
/// gateway: the connection limit, the drain signal and the cut signal.
#[derive(Clone)]
pub struct ListenerCtl {
    /// `max_connections`: one permit per open connection.
    pub limit: Arc<Semaphore>,
    /// Set when the listener's connections should finish and close (the
    /// listener was removed, or the gateway drains).
    pub drain: watch::Sender<bool>,
    /// Cancelled when the listener's connections are closed at once (the
    /// drain timeout after a removal ran out).
    pub cut: CancellationToken,
}

impl ListenerCtl {
    fn new(max_connections: usize) -> Self {
        Self {
            limit: Arc::new(Semaphore::new(max_connections.max(1))),
            drain: watch::channel(false).0,
            cut: CancellationToken::new(),
        }
    }
}

/// One listener accepting now.
struct Running {
    address: SocketAddr,
    backlog: Option<u32>,
    max_connections: usize,
    socket: Arc<TcpListener>,
    ctl: ListenerCtl,
    accept: Option<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting; the connections are told to drain and are cut after
    /// `drain_timeout`.
    fn retire(mut self, drain_timeout: Duration) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        self.ctl.drain.send_replace(true);
        let cut = self.ctl.cut.clone();
        tokio::spawn(async move {
            tokio::time::sleep(drain_timeout).await;
            cut.cancel();
        });
    }
}

/// What a reload changed about the listeners.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// A socket ready for a listener, before it accepts.
pub struct Bound {
    name: String,
    address: SocketAddr,
    backlog: Option<u32>,
    max_connections: usize,
    socket: Arc<TcpListener>,
}

/// The gateway's listeners, by name.
#[derive(Default)]
pub struct Listeners {
    running: Mutex<HashMap<String, Running>>,
}

impl Listeners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bind (or take from `inherited`, sockets another process handed over,
    /// by address) a socket for each listener of `config`. Nothing accepts
    /// yet; a failure names the listener.
    pub fn bind_all(
        config: &config::Config,
        inherited: &mut HashMap<SocketAddr, std::net::TcpListener>,
    ) -> Result<Vec<Bound>, String> {
        config
            .listeners
            .iter()
            .map(|l| {
                let address = l.address.value;
                let socket = match inherited.remove(&address) {
                    Some(s) => {
                        s.set_nonblocking(true)
                            .and_then(|()| TcpListener::from_std(s))
                            .map_err(|e| {
                                format!("listener {}: inherited socket {address}: {e}", l.name.value)
                            })?
                    }
                    None => super::bind(address, l.backlog).map_err(|e| {
                        format!("listener {}: cannot bind {address}: {e}", l.name.value)
                    })?,
                };
                tracing::info!(listener = %l.name.value, %address, protocols = ?l.enabled_protocols(), "listening");
                Ok(Bound {
                    name: l.name.value.clone(),
                    address,
                    backlog: l.backlog,
                    max_connections: l.max_connections,
                    socket: Arc::new(socket),
                })
            })
            .collect()
    }

    /// Start accepting on sockets bound with [`Listeners::bind_all`].
    pub fn start(&self, bound: Vec<Bound>, gateway: &Arc<Gateway>) {
        let mut running = self.lock();
        for b in bound {
            let r = spawn(b, gateway);
            running.insert(r.0, r.1);
        }
    }

    /// Make the running listeners those of `config`. Sockets of added
    /// listeners are bound first: when one cannot be, nothing changes and
    /// the error names it (listener, address, reason). Call it with the new
    /// snapshot already in place, so added listeners accept with it.
    pub fn prepare(&self, config: &config::Config) -> Result<Vec<Bound>, crate::config::Problem> {
        let running = self.lock();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let address = l.address.value;
            if running
                .get(&l.name.value)
                .is_some_and(|r| r.address == address)
            {
                continue;
            }
            // A socket on this address held by a listener being removed
            // (renamed) is reused: binding again would fail while it is open.
            let reused = running
                .values()
                .find(|r| r.address == address)
                .map(|r| r.socket.clone());
            let socket = match reused {
                Some(s) => s,
                None => match super::bind(address, l.backlog) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        return Err(crate::config::Problem {
                            line: l.address.referenced.line(),
                            column: l.address.referenced.column(),
                            field: format!("listeners[{}].address", l.name.value),
                            message: format!("cannot bind {address}: {e}"),
                            hint: Some(
                                "free the address or pick another; the running listeners are unchanged"
                                    .into(),
                            ),
                        });
                    }
                },
            };
            bound.push(Bound {
                name: l.name.value.clone(),
                address,
                backlog: l.backlog,
                max_connections: l.max_connections,
                socket,
            });
        }
        Ok(bound)
    }

    /// Apply `config` to the running listeners with the sockets `bound` by
    /// [`Listeners::prepare`] for the new ones.
    pub fn apply(
        &self,
        config: &config::Config,
        bound: Vec<Bound>,
        gateway: &Arc<Gateway>,
    ) -> ListenerChanges {
        let drain_timeout = config.drain_timeout.get();
        let mut running = self.lock();
        let mut changes = ListenerChanges::default();
        let wanted: HashMap<&str, &config::Listener> = config
            .listeners
            .iter()
            .map(|l| (l.name.value.as_str(), l))
            .collect();
        // Removed, or moved to another address (removed here, added below).
        let gone: Vec<String> = running
            .iter()
            .filter(|(name, r)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|l| l.address.value != r.address)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = running.remove(&name) {
                tracing::info!(listener = %name, address = %r.address, "listener removed: stopped accepting, its connections drain");
                changes.removed.push(name);
                r.retire(drain_timeout);
            }
        }
        for (name, r) in running.iter_mut() {
            let Some(l) = wanted.get(name.as_str()) else {
                continue;
            };
            if r.backlog != l.backlog {
                let backlog = l.backlog.unwrap_or_else(super::max_backlog);
                let sock = socket2::SockRef::from(&*r.socket);
                if let Err(e) = sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX)) {
                    tracing::warn!(listener = %name, error = %e, "cannot change the backlog");
                }
                r.backlog = l.backlog;
            }
            if r.max_connections != l.max_connections {
                resize(
                    &r.ctl.limit,
                    r.max_connections.max(1),
                    l.max_connections.max(1),
                );
                r.max_connections = l.max_connections;
            }
        }
        for b in bound {
            tracing::info!(listener = %b.name, address = %b.address, "listener added");
            changes.added.push(b.name.clone());
            let (name, r) = spawn(b, gateway);
            running.insert(name, r);
        }
        changes.added.sort();
        changes.removed.sort();
        changes
    }

    /// Stop accepting on every listener and close the sockets (a binary
    /// upgrade's other process keeps its own copies open), and tell every
    /// listener's connections to drain (the gateway stops).
    pub fn drain_all(&self) {
        for (_, mut r) in self.lock().drain() {
            if let Some(a) = r.accept.take() {
                a.abort();
            }
            r.ctl.drain.send_replace(true);
        }
    }

    /// The listening sockets (address, socket), for a binary upgrade.
    pub fn sockets(&self) -> Vec<(SocketAddr, Arc<TcpListener>)> {
        self.lock()
            .values()
            .map(|r| (r.address, r.socket.clone()))
            .collect()
    }

    /// Names and addresses of the running listeners.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(n, r)| (n.clone(), r.address))
            .collect();
        v.sort();
        v
    }
}

fn spawn(b: Bound, gateway: &Arc<Gateway>) -> (String, Running) {
    let ctl = ListenerCtl::new(b.max_connections);
    let accept = tokio::spawn(super::accept_loop(
        b.socket.clone(),
        b.name.clone(),
        ctl.clone(),
        gateway.clone(),
    ));
    (
        b.name,
        Running {
            address: b.address,
            backlog: b.backlog,
            max_connections: b.max_connections,
            socket: b.socket,
            ctl,
            accept: Some(accept),
        },
    )
}

/// Change a connection limit from `old` to `new` permits in place
/// (connections open keep theirs; a lower limit takes effect as they close).
fn resize(limit: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        limit.add_permits(new - old);
    } else if old > new {
        let wanted = old - new;
        let forgotten = limit.forget_permits(wanted);
        if forgotten < wanted {
            let limit = limit.clone();
            let rest = u32::try_from(wanted - forgotten).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(p) = limit.acquire_many_owned(rest).await {
                    p.forget();
                }
            });
        }
    }
}
