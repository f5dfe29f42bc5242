//! nom underneath the codecs: one error type for every parser, the mapping of
//! nom's outcome onto the [`crate::Decoder`] contract, and small combinators
//! the binary codecs share.
//!
//! * Parsers run over `&[u8]` in nom's **streaming** mode: a frame that is not
//!   all there yet is [`nom::Err::Incomplete`], which [`nom_to_codec`] turns
//!   into `Ok(None)`. Inside a length-bounded payload (a whole MySQL packet, a
//!   Hessian body already framed) parsers use nom's `complete` functions.
//! * [`Fail`] is the nom error: either where the grammar broke and what was
//!   expected there ([`CodecError::Syntax`] with the byte offset), or a
//!   [`CodecError`] the parser chose itself (a limit, an unknown code, a CRC).
//! * Results stay views: a parser returns sub-slices of its input, and a
//!   codec turns them back into `Bytes` with `Bytes::slice_ref`.
use nom::error::{ContextError, ErrorKind, ParseError};
use nom::{IResult, Needed};

use crate::CodecError;

/// The nom error of every codec parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail<'a> {
    /// The grammar broke at `at` (the rest of the input from there).
    Expected {
        /// The input left where the parser failed.
        at: &'a [u8],
        /// What the parser wanted to see there.
        expected: &'static str,
    },
    /// A decision of the parser itself: over a limit, an unknown code, a bad CRC.
    Codec(CodecError),
}

impl<'a> ParseError<&'a [u8]> for Fail<'a> {
    fn from_error_kind(at: &'a [u8], kind: ErrorKind) -> Self {
        Fail::Expected {
            at,
            expected: kind_expected(kind),
        }
    }

    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<'a> ContextError<&'a [u8]> for Fail<'a> {
    fn add_context(at: &'a [u8], expected: &'static str, other: Self) -> Self {
        match other {
            // The innermost context names the thing that was expected.
            Fail::Expected {
                expected: inner, ..
            } if !NOM_KINDS.contains(&inner) => other,
            Fail::Expected { .. } => Fail::Expected { at, expected },
            Fail::Codec(_) => other,
        }
    }
}

/// What a failed nom primitive wanted, in words.
fn kind_expected(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Eof | ErrorKind::Complete => "more bytes",
        ErrorKind::Tag => "a fixed tag",
        ErrorKind::Char => "a fixed byte",
        ErrorKind::HexDigit => "hex digits",
        ErrorKind::Digit => "digits",
        ErrorKind::CrLf => "CRLF",
        ErrorKind::Verify => "a valid value",
        ErrorKind::TooLarge => "a smaller count",
        _ => "valid bytes",
    }
}

/// The words of [`kind_expected`]: a caller's context replaces them.
const NOM_KINDS: [&str; 9] = [
    "more bytes",
    "a fixed tag",
    "a fixed byte",
    "hex digits",
    "digits",
    "CRLF",
    "a valid value",
    "a smaller count",
    "valid bytes",
];

/// The result of a codec parser.
pub type Parsed<'a, T> = IResult<&'a [u8], T, Fail<'a>>;

/// A hard failure carrying `error` (stops `alt`, ends the parse).
pub fn fail<T>(error: CodecError) -> Result<T, nom::Err<Fail<'static>>> {
    Err(nom::Err::Failure(Fail::Codec(error)))
}

/// A grammar failure at `at`: `expected` is what should have been there.
pub fn expected<'a, T>(at: &'a [u8], expected: &'static str) -> Parsed<'a, T> {
    Err(nom::Err::Error(Fail::Expected { at, expected }))
}

/// Map a parser's outcome over `input` onto the decode contract:
/// `Incomplete` → `Ok(None)`; an error → [`CodecError::Syntax`] with the byte
/// offset into `input` and what was expected, or the parser's own
/// [`CodecError`].
pub fn nom_to_codec<'a, T>(
    protocol: &'static str,
    input: &'a [u8],
    result: Parsed<'a, T>,
) -> Result<Option<(&'a [u8], T)>, CodecError> {
    match result {
        Ok(done) => Ok(Some(done)),
        Err(nom::Err::Incomplete(_)) => Ok(None),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(to_codec(protocol, input, e)),
    }
}

/// Map a parse over a complete (length-bounded) input: `Incomplete` cannot
/// happen there, and is reported as `truncated` if a parser still says so.
pub fn complete_to_codec<'a, T>(
    protocol: &'static str,
    input: &'a [u8],
    result: Parsed<'a, T>,
) -> Result<(&'a [u8], T), CodecError> {
    match result {
        Ok(done) => Ok(done),
        Err(nom::Err::Incomplete(_)) => Err(CodecError::Syntax {
            protocol,
            offset: input.len(),
            expected: "more bytes",
        }),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(to_codec(protocol, input, e)),
    }
}

