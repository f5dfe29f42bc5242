//! Small RESP lexing helpers shared by the command and reply decoders.
use nom::error::{ErrorKind, ParseError};

use crate::CodecError;
use crate::parse::{Fail, LineFault, Parsed, crlf_line};

/// Longest content of a length/count line (`$<len>` / `*<count>`): an i64
/// needs 20 characters; anything longer is not a length.
pub(super) const MAX_LEN_LINE: usize = 32;

/// Most bytes reserved ahead for a bulk string still arriving: a client that
/// announces a 512 MiB argument does not get 512 MiB allocated for 20 bytes sent.
pub(super) const RESERVE_CAP: usize = 256 * 1024;

pub(super) const PROTO: &str = "redis";

pub(super) fn malformed(reason: &'static str) -> CodecError {
    CodecError::malformed(PROTO, reason)
}

/// A line found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line {
    /// First content byte.
    pub start: usize,
    /// One past the last content byte (the index of the CR).
    pub end: usize,
    /// One past the LF.
    pub next: usize,
}

/// Why no line was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoLine {
    /// Not all of it is there yet; `scanned` is how far the search went.
    Incomplete { scanned: usize },
    /// More than `max_content` bytes without an LF.
    TooLong,
}

/// Find the CRLF-terminated line whose content starts at `start`, with at most
/// `max_content` content bytes. The search for the LF starts at `scan_from` if
/// that is further on (a resume point from an earlier incomplete search).
///
/// A line ending in a bare LF is malformed. The line itself is the shared nom
/// parser [`crate::parse::crlf_line`]; this adapter keeps the positions the
/// resumable decoders work with.
#[inline(always)]
pub(super) fn find_line(
    buf: &[u8],
    start: usize,
    scan_from: usize,
    max_content: usize,
) -> Result<Result<Line, NoLine>, CodecError> {
    let input = buf.get(start..).unwrap_or_default();
    let scanned = scan_from.saturating_sub(start);
    let fault = |f: LineFault| match f {
        LineFault::BareLf => malformed(BARE_LF),
        LineFault::TooLong => malformed(TOO_LONG),
    };
    match crlf_line(input, max_content, scanned, fault) {
        Ok((rest, content)) => Ok(Ok(Line {
            start,
            end: start + content.len(),
            next: buf.len() - rest.len(),
        })),
        Err(nom::Err::Incomplete(_)) => Ok(Err(NoLine::Incomplete {
            scanned: buf.len().max(scan_from.max(start)),
        })),
        Err(nom::Err::Failure(Fail::Codec(CodecError::Malformed {
            reason: TOO_LONG, ..
        }))) => Ok(Err(NoLine::TooLong)),
        Err(nom::Err::Error(_) | nom::Err::Failure(_)) => Err(malformed(BARE_LF)),
    }
}

const BARE_LF: &str = "line not terminated by CRLF";
const TOO_LONG: &str = "line too long";

/// Strict RESP integer: `-?[0-9]+`, no overflow.
///
/// The digit loop is the old hand-written one, called from the nom parser
/// [`resp_int`]: it runs for every length line, and what decides the cost
/// there is that the whole line parse inlines (docs/benchmarks.md).
#[inline]
pub(super) fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if magnitude == 1 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(magnitude).ok().map(|m| -m)
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// A strict RESP integer filling all of `input`, as a nom parser.
#[inline]
pub(super) fn resp_int(input: &[u8]) -> Parsed<'_, i64> {
    match parse_int(input) {
        Some(n) => Ok((input.get(input.len()..).unwrap_or_default(), n)),
        None => Err(nom::Err::Error(Fail::from_error_kind(
            input,
            ErrorKind::Digit,
        ))),
    }
}

/// Parse the length/count line whose type byte is at `at`.
///
/// `Ok(None)`: incomplete. Errors: a line too long to be a length, or not an integer.
pub(super) fn len_line(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, CodecError> {
    match find_line(buf, at + 1, 0, MAX_LEN_LINE)? {
        Ok(line) => {
            let digits = buf.get(line.start..line.end).unwrap_or_default();
            match resp_int(digits) {
                Ok((_, n)) => Ok(Some((n, line.next))),
                Err(_) => Err(malformed("invalid length")),
            }
        }
        Err(NoLine::Incomplete { .. }) => Ok(None),
        Err(NoLine::TooLong) => Err(malformed("length line too long")),
    }
}

/// Append the decimal form of `n`.
pub(super) fn put_int(dst: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (m % 10) as u8;
        }
        m /= 10;
        if m == 0 || i == 0 {
            break;
        }
    }
    if n < 0 {
        dst.push(b'-');
    }
    dst.extend_from_slice(buf.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"-9223372036854775809"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b"1 "), None);
        assert_eq!(parse_int(b"99999999999999999999999"), None);
        for n in [0, 1, -1, 10, 42, i64::MAX, i64::MIN, -1234567890] {
            let mut v = Vec::new();
            put_int(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }

    #[test]
    fn lines() {
        assert_eq!(
            find_line(b"+OK\r\n", 1, 0, 10).unwrap(),
            Ok(Line {
                start: 1,
                end: 3,
                next: 5
            })
        );
        assert!(matches!(
            find_line(b"+OK\r", 1, 0, 10).unwrap(),
            Err(NoLine::Incomplete { .. })
        ));
        assert_eq!(
            find_line(b"+OKOKOKOK", 1, 0, 4).unwrap(),
            Err(NoLine::TooLong)
        );
        assert!(find_line(b"+OK\n", 1, 0, 10).is_err());
        assert!(find_line(b"+\n", 1, 0, 10).is_err());
        // Exactly max_content bytes is fine.
        assert_eq!(find_line(b"+abcd\r\n", 1, 0, 4).unwrap().unwrap().next, 7);
        assert_eq!(
            find_line(b"+abcde\r\n", 1, 0, 4).unwrap(),
            Err(NoLine::TooLong)
        );
    }
}
