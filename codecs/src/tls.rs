//! TLS (sniffer only for now): a handshake record (`0x16`) of version 3.x.
use crate::{Protocol, Verdict};

/// Sniff the first client bytes: a TLS record header `0x16 0x03 0x00..=0x04`
/// (handshake, SSL 3.0 .. TLS 1.3 record versions; a ClientHello says 3.1 on
/// the record layer even for TLS 1.3). Matches after 3 bytes.
pub fn sniff(buf: &[u8]) -> Verdict {
    match buf {
        [] | [0x16] | [0x16, 0x03] => Verdict::NeedMore,
        [0x16, 0x03, 0x00..=0x04, ..] => Verdict::Match(Protocol::Tls),
        _ => Verdict::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First bytes of `tls/curl-clienthello-alpn-h2-tls13.c2s.bin` and
    /// `tls/curl-clienthello-tls12-only-alpn-h2.c2s.bin`.
    const TLS13: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    const TLS12: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xc5, 0x01, 0x00, 0x00, 0xc1, 0x03, 0x03,
    ];

    #[test]
    fn client_hellos() {
        for hello in [TLS13, TLS12] {
            assert_eq!(sniff(&hello[..0]), Verdict::NeedMore);
            assert_eq!(sniff(&hello[..1]), Verdict::NeedMore);
            assert_eq!(sniff(&hello[..2]), Verdict::NeedMore);
            for n in 3..=hello.len() {
                assert_eq!(sniff(&hello[..n]), Verdict::Match(Protocol::Tls));
            }
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(sniff(b"G"), Verdict::Reject);
        assert_eq!(sniff(&[0x16, 0x02]), Verdict::Reject);
        assert_eq!(sniff(&[0x16, 0x03, 0x05]), Verdict::Reject);
        assert_eq!(sniff(&[0x17, 0x03, 0x03]), Verdict::Reject);
        assert_eq!(sniff(&[0x15]), Verdict::Reject);
    }
}
