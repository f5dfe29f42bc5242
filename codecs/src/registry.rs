//! The protocol registry, codec side: every wire protocol Switchyard knows,
//! each described once by a [`Codec`] entry — its name, its sniffer, its
//! stream shape, its detection priority against look-alikes, its ALPN ids
//! and its well-known ports.
//!
//! The one [`registry!`] invocation below declares the [`Protocol`] ids and
//! the [`CODECS`] table together, so a protocol cannot have one without the
//! other. Everything that used to be a `match` over the protocols reads this
//! table instead: config names ([`Protocol::from_str`]), detection order
//! ([`Protocol::ALL`], sorted by `priority` at compile time), metric labels
//! ([`Protocol::name`]), ALPN selection ([`Protocol::from_alpn`]). The
//! gateway's half of the registry (which driver serves a protocol) is
//! `switchyard::proxy::registry`.
//!
//! Adding a protocol: write its codec module with a `sniff`, add one line
//! here, add its driver to the gateway's registry (see `docs/architecture.md`,
//! "How to add a protocol").

use std::fmt;
use std::str::FromStr;

use crate::detect::{Shape, Verdict};

/// One protocol's entry in the registry: everything the codec side knows
/// about it, as data.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// The name used in config files (`protocols: [...]`), metric labels and logs.
    pub name: &'static str,
    /// Which of the three drivers' shapes its messages take.
    pub shape: Shape,
    /// Detection order: lower is tried first. A protocol whose first bytes
    /// another one could also start with (Redis inline `GET k` vs HTTP
    /// `GET / HTTP/1.1`, memcached `get k` vs Redis inline `get k`) says here
    /// which of the two wins; see [`sniff`](crate::sniff).
    pub priority: u8,
    /// The pure sniffer over the client's first bytes.
    pub sniff: fn(&[u8]) -> Verdict,
    /// The server speaks first (MySQL): it cannot be sniffed from client
    /// bytes and needs a listener of its own (`protocol: NAME`).
    pub server_speaks_first: bool,
    /// TLS ALPN ids that select it without sniffing.
    pub alpn: &'static [&'static [u8]],
    /// Its well-known ports (documentation, `switchyard check` hints).
    pub ports: &'static [u16],
    /// Its requests carry headers a `headers` filter can edit.
    pub headers: bool,
}

/// Declares [`Protocol`] (one variant per entry, in entry order) and
/// [`CODECS`] (the entries, indexed by `Protocol as usize`).
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident => $codec:expr ),+ $(,)?) => {
        /// A wire protocol Switchyard can carry: an index into [`CODECS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Protocol {
            $( $(#[$doc])* $variant, )+
        }

        /// Every protocol's [`Codec`], in [`Protocol`] declaration order.
        pub static CODECS: [Codec; [$(Protocol::$variant),+].len()] = [$($codec),+];

        impl Protocol {
            /// Every protocol, in declaration order.
            const DECLARED: [Protocol; [$(Protocol::$variant),+].len()] = [$(Protocol::$variant),+];
        }
    };
}

registry! {
    /// A TLS ClientHello; detection continues inside the TLS session.
    Tls => Codec {
        name: "tls",
        shape: Shape::Session,
        priority: 0,
        sniff: crate::tls::sniff,
        server_speaks_first: false,
        alpn: &[],
        ports: &[443],
        headers: true,
    },
    Http2 => Codec {
        name: "http2",
        shape: Shape::Multiplexed,
        priority: 10,
        sniff: crate::http2::sniff,
        server_speaks_first: false,
        alpn: &[b"h2"],
        ports: &[],
        headers: true,
    },
    Dubbo => Codec {
        name: "dubbo",
        shape: Shape::Multiplexed,
        priority: 20,
        sniff: crate::dubbo::sniff,
        server_speaks_first: false,
        alpn: &[],
        ports: &[20880],
        headers: true,
    },
    Bolt => Codec {
        name: "bolt",
        shape: Shape::Multiplexed,
        priority: 30,
        sniff: crate::bolt::sniff,
        server_speaks_first: false,
        alpn: &[],
        ports: &[12200],
        headers: true,
    },
    Mqtt => Codec {
        name: "mqtt",
        shape: Shape::Session,
        priority: 40,
        sniff: crate::mqtt::sniff,
        server_speaks_first: false,
        alpn: &[b"mqtt", b"x-amzn-mqtt-ca"],
        ports: &[1883, 8883],
        headers: false,
    },
    /// HTTP/1.x: before RTSP, Redis and memcached, which reject request
    /// lines ending in `HTTP/1.x`.
    Http1 => Codec {
        name: "http1",
        shape: Shape::Ordered,
        priority: 50,
        sniff: crate::http1::sniff,
        server_speaks_first: false,
        alpn: &[b"http/1.1", b"http/1.0"],
        ports: &[80, 8080],
        headers: true,
    },
    Rtsp => Codec {
        name: "rtsp",
        shape: Shape::Ordered,
        priority: 60,
        sniff: crate::rtsp::sniff,
        server_speaks_first: false,
        alpn: &[],
        ports: &[554, 8554],
        headers: true,
    },
    /// memcached's text protocol: lowercase commands, tried before Redis
    /// (whose inline commands look the same; Redis clients send RESP).
    Memcached => Codec {
        name: "memcached",
        shape: Shape::Ordered,
        priority: 70,
        sniff: crate::memcached::sniff,
        server_speaks_first: false,
        alpn: &[],
        ports: &[11211],
        headers: false,
    },
    /// Redis: RESP (`*`), or an inline command line.
    Redis => Codec {
        name: "redis",
        shape: Shape::Ordered,
        priority: 80,
        sniff: crate::redis::sniff,
        server_speaks_first: false,
        alpn: &[],
        ports: &[6379],
        headers: false,
    },
    /// MySQL/MariaDB: the server speaks first.
    Mysql => Codec {
        name: "mysql",
        shape: Shape::Session,
        priority: 90,
        sniff: crate::mysql::sniff,
        server_speaks_first: true,
        alpn: &[],
        ports: &[3306],
        headers: false,
    },
}

