//! Stream filters: checks and limits applied to requests and session frames
//! between the codec and the router. Each is immutable config plus, where it
//! must count, per-connection state; none takes a global lock.
//!
//! * [`chain`]: the request view every driver hands to the filters, the
//!   ordered chains of a listener and a route, and their verdicts.
//! * [`ext_authz`]: the `ext_authz` filter, a check with an external
//!   authorization service (Envoy's gRPC API).
//! * [`users`]: a user database (mosquitto password-file formats) for edge auth.
//! * [`acl`]: topic access rules for publish and subscribe, with `%u`/`%c`.
//! * [`rate`]: token buckets for per-client and per-listener limits.
//! * [`redis_auth`]: Redis `AUTH` / `HELLO … AUTH` against configured users.

pub mod acl;
pub mod chain;
pub mod ext_authz;
pub mod headers;
pub mod mqtt;
pub mod rate;
pub mod redis_auth;
pub mod users;
