//! HTTP/1.x detection from the first request line.
use super::is_tchar;
use crate::{Protocol, Verdict};

/// Bytes within which the first LF of the request line must appear.
pub const SNIFF_LIMIT: usize = 8 * 1024;

/// Sniff HTTP/1.x: (optional empty lines, then) `METHOD SP target SP HTTP/1.[01] CRLF`.
pub(super) fn sniff(buf: &[u8]) -> Verdict {
    let mut i = 0;
    // Empty lines before the request line (RFC 9112 §2.2).
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') => match buf.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return Verdict::Reject,
                None => return need_more(i + 1),
            },
            Some(_) => break,
            None => return need_more(i),
        }
    }
    // method = token
    let method = i;
    while buf.get(i).is_some_and(|b| is_tchar(*b)) {
        i += 1;
    }
    match buf.get(i) {
        None => return need_more(i),
        Some(b' ') if i > method => i += 1,
        Some(_) => return Verdict::Reject,
    }
    // request-target: visible ASCII (and obs-text, as httparse accepts)
    let target = i;
    while buf.get(i).is_some_and(|b| is_target_byte(*b)) {
        i += 1;
    }
    match buf.get(i) {
        None => return need_more(i),
        Some(b' ') if i > target => i += 1,
        Some(_) => return Verdict::Reject,
    }
    // HTTP-version
    for expected in b"HTTP/1." {
        match buf.get(i) {
            None => return need_more(i),
            Some(b) if b == expected => i += 1,
            Some(_) => return Verdict::Reject,
        }
    }
    match buf.get(i) {
        None => return need_more(i),
        Some(b'0' | b'1') => i += 1,
        Some(_) => return Verdict::Reject,
    }
    match (buf.get(i), buf.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => need_more(i),
        (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => Verdict::Match(Protocol::Http1),
        _ => Verdict::Reject,
    }
}

fn need_more(seen: usize) -> Verdict {
    if seen >= SNIFF_LIMIT {
        Verdict::Reject
    } else {
        Verdict::NeedMore
    }
}

fn is_target_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0x80..=0xff)
}
