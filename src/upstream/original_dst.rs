//! `type: original_dst` clusters: one view of the cluster per original
//! destination (MOSN's `Original_Dst` load balancer, Envoy's
//! `ORIGINAL_DST` cluster).
//!
//! A view is a [`Cluster`] whose one host is the destination, made on the
//! first connection to it, so every pool the drivers use (HTTP/1's idle
//! pool, Redis's shared connections, Dubbo/Bolt's multiplexed ones, h2's)
//! is per destination with no change to them. Lookups are lock-free (an
//! `ArcSwap` of the map); a new destination takes the insert lock, copies
//! the map and drops the views nobody holds that were unused for the
//! cluster's `idle_timeout` (with their pooled connections). Nothing runs on
//! a timer: a gateway that sees no new destination keeps its old views.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::Cluster;

/// One destination's view and when a connection last asked for it.
struct View {
    cluster: Arc<Cluster>,
    /// Milliseconds since [`clock`]'s origin.
    last_used: AtomicU64,
}

/// The views of an original-destination cluster, by destination.
#[derive(Default)]
pub(super) struct Destinations {
    views: ArcSwap<HashMap<SocketAddr, Arc<View>>>,
    /// Taken only to add a destination.
    insert: std::sync::Mutex<()>,
}

fn clock() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Destinations {
    /// The view for `destination`, made with `make` when there is none.
    pub(super) fn get_or_make(
        &self,
        destination: SocketAddr,
        idle: Duration,
        make: impl FnOnce() -> Cluster,
    ) -> Arc<Cluster> {
        let now = clock();
        if let Some(v) = self.views.load().get(&destination) {
            v.last_used.store(now, Ordering::Relaxed);
            return v.cluster.clone();
        }
        let _one_writer = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.views.load_full();
        if let Some(v) = current.get(&destination) {
            v.last_used.store(now, Ordering::Relaxed);
            return v.cluster.clone();
        }
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        // Keep views in use (someone besides the map holds them) or used lately.
        let mut next: HashMap<SocketAddr, Arc<View>> = current
            .iter()
            .filter(|(_, v)| {
                Arc::strong_count(&v.cluster) > 1
                    || now.saturating_sub(v.last_used.load(Ordering::Relaxed)) < idle_ms
            })
            .map(|(d, v)| (*d, v.clone()))
            .collect();
        let cluster = Arc::new(make());
        next.insert(
            destination,
            Arc::new(View {
                cluster: cluster.clone(),
                last_used: AtomicU64::new(now),
            }),
        );
        self.views.store(Arc::new(next));
        cluster
    }

    /// How many destinations have a view.
    pub(super) fn len(&self) -> usize {
        self.views.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn cluster(extra: &str) -> Arc<Cluster> {
        let yaml = format!(
            "listeners: [{{name: l, address: \"127.0.0.1:1\", protocols: [redis], route_table: t, transparent: redirect}}]
clusters:
  - {{name: out, type: original_dst{extra}}}
route_tables: [{{name: t, virtual_hosts: [{{name: v, domains: [\"*\"], routes: [{{cluster: out}}]}}]}}]
"
        );
        let cfg = load_str(&yaml, "t.yaml").unwrap();
        Arc::new(Cluster::new(&cfg.clusters[0]))
    }

    #[test]
    fn one_view_per_destination_whose_host_is_the_destination() {
        let c = cluster("");
        let a: SocketAddr = "10.0.0.1:6379".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let va = c.for_destination(Some(a));
        let vb = c.for_destination(Some(b));
        assert_eq!(va.hosts.len(), 1);
        assert_eq!(va.hosts[0].address, a);
        assert_eq!(vb.hosts[0].address, b);
        assert!(
            Arc::ptr_eq(&va, &c.for_destination(Some(a))),
            "the same destination gets the same view (and so the same pools)"
        );
        assert_eq!(c.destinations(), 2);
        assert!(
            Arc::ptr_eq(&c, &c.for_destination(None)),
            "no destination: the cluster itself"
        );
        assert!(c.hosts.is_empty(), "which has no host to connect to");
    }

    #[test]
    fn idle_views_nobody_holds_go_when_a_new_destination_comes() {
        let c = cluster(", idle_timeout: 0s");
        let held = c.for_destination(Some("10.0.0.1:1".parse().unwrap()));
        drop(c.for_destination(Some("10.0.0.2:2".parse().unwrap())));
        assert_eq!(c.destinations(), 2);
        let _third = c.for_destination(Some("10.0.0.3:3".parse().unwrap()));
        let mut left: Vec<SocketAddr> = c
            .original_dst
            .as_ref()
            .unwrap()
            .views
            .load()
            .keys()
            .copied()
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["10.0.0.1:1".parse().unwrap(), "10.0.0.3:3".parse().unwrap()],
            "the unheld idle view went, the held one stayed"
        );
        drop(held);
    }

    #[test]
    fn a_static_cluster_is_its_own_view() {
        let yaml =
            "listeners: [{name: l, address: \"127.0.0.1:1\", protocols: [redis], route_table: t}]
clusters: [{name: c, hosts: [\"127.0.0.1:2\"]}]
route_tables: [{name: t, virtual_hosts: [{name: v, domains: [\"*\"], routes: [{cluster: c}]}]}]
";
        let cfg = load_str(yaml, "t.yaml").unwrap();
        let c = Arc::new(Cluster::new(&cfg.clusters[0]));
        let v = c.for_destination(Some("10.0.0.1:1".parse().unwrap()));
        assert!(Arc::ptr_eq(&c, &v));
    }
}
