//! Upstream: clusters of hosts, load balancers and connection pools.
//! Knows nothing of downstream connections.

mod cluster;
mod conn;
pub mod health;
mod lb;
mod maglev;
mod mux;
mod original_dst;
mod pool;
pub mod retry;
mod ring;
mod shard;
pub mod tls;

pub use cluster::{Cluster, Host, HostOrder, InFlight, SlowStart};
pub use conn::{
    ConnLimit, ConnSlot, Counted, UpstreamConn, UpstreamReadHalf, UpstreamStream,
    UpstreamWriteHalf, send_proxy_header,
};
pub use health::Outcome;
pub use lb::Balancer;
pub use maglev::Maglev;
pub use mux::{H2Conn, MuxPool};
pub use pool::Pool;
pub use retry::{Failure, Retries, RetryPolicy};
pub use ring::Ring;
pub use shard::{ShardMap, Shards};
