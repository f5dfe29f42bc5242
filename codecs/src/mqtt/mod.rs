//! MQTT 3.1, 3.1.1 and 5.0: every control packet as a zero-copy view.
//!
//! * [`Decoder`] frames packets and parses each into a [`Packet`]: its exact
//!   wire bytes plus a typed [`Body`] whose strings and binaries are `Bytes`
//!   slices of those wire bytes. A packet forwarded unchanged is written from
//!   [`Packet::wire`], so unknown-to-us details (non-minimal lengths, MQTT 5
//!   properties) survive byte-exact.
//! * The decoder knows the protocol version from the first CONNECT (a
//!   client-side decoder, reading client → server bytes), or is told it with
//!   [`Decoder::set_version`] (a server-side decoder, reading server → client
//!   bytes). Until then only a CONNECT decodes.
//! * The remaining length is checked against [`Limits::max_packet`] as soon as
//!   the fixed header is complete, before the body is buffered.
//! * Gateway-made packets ([`connack`], [`puback`], [`suback`], [`disconnect`],
//!   ...) and re-encodings for a tenant's mount point ([`publish_with_topic`],
//!   [`subscribe_with_filters`], [`unsubscribe_with_filters`], and
//!   [`connect_with`] for the client id, will topic and credentials);
//!   topic syntax, matching and mount points in [`topic`].
//!
//! What decoding checks (a failure is [`CodecError::Malformed`] unless said
//! otherwise): the packet type and fixed-header flags (QoS 3, DUP on QoS 0,
//! AUTH outside MQTT 5); CONNECT first and only once; the protocol name and
//! level (an unknown level is [`CodecError::Unsupported`]); CONNECT flags
//! (reserved bit, will QoS/retain without a will, a password without a user
//! name before MQTT 5); UTF-8 strings (valid, no U+0000); non-zero packet
//! identifiers; topic names without wildcards; at least one filter in
//! SUBSCRIBE/UNSUBSCRIBE and valid subscription options; MQTT 3 SUBACK return
//! codes; MQTT 5 properties (known, allowed in that packet, well formed, not
//! repeated, values in range); no bytes left over after the last field.
//!
//! Not checked, because a server answers them with a reason code rather than
//! by closing, or because they are policy: wildcard placement in filters
//! ([`topic::valid_filter`]), client identifier rules, topic alias bounds
//! ([`TopicAliases`]), maximum QoS, receive maximum, and which MQTT 5 reason
//! code values a packet may carry (they are passed through as sent).
use bytes::{Bytes, BytesMut};

use crate::{CodecError, Decoder as DecoderTrait, Field, Metadata, Protocol, Verdict, WireHead};

mod connect;
mod encode;
mod packet;
pub mod properties;
mod publish;
mod subscribe;
pub mod topic;

pub use connect::{Connack, Connect, Will};
pub use encode::{
    ConnectEdit, Credentials, connack, connect_with, disconnect, pingreq, pingresp, puback,
    pubcomp, publish_with_topic, publish_with_user_property, pubrec, pubrel, suback,
    subscribe_with_filters, unsuback, unsubscribe_with_filters,
};
pub use packet::MAX_VARINT;
pub use properties::{Properties, Property, PropertyValue};
pub use publish::{Ack, Auth, Disconnect, Publish, TopicAliases};
pub use subscribe::{Suback, Subscribe, Unsuback, Unsubscribe, sub_options};

use packet::{Reader, malformed};

/// Most bytes reserved ahead for a packet still arriving, so a peer that
/// announces a large packet and sends little does not get it allocated.
const RESERVE_CAP: usize = 64 * 1024;

/// Size limits of the MQTT codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest remaining length (the packet without its 2–5 byte fixed
    /// header) accepted; default 1 MiB. A larger one is
    /// [`CodecError::FrameTooLarge`] as soon as the fixed header is read.
    pub max_packet: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet: 1024 * 1024,
        }
    }
}

/// An MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (protocol name `MQTT`, level 4).
    V311,
    /// MQTT 5.0 (protocol name `MQTT`, level 5).
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT: 3, 4 or 5.
    pub const fn level(self) -> u8 {
        match self {
            Version::V31 => 3,
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }

    /// The version of a protocol level byte.
    pub const fn from_level(level: u8) -> Option<Version> {
        match level {
            3 => Some(Version::V31),
            4 => Some(Version::V311),
            5 => Some(Version::V5),
            _ => None,
        }
    }
}

