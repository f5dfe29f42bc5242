//! PUBLISH, its acknowledgements, DISCONNECT and AUTH.
use bytes::Bytes;

use super::Version;
use super::packet::{Reader, malformed};
use super::properties::{self, Ctx, Properties};
use crate::CodecError;

/// A PUBLISH packet (either direction).
///
/// Only the topic is sliced off at decode; the properties and the payload
/// are views made when asked for, so a PUBLISH routed on its topic and
/// forwarded from its wire bytes costs no more reference counting than that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The first byte of the packet (type and flags).
    pub(super) header: u8,
    packet_id: Option<u16>,
    topic_alias: Option<u16>,
    topic: Bytes,
    /// The packet after the topic: packet id, properties, payload.
    pub(super) tail: Bytes,
    /// The properties, within `tail`.
    properties: (usize, usize),
    /// Where the payload starts in `tail`.
    payload_at: usize,
}

impl Publish {
    /// DUP flag (a redelivery).
    pub fn dup(&self) -> bool {
        self.header & 0x08 != 0
    }
    /// QoS level, 0..=2.
    pub fn qos(&self) -> u8 {
        (self.header >> 1) & 0x03
    }
    /// RETAIN flag.
    pub fn retain(&self) -> bool {
        self.header & 0x01 != 0
    }
    /// The topic name: UTF-8 without wildcards. Empty only in MQTT 5 when a
    /// [`topic_alias`](Self::topic_alias) stands for it (see [`super::TopicAliases`]).
    pub fn topic(&self) -> &Bytes {
        &self.topic
    }
    /// Packet identifier: `Some` (never 0) exactly when QoS > 0.
    pub fn packet_id(&self) -> Option<u16> {
        self.packet_id
    }
    /// MQTT 5 PUBLISH properties (a view into the packet); empty in MQTT 3.
    pub fn properties(&self) -> Properties {
        let (start, end) = self.properties;
        if start == end {
            return Properties::default();
        }
        Properties::from_validated(self.tail.slice(start..end))
    }
    /// MQTT 5 Topic Alias property, if sent.
    pub fn topic_alias(&self) -> Option<u16> {
        self.topic_alias
    }
    /// The application message (a view into the packet).
    pub fn payload(&self) -> Bytes {
        self.tail.slice(self.payload_at..)
    }
    /// Length of the application message.
    pub fn payload_len(&self) -> usize {
        self.tail.len() - self.payload_at
    }
    /// The value of the first MQTT 5 user property named `name` (a view
    /// into the packet).
    pub fn user_property(&self, name: &[u8]) -> Option<&[u8]> {
        let (start, end) = self.properties;
        let at = super::properties::Properties::user_property_at(&self.tail, start, end, name)?;
        self.tail.get(at)
    }
    /// Where, in `tail`, the property length starts, and where the
    /// properties end (MQTT 5).
    pub(super) fn properties_in_tail(&self) -> (usize, usize) {
        (usize::from(self.packet_id.is_some()) * 2, self.properties.1)
    }
}

pub(super) fn parse_publish(
    r: &mut Reader<'_>,
    header: u8,
    version: Version,
) -> Result<Publish, CodecError> {
    let topic = r.string()?;
    let tail_start = r.pos();
    if memchr::memchr2(b'+', b'#', &topic).is_some() {
        return Err(malformed("wildcard in a PUBLISH topic"));
    }
    let qos = (header >> 1) & 0x03;
    let packet_id = if qos > 0 { Some(packet_id(r)?) } else { None };
    let (range, summary) = if version == Version::V5 {
        properties::read_range(r, Ctx::Publish)?
    } else {
        (r.pos()..r.pos(), properties::Summary::default())
    };
    if topic.is_empty() && summary.topic_alias.is_none() {
        return Err(malformed("empty PUBLISH topic without a topic alias"));
    }
    let payload_at = r.pos() - tail_start;
    let tail = r.rest_from(tail_start);
    Ok(Publish {
        header,
        packet_id,
        topic_alias: summary.topic_alias,
        topic,
        tail,
        properties: (range.start - tail_start, range.end - tail_start),
        payload_at,
    })
}

