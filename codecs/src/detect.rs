//! Protocol detection: pure sniffers over the first bytes of a connection.
//!
//! Each protocol module exposes `sniff(buf: &[u8]) -> Verdict`. [`sniff`] runs
//! the enabled ones and decides: the first `Match` wins; otherwise, if any
//! sniffer still needs bytes, `NeedMore`; otherwise `Reject`. Sniffers must
//! `Reject` a prefix that can never match as soon as they see it, so that
//! detection is decided on the fewest bytes possible, and must never `Match`
//! a prefix that another enabled protocol could still claim (look-alikes such
//! as Redis inline `GET key` vs HTTP `GET / HTTP/1.1` wait for the line end).

use std::fmt;
use std::str::FromStr;

/// A wire protocol Switchyard can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http1,
    Http2,
    Dubbo,
    Bolt,
    Mqtt,
    Redis,
    Mysql,
    Rtsp,
    /// A TLS ClientHello; detection continues inside the TLS session.
    Tls,
}

/// How a protocol's messages map onto streams; the engine has one driver per shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Many requests in flight on one connection, matched by id (HTTP/2, Dubbo, Bolt).
    Multiplexed,
    /// Responses come back in request order (HTTP/1.1, Redis, RTSP control).
    Ordered,
    /// Routed once, then bound to one upstream (MQTT, MySQL, raw TCP).
    Session,
}

impl Protocol {
    /// Every protocol, in detection priority order.
    pub const ALL: [Protocol; 9] = [
        Protocol::Tls,
        Protocol::Http2,
        Protocol::Dubbo,
        Protocol::Bolt,
        Protocol::Mqtt,
        Protocol::Http1,
        Protocol::Rtsp,
        Protocol::Redis,
        Protocol::Mysql,
    ];

    /// The name used in config files, metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Dubbo => "dubbo",
            Protocol::Bolt => "bolt",
            Protocol::Mqtt => "mqtt",
            Protocol::Redis => "redis",
            Protocol::Mysql => "mysql",
            Protocol::Rtsp => "rtsp",
            Protocol::Tls => "tls",
        }
    }

    /// The driver shape this protocol uses.
    pub const fn shape(self) -> Shape {
        match self {
            Protocol::Http2 | Protocol::Dubbo | Protocol::Bolt => Shape::Multiplexed,
            Protocol::Http1 | Protocol::Redis | Protocol::Rtsp => Shape::Ordered,
            Protocol::Mqtt | Protocol::Mysql | Protocol::Tls => Shape::Session,
        }
    }

    /// Whether the server speaks first, so the protocol cannot be sniffed from
    /// client bytes and needs a listener with a fixed protocol.
    pub const fn server_speaks_first(self) -> bool {
        matches!(self, Protocol::Mysql)
    }

    fn sniffer(self) -> fn(&[u8]) -> Verdict {
        match self {
            Protocol::Http1 => crate::http1::sniff,
            Protocol::Http2 => crate::http2::sniff,
            Protocol::Dubbo => crate::dubbo::sniff,
            Protocol::Bolt => crate::bolt::sniff,
            Protocol::Mqtt => crate::mqtt::sniff,
            Protocol::Redis => crate::redis::sniff,
            Protocol::Mysql => crate::mysql::sniff,
            Protocol::Rtsp => crate::rtsp::sniff,
            Protocol::Tls => crate::tls::sniff,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown protocol name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown protocol `{0}` (expected one of: http1, http2, dubbo, bolt, mqtt, redis, mysql, rtsp, tls)"
)]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

/// What a sniffer concludes from a prefix of the client's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The bytes are this protocol.
    Match(Protocol),
    /// Not decided yet: read more (up to the detection limit).
    NeedMore,
    /// These bytes can never be this protocol (or any enabled one).
    Reject,
}

/// Run the sniffers of the `enabled` protocols over `buf`.
///
/// Protocols are tried in [`Protocol::ALL`] order, whatever the order of `enabled`.
pub fn sniff(buf: &[u8], enabled: &[Protocol]) -> Verdict {
    let mut need_more = false;
    for protocol in Protocol::ALL {
        if !enabled.contains(&protocol) {
            continue;
        }
        match protocol.sniffer()(buf) {
            Verdict::Match(p) => return Verdict::Match(p),
            Verdict::NeedMore => need_more = true,
            Verdict::Reject => {}
        }
    }
    if need_more {
        Verdict::NeedMore
    } else {
        Verdict::Reject
    }
}