/// The control packet type (the high nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// 1: client request to connect.
    Connect,
    /// 2: connect acknowledgement.
    Connack,
    /// 3: publish message.
    Publish,
    /// 4: publish acknowledgement (QoS 1).
    Puback,
    /// 5: publish received (QoS 2, part 1).
    Pubrec,
    /// 6: publish release (QoS 2, part 2).
    Pubrel,
    /// 7: publish complete (QoS 2, part 3).
    Pubcomp,
    /// 8: subscribe request.
    Subscribe,
    /// 9: subscribe acknowledgement.
    Suback,
    /// 10: unsubscribe request.
    Unsubscribe,
    /// 11: unsubscribe acknowledgement.
    Unsuback,
    /// 12: ping request.
    Pingreq,
    /// 13: ping response.
    Pingresp,
    /// 14: disconnect notification.
    Disconnect,
    /// 15: authentication exchange (MQTT 5 only).
    Auth,
}

impl PacketType {
    /// The type of a first byte's high nibble (`0` is reserved: `None`).
    pub const fn from_type(nibble: u8) -> Option<PacketType> {
        Some(match nibble {
            1 => PacketType::Connect,
            2 => PacketType::Connack,
            3 => PacketType::Publish,
            4 => PacketType::Puback,
            5 => PacketType::Pubrec,
            6 => PacketType::Pubrel,
            7 => PacketType::Pubcomp,
            8 => PacketType::Subscribe,
            9 => PacketType::Suback,
            10 => PacketType::Unsubscribe,
            11 => PacketType::Unsuback,
            12 => PacketType::Pingreq,
            13 => PacketType::Pingresp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }

    /// The type number, 1..=15.
    pub const fn number(self) -> u8 {
        match self {
            PacketType::Connect => 1,
            PacketType::Connack => 2,
            PacketType::Publish => 3,
            PacketType::Puback => 4,
            PacketType::Pubrec => 5,
            PacketType::Pubrel => 6,
            PacketType::Pubcomp => 7,
            PacketType::Subscribe => 8,
            PacketType::Suback => 9,
            PacketType::Unsubscribe => 10,
            PacketType::Unsuback => 11,
            PacketType::Pingreq => 12,
            PacketType::Pingresp => 13,
            PacketType::Disconnect => 14,
            PacketType::Auth => 15,
        }
    }

    /// The upper-case packet name, for logs and metrics (`"PUBLISH"`).
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::Connack => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::Puback => "PUBACK",
            PacketType::Pubrec => "PUBREC",
            PacketType::Pubrel => "PUBREL",
            PacketType::Pubcomp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::Suback => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::Unsuback => "UNSUBACK",
            PacketType::Pingreq => "PINGREQ",
            PacketType::Pingresp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        }
    }
}

/// The typed content of a packet, one variant per packet type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// CONNECT (client → server, first packet); boxed, as it is large and
    /// comes once per connection.
    Connect(Box<Connect>),
    /// CONNACK (server → client).
    Connack(Connack),
    /// PUBLISH (either direction).
    Publish(Publish),
    /// PUBACK (either direction).
    Puback(Ack),
    /// PUBREC (either direction).
    Pubrec(Ack),
    /// PUBREL (either direction).
    Pubrel(Ack),
    /// PUBCOMP (either direction).
    Pubcomp(Ack),
    /// SUBSCRIBE (client → server).
    Subscribe(Subscribe),
    /// SUBACK (server → client).
    Suback(Suback),
    /// UNSUBSCRIBE (client → server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server → client).
    Unsuback(Unsuback),
    /// PINGREQ (client → server), no content.
    Pingreq,
    /// PINGRESP (server → client), no content.
    Pingresp,
    /// DISCONNECT (client → server; also server → client in MQTT 5).
    Disconnect(Disconnect),
    /// AUTH (MQTT 5, either direction).
    Auth(Auth),
}

/// One decoded control packet: its exact wire bytes and a typed view of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    wire: Bytes,
    kind: PacketType,
    version: Version,
    body: Body,
}

