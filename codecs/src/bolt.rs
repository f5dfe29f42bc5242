//! SOFA Bolt (sniffer only for now): a v1 or v2 command header.
//!
//! v1 request:  `proto=1 type cmdcode(2) ver2 requestId(4) codec timeout(4)
//!               classLen(2) headerLen(2) contentLen(4)` (22 bytes);
//! v1 response: `... codec respStatus(2) classLen(2) headerLen(2) contentLen(4)` (20 bytes).
//! v2 adds `ver1` after `proto=2` and a `switch` byte (bit 0: CRC32) after the
//! codec, so its headers are 24 and 22 bytes.
use crate::{Protocol, Verdict};

const TYPE_RESPONSE: u8 = 0;
const TYPE_REQUEST: u8 = 1;
const TYPE_ONEWAY: u8 = 2;

const CMD_HEARTBEAT: u8 = 0;
const CMD_REQUEST: u8 = 1;
const CMD_RESPONSE: u8 = 2;

/// Bodies of 1 GiB and more are taken as noise, not Bolt.
const MAX_CONTENT_HIGH_BYTE: u8 = 0x3f;

/// Sniff the first client bytes: the whole fixed header must be consistent
/// (protocol code, command type, a command code that fits the type, a known
/// switch bit, a sane content length). `Match` once it is all there; every
/// Bolt frame is at least that long.
pub fn sniff(buf: &[u8]) -> Verdict {
    let Some(&proto) = buf.first() else {
        return Verdict::NeedMore;
    };
    // Offset added to the v1 positions by v2's ver1 byte.
    let o = match proto {
        1 => 0,
        2 => 1,
        _ => return Verdict::Reject,
    };
    let Some(&kind) = buf.get(1 + o) else {
        return Verdict::NeedMore;
    };
    let request = match kind {
        TYPE_REQUEST | TYPE_ONEWAY => true,
        TYPE_RESPONSE => false,
        _ => return Verdict::Reject,
    };
    // Offset after the codec byte: v2's switch byte.
    let s = o + o;
    let content_at = if request { 18 + s } else { 16 + s };
    let header_len = content_at + 4;
    // A byte that is not there yet cannot contradict the header.
    let byte_ok = |at: usize, ok: &dyn Fn(u8) -> bool| buf.get(at).is_none_or(|&b| ok(b));
    let consistent =
        // cmdcode, big-endian u16: 0 heartbeat, 1 request, 2 response, fitting the type.
        byte_ok(2 + o, &|b| b == 0)
        && byte_ok(3 + o, &|b| {
            b == CMD_HEARTBEAT || b == if request { CMD_REQUEST } else { CMD_RESPONSE }
        })
        // v2 switch: only bit 0 (CRC32) is defined.
        && (o == 0 || byte_ok(11, &|b| b <= 1))
        // Response status codes are small.
        && (request || byte_ok(10 + s, &|b| b == 0))
        && byte_ok(content_at, &|b| b <= MAX_CONTENT_HIGH_BYTE);
    if !consistent {
        return Verdict::Reject;
    }
    if buf.len() >= header_len {
        Verdict::Match(Protocol::Bolt)
    } else {
        Verdict::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header of `bolt/v1-node-client-pipelined.c2s.bin`: request, cmdcode 1,
    /// ver2 1, id 1, codec 1 (hessian2), timeout 3000, class 44, header 48, content 247.
    const V1_REQUEST: &[u8] = &[
        0x01, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x0b, 0xb8, 0x00,
        0x2c, 0x00, 0x30, 0x00, 0x00, 0x00, 0xf7, 0x63, 0x6f,
    ];
    /// Header of `bolt/v1-protobuf-anthunder-client.c2s.bin` (codec 11, protobuf).
    const V1_ANTHUNDER: &[u8] = &[
        0x01, 0x01, 0x00, 0x01, 0x01, 0x28, 0x58, 0x75, 0x9e, 0x0b, 0x00, 0x00, 0x0b, 0xb8, 0x00,
        0x2c, 0x01, 0x14, 0x00, 0x00, 0x00, 0x06,
    ];
    /// Header of `bolt/v2-crc-node-client.c2s.bin`: ver1 2, switch 1 (CRC).
    const V2_REQUEST: &[u8] = &[
        0x02, 0x02, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x0b,
        0xb8, 0x00, 0x2c, 0x00, 0x30, 0x00, 0x00, 0x00, 0xca, 0x63,
    ];
    /// A v1 heartbeat request (cmdcode 0, no class/header/content).
    const V1_HEARTBEAT: &[u8] = &[
        0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, 0x0b, 0xb8, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    /// Header of `bolt/java-v1-response-rpcserverexception.bin` (response, status 2).
    const V1_RESPONSE: &[u8] = &[
        0x01, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x02, 0x00, 0x34, 0x00,
        0x00, 0x00, 0x00, 0x04, 0x61,
    ];
    /// Header of `bolt/java-v2-crc-response-sofaresponse.bin`.
    const V2_RESPONSE: &[u8] = &[
        0x02, 0x02, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
        0x2e, 0x00, 0x00, 0x00, 0x00, 0x02, 0xee,
    ];

    fn check(frame: &[u8], header_len: usize) {
        for n in 0..header_len {
            assert_eq!(sniff(&frame[..n]), Verdict::NeedMore, "{n}");
        }
        for n in header_len..=frame.len() {
            assert_eq!(sniff(&frame[..n]), Verdict::Match(Protocol::Bolt), "{n}");
        }
    }

    #[test]
    fn headers() {
        check(V1_REQUEST, 22);
        check(V1_ANTHUNDER, 22);
        check(V1_HEARTBEAT, 22);
        check(V2_REQUEST, 24);
        check(V1_RESPONSE, 20);
        check(V2_RESPONSE, 22);
    }

    #[test]
    fn rejects() {
        assert_eq!(sniff(&[0x03]), Verdict::Reject);
        assert_eq!(sniff(b"GET"), Verdict::Reject);
        // Unknown command type.
        assert_eq!(sniff(&[0x01, 0x03]), Verdict::Reject);
        // cmdcode out of range, or not fitting the type.
        assert_eq!(sniff(&[0x01, 0x01, 0x01]), Verdict::Reject);
        assert_eq!(sniff(&[0x01, 0x01, 0x00, 0x02]), Verdict::Reject);
        assert_eq!(sniff(&[0x01, 0x00, 0x00, 0x01]), Verdict::Reject);
        assert_eq!(sniff(&[0x02, 0x02, 0x01, 0x00, 0x03]), Verdict::Reject);
        // v2 switch with unknown bits.
        let mut v2 = V2_REQUEST.to_vec();
        v2[11] = 0x82;
        assert_eq!(sniff(&v2), Verdict::Reject);
        // Absurd content length.
        let mut v1 = V1_REQUEST.to_vec();
        v1[18] = 0x80;
        assert_eq!(sniff(&v1), Verdict::Reject);
        // Response status high byte.
        let mut r = V1_RESPONSE.to_vec();
        r[10] = 0x12;
        assert_eq!(sniff(&r), Verdict::Reject);
    }
}
