//! MQTT 5 properties: a validated view of the raw property bytes.
//!
//! A packet's properties are checked once, at decode: every identifier is
//! known and allowed in that packet, every value has its type's shape (UTF-8
//! strings valid, no U+0000), single-use properties appear once, and the values
//! the spec bounds are in range. After that [`Properties::iter`] walks the
//! same bytes without failing, and the raw bytes are forwarded as they came.
use bytes::Bytes;

use super::packet::{Reader, malformed};
use crate::CodecError;

/// Property identifiers (MQTT 5.0 §2.2.2.2).
pub mod id {
    /// Byte: 0 = unspecified bytes, 1 = UTF-8 payload (PUBLISH, will).
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Four-byte integer, seconds (PUBLISH, will).
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// UTF-8 string (PUBLISH, will).
    pub const CONTENT_TYPE: u8 = 0x03;
    /// UTF-8 string (PUBLISH, will).
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Binary data (PUBLISH, will).
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Variable byte integer, 1..=268,435,455 (PUBLISH, SUBSCRIBE).
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Four-byte integer, seconds (CONNECT, CONNACK, DISCONNECT).
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// UTF-8 string (CONNACK).
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Two-byte integer, seconds (CONNACK).
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// UTF-8 string (CONNECT, CONNACK, AUTH).
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Binary data (CONNECT, CONNACK, AUTH).
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Byte, 0 or 1 (CONNECT).
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Four-byte integer, seconds (will).
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Byte, 0 or 1 (CONNECT).
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// UTF-8 string (CONNACK).
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// UTF-8 string (CONNACK, DISCONNECT).
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// UTF-8 string (every acknowledgement, DISCONNECT, AUTH).
    pub const REASON_STRING: u8 = 0x1F;
    /// Two-byte integer, not 0 (CONNECT, CONNACK).
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Two-byte integer (CONNECT, CONNACK).
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Two-byte integer, not 0 (PUBLISH).
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Byte, 0 or 1 (CONNACK).
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Byte, 0 or 1 (CONNACK).
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// UTF-8 string pair, may repeat (every packet but PINGREQ/PINGRESP).
    pub const USER_PROPERTY: u8 = 0x26;
    /// Four-byte integer, not 0 (CONNECT, CONNACK).
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Byte, 0 or 1 (CONNACK).
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Byte, 0 or 1 (CONNACK).
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Byte, 0 or 1 (CONNACK).
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The value of one property, as its identifier's type says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// A one-byte integer.
    Byte(u8),
    /// A two-byte integer.
    U16(u16),
    /// A four-byte integer.
    U32(u32),
    /// A variable byte integer.
    VarInt(u32),
    /// A UTF-8 string (a view into the packet).
    String(Bytes),
    /// Binary data (a view into the packet).
    Binary(Bytes),
    /// A UTF-8 string pair: a user property's name and value.
    Pair(Bytes, Bytes),
}

/// One property: its identifier (see [`id`]) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The property identifier.
    pub id: u8,
    /// Its value.
    pub value: PropertyValue,
}

/// The properties of an MQTT 5 packet (or of a will): the raw bytes after the
/// property length, validated at decode. Empty for MQTT 3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    raw: Bytes,
}