impl Packet {
    /// The exact bytes of the packet, fixed header included.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
    /// The packet type.
    pub fn kind(&self) -> PacketType {
        self.kind
    }
    /// The low nibble of the first byte (PUBLISH: DUP, QoS, RETAIN).
    pub fn flags(&self) -> u8 {
        self.wire.first().copied().unwrap_or_default() & 0x0f
    }
    /// The protocol version the packet was decoded under.
    pub fn version(&self) -> Version {
        self.version
    }
    /// The typed view.
    pub fn body(&self) -> &Body {
        &self.body
    }
    /// The typed view, by value.
    pub fn into_body(self) -> Body {
        self.body
    }
    /// The packet identifier, for the packets that carry one (PUBLISH with
    /// QoS > 0, PUBACK/PUBREC/PUBREL/PUBCOMP, (UN)SUBSCRIBE, (UN)SUBACK).
    pub fn packet_id(&self) -> Option<u16> {
        match &self.body {
            Body::Publish(p) => p.packet_id(),
            Body::Puback(a) | Body::Pubrec(a) | Body::Pubrel(a) | Body::Pubcomp(a) => {
                Some(a.packet_id())
            }
            Body::Subscribe(s) => Some(s.packet_id()),
            Body::Unsubscribe(u) => Some(u.packet_id()),
            Body::Suback(s) | Body::Unsuback(s) => Some(s.packet_id()),
            _ => None,
        }
    }
    /// The CONNECT view, if this is a CONNECT.
    pub fn as_connect(&self) -> Option<&Connect> {
        match &self.body {
            Body::Connect(c) => Some(c.as_ref()),
            _ => None,
        }
    }
    /// The CONNACK view, if this is a CONNACK.
    pub fn as_connack(&self) -> Option<&Connack> {
        match &self.body {
            Body::Connack(c) => Some(c),
            _ => None,
        }
    }
    /// The PUBLISH view, if this is a PUBLISH.
    pub fn as_publish(&self) -> Option<&Publish> {
        match &self.body {
            Body::Publish(p) => Some(p),
            _ => None,
        }
    }
    /// The SUBSCRIBE view, if this is a SUBSCRIBE.
    pub fn as_subscribe(&self) -> Option<&Subscribe> {
        match &self.body {
            Body::Subscribe(s) => Some(s),
            _ => None,
        }
    }
    /// The UNSUBSCRIBE view, if this is an UNSUBSCRIBE.
    pub fn as_unsubscribe(&self) -> Option<&Unsubscribe> {
        match &self.body {
            Body::Unsubscribe(u) => Some(u),
            _ => None,
        }
    }
}

impl WireHead for Packet {
    fn wire(&self) -> &Bytes {
        &self.wire
    }
    fn has_body(&self) -> bool {
        false
    }
}

impl Metadata for Packet {
    /// Method (the packet type: `CONNECT`, `PUBLISH`, `SUBSCRIBE`, ...),
    /// ClientId and User (CONNECT), Topic (PUBLISH topic — empty for an MQTT 5
    /// alias-only PUBLISH —, or the first filter of SUBSCRIBE/UNSUBSCRIBE),
    /// Header (a PUBLISH's MQTT 5 user property of that exact name).
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match (field, &self.body) {
            (Field::Method, _) => Some(self.kind().name().as_bytes()),
            (Field::ClientId, Body::Connect(c)) => Some(c.client_id()),
            (Field::User, Body::Connect(c)) => c.username().map(|u| &u[..]),
            (Field::Topic, Body::Publish(p)) => Some(p.topic()),
            (Field::Topic, Body::Subscribe(s)) => s.filters().first().map(|(f, _)| &f[..]),
            (Field::Topic, Body::Unsubscribe(u)) => u.filters().first().map(|f| &f[..]),
            // MQTT 5 user properties, by exact name (W3C trace context).
            (Field::Header(name), Body::Publish(p)) => p.user_property(name.as_bytes()),
            _ => None,
        }
    }
}

/// Decodes MQTT packets of one direction of a connection.
///
/// A client-side decoder ([`Decoder::new`]) reads client → server bytes and
/// learns the version from the first packet, which must be CONNECT. A
/// server-side decoder reads server → client bytes and is told the version
/// ([`Decoder::set_version`] once the client's CONNECT was seen, or
/// [`Decoder::with_version`]). A CONNECT after the version is known is an error.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    limits: Limits,
    version: Option<Version>,
}

