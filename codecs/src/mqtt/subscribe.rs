//! SUBSCRIBE, UNSUBSCRIBE and their acknowledgements.
use bytes::Bytes;

use super::Version;
use super::packet::{Reader, malformed};
use super::properties::{self, Ctx, Properties};
use super::publish::packet_id;
use crate::CodecError;

/// A SUBSCRIBE packet (client → server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The first byte of the packet.
    pub(super) header: u8,
    packet_id: u16,
    properties: Properties,
    filters: Vec<(Bytes, u8)>,
    /// Packet id, property length and properties as on the wire.
    pub(super) head: Bytes,
}

impl Subscribe {
    /// Packet identifier (never 0).
    pub fn packet_id(&self) -> u16 {
        self.packet_id
    }
    /// MQTT 5 properties (subscription identifier, user properties).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// MQTT 5 Subscription Identifier, if sent.
    pub fn subscription_identifier(&self) -> Option<u32> {
        match self
            .properties
            .get(properties::id::SUBSCRIPTION_IDENTIFIER)?
        {
            properties::PropertyValue::VarInt(v) => Some(v),
            _ => None,
        }
    }
    /// The topic filters (at least one) with their subscription options byte:
    /// maximum QoS in bits 0-1 (see [`sub_options`](super::sub_options)); in
    /// MQTT 5 also no-local (bit 2), retain-as-published (bit 3) and retain
    /// handling (bits 4-5).
    ///
    /// Filters are valid UTF-8 and not empty; whether their wildcards are
    /// well placed is left to the receiver ([`super::topic::valid_filter`]),
    /// which answers a bad one with a SUBACK failure code.
    pub fn filters(&self) -> &[(Bytes, u8)] {
        &self.filters
    }
}

/// Subscription options byte helpers.
pub mod sub_options {
    /// Maximum QoS (bits 0-1).
    pub fn qos(options: u8) -> u8 {
        options & 0x03
    }
    /// MQTT 5 No Local (bit 2).
    pub fn no_local(options: u8) -> bool {
        options & 0x04 != 0
    }
    /// MQTT 5 Retain As Published (bit 3).
    pub fn retain_as_published(options: u8) -> bool {
        options & 0x08 != 0
    }
    /// MQTT 5 Retain Handling (bits 4-5): 0 send retained on subscribe,
    /// 1 only for a new subscription, 2 never.
    pub fn retain_handling(options: u8) -> u8 {
        (options >> 4) & 0x03
    }
}

fn filter(r: &mut Reader<'_>) -> Result<Bytes, CodecError> {
    let f = r.string()?;
    if f.is_empty() {
        return Err(malformed("empty topic filter"));
    }
    Ok(f)
}

pub(super) fn parse_subscribe(
    r: &mut Reader<'_>,
    header: u8,
    version: Version,
) -> Result<Subscribe, CodecError> {
    let start = r.pos();
    let packet_id = packet_id(r)?;
    let properties = if version == Version::V5 {
        properties::read(r, Ctx::Subscribe)?.0
    } else {
        Properties::default()
    };
    let head = r.wire().slice(start..r.pos());
    let reserved = if version == Version::V5 { 0xc0 } else { 0xfc };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let f = filter(r)?;
        let options = r.u8()?;
        if options & reserved != 0 {
            return Err(malformed("reserved subscription option bits set"));
        }
        if sub_options::qos(options) == 3 {
            return Err(malformed("subscription QoS 3"));
        }
        if sub_options::retain_handling(options) == 3 {
            return Err(malformed("retain handling 3"));
        }
        filters.push((f, options));
    }
    if filters.is_empty() {
        return Err(malformed("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        header,
        packet_id,
        properties,
        filters,
        head,
    })
}

/// An UNSUBSCRIBE packet (client → server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The first byte of the packet.
    pub(super) header: u8,
    packet_id: u16,
    properties: Properties,
    filters: Vec<Bytes>,
    /// Packet id, property length and properties as on the wire.
    pub(super) head: Bytes,
}

impl Unsubscribe {
    /// Packet identifier (never 0).
    pub fn packet_id(&self) -> u16 {
        self.packet_id
    }
    /// MQTT 5 properties (user properties).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// The topic filters (at least one; UTF-8, not empty).
    pub fn filters(&self) -> &[Bytes] {
        &self.filters
    }
}

pub(super) fn parse_unsubscribe(
    r: &mut Reader<'_>,
    header: u8,
    version: Version,
) -> Result<Unsubscribe, CodecError> {
    let start = r.pos();
    let packet_id = packet_id(r)?;
    let properties = if version == Version::V5 {
        properties::read(r, Ctx::Unsubscribe)?.0
    } else {
        Properties::default()
    };
    let head = r.wire().slice(start..r.pos());
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(r)?);
    }
    if filters.is_empty() {
        return Err(malformed("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        header,
        packet_id,
        properties,
        filters,
        head,
    })
}

/// A SUBACK or UNSUBACK packet (server → client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suback {
    packet_id: u16,
    properties: Properties,
    codes: Bytes,
}

/// UNSUBACK has the shape of SUBACK; in MQTT 3 it carries no codes.
pub type Unsuback = Suback;

impl Suback {
    /// The packet identifier acknowledged.
    pub fn packet_id(&self) -> u16 {
        self.packet_id
    }
    /// MQTT 5 properties (reason string, user properties).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// One return / reason code per filter of the request, in order
    /// (SUBACK: the granted QoS or a failure code ≥ 0x80). Empty for an
    /// MQTT 3 UNSUBACK.
    pub fn codes(&self) -> &Bytes {
        &self.codes
    }
}

/// SUBACK (`unsuback == false`) or UNSUBACK.
pub(super) fn parse_suback(
    r: &mut Reader<'_>,
    version: Version,
    unsuback: bool,
) -> Result<Suback, CodecError> {
    let packet_id = packet_id(r)?;
    let ctx = if unsuback { Ctx::Unsuback } else { Ctx::Suback };
    let properties = if version == Version::V5 {
        properties::read(r, ctx)?.0
    } else {
        Properties::default()
    };
    let codes = r.rest();
    let expects_codes = !unsuback || version == Version::V5;
    if expects_codes && codes.is_empty() {
        return Err(malformed("acknowledgement without a return code"));
    }
    if !expects_codes && !codes.is_empty() {
        return Err(malformed("trailing bytes after the last field"));
    }
    // MQTT 3 SUBACK codes are a granted QoS or 0x80; MQTT 5 reason codes are
    // passed through as they are.
    if !unsuback && version != Version::V5 && codes.iter().any(|&c| c > 2 && c != 0x80) {
        return Err(malformed("invalid SUBACK return code"));
    }
    Ok(Suback {
        packet_id,
        properties,
        codes,
    })
}
