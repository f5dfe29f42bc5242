//! CONNECT and CONNACK.
use bytes::Bytes;

use super::packet::{Reader, malformed};
use super::properties::{self, Ctx, Properties};
use super::{Version, topic};
use crate::CodecError;

/// A CONNECT packet (client → server, always the first packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    protocol_name: Bytes,
    version: Version,
    flags: u8,
    keep_alive: u16,
    properties: Properties,
    summary: properties::Summary,
    client_id: Bytes,
    will: Option<Will>,
    username: Option<Bytes>,
    password: Option<Bytes>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    qos: u8,
    retain: bool,
    properties: Properties,
    topic: Bytes,
    payload: Bytes,
}

impl Will {
    /// Will QoS (0..=2).
    pub fn qos(&self) -> u8 {
        self.qos
    }
    /// Will retain flag.
    pub fn retain(&self) -> bool {
        self.retain
    }
    /// MQTT 5 will properties (will delay, message expiry, content type, ...);
    /// empty in MQTT 3.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// Will topic: a valid topic name (UTF-8, no wildcards).
    pub fn topic(&self) -> &Bytes {
        &self.topic
    }
    /// Will payload (binary).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

impl Connect {
    /// The protocol name as sent: `MQTT` (3.1.1, 5) or `MQIsdp` (3.1).
    pub fn protocol_name(&self) -> &Bytes {
        &self.protocol_name
    }
    /// The protocol version (protocol level 3, 4 or 5).
    pub fn version(&self) -> Version {
        self.version
    }
    /// The raw connect flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }
    /// Clean start (MQTT 5) / clean session (MQTT 3).
    pub fn clean_start(&self) -> bool {
        self.flags & 0x02 != 0
    }
    /// Keep alive in seconds (0 = off).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }
    /// MQTT 5 CONNECT properties; empty in MQTT 3.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// MQTT 5 Session Expiry Interval (seconds), if sent.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        self.summary.session_expiry_interval
    }
    /// MQTT 5 Receive Maximum (the client's inflight QoS 1/2 limit), if sent.
    pub fn receive_maximum(&self) -> Option<u16> {
        self.summary.receive_maximum
    }
    /// MQTT 5 Maximum Packet Size the client accepts, if sent.
    pub fn maximum_packet_size(&self) -> Option<u32> {
        self.summary.maximum_packet_size
    }
    /// MQTT 5 Topic Alias Maximum the client accepts from the server, if sent.
    pub fn topic_alias_maximum(&self) -> Option<u16> {
        self.summary.topic_alias_maximum
    }
    /// The client identifier (may be empty).
    pub fn client_id(&self) -> &Bytes {
        &self.client_id
    }
    /// The will message, if the will flag is set.
    pub fn will(&self) -> Option<&Will> {
        self.will.as_ref()
    }
    /// User name, if the user name flag is set.
    pub fn username(&self) -> Option<&Bytes> {
        self.username.as_ref()
    }
    /// Password (binary), if the password flag is set.
    pub fn password(&self) -> Option<&Bytes> {
        self.password.as_ref()
    }
}

/// Parse a CONNECT body (`r` covers the remaining length).
///
/// An unknown protocol level is [`CodecError::Unsupported`] (a server answers
/// it with CONNACK 0x01 / 0x84); everything else wrong is `Malformed`.
pub(super) fn parse_connect(r: &mut Reader<'_>) -> Result<Connect, CodecError> {
    let protocol_name = r.binary()?;
    let level = r.u8()?;
    let version = match (&protocol_name[..], level) {
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        (b"MQIsdp", 3) => Version::V31,
        (b"MQTT" | b"MQIsdp", _) => {
            return Err(CodecError::Unsupported {
                protocol: super::packet::PROTO,
                reason: "unknown protocol level",
            });
        }
        _ => return Err(malformed("unknown protocol name")),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(malformed("reserved CONNECT flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(malformed("will QoS 3"));
    }
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(malformed("will QoS or retain set without a will"));
    }
    if has_password && !has_username && version != Version::V5 {
        return Err(malformed("password without a user name"));
    }
    let keep_alive = r.u16()?;
    let (properties, summary) = if version == Version::V5 {
        properties::read(r, Ctx::Connect)?
    } else {
        Default::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let (properties, _) = if version == Version::V5 {
            properties::read(r, Ctx::Will)?
        } else {
            Default::default()
        };
        let topic = r.string()?;
        if !topic::valid_topic_name(&topic) {
            return Err(malformed("invalid will topic"));
        }
        let payload = r.binary()?;
        Some(Will {
            qos: will_qos,
            retain: will_retain,
            properties,
            topic,
            payload,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol_name,
        version,
        flags,
        keep_alive,
        properties,
        summary,
        client_id,
        will,
        username,
        password,
    })
}

/// A CONNACK packet (server → client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connack {
    flags: u8,
    code: u8,
    properties: Properties,
}

impl Connack {
    /// Session present (always `false` in MQTT 3.1, which has no such flag).
    pub fn session_present(&self) -> bool {
        self.flags & 0x01 != 0
    }
    /// The MQTT 3 return code or MQTT 5 reason code (0 = accepted).
    pub fn code(&self) -> u8 {
        self.code
    }
    /// MQTT 5 CONNACK properties; empty in MQTT 3.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
}

pub(super) fn parse_connack(r: &mut Reader<'_>, version: Version) -> Result<Connack, CodecError> {
    let raw_flags = r.u8()?;
    let flags = match version {
        // 3.1: the byte is reserved and unused.
        Version::V31 => 0,
        _ if raw_flags & 0xfe != 0 => return Err(malformed("reserved CONNACK flags set")),
        _ => raw_flags,
    };
    let code = r.u8()?;
    let properties = if version == Version::V5 && !r.is_empty() {
        properties::read(r, Ctx::Connack)?.0
    } else {
        Properties::default()
    };
    r.finish()?;
    Ok(Connack {
        flags,
        code,
        properties,
    })
}
