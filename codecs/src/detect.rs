//! Protocol detection: pure sniffers over the first bytes of a connection.
//!
//! Each protocol module exposes `sniff(buf: &[u8]) -> Verdict`. [`sniff`] runs
//! the enabled ones and decides: the first `Match` wins; otherwise, if any
//! sniffer still needs bytes, `NeedMore`; otherwise `Reject`. Sniffers must
//! `Reject` a prefix that can never match as soon as they see it, so that
//! detection is decided on the fewest bytes possible, and must never `Match`
//! a prefix that another enabled protocol could still claim (look-alikes such
//! as Redis inline `GET key` vs HTTP `GET / HTTP/1.1` wait for the line end).

pub use crate::registry::{Protocol, UnknownProtocol};

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
/// Protocols are tried in [`Protocol::ALL`] order (the registry's priorities),
/// whatever the order of `enabled`.
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