/// The fallback entry `codec()` never needs (every id indexes the table);
/// a constant, so an empty table would fail the build, not panic.
#[allow(clippy::indexing_slicing)]
const UNREACHABLE: &Codec = &CODECS[0];

impl Protocol {
    /// Every protocol, in detection priority order (by [`Codec::priority`]).
    pub const ALL: [Protocol; CODECS.len()] = by_priority();

    /// This protocol's registry entry.
    pub fn codec(self) -> &'static Codec {
        CODECS.get(self as usize).unwrap_or(UNREACHABLE)
    }

    /// The name used in config files, metrics and logs.
    pub fn name(self) -> &'static str {
        self.codec().name
    }

    /// The driver shape this protocol uses.
    pub fn shape(self) -> Shape {
        self.codec().shape
    }

    /// Whether the server speaks first, so the protocol cannot be sniffed from
    /// client bytes and needs a listener with a fixed protocol.
    pub fn server_speaks_first(self) -> bool {
        self.codec().server_speaks_first
    }

    /// Whether its requests carry headers (`headers` filters apply).
    pub fn has_headers(self) -> bool {
        self.codec().headers
    }

    /// The protocol a negotiated TLS ALPN id selects.
    pub fn from_alpn(id: &[u8]) -> Option<Protocol> {
        Protocol::DECLARED
            .into_iter()
            .find(|p| p.codec().alpn.contains(&id))
    }

    /// The sniffer of this protocol.
    pub(crate) fn sniffer(self) -> fn(&[u8]) -> Verdict {
        self.codec().sniff
    }
}

/// [`Protocol::DECLARED`] sorted by priority (stable: equal priorities keep
/// their declaration order). Runs at compile time only (it initialises
/// [`Protocol::ALL`]), where an index out of range fails the build: it
/// cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const fn by_priority() -> [Protocol; CODECS.len()] {
    let mut out = Protocol::DECLARED;
    let mut prio = [0u8; CODECS.len()];
    let mut i = 0;
    while i < prio.len() {
        prio[i] = CODECS[i].priority;
        i += 1;
    }
    // Insertion sort: ten entries.
    let mut i = 1;
    while i < out.len() {
        let mut j = i;
        while j > 0 && prio[j - 1] > prio[j] {
            let (p, o) = (prio[j - 1], out[j - 1]);
            prio[j - 1] = prio[j];
            out[j - 1] = out[j];
            prio[j] = p;
            out[j] = o;
            j -= 1;
        }
        i += 1;
    }
    out
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown protocol name; it lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol `{0}` (expected one of: {names})", names = known_names())]
pub struct UnknownProtocol(pub String);

/// Every protocol name, comma-separated, in declaration order.
pub fn known_names() -> String {
    let names: Vec<&str> = CODECS.iter().map(|c| c.name).collect();
    names.join(", ")
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::DECLARED
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_index_their_entries_and_names_are_unique() {
        for (i, p) in Protocol::DECLARED.into_iter().enumerate() {
            assert_eq!(p as usize, i);
            assert_eq!(p.name().parse::<Protocol>(), Ok(p));
        }
        let mut names: Vec<_> = CODECS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CODECS.len());
    }

    #[test]
    fn detection_order_follows_priority() {
        let prios: Vec<u8> = Protocol::ALL.iter().map(|p| p.codec().priority).collect();
        assert!(prios.windows(2).all(|w| w[0] <= w[1]), "{prios:?}");
        assert_eq!(Protocol::ALL.first(), Some(&Protocol::Tls));
        assert_eq!(Protocol::ALL.len(), CODECS.len());
        let pos = |p| Protocol::ALL.iter().position(|&q| q == p).unwrap();
        // Look-alikes: HTTP before RTSP and Redis (they reject `... HTTP/1.1`).
        assert!(pos(Protocol::Http1) < pos(Protocol::Rtsp));
        assert!(pos(Protocol::Http1) < pos(Protocol::Redis));
        // memcached's lowercase `get k` before Redis inline `get k`.
        assert!(pos(Protocol::Http1) < pos(Protocol::Memcached));
        assert!(pos(Protocol::Memcached) < pos(Protocol::Redis));
    }

    #[test]
    fn alpn_ids_select_their_protocol() {
        assert_eq!(Protocol::from_alpn(b"h2"), Some(Protocol::Http2));
        assert_eq!(Protocol::from_alpn(b"http/1.1"), Some(Protocol::Http1));
        assert_eq!(Protocol::from_alpn(b"mqtt"), Some(Protocol::Mqtt));
        assert_eq!(Protocol::from_alpn(b"spdy/3"), None);
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = "memcache2".parse::<Protocol>().unwrap_err().to_string();
        assert!(e.contains("unknown protocol `memcache2`"), "{e}");
        assert!(e.contains("http1") && e.contains("memcached"), "{e}");
    }
}
