//! Dubbo 2 (sniffer only for now): magic `0xdabb`, then a request flag byte.
use crate::{Protocol, Verdict};

/// Sniff the first client bytes: magic `0xda 0xbb`, then a flag byte with the
/// request bit (`0x80`) set. Matches after 3 bytes.
pub fn sniff(buf: &[u8]) -> Verdict {
    match buf {
        [] | [0xda] | [0xda, 0xbb] => Verdict::NeedMore,
        [0xda, 0xbb, flag, ..] if flag & 0x80 != 0 => Verdict::Match(Protocol::Dubbo),
        _ => Verdict::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First bytes of `dubbo/node-client-pipelined.c2s.bin` (flag 0xc2:
    /// request | two-way | hessian2) and a heartbeat event (flag 0xe2).
    const REQUEST: &[u8] = &[0xda, 0xbb, 0xc2, 0x00, 0x00, 0x00, 0x00, 0x00];
    const HEARTBEAT: &[u8] = &[0xda, 0xbb, 0xe2, 0x00];

    #[test]
    fn requests() {
        for frame in [REQUEST, HEARTBEAT] {
            for n in 0..3 {
                assert_eq!(sniff(&frame[..n]), Verdict::NeedMore);
            }
            for n in 3..=frame.len() {
                assert_eq!(sniff(&frame[..n]), Verdict::Match(Protocol::Dubbo));
            }
        }
    }

    #[test]
    fn rejects() {
        // A response (flag 0x02: no request bit) is not a client's first frame.
        assert_eq!(sniff(&[0xda, 0xbb, 0x02]), Verdict::Reject);
        assert_eq!(sniff(&[0xda, 0xbc]), Verdict::Reject);
        assert_eq!(sniff(&[0xdb]), Verdict::Reject);
        assert_eq!(sniff(b"GET"), Verdict::Reject);
    }
}
