//! MQTT (sniffer only for now): a CONNECT packet with its protocol name.
use crate::{Protocol, Verdict};

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
mod tests {
    use super::*;

    /// First bytes of `mqtt/v311-pub-qos0.c2s.bin`.
    const V311: &[u8] = b"\x10\x19\x00\x04MQTT\x04\x02\x00\x3c\x00\x0dvec";
    /// First bytes of `mqtt/v5-paho-python-full-session.c2s.bin`.
    const V5: &[u8] = b"\x10\x7a\x00\x04MQTT\x05\xce\x00\x02";
    /// An MQTT 3.1 CONNECT (mosquitto_pub -V mqttv31), two-byte remaining length.
    const V31: &[u8] = b"\x10\x81\x01\x00\x06MQIsdp\x03\x02\x00\x3c";

    fn check(packet: &[u8], match_at: usize) {
        for n in 0..match_at {
            assert_eq!(sniff(&packet[..n]), Verdict::NeedMore, "{n}");
        }
        for n in match_at..=packet.len() {
            assert_eq!(sniff(&packet[..n]), Verdict::Match(Protocol::Mqtt), "{n}");
        }
    }

    #[test]
    fn connects() {
        check(V311, 8);
        check(V5, 8);
        check(V31, 11);
    }

    #[test]
    fn rejects() {
        // PUBLISH, PINGREQ: not a first packet.
        assert_eq!(sniff(b"\x30"), Verdict::Reject);
        assert_eq!(sniff(b"\xc0\x00"), Verdict::Reject);
        // CONNECT with reserved flags set.
        assert_eq!(sniff(b"\x11\x19"), Verdict::Reject);
        // Remaining length too small for a CONNECT, or over 4 bytes.
        assert_eq!(sniff(b"\x10\x02"), Verdict::Reject);
        assert_eq!(sniff(b"\x10\xff\xff\xff\xff"), Verdict::Reject);
        assert_eq!(sniff(b"\x10\xff\xff\xff"), Verdict::NeedMore);
        // Another protocol name.
        assert_eq!(sniff(b"\x10\x19\x00\x04MQTX"), Verdict::Reject);
        assert_eq!(sniff(b"\x10\x19\x00\x05"), Verdict::Reject);
        assert_eq!(sniff(b"\x10\x19\x01"), Verdict::Reject);
    }
}