impl Decoder {
    /// A decoder that expects a CONNECT first.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            version: None,
        }
    }

    /// A decoder for a session whose version is known (server → client).
    pub fn with_version(limits: Limits, version: Version) -> Self {
        Self {
            limits,
            version: Some(version),
        }
    }

    /// Set the protocol version (server-side decoders, after the CONNECT).
    pub fn set_version(&mut self, version: Version) {
        self.version = Some(version);
    }

    /// The protocol version, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Change the limits (e.g. to the Maximum Packet Size a peer announced);
    /// applies from the next packet.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }
}

impl DecoderTrait for Decoder {
    type Item = Packet;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some(header) = packet::fixed_header(src, self.version)? else {
            return Ok(None);
        };
        if header.remaining > self.limits.max_packet {
            return Err(CodecError::FrameTooLarge {
                what: "mqtt packet",
                size: header.remaining as u64,
                limit: self.limits.max_packet,
            });
        }
        let total = header.header_len + header.remaining;
        if src.len() < total {
            src.reserve((total - src.len()).min(RESERVE_CAP));
            return Ok(None);
        }
        let wire = src.split_to(total).freeze();
        let first = wire.first().copied().unwrap_or_default();
        let mut r = Reader::new(&wire, header.header_len, total);
        let (version, body) = match (header.kind, self.version) {
            (PacketType::Connect, _) => {
                let c = connect::parse_connect(&mut r)?;
                (c.version(), Body::Connect(Box::new(c)))
            }
            (kind, Some(version)) => (version, parse_body(kind, first, version, &mut r)?),
            // fixed_header lets only CONNECT through before the version is known.
            (_, None) => return Err(malformed("first packet must be CONNECT")),
        };
        self.version = Some(version);
        Ok(Some(Packet {
            wire,
            kind: header.kind,
            version,
            body,
        }))
    }
}

fn parse_body(
    kind: PacketType,
    first: u8,
    version: Version,
    r: &mut Reader<'_>,
) -> Result<Body, CodecError> {
    Ok(match kind {
        PacketType::Connect => Body::Connect(Box::new(connect::parse_connect(r)?)),
        PacketType::Connack => Body::Connack(connect::parse_connack(r, version)?),
        PacketType::Publish => Body::Publish(publish::parse_publish(r, first, version)?),
        PacketType::Puback => Body::Puback(publish::parse_ack(r, version)?),
        PacketType::Pubrec => Body::Pubrec(publish::parse_ack(r, version)?),
        PacketType::Pubrel => Body::Pubrel(publish::parse_ack(r, version)?),
        PacketType::Pubcomp => Body::Pubcomp(publish::parse_ack(r, version)?),
        PacketType::Subscribe => Body::Subscribe(subscribe::parse_subscribe(r, first, version)?),
        PacketType::Suback => Body::Suback(subscribe::parse_suback(r, version, false)?),
        PacketType::Unsubscribe => {
            Body::Unsubscribe(subscribe::parse_unsubscribe(r, first, version)?)
        }
        PacketType::Unsuback => Body::Unsuback(subscribe::parse_suback(r, version, true)?),
        PacketType::Pingreq => {
            r.finish()?;
            Body::Pingreq
        }
        PacketType::Pingresp => {
            r.finish()?;
            Body::Pingresp
        }
        PacketType::Disconnect => Body::Disconnect(publish::parse_disconnect(r, version)?),
        PacketType::Auth => Body::Auth(publish::parse_auth(r)?),
    })
}

/// Return and reason codes the gateway sends.
pub mod code {
    use super::Version;

    /// MQTT 3 CONNACK: connection accepted.
    pub const V3_ACCEPTED: u8 = 0x00;
    /// MQTT 3 CONNACK: unacceptable protocol version.
    pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    /// MQTT 3 CONNACK: identifier rejected.
    pub const V3_IDENTIFIER_REJECTED: u8 = 0x02;
    /// MQTT 3 CONNACK: server unavailable.
    pub const V3_SERVER_UNAVAILABLE: u8 = 0x03;
    /// MQTT 3 CONNACK: bad user name or password.
    pub const V3_BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
    /// MQTT 3 CONNACK: not authorized.
    pub const V3_NOT_AUTHORIZED: u8 = 0x05;
    /// MQTT 3.1.1 SUBACK: failure.
    pub const V3_SUBACK_FAILURE: u8 = 0x80;