impl Properties {
    /// The property bytes exactly as on the wire, without the length prefix.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// No properties (always so in MQTT 3).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Every property in wire order.
    pub fn iter(&self) -> PropertyIter<'_> {
        PropertyIter {
            raw: &self.raw,
            pos: 0,
        }
    }

    /// The first property with identifier `id`.
    pub fn get(&self, id: u8) -> Option<PropertyValue> {
        self.iter().find(|p| p.id == id).map(|p| p.value)
    }

    /// The user properties (name, value) in wire order.
    pub fn user_properties(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.iter().filter_map(|p| match p.value {
            PropertyValue::Pair(k, v) => Some((k, v)),
            _ => None,
        })
    }

    /// A string property (content type, reason string, ...) by identifier.
    pub fn string(&self, id: u8) -> Option<Bytes> {
        match self.get(id)? {
            PropertyValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The reason string (0x1F), if any.
    pub fn reason_string(&self) -> Option<Bytes> {
        self.string(id::REASON_STRING)
    }

    /// Where, in the raw bytes between `start` and `end` of `wire`, the
    /// value of the first user property named `name` lies.
    pub(super) fn user_property_at(
        wire: &Bytes,
        start: usize,
        end: usize,
        name: &[u8],
    ) -> Option<std::ops::Range<usize>> {
        let mut r = Reader::new(wire, start, end);
        while !r.is_empty() {
            let p = read_one(&mut r).ok()?;
            if let PropertyValue::Pair(k, v) = &p.value
                && p.id == id::USER_PROPERTY
                && k.as_ref() == name
            {
                return Some(r.pos() - v.len()..r.pos());
            }
        }
        None
    }

    /// The property bytes (as on the wire, no length prefix) without the
    /// user properties named `name`.
    pub(super) fn raw_without_user_property(&self, name: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len());
        let mut r = Reader::new(&self.raw, 0, self.raw.len());
        while !r.is_empty() {
            let start = r.pos();
            let Ok(p) = read_one(&mut r) else { break };
            let named = matches!(&p.value, PropertyValue::Pair(k, _) if p.id == id::USER_PROPERTY && k.as_ref() == name);
            if !named {
                out.extend_from_slice(self.raw.get(start..r.pos()).unwrap_or_default());
            }
        }
        out
    }
}

/// Iterator over [`Properties`].
#[derive(Debug, Clone)]
pub struct PropertyIter<'a> {
    raw: &'a Bytes,
    pos: usize,
}

impl Iterator for PropertyIter<'_> {
    type Item = Property;
    fn next(&mut self) -> Option<Property> {
        let mut r = Reader::new(self.raw, self.pos, self.raw.len());
        if r.is_empty() {
            return None;
        }
        // Validated at decode: an error here can only mean a foreign buffer,
        // and ends the iteration.
        match read_one(&mut r) {
            Ok(p) => {
                self.pos = r.pos();
                Some(p)
            }
            Err(_) => {
                self.pos = self.raw.len();
                None
            }
        }
    }
}

/// Where a property list appears; a bit set of these says where an
/// identifier is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctx {
    Connect = 1 << 0,
    Connack = 1 << 1,
    Publish = 1 << 2,
    Will = 1 << 3,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack = 1 << 4,
    Subscribe = 1 << 5,
    Suback = 1 << 6,
    Unsubscribe = 1 << 7,
    Unsuback = 1 << 8,
    Disconnect = 1 << 9,
    Auth = 1 << 10,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A byte that must be 0 or 1.
    Bool,
    U16,
    /// A two-byte integer that must not be 0.
    U16NonZero,
    U32,
    /// A four-byte integer that must not be 0.
    U32NonZero,
    /// A variable byte integer that must not be 0.
    VarIntNonZero,
    String,
    Binary,
    Pair,
}

const CONNECT: u16 = Ctx::Connect as u16;
const CONNACK: u16 = Ctx::Connack as u16;
const PUBLISH: u16 = Ctx::Publish as u16;
const WILL: u16 = Ctx::Will as u16;
const ACK: u16 = Ctx::Ack as u16;
const SUBSCRIBE: u16 = Ctx::Subscribe as u16;
const SUBACK: u16 = Ctx::Suback as u16;
const UNSUBSCRIBE: u16 = Ctx::Unsubscribe as u16;
const UNSUBACK: u16 = Ctx::Unsuback as u16;
const DISCONNECT: u16 = Ctx::Disconnect as u16;
const AUTH: u16 = Ctx::Auth as u16;

