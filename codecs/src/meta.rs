//! Routing metadata: the small, typed view of a request that the router and
//! the filters match on, whatever the protocol.

/// A metadata field a route can match on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// HTTP/RTSP method, e.g. `GET`.
    Method,
    /// HTTP `Host` / `:authority` (without port normalisation).
    Host,
    /// Request path (HTTP/RTSP request target without the query string).
    Path,
    /// A request header by (case-insensitive) name.
    Header(String),
    /// Redis command name (as sent; compare case-insensitively), MySQL command.
    Command,
    /// The first key a command touches (Redis).
    Key,
    /// RPC service / interface (Dubbo, Bolt, gRPC).
    Service,
    /// RPC method name (Dubbo, Bolt, gRPC).
    RpcMethod,
    /// MQTT topic.
    Topic,
    /// MQTT client id.
    ClientId,
    /// Authenticated or claimed user name (MQTT, MySQL).
    User,
    /// Database / schema (MySQL).
    Database,
}

impl Field {
    /// Whether values of this field compare case-insensitively.
    pub fn case_insensitive(&self) -> bool {
        matches!(self, Field::Method | Field::Host | Field::Command)
    }
}

/// Implemented by every request head: the router asks for fields by name and
/// gets borrowed bytes back, so matching allocates nothing.
pub trait Metadata {
    /// The value of `field`, if this request has one.
    fn get(&self, field: &Field) -> Option<&[u8]>;

    /// Call `f` with every header (name, value) in order, for requests with
    /// headers (an external authorization check sends them all); the
    /// default has none.
    fn for_each_header(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        let _ = f;
    }
}