/// The [`CodecError`] of a [`Fail`] from parsing `input`.
pub fn to_codec(protocol: &'static str, input: &[u8], fail: Fail<'_>) -> CodecError {
    match fail {
        Fail::Codec(e) => e,
        Fail::Expected { at, expected } => CodecError::Syntax {
            protocol,
            offset: input.len().saturating_sub(at.len()),
            expected,
        },
    }
}

/// How many more bytes a streaming parser needs, when it said.
pub fn needed(result: &nom::Err<Fail<'_>>) -> Option<usize> {
    match result {
        nom::Err::Incomplete(Needed::Size(n)) => Some(n.get()),
        _ => None,
    }
}

// ---- Binary combinators of the RPC and MySQL codecs (Dubbo, Bolt, MySQL) ----

/// A streaming fixed-size array: the next `N` bytes.
pub fn array<'a, const N: usize>(input: &'a [u8]) -> Parsed<'a, &'a [u8; N]> {
    match input.split_first_chunk::<N>() {
        Some((head, rest)) => Ok((rest, head)),
        None => Err(nom::Err::Incomplete(Needed::new(N - input.len()))),
    }
}

/// A MySQL packet header: 3-byte little-endian payload length and the sequence id.
pub fn mysql_packet_header(input: &[u8]) -> Parsed<'_, (usize, u8)> {
    let (rest, &[a, b, c, seq]) = array::<4>(input)?;
    let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
    Ok((rest, (len, seq)))
}

/// A little-endian unsigned integer of `n` (≤ 8) bytes, complete input.
pub fn le_uint(n: usize) -> impl Fn(&[u8]) -> Parsed<'_, u64> {
    move |input| {
        let (rest, bytes) = nom::bytes::complete::take(n)(input)?;
        let value = bytes
            .iter()
            .rev()
            .fold(0u64, |acc: u64, &b| (acc << 8) | u64::from(b));
        Ok((rest, value))
    }
}

/// A big-endian unsigned integer of `n` (≤ 8) bytes, complete input (Hessian 2).
pub fn be_uint(n: usize) -> impl Fn(&[u8]) -> Parsed<'_, u64> {
    move |input| {
        let (rest, bytes) = nom::bytes::complete::take(n)(input)?;
        let value = bytes
            .iter()
            .fold(0u64, |acc: u64, &b| (acc << 8) | u64::from(b));
        Ok((rest, value))
    }
}

/// A MySQL length-encoded integer (complete input); `None` for the NULL
/// marker `0xFB`, a failure for `0xFF`.
pub fn lenenc_int(input: &[u8]) -> Parsed<'_, Option<u64>> {
    let (rest, first) = nom::number::complete::u8(input)?;
    match first {
        0xFB => Ok((rest, None)),
        0xFC => nom::combinator::map(le_uint(2), Some).parse_complete(rest),
        0xFD => nom::combinator::map(le_uint(3), Some).parse_complete(rest),
        0xFE => nom::combinator::map(le_uint(8), Some).parse_complete(rest),
        0xFF => expected(input, "a length-encoded integer (0xFF is not one)"),
        b => Ok((rest, Some(u64::from(b)))),
    }
}

/// A MySQL length-encoded string (complete input); NULL is an error.
pub fn lenenc_str(input: &[u8]) -> Parsed<'_, &[u8]> {
    let (rest, len) = lenenc_int(input)?;
    let Some(len) = len.and_then(|n| usize::try_from(n).ok()) else {
        return expected(input, "a length-encoded string, not NULL");
    };
    nom::bytes::complete::take(len)(rest)
}

/// A NUL-terminated string, without its NUL (complete input; the NUL is
/// found with `memchr`, as nom's byte-at-a-time `take_till` is slower).
pub fn nul_terminated(input: &[u8]) -> Parsed<'_, &[u8]> {
    match memchr::memchr(0, input) {
        Some(end) => {
            let (s, rest) = input.split_at(end);
            Ok((rest.get(1..).unwrap_or_default(), s))
        }
        None => expected(input, "a NUL-terminated string"),
    }
}

/// A hard failure carrying `error`, as a `nom::Err` (for `map_err` and `?`).
pub fn failure(error: CodecError) -> nom::Err<Fail<'static>> {
    nom::Err::Failure(Fail::Codec(error))
}