/// The type of property `id` and where it may appear.
fn spec(id: u8) -> Option<(Kind, u16)> {
    Some(match id {
        id::PAYLOAD_FORMAT_INDICATOR => (Kind::Bool, PUBLISH | WILL),
        id::MESSAGE_EXPIRY_INTERVAL => (Kind::U32, PUBLISH | WILL),
        id::CONTENT_TYPE => (Kind::String, PUBLISH | WILL),
        id::RESPONSE_TOPIC => (Kind::String, PUBLISH | WILL),
        id::CORRELATION_DATA => (Kind::Binary, PUBLISH | WILL),
        id::SUBSCRIPTION_IDENTIFIER => (Kind::VarIntNonZero, PUBLISH | SUBSCRIBE),
        id::SESSION_EXPIRY_INTERVAL => (Kind::U32, CONNECT | CONNACK | DISCONNECT),
        id::ASSIGNED_CLIENT_IDENTIFIER => (Kind::String, CONNACK),
        id::SERVER_KEEP_ALIVE => (Kind::U16, CONNACK),
        id::AUTHENTICATION_METHOD => (Kind::String, CONNECT | CONNACK | AUTH),
        id::AUTHENTICATION_DATA => (Kind::Binary, CONNECT | CONNACK | AUTH),
        id::REQUEST_PROBLEM_INFORMATION => (Kind::Bool, CONNECT),
        id::WILL_DELAY_INTERVAL => (Kind::U32, WILL),
        id::REQUEST_RESPONSE_INFORMATION => (Kind::Bool, CONNECT),
        id::RESPONSE_INFORMATION => (Kind::String, CONNACK),
        id::SERVER_REFERENCE => (Kind::String, CONNACK | DISCONNECT),
        id::REASON_STRING => (
            Kind::String,
            CONNACK | ACK | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        ),
        id::RECEIVE_MAXIMUM => (Kind::U16NonZero, CONNECT | CONNACK),
        id::TOPIC_ALIAS_MAXIMUM => (Kind::U16, CONNECT | CONNACK),
        id::TOPIC_ALIAS => (Kind::U16NonZero, PUBLISH),
        id::MAXIMUM_QOS => (Kind::Bool, CONNACK),
        id::RETAIN_AVAILABLE => (Kind::Bool, CONNACK),
        id::USER_PROPERTY => (
            Kind::Pair,
            CONNECT
                | CONNACK
                | PUBLISH
                | WILL
                | ACK
                | SUBSCRIBE
                | SUBACK
                | UNSUBSCRIBE
                | UNSUBACK
                | DISCONNECT
                | AUTH,
        ),
        id::MAXIMUM_PACKET_SIZE => (Kind::U32NonZero, CONNECT | CONNACK),
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => (Kind::Bool, CONNACK),
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => (Kind::Bool, CONNACK),
        id::SHARED_SUBSCRIPTION_AVAILABLE => (Kind::Bool, CONNACK),
        _ => return None,
    })
}

/// Read one property; checks its identifier is known and its value's shape.
fn read_one(r: &mut Reader<'_>) -> Result<Property, CodecError> {
    // Identifiers are variable byte integers; every defined one fits in one byte.
    let raw_id = r.varint()?;
    let id = u8::try_from(raw_id).map_err(|_| malformed("unknown property identifier"))?;
    let (kind, _) = spec(id).ok_or(malformed("unknown property identifier"))?;
    let value = match kind {
        Kind::Bool => {
            let b = r.u8()?;
            if b > 1 {
                return Err(malformed("property value must be 0 or 1"));
            }
            PropertyValue::Byte(b)
        }
        Kind::U16 => PropertyValue::U16(r.u16()?),
        Kind::U16NonZero => {
            let v = r.u16()?;
            if v == 0 {
                return Err(malformed("property value must not be 0"));
            }
            PropertyValue::U16(v)
        }
        Kind::U32 => PropertyValue::U32(r.u32()?),
        Kind::U32NonZero => {
            let v = r.u32()?;
            if v == 0 {
                return Err(malformed("property value must not be 0"));
            }
            PropertyValue::U32(v)
        }
        Kind::VarIntNonZero => {
            let v = r.varint()?;
            if v == 0 {
                return Err(malformed("property value must not be 0"));
            }
            PropertyValue::VarInt(v)
        }
        Kind::String => PropertyValue::String(r.string()?),
        Kind::Binary => PropertyValue::Binary(r.binary()?),
        Kind::Pair => {
            let k = r.string()?;
            let v = r.string()?;
            PropertyValue::Pair(k, v)
        }
    };
    Ok(Property { id, value })
}

