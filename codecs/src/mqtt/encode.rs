//! Packets the gateway makes itself: refusals and acknowledgements it answers
//! on its own, and client packets re-encoded under a tenant's mount point.
use bytes::Bytes;

use super::packet::{MAX_VARINT, malformed, put_varint, varint_len};
use super::{Connect, Publish, Subscribe, Unsubscribe, Version};
use crate::CodecError;

/// A fixed header followed by `body`.
fn packet(first: u8, body: &[u8]) -> Bytes {
    let len = body.len().min(MAX_VARINT as usize);
    let mut out = Vec::with_capacity(1 + varint_len(len) + len);
    out.push(first);
    put_varint(&mut out, len);
    out.extend_from_slice(body.get(..len).unwrap_or_default());
    Bytes::from(out)
}

/// CONNACK. `code` is the MQTT 3 return code (see `V3_*` in [`super::code`])
/// for 3.1/3.1.1, or the MQTT 5 reason code (sent with no properties).
///
/// Session present is sent only with a success code (the spec requires 0
/// otherwise) and never in MQTT 3.1, which has no such flag.
pub fn connack(version: Version, session_present: bool, code: u8) -> Bytes {
    let sp = u8::from(session_present && code == 0 && version != Version::V31);
    match version {
        Version::V5 => packet(0x20, &[sp, code, 0]),
        Version::V31 | Version::V311 => packet(0x20, &[sp, code]),
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (`first` is the first byte).
fn ack(first: u8, version: Version, packet_id: u16, reason: u8) -> Bytes {
    let [hi, lo] = packet_id.to_be_bytes();
    if version == Version::V5 && reason != 0 {
        packet(first, &[hi, lo, reason])
    } else {
        packet(first, &[hi, lo])
    }
}

/// PUBACK. MQTT 5 sends `reason` (left out when 0, as the spec allows);
/// MQTT 3 has no reason code and ignores it.
pub fn puback(version: Version, packet_id: u16, reason: u8) -> Bytes {
    ack(0x40, version, packet_id, reason)
}

/// PUBREC; `reason` as for [`puback`].
pub fn pubrec(version: Version, packet_id: u16, reason: u8) -> Bytes {
    ack(0x50, version, packet_id, reason)
}

/// PUBREL; `reason` as for [`puback`] (0x92: packet identifier not found).
pub fn pubrel(version: Version, packet_id: u16, reason: u8) -> Bytes {
    ack(0x62, version, packet_id, reason)
}

/// PUBCOMP; `reason` as for [`puback`].
pub fn pubcomp(version: Version, packet_id: u16, reason: u8) -> Bytes {
    ack(0x70, version, packet_id, reason)
}

/// SUBACK with one code per filter of the SUBSCRIBE (granted QoS, or 0x80 /
/// an MQTT 5 failure reason); MQTT 5 with no properties.
pub fn suback(version: Version, packet_id: u16, codes: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(3 + codes.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    if version == Version::V5 {
        body.push(0);
    }
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

/// UNSUBACK. MQTT 5: one reason code per filter, no properties. MQTT 3 has
/// no codes and ignores `codes`.
pub fn unsuback(version: Version, packet_id: u16, codes: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(3 + codes.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    if version == Version::V5 {
        body.push(0);
        body.extend_from_slice(codes);
    }
    packet(0xb0, &body)
}

/// DISCONNECT. MQTT 5 sends `reason` (the two-byte form when it is 0);
/// MQTT 3 has no reason and always sends `E0 00`.
pub fn disconnect(version: Version, reason: u8) -> Bytes {
    if version == Version::V5 && reason != 0 {
        // Reason code plus an explicit empty property length: the spec also
        // allows leaving the length out, but some clients (rumqttc 0.25) only
        // read this form.
        packet(0xe0, &[reason, 0])
    } else {
        packet(0xe0, &[])
    }
}

/// PINGREQ (`C0 00`).
pub fn pingreq() -> Bytes {
    Bytes::from_static(&[0xc0, 0x00])
}

/// PINGRESP (`D0 00`).
pub fn pingresp() -> Bytes {
    Bytes::from_static(&[0xd0, 0x00])
}

fn too_large(what: &'static str, size: usize, limit: usize) -> CodecError {
    CodecError::FrameTooLarge {
        what,
        size: size as u64,
        limit,
    }
}

fn topic_len(topic: &[u8]) -> Result<[u8; 2], CodecError> {
    u16::try_from(topic.len())
        .map(u16::to_be_bytes)
        .map_err(|_| too_large("mqtt topic", topic.len(), usize::from(u16::MAX)))
}

fn remaining(len: usize) -> Result<(), CodecError> {
    if len > MAX_VARINT as usize {
        Err(too_large("mqtt packet", len, MAX_VARINT as usize))
    } else {
        Ok(())
    }
}

/// `publish` with its topic replaced by `topic`; the first byte, packet id,
/// properties and payload are copied byte-exact, the remaining length is
/// recomputed.
///
/// `topic` should be a valid topic name (see [`super::topic::mount`] /
/// [`super::topic::unmount`]), or empty for an MQTT 5 PUBLISH with a topic
/// alias. Errors: a topic over 65,535 bytes, or a packet over the largest
/// remaining length.
pub fn publish_with_topic(publish: &Publish, topic: &[u8]) -> Result<Bytes, CodecError> {
    let len_bytes = topic_len(topic)?;
    let len = 2 + topic.len() + publish.tail.len();
    remaining(len)?;
    let mut out = Vec::with_capacity(1 + varint_len(len) + len);
    out.push(publish.header);
    put_varint(&mut out, len);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(topic);
    out.extend_from_slice(&publish.tail);
    Ok(Bytes::from(out))
}

/// An MQTT 5 `publish` sent under `topic` (its own, or mounted) with its
/// user properties named `name` replaced by one `name: value` (W3C trace
/// context goes in a `traceparent` user property); the first byte, packet
/// id, other properties (in order) and payload are copied byte-exact.
///
/// Errors: a topic, name or value over 65,535 bytes, or a packet over the
/// largest remaining length.
pub fn publish_with_user_property(
    publish: &Publish,
    topic: &[u8],
    name: &[u8],
    value: &[u8],
) -> Result<Bytes, CodecError> {
    let (len_at, end) = publish.properties_in_tail();
    let mut props = publish.properties().raw_without_user_property(name);
    props.push(super::properties::id::USER_PROPERTY);
    props.extend_from_slice(&topic_len(name)?);
    props.extend_from_slice(name);
    props.extend_from_slice(&topic_len(value)?);
    props.extend_from_slice(value);
    remaining(props.len())?;
    let head = publish.tail.get(..len_at).unwrap_or_default();
    let payload = publish.tail.get(end..).unwrap_or_default();
    let len = 2 + topic.len() + head.len() + varint_len(props.len()) + props.len() + payload.len();
    remaining(len)?;
    let mut out = Vec::with_capacity(1 + varint_len(len) + len);
    out.push(publish.header);
    put_varint(&mut out, len);
    out.extend_from_slice(&topic_len(topic)?);
    out.extend_from_slice(topic);
    out.extend_from_slice(head);
    put_varint(&mut out, props.len());
    out.extend_from_slice(&props);
    out.extend_from_slice(payload);
    Ok(Bytes::from(out))
}

/// `subscribe` with its filter list replaced by `filters` (filter, options
/// byte), e.g. each filter under a mount point; the first byte, packet id and
/// properties are copied byte-exact.
///
/// Errors: no filter, a filter over 65,535 bytes, or a packet over the
/// largest remaining length.
pub fn subscribe_with_filters<F, I>(subscribe: &Subscribe, filters: I) -> Result<Bytes, CodecError>
where
    F: AsRef<[u8]>,
    I: IntoIterator<Item = (F, u8)>,
{
    let mut body = subscribe.head.to_vec();
    let mut count = 0usize;
    for (filter, options) in filters {
        let filter = filter.as_ref();
        body.extend_from_slice(&topic_len(filter)?);
        body.extend_from_slice(filter);
        body.push(options);
        count += 1;
    }
    if count == 0 {
        return Err(malformed("SUBSCRIBE without a topic filter"));
    }
    remaining(body.len())?;
    Ok(packet(subscribe.header, &body))
}

/// `unsubscribe` with its filter list replaced by `filters`; the first byte,
/// packet id and properties are copied byte-exact. Errors as for
/// [`subscribe_with_filters`].
pub fn unsubscribe_with_filters<F, I>(
    unsubscribe: &Unsubscribe,
    filters: I,
) -> Result<Bytes, CodecError>
where
    F: AsRef<[u8]>,
    I: IntoIterator<Item = F>,
{
    let mut body = unsubscribe.head.to_vec();
    let mut count = 0usize;
    for filter in filters {
        let filter = filter.as_ref();
        body.extend_from_slice(&topic_len(filter)?);
        body.extend_from_slice(filter);
        count += 1;
    }
    if count == 0 {
        return Err(malformed("UNSUBSCRIBE without a topic filter"));
    }
    remaining(body.len())?;
    Ok(packet(unsubscribe.header, &body))
}

/// A user name and a password, each optional.
pub type Credentials<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Changes [`connect_with`] makes to a CONNECT; `None` keeps a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectEdit<'a> {
    /// A new client identifier (e.g. made unique per tenant on a shared broker).
    pub client_id: Option<&'a [u8]>,
    /// A new will topic (e.g. under a mount point); ignored without a will.
    pub will_topic: Option<&'a [u8]>,
    /// New credentials `(user name, password)`, replacing both; `(None, None)`
    /// removes them (e.g. after the gateway authenticated the client itself).
    pub credentials: Option<Credentials<'a>>,
}

/// Append an MQTT string / binary data field: a two-byte length, then the bytes.
fn put_field(out: &mut Vec<u8>, what: &'static str, value: &[u8]) -> Result<(), CodecError> {
    let len = u16::try_from(value.len())
        .map_err(|_| too_large(what, value.len(), usize::from(u16::MAX)))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// `connect` re-encoded with the changes in `edit`. Everything else — protocol
/// name and level, flags, keep alive, properties, will properties and payload
/// — is copied as decoded (a property length is re-encoded in its minimal
/// form), so with no changes the result is the original packet.
///
/// Errors: a field over 65,535 bytes, or new credentials with a password but
/// no user name before MQTT 5.
pub fn connect_with(connect: &Connect, edit: &ConnectEdit<'_>) -> Result<Bytes, CodecError> {
    let (username, password) = match edit.credentials {
        Some(credentials) => credentials,
        None => (
            connect.username().map(|u| &u[..]),
            connect.password().map(|p| &p[..]),
        ),
    };
    let v5 = connect.version() == Version::V5;
    if password.is_some() && username.is_none() && !v5 {
        return Err(malformed("password without a user name"));
    }
    let mut body = Vec::with_capacity(64);
    put_field(&mut body, "mqtt protocol name", connect.protocol_name())?;
    body.push(connect.version().level());
    let flags = (connect.flags() & 0x3f)
        | if username.is_some() { 0x80 } else { 0 }
        | if password.is_some() { 0x40 } else { 0 };
    body.push(flags);
    body.extend_from_slice(&connect.keep_alive().to_be_bytes());
    if v5 {
        let raw = connect.properties().raw();
        put_varint(&mut body, raw.len());
        body.extend_from_slice(raw);
    }
    put_field(
        &mut body,
        "mqtt client identifier",
        edit.client_id.unwrap_or(connect.client_id()),
    )?;
    if let Some(will) = connect.will() {
        if v5 {
            let raw = will.properties().raw();
            put_varint(&mut body, raw.len());
            body.extend_from_slice(raw);
        }
        put_field(
            &mut body,
            "mqtt topic",
            edit.will_topic.unwrap_or(will.topic()),
        )?;
        put_field(&mut body, "mqtt will payload", will.payload())?;
    }
    if let Some(username) = username {
        put_field(&mut body, "mqtt user name", username)?;
    }
    if let Some(password) = password {
        put_field(&mut body, "mqtt password", password)?;
    }
    remaining(body.len())?;
    Ok(packet(0x10, &body))
}