/// "Need `needed` more bytes" from a streaming parser.
pub fn incomplete<T>(needed: usize) -> Result<T, nom::Err<Fail<'static>>> {
    Err(nom::Err::Incomplete(
        std::num::NonZeroUsize::new(needed).map_or(Needed::Unknown, Needed::Size),
    ))
}

/// The [`crate::Decoder`] contract from a parser's outcome over `input`, in
/// the shape a decoder returns: `Ok(Some((value, consumed)))`, `Ok(None)`
/// when the parser needs more bytes, or the [`CodecError`] it failed with
/// (like [`nom_to_codec`], which returns the rest instead of the count).
pub fn finish<'a, T>(
    protocol: &'static str,
    input: &'a [u8],
    result: Parsed<'a, T>,
) -> Result<Option<(T, usize)>, CodecError> {
    match result {
        Ok((rest, value)) => Ok(Some((value, input.len() - rest.len()))),
        Err(nom::Err::Incomplete(_)) => Ok(None),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(to_codec(protocol, input, e)),
    }
}

/// A complete-mode parse of `input` (a body of known length) as value and
/// unparsed rest: [`complete_to_codec`] with the pair in decoder order.
pub fn complete<'a, T>(
    protocol: &'static str,
    input: &'a [u8],
    result: Parsed<'a, T>,
) -> Result<(T, &'a [u8]), CodecError> {
    complete_to_codec(protocol, input, result).map(|(rest, value)| (value, rest))
}

// ---- Line and varint combinators of the text and MQTT codecs (Redis, MQTT) ----

/// What [`crlf_line`] found instead of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFault {
    /// An LF without a CR before it.
    BareLf,
    /// More than the allowed content bytes without an LF.
    TooLong,
}

/// A streaming CRLF-terminated line of at most `max_content` bytes before
/// the CRLF: the content, and the rest after the LF. The LF is found with
/// `memchr` (the hot loop of every line protocol); `scanned` bytes at the
/// start are known to hold no LF (a resume point from an earlier
/// incomplete search, 0 if none).
///
/// Incomplete while neither an LF nor `max_content + 2` bytes are there;
/// `on_fault` names the codec's error for a bare LF or an over-long line.
#[inline(always)]
pub fn crlf_line(
    input: &[u8],
    max_content: usize,
    scanned: usize,
    on_fault: impl FnOnce(LineFault) -> CodecError,
) -> Parsed<'_, &[u8]> {
    let window_end = max_content.saturating_add(2).min(input.len());
    let from = scanned.min(window_end);
    let found = input
        .get(from..window_end)
        .and_then(|w| memchr::memchr(b'\n', w))
        .map(|i| from + i);
    match found {
        Some(lf) => match lf.checked_sub(1).map(|cr| (cr, input.get(cr))) {
            Some((cr, Some(b'\r'))) => {
                let (content, _) = input.split_at(cr);
                let rest = input.get(lf + 1..).unwrap_or_default();
                Ok((rest, content))
            }
            _ => fail(on_fault(LineFault::BareLf)),
        },
        None if input.len() >= max_content.saturating_add(2) => fail(on_fault(LineFault::TooLong)),
        None => incomplete(1),
    }
}

/// A streaming MQTT variable byte integer (1 to 4 bytes, 7 bits each, least
/// significant first): the value and the rest. A fifth continuation byte is
/// malformed.
#[inline]
pub fn mqtt_varint(input: &[u8]) -> Parsed<'_, u32> {
    let mut value: u32 = 0;
    for (i, &b) in input.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((input.get(i + 1..).unwrap_or_default(), value));
        }
    }
    if input.len() >= 4 {
        expected(input, "variable byte integer of at most 4 bytes")
    } else {
        incomplete(1)
    }
}

