//! HTTP/2 with prior knowledge (sniffer only for now): the client connection preface.
use crate::{Protocol, Verdict};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Sniff the first client bytes: `NeedMore` while they are a prefix of the
/// preface, `Match` once all 24 bytes are there.
pub fn sniff(buf: &[u8]) -> Verdict {
    let n = buf.len().min(PREFACE.len());
    if buf.get(..n) != PREFACE.get(..n) {
        Verdict::Reject
    } else if n == PREFACE.len() {
        Verdict::Match(Protocol::Http2)
    } else {
        Verdict::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First bytes of `http2/curl-prior-knowledge.c2s.bin`: preface, then a SETTINGS frame header.
    const CURL: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";

    #[test]
    fn preface() {
        for n in 0..24 {
            assert_eq!(sniff(&CURL[..n]), Verdict::NeedMore, "{n}");
        }
        for n in 24..=CURL.len() {
            assert_eq!(sniff(&CURL[..n]), Verdict::Match(Protocol::Http2));
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(sniff(b"G"), Verdict::Reject);
        assert_eq!(sniff(b"PRI * HTTP/1.1"), Verdict::Reject);
        assert_eq!(sniff(b"POST / HTTP/1.1\r\n"), Verdict::Reject);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nXX"), Verdict::Reject);
    }
}