    /// MQTT 5: success / normal disconnection / granted QoS 0.
    pub const SUCCESS: u8 = 0x00;
    /// MQTT 5: no subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// MQTT 5: unspecified error.
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    /// MQTT 5: malformed packet.
    pub const MALFORMED_PACKET: u8 = 0x81;
    /// MQTT 5: protocol error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// MQTT 5: implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    /// MQTT 5: unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// MQTT 5: client identifier not valid.
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    /// MQTT 5: bad user name or password.
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    /// MQTT 5: not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// MQTT 5: server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// MQTT 5: server busy.
    pub const SERVER_BUSY: u8 = 0x89;
    /// MQTT 5: banned.
    pub const BANNED: u8 = 0x8A;
    /// MQTT 5: server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// MQTT 5: keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// MQTT 5: session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// MQTT 5: topic filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// MQTT 5: topic name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// MQTT 5: packet identifier not found.
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    /// MQTT 5: receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// MQTT 5: topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// MQTT 5: packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// MQTT 5: message rate too high.
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    /// MQTT 5: quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// MQTT 5: administrative action.
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;

    /// The CONNACK code for `version` meaning what the MQTT 5 reason
    /// `v5_reason` means: itself for MQTT 5; for MQTT 3 the nearest return
    /// code (0x84 → 0x01, 0x85 → 0x02, 0x86 → 0x04, 0x87 / 0x8A → 0x05,
    /// any other failure → 0x03 server unavailable).
    pub const fn connack_code(version: Version, v5_reason: u8) -> u8 {
        match version {
            Version::V5 => v5_reason,
            Version::V31 | Version::V311 => match v5_reason {
                SUCCESS => V3_ACCEPTED,
                UNSUPPORTED_PROTOCOL_VERSION => V3_UNACCEPTABLE_PROTOCOL_VERSION,
                CLIENT_IDENTIFIER_NOT_VALID => V3_IDENTIFIER_REJECTED,
                BAD_USER_NAME_OR_PASSWORD => V3_BAD_USERNAME_OR_PASSWORD,
                NOT_AUTHORIZED | BANNED => V3_NOT_AUTHORIZED,
                _ => V3_SERVER_UNAVAILABLE,
            },
        }
    }
}

/// Protocol names of MQTT 3.1.1 / 5.0 and of MQTT 3.1, with their length prefix.
const NAMES: [&[u8]; 2] = [b"\x00\x04MQTT", b"\x00\x06MQIsdp"];

/// The smallest CONNECT remaining length: name (6) + level + flags +
/// keep-alive (2) + client-id length (2).
const MIN_REMAINING: u32 = 12;

/// Sniff the first client bytes: CONNECT (`0x10`), a valid remaining length
/// (1–4 byte varint), then the protocol name `MQTT` (levels 4 and 5) or
/// `MQIsdp` (level 3). Matches once the name is seen.
pub fn sniff(buf: &[u8]) -> Verdict {
    match buf.first() {
        None => return Verdict::NeedMore,
        Some(0x10) => {}
        Some(_) => return Verdict::Reject,
    }
    // Remaining length: up to 4 bytes, 7 bits each, high bit = continuation.
    let mut remaining: u32 = 0;
    let mut name_at = None;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Verdict::NeedMore;
        };
        remaining |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            name_at = Some(2 + i);
            break;
        }
    }
    let Some(name_at) = name_at else {
        // A fifth length byte is never valid.
        return Verdict::Reject;
    };
    if remaining < MIN_REMAINING {
        return Verdict::Reject;
    }
    let name = buf.get(name_at..).unwrap_or_default();
    let mut compatible = false;
    for expected in NAMES {
        if name.starts_with(expected) {
            return Verdict::Match(Protocol::Mqtt);
        }
        compatible |= expected.starts_with(name);
    }
    if compatible {
        Verdict::NeedMore
    } else {
        Verdict::Reject
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