/// The properties the codec surfaces as typed fields, picked up while the
/// property list is validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Summary {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
}

/// Read a property length and the properties it covers, for a list in `ctx`.
pub(super) fn read(r: &mut Reader<'_>, ctx: Ctx) -> Result<(Properties, Summary), CodecError> {
    let (range, summary) = read_range(r, ctx)?;
    let raw = r.wire().slice(range);
    Ok((Properties { raw }, summary))
}

/// As [`read`], but gives the range of the properties in the packet rather
/// than a view of them.
pub(super) fn read_range(
    r: &mut Reader<'_>,
    ctx: Ctx,
) -> Result<(std::ops::Range<usize>, Summary), CodecError> {
    let len = r.varint()? as usize;
    if len > r.remaining() {
        return Err(malformed("property length runs past the end of the packet"));
    }
    let start = r.pos();
    let end = start + len;
    let summary = validate(&mut Reader::new(r.wire(), start, end), ctx)?;
    r.skip(len)?;
    Ok((start..end, summary))
}

impl Properties {
    /// Properties over already validated bytes.
    pub(super) fn from_validated(raw: Bytes) -> Self {
        Self { raw }
    }
}

fn validate(r: &mut Reader<'_>, ctx: Ctx) -> Result<Summary, CodecError> {
    let mut summary = Summary::default();
    let mut seen: u64 = 0;
    while !r.is_empty() {
        let p = read_one(r)?;
        let allowed = spec(p.id).map(|(_, mask)| mask).unwrap_or(0);
        if allowed & ctx as u16 == 0 {
            return Err(malformed("property not allowed in this packet"));
        }
        let repeatable = p.id == id::USER_PROPERTY
            || (p.id == id::SUBSCRIPTION_IDENTIFIER && ctx == Ctx::Publish);
        let bit = 1u64 << (p.id & 0x3f);
        if seen & bit != 0 && !repeatable {
            return Err(malformed("property included more than once"));
        }
        seen |= bit;
        match (p.id, p.value) {
            (id::SESSION_EXPIRY_INTERVAL, PropertyValue::U32(v)) => {
                summary.session_expiry_interval = Some(v);
            }
            (id::RECEIVE_MAXIMUM, PropertyValue::U16(v)) => summary.receive_maximum = Some(v),
            (id::MAXIMUM_PACKET_SIZE, PropertyValue::U32(v)) => {
                summary.maximum_packet_size = Some(v);
            }
            (id::TOPIC_ALIAS_MAXIMUM, PropertyValue::U16(v)) => {
                summary.topic_alias_maximum = Some(v);
            }
            (id::TOPIC_ALIAS, PropertyValue::U16(v)) => summary.topic_alias = Some(v),
            _ => {}
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &'static [u8], ctx: Ctx) -> Result<(Properties, Summary), CodecError> {
        let wire = Bytes::from_static(bytes);
        let mut r = Reader::new(&wire, 0, wire.len());
        let out = read(&mut r, ctx)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn connect_properties() {
        // From v5-paho-python-full-session: session expiry 30, receive max 10,
        // two user properties, maximum packet size 65536.
        let (props, summary) = parse(
            b"\x31\x11\x00\x00\x00\x1e\x21\x00\x0a\x26\x00\x03lib\x00\x09paho-mqtt\
              \x26\x00\x07purpose\x00\x07vectors\x27\x00\x01\x00\x00",
            Ctx::Connect,
        )
        .unwrap();
        assert_eq!(summary.session_expiry_interval, Some(30));
        assert_eq!(summary.receive_maximum, Some(10));
        assert_eq!(summary.maximum_packet_size, Some(65536));
        assert_eq!(summary.topic_alias_maximum, None);
        assert_eq!(props.raw().len(), 0x31);
        let users: Vec<_> = props.user_properties().collect();
        assert_eq!(
            users,
            [
                (Bytes::from("lib"), Bytes::from("paho-mqtt")),
                (Bytes::from("purpose"), Bytes::from("vectors"))
            ]
        );
        assert_eq!(props.iter().count(), 5);
        assert_eq!(props.get(id::RECEIVE_MAXIMUM), Some(PropertyValue::U16(10)));
        assert_eq!(props.get(id::TOPIC_ALIAS), None);
    }

    #[test]
    fn empty() {
        let (props, summary) = parse(b"\x00", Ctx::Publish).unwrap();
        assert!(props.is_empty());
        assert_eq!(summary, Summary::default());
        assert_eq!(props.iter().next(), None);
    }

    #[test]
    fn rejects() {
        // Length past the end.
        assert!(parse(b"\x05\x01\x00", Ctx::Publish).is_err());
        // Unknown identifier; a multi-byte identifier.
        assert!(parse(b"\x02\x04\x00", Ctx::Publish).is_err());
        assert!(parse(b"\x03\x80\x01\x00", Ctx::Publish).is_err());
        // Not allowed here: topic alias in CONNECT, session expiry in PUBLISH.
        assert!(parse(b"\x03\x23\x00\x01", Ctx::Connect).is_err());
        assert!(parse(b"\x05\x11\x00\x00\x00\x01", Ctx::Publish).is_err());
        // Twice.
        assert!(parse(b"\x06\x23\x00\x01\x23\x00\x02", Ctx::Publish).is_err());
        // Subscription identifier: twice in SUBSCRIBE no, in PUBLISH yes; 0 never.
        assert!(parse(b"\x04\x0b\x01\x0b\x02", Ctx::Subscribe).is_err());
        assert!(parse(b"\x04\x0b\x01\x0b\x02", Ctx::Publish).is_ok());
        assert!(parse(b"\x02\x0b\x00", Ctx::Publish).is_err());
        // Values out of range.
        assert!(parse(b"\x02\x01\x02", Ctx::Publish).is_err());
        assert!(parse(b"\x03\x23\x00\x00", Ctx::Publish).is_err());
        assert!(parse(b"\x03\x21\x00\x00", Ctx::Connect).is_err());
        assert!(parse(b"\x05\x27\x00\x00\x00\x00", Ctx::Connect).is_err());
        // Bad strings, truncated values.
        assert!(parse(b"\x04\x03\x00\x01\x00", Ctx::Publish).is_err());
        assert!(parse(b"\x04\x03\x00\x01\xff", Ctx::Publish).is_err());
        assert!(parse(b"\x04\x03\x00\x05a", Ctx::Publish).is_err());
        assert!(parse(b"\x02\x23\x00", Ctx::Publish).is_err());
        // User properties repeat anywhere they are allowed.
        assert!(
            parse(
                b"\x0e\x26\x00\x01a\x00\x01b\x26\x00\x01a\x00\x01c",
                Ctx::Ack
            )
            .is_ok()
        );
    }

    #[test]
    fn will_context() {
        // Will delay only in will properties.
        assert!(parse(b"\x05\x18\x00\x00\x00\x05", Ctx::Will).is_ok());
        assert!(parse(b"\x05\x18\x00\x00\x00\x05", Ctx::Connect).is_err());
        assert!(parse(b"\x05\x18\x00\x00\x00\x05", Ctx::Publish).is_err());
    }
}