use nom::Parser as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_is_need_more_and_errors_carry_offset_and_expectation() {
        let input = [1u8, 2, 3];
        assert_eq!(
            nom_to_codec("test", &input, array::<4>(&input)).unwrap(),
            None
        );
        // A parser's own error comes out as it is.
        let bad_magic = CodecError::malformed("test", "bad magic");
        let own: Parsed<'_, ()> = fail(bad_magic.clone());
        assert_eq!(nom_to_codec("test", &input, own).unwrap_err(), bad_magic);
        // A grammar error names the offset in the input and what was expected.
        let payload = [7u8, 0xFF];
        let at_ff = payload.get(1..).unwrap();
        assert_eq!(
            nom_to_codec("test", &payload, lenenc_int(at_ff)).unwrap_err(),
            CodecError::Syntax {
                protocol: "test",
                offset: 1,
                expected: "a length-encoded integer (0xFF is not one)"
            }
        );
        // The offset is where the parser stopped inside the input it was given.
        let payload = [0xFCu8, 1];
        let err = complete_to_codec("test", &payload, lenenc_int(&payload)).unwrap_err();
        assert_eq!(
            err,
            CodecError::Syntax {
                protocol: "test",
                offset: 1,
                expected: "more bytes"
            }
        );
    }

    fn line_fault(f: LineFault) -> CodecError {
        CodecError::malformed(
            "test",
            match f {
                LineFault::BareLf => "bare LF",
                LineFault::TooLong => "too long",
            },
        )
    }

    fn line(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, CodecError> {
        finish("test", input, crlf_line(input, max, 0, line_fault))
    }

    #[test]
    fn lines() {
        assert_eq!(line(b"OK\r\nrest", 10), Ok(Some((&b"OK"[..], 4))));
        assert_eq!(line(b"OK\r", 10), Ok(None));
        assert_eq!(line(b"OK", 2), Ok(None));
        assert_eq!(line(b"abcd\r\n", 4), Ok(Some((&b"abcd"[..], 6))));
        assert_eq!(
            line(b"abcde\r\n", 4),
            Err(CodecError::malformed("test", "too long"))
        );
        assert_eq!(
            line(b"OK\n", 10),
            Err(CodecError::malformed("test", "bare LF"))
        );
        assert_eq!(
            line(b"\n", 10),
            Err(CodecError::malformed("test", "bare LF"))
        );
        // A resume point past the start still finds the same line.
        let input = b"0123456789\r\n";
        assert_eq!(
            finish("test", input, crlf_line(input, 20, 8, line_fault)),
            Ok(Some((&b"0123456789"[..], 12)))
        );
    }

    #[test]
    fn varints() {
        let v = |b: &[u8]| finish("test", b, mqtt_varint(b));
        assert_eq!(v(&[0x00]), Ok(Some((0, 1))));
        assert_eq!(v(&[0x7f, 0xff]), Ok(Some((127, 1))));
        assert_eq!(v(&[0x80, 0x01]), Ok(Some((128, 2))));
        assert_eq!(v(&[0xff, 0xff, 0xff, 0x7f]), Ok(Some((268_435_455, 4))));
        assert_eq!(v(&[0x80, 0x80]), Ok(None));
        assert_eq!(v(&[]), Ok(None));
        assert_eq!(
            v(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(CodecError::Syntax {
                protocol: "test",
                offset: 0,
                expected: "variable byte integer of at most 4 bytes"
            })
        );
    }

    #[test]
    fn finish_and_complete_name_the_offset_and_what_was_expected() {
        use nom::Parser;
        use nom::bytes::streaming::tag;
        use nom::error::context;
        let input = b"AB-CD";
        let mut p = (tag(&b"AB"[..]), context("a space", tag(&b" "[..])));
        assert_eq!(
            finish("test", input, p.parse(input)),
            Err(CodecError::Syntax {
                protocol: "test",
                offset: 2,
                expected: "a space"
            })
        );
        // Streaming: a prefix of what is wanted is "need more".
        assert_eq!(finish("test", b"A", p.parse(b"A")), Ok(None));
        // Complete mode: it is malformed.
        assert!(matches!(
            complete("test", b"A", p.parse(b"A")),
            Err(CodecError::Syntax { .. })
        ));
        // The codec's own error passes through unchanged.
        let own = CodecError::HeadTooLarge { limit: 3 };
        let own_fail: Parsed<'_, ()> = fail(own.clone());
        assert_eq!(finish("test", input, own_fail), Err(own));
    }

    #[test]
    fn mysql_header_reads_length_and_sequence() {
        let (rest, (len, seq)) = mysql_packet_header(&[0x03, 0x01, 0x00, 7, 0xAA]).unwrap();
        assert_eq!((len, seq, rest), (0x103, 7, &[0xAA][..]));
    }

    #[test]
    fn lenenc_at_every_width() {
        assert_eq!(lenenc_int(&[250]).unwrap().1, Some(250));
        assert_eq!(lenenc_int(&[0xFB]).unwrap().1, None);
        assert_eq!(lenenc_int(&[0xFC, 0x34, 0x12]).unwrap().1, Some(0x1234));
        assert_eq!(lenenc_int(&[0xFD, 3, 2, 1]).unwrap().1, Some(0x010203));
        assert_eq!(
            lenenc_int(&[0xFE, 8, 7, 6, 5, 4, 3, 2, 1]).unwrap().1,
            Some(0x0102030405060708)
        );
    }
}