/// A non-zero packet identifier.
pub(super) fn packet_id(r: &mut Reader<'_>) -> Result<u16, CodecError> {
    match r.u16()? {
        0 => Err(malformed("packet identifier 0")),
        id => Ok(id),
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    packet_id: u16,
    reason: u8,
    properties: Properties,
}

impl Ack {
    /// The packet identifier acknowledged.
    pub fn packet_id(&self) -> u16 {
        self.packet_id
    }
    /// MQTT 5 reason code (0 = success, also when omitted); always 0 in MQTT 3.
    pub fn reason(&self) -> u8 {
        self.reason
    }
    /// MQTT 5 properties (reason string, user properties); empty in MQTT 3.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
}

pub(super) fn parse_ack(r: &mut Reader<'_>, version: Version) -> Result<Ack, CodecError> {
    let packet_id = packet_id(r)?;
    let (reason, properties) = reason_and_properties(r, version, Ctx::Ack)?;
    r.finish()?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// The optional MQTT 5 reason code and properties that end PUBACK & co,
/// DISCONNECT and AUTH: both may be left out (reason 0, no properties), or the
/// properties alone.
fn reason_and_properties(
    r: &mut Reader<'_>,
    version: Version,
    ctx: Ctx,
) -> Result<(u8, Properties), CodecError> {
    if version != Version::V5 || r.is_empty() {
        return Ok((0, Properties::default()));
    }
    let reason = r.u8()?;
    if r.is_empty() {
        return Ok((reason, Properties::default()));
    }
    Ok((reason, properties::read(r, ctx)?.0))
}

/// A DISCONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    reason: u8,
    properties: Properties,
}

impl Disconnect {
    /// MQTT 5 reason code (0 = normal disconnection, also when omitted);
    /// always 0 in MQTT 3.
    pub fn reason(&self) -> u8 {
        self.reason
    }
    /// MQTT 5 properties (session expiry, reason string, server reference, ...).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// MQTT 5 Session Expiry Interval update, if sent.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        match self
            .properties
            .get(properties::id::SESSION_EXPIRY_INTERVAL)?
        {
            properties::PropertyValue::U32(v) => Some(v),
            _ => None,
        }
    }
}

pub(super) fn parse_disconnect(
    r: &mut Reader<'_>,
    version: Version,
) -> Result<Disconnect, CodecError> {
    let (reason, properties) = reason_and_properties(r, version, Ctx::Disconnect)?;
    r.finish()?;
    Ok(Disconnect { reason, properties })
}

/// An AUTH packet (MQTT 5 enhanced authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    reason: u8,
    properties: Properties,
}

impl Auth {
    /// Reason code: 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub fn reason(&self) -> u8 {
        self.reason
    }
    /// Properties (authentication method and data, reason string, user properties).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
}

pub(super) fn parse_auth(r: &mut Reader<'_>) -> Result<Auth, CodecError> {
    let (reason, properties) = reason_and_properties(r, Version::V5, Ctx::Auth)?;
    r.finish()?;
    Ok(Auth { reason, properties })
}

/// The topic aliases of one direction of an MQTT 5 connection: maps the
/// aliases that PUBLISH packets set to their topics, so that a PUBLISH that
/// carries only an alias can be routed on its topic.
///
/// Use one per direction; `maximum` is the Topic Alias Maximum the *receiver*
/// of that direction announced (the CONNACK's for client → server, the
/// CONNECT's for server → client). Topics are copied when an alias is set
/// (rare), so the table does not keep whole packet buffers alive.
#[derive(Debug, Clone, Default)]
pub struct TopicAliases {
    maximum: u16,
    topics: Vec<Option<Bytes>>,
}

impl TopicAliases {
    /// A table accepting aliases `1..=maximum` (0: aliases are not allowed).
    pub fn new(maximum: u16) -> Self {
        Self {
            maximum,
            topics: Vec::new(),
        }
    }

    /// The Topic Alias Maximum this table enforces.
    pub fn maximum(&self) -> u16 {
        self.maximum
    }

    /// The topic `publish` is about: its own topic, recording its alias if it
    /// has one, or the topic its alias was set to earlier.
    ///
    /// Errors (the receiver answers them with DISCONNECT 0x94 Topic Alias
    /// invalid / 0x82 protocol error): an alias over the maximum, or an empty
    /// topic whose alias was never set.
    pub fn resolve(&mut self, publish: &Publish) -> Result<Bytes, CodecError> {
        let Some(alias) = publish.topic_alias() else {
            return Ok(publish.topic().clone());
        };
        if alias == 0 || alias > self.maximum {
            return Err(malformed("topic alias over the maximum"));
        }
        let index = usize::from(alias - 1);
        if publish.topic().is_empty() {
            return self
                .topics
                .get(index)
                .cloned()
                .flatten()
                .ok_or(malformed("unknown topic alias"));
        }
        if self.topics.len() <= index {
            self.topics.resize(index + 1, None);
        }
        let topic = Bytes::copy_from_slice(publish.topic());
        if let Some(slot) = self.topics.get_mut(index) {
            *slot = Some(topic.clone());
        }
        Ok(topic)
    }
}
