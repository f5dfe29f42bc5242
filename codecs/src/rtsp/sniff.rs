//! The RTSP sniffer: an RTSP request line.
use crate::{Protocol, Verdict};

/// RTSP/1.0 methods (RFC 2326 §6.1).
pub(super) const METHODS: [&[u8]; 11] = [
    b"OPTIONS",
    b"DESCRIBE",
    b"ANNOUNCE",
    b"SETUP",
    b"PLAY",
    b"PAUSE",
    b"TEARDOWN",
    b"GET_PARAMETER",
    b"SET_PARAMETER",
    b"RECORD",
    b"REDIRECT",
];

/// URI schemes of an absolute RTSP request target.
const SCHEMES: [&[u8]; 3] = [b"rtsp://", b"rtsps://", b"rtspu://"];

/// Versions matched; the codec refuses 2.0 cleanly rather than detection guessing.
const VERSIONS: [&[u8]; 2] = [b"RTSP/1.0", b"RTSP/2.0"];

/// Longest request line considered.
const MAX_LINE: usize = 8 * 1024;

/// How a byte string compares with a set of expected tokens.
enum Prefix {
    /// It starts with this token.
    Full(usize),
    /// It is a proper prefix of at least one token.
    Partial,
    None,
}

fn prefix_of(buf: &[u8], tokens: &[&[u8]]) -> Prefix {
    let mut partial = false;
    for token in tokens {
        if buf.starts_with(token) {
            return Prefix::Full(token.len());
        }
        partial |= token.starts_with(buf);
    }
    if partial {
        Prefix::Partial
    } else {
        Prefix::None
    }
}

/// Sniff the first client bytes: `METHOD SP (rtsp://...|*) SP RTSP/1.0 CRLF`
/// (or `RTSP/2.0`). `NeedMore` while the bytes can still become such a line,
/// `Match` at its line end.
pub fn sniff(buf: &[u8]) -> Verdict {
    // Method, then one space.
    let Some(sp) = buf.iter().take(16).position(|&b| b == b' ') else {
        return if METHODS.iter().any(|m| m.starts_with(buf)) {
            Verdict::NeedMore
        } else {
            Verdict::Reject
        };
    };
    let method = buf.get(..sp).unwrap_or_default();
    if !METHODS.contains(&method) {
        return Verdict::Reject;
    }
    // Request target: `*` or an absolute rtsp URI of visible characters.
    let target_at = sp + 1;
    let target = buf.get(target_at..).unwrap_or_default();
    let Some(&first) = target.first() else {
        return Verdict::NeedMore;
    };
    let uri_rest = if first == b'*' {
        1
    } else {
        match prefix_of(target, &SCHEMES) {
            Prefix::Full(n) => n,
            Prefix::Partial => return Verdict::NeedMore,
            Prefix::None => return Verdict::Reject,
        }
    };
    let mut i = target_at + uri_rest;
    loop {
        if i >= MAX_LINE {
            return Verdict::Reject;
        }
        match buf.get(i) {
            None => return Verdict::NeedMore,
            Some(b' ') => break,
            Some(_) if first == b'*' => return Verdict::Reject,
            Some(0x21..=0x7e) => i += 1,
            Some(_) => return Verdict::Reject,
        }
    }
    // Version, then CRLF (a bare LF is tolerated).
    let version = buf.get(i + 1..).unwrap_or_default();
    let end = match prefix_of(version, &VERSIONS) {
        Prefix::Full(n) => version.get(n..).unwrap_or_default(),
        Prefix::Partial => return Verdict::NeedMore,
        Prefix::None => return Verdict::Reject,
    };
    match end {
        [] | [b'\r'] => Verdict::NeedMore,
        [b'\r', b'\n', ..] | [b'\n', ..] => Verdict::Match(Protocol::Rtsp),
        _ => Verdict::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First line of `rtsp/ffprobe-udp-control.c2s.bin`.
    const OPTIONS: &[u8] = b"OPTIONS rtsp://127.0.0.1:31554/test RTSP/1.0\r\nCSeq: 1\r\n";

    #[test]
    fn request_lines() {
        let line_end = OPTIONS.iter().position(|&b| b == b'\n').unwrap() + 1;
        for n in 0..line_end {
            assert_eq!(sniff(&OPTIONS[..n]), Verdict::NeedMore, "{n}");
        }
        for n in line_end..=OPTIONS.len() {
            assert_eq!(sniff(&OPTIONS[..n]), Verdict::Match(Protocol::Rtsp));
        }
        for line in [
            &b"OPTIONS * RTSP/1.0\r\n"[..],
            b"DESCRIBE rtsp://cam/stream RTSP/1.0\r\n",
            b"SETUP rtsps://cam/stream/trackID=0 RTSP/1.0\r\n",
            b"GET_PARAMETER rtsp://cam/ RTSP/1.0\n",
            b"OPTIONS * RTSP/2.0\r\n",
        ] {
            assert_eq!(sniff(line), Verdict::Match(Protocol::Rtsp));
        }
    }

    #[test]
    fn rejects() {
        // GET_PARAMETER is a method, but not GET.
        assert_eq!(sniff(b"GET"), Verdict::NeedMore);
        assert_eq!(sniff(b"GET "), Verdict::Reject);
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Verdict::Reject);
        assert_eq!(sniff(b"PI"), Verdict::Reject);
        assert_eq!(sniff(b"PA"), Verdict::NeedMore);
        assert_eq!(sniff(b"OPTIONSX"), Verdict::Reject);
        assert_eq!(sniff(b"OPTIONS /"), Verdict::Reject);
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1\r\n"), Verdict::Reject);
        assert_eq!(sniff(b"OPTIONS *x RTSP/1.0\r\n"), Verdict::Reject);
        assert_eq!(sniff(b"OPTIONS http://x/ RTSP/1.0\r\n"), Verdict::Reject);
        assert_eq!(
            sniff(b"OPTIONS rtsp://a\x01b RTSP/1.0\r\n"),
            Verdict::Reject
        );
        assert_eq!(sniff(b"OPTIONS rtsp://a/ RTSP/1.1\r\n"), Verdict::Reject);
        assert_eq!(sniff(b"OPTIONS rtsp://a/ RTSP/1.0 \r\n"), Verdict::Reject);
        assert_eq!(sniff(b"PLAY rtsp://a/ RTSP/1.0\r"), Verdict::NeedMore);
        assert_eq!(sniff(b"PLAY rtsp://a/ RTSP/1.0\rx"), Verdict::Reject);
        assert_eq!(sniff(b"PING\r\n"), Verdict::Reject);
        let long = [&b"PLAY rtsp://"[..], &[b'a'; MAX_LINE]].concat();
        assert_eq!(sniff(&long), Verdict::Reject);
    }
}
