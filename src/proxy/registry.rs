//! The protocol registry, gateway side: which driver serves each protocol.
//!
//! The codec side ([`switchyard_codecs::registry`]) says what a protocol is
//! (name, sniffer, shape, priority, ALPN ids, ports); this table says how the
//! gateway serves a connection of it. The accept path dispatches through
//! [`driver`], `switchyard check` accepts exactly the protocols listed here
//! ([`served`]), and a protocol with a codec entry but no driver is refused
//! in config with the list of served ones. Adding a protocol is one entry
//! here plus its driver module (see `docs/architecture.md`, "How to add a
//! protocol").

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;
use switchyard_codecs::Protocol;

use super::Conn;
use crate::net::stream::Stream;

/// A driver's future for one connection, boxed once detection chose it (the
/// connection's task stays as small as detection needs; a silent connection
/// does not carry the largest driver's state).
pub type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One protocol's driver: the bytes detection already read come with the stream.
pub struct Driver {
    pub protocol: Protocol,
    pub serve: fn(Stream, BytesMut, Conn) -> Serving,
}

/// Every protocol this build serves.
pub static DRIVERS: [Driver; 9] = [
    Driver {
        protocol: Protocol::Http1,
        serve: |s, b, c| Box::pin(super::http1::serve(s, b, c)),
    },
    Driver {
        protocol: Protocol::Http2,
        serve: |s, b, c| Box::pin(super::http2::serve(s, b, c)),
    },
    Driver {
        protocol: Protocol::Redis,
        serve: |s, b, c| Box::pin(super::redis::serve(s, b, c)),
    },
    Driver {
        protocol: Protocol::Mqtt,
        serve: |s, b, c| Box::pin(super::mqtt::serve(s, b, c)),
    },
    Driver {
        protocol: Protocol::Dubbo,
        serve: |s, b, c| Box::pin(super::rpc::serve::<super::rpc::Dubbo>(s, b, c)),
    },
    Driver {
        protocol: Protocol::Bolt,
        serve: |s, b, c| Box::pin(super::rpc::serve::<super::rpc::Bolt>(s, b, c)),
    },
    Driver {
        protocol: Protocol::Rtsp,
        serve: |s, b, c| Box::pin(super::rtsp::serve(s, b, c)),
    },
    Driver {
        protocol: Protocol::Mysql,
        serve: |s, b, c| Box::pin(super::mysql::serve(s, b, c)),
    },
    Driver {
        protocol: Protocol::Memcached,
        serve: |s, b, c| Box::pin(super::memcached::serve(s, b, c)),
    },
];

/// The driver serving `protocol`, if this build has one.
pub fn driver(protocol: Protocol) -> Option<&'static Driver> {
    DRIVERS.iter().find(|d| d.protocol == protocol)
}

/// The protocols this build serves, in detection priority order.
pub fn served() -> impl Iterator<Item = Protocol> {
    Protocol::ALL.into_iter().filter(|p| driver(*p).is_some())
}

/// The served protocols' names, comma-separated (for config hints).
pub fn served_names() -> String {
    let names: Vec<&str> = served().map(Protocol::name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_driver_per_protocol_and_every_sniffable_codec_is_served() {
        for d in &DRIVERS {
            assert_eq!(
                DRIVERS.iter().filter(|e| e.protocol == d.protocol).count(),
                1,
                "{} is listed twice",
                d.protocol
            );
        }
        // Only TLS (terminated by the listener, or passed through) has no driver.
        let unserved: Vec<_> = Protocol::ALL
            .into_iter()
            .filter(|p| driver(*p).is_none())
            .collect();
        assert_eq!(unserved, [Protocol::Tls]);
    }
}
