//! nom 8 underneath the codecs: the one error type their parsers carry, the
//! one mapping of a parser's outcome onto the [`crate::Decoder`] contract,
//! and the few combinators several codecs share.
//!
//! * A codec's parser is a nom parser over `&[u8]` returning [`PResult`].
//! * Streaming parsers (framing: "is the whole frame here?") answer
//!   `nom::Err::Incomplete`, which [`finish`] turns into the contract's
//!   `Ok(None)`. Inside a body whose length is already known, parsers run in
//!   complete mode: running out of bytes there is malformed, not "need more".
//! * A codec that knows exactly what is wrong fails with its own
//!   [`CodecError`] through [`fail`] (a `nom::Err::Failure`: no alternative
//!   is tried). Any other nom error (a `tag` that did not match, a
//!   [`nom::error::context`] label) becomes [`CodecError::Expected`] with the
//!   byte offset where the parser stopped and what it expected there.
//! * Values are `&[u8]` sub-slices of the input; decoders turn them back into
//!   zero-copy views with `Bytes::slice_ref`.
use nom::error::{ContextError, ErrorKind, FromExternalError, ParseError};
use nom::{IResult, Needed};

use crate::CodecError;

/// What every codec parser returns.
pub(crate) type PResult<'a, O> = IResult<&'a [u8], O, Fail>;

/// Why a codec parser stopped: where, and what it wanted there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    /// Bytes of input left where the parser stopped (the offset is the
    /// input's length minus this).
    pub remaining: usize,
    pub why: Why,
}

/// What went wrong, from the most to the least specific.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Why {
    /// The codec's own verdict (an over-limit length, a reserved bit, ...).
    Codec(CodecError),
    /// A [`nom::error::context`] label: what the parser expected.
    Expected(&'static str),
    /// A bare nom combinator failed.
    Kind(ErrorKind),
}

impl<'a> ParseError<&'a [u8]> for Fail {
    fn from_error_kind(input: &'a [u8], kind: ErrorKind) -> Self {
        Fail {
            remaining: input.len(),
            why: Why::Kind(kind),
        }
    }

    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<'a> ContextError<&'a [u8]> for Fail {
    /// The innermost label wins: it is the most precise.
    fn add_context(_: &'a [u8], ctx: &'static str, mut other: Self) -> Self {
        if let Why::Kind(_) = other.why {
            other.why = Why::Expected(ctx);
        }
        other
    }
}

impl<'a, E> FromExternalError<&'a [u8], E> for Fail {
    fn from_external_error(input: &'a [u8], kind: ErrorKind, _: E) -> Self {
        Self::from_error_kind(input, kind)
    }
}

/// A `nom::Err::Failure` carrying the codec's own `error`, at `input`.
pub(crate) fn failure(input: &[u8], error: CodecError) -> nom::Err<Fail> {
    nom::Err::Failure(Fail {
        remaining: input.len(),
        why: Why::Codec(error),
    })
}

/// Fail the parse at `input` with the codec's own `error`.
pub(crate) fn fail<O>(input: &[u8], error: CodecError) -> PResult<'_, O> {
    Err(failure(input, error))
}

/// "Need more bytes" from a streaming parser.
pub(crate) fn incomplete<O>(needed: usize) -> PResult<'static, O> {
    Err(nom::Err::Incomplete(
        std::num::NonZeroUsize::new(needed).map_or(Needed::Unknown, Needed::Size),
    ))
}

/// The [`crate::Decoder`] contract from a parser's outcome over `input`:
/// `Ok(Some((value, consumed)))`, `Ok(None)` when the parser needs more
/// bytes, or the [`CodecError`] the parser failed with.
pub(crate) fn finish<'a, O>(
    protocol: &'static str,
    input: &'a [u8],
    result: PResult<'a, O>,
) -> Result<Option<(O, usize)>, CodecError> {
    match result {
        Ok((rest, value)) => Ok(Some((value, input.len() - rest.len()))),
        Err(nom::Err::Incomplete(_)) => Ok(None),
        Err(nom::Err::Error(f) | nom::Err::Failure(f)) => Err(to_codec_error(protocol, input, f)),
    }
}

/// How many more bytes a streaming parser said it needs (0 if it did not
/// say, or did not ask): what to reserve before reading again.
pub(crate) fn needed<O>(result: &PResult<'_, O>) -> usize {
    match result {
        Err(nom::Err::Incomplete(Needed::Size(n))) => n.get(),
        _ => 0,
    }
}

/// A complete-mode parse of `input` (a body of known length): incomplete
/// input is malformed. Returns the value and the unparsed rest.
pub(crate) fn complete<'a, O>(
    protocol: &'static str,
    input: &'a [u8],
    result: PResult<'a, O>,
) -> Result<(O, &'a [u8]), CodecError> {
    match result {
        Ok((rest, value)) => Ok((value, rest)),
        Err(nom::Err::Incomplete(_)) => Err(CodecError::Expected {
            protocol,
            offset: input.len(),
            expected: "more bytes than the length allows",
        }),
        Err(nom::Err::Error(f) | nom::Err::Failure(f)) => Err(to_codec_error(protocol, input, f)),
    }
}

fn to_codec_error(protocol: &'static str, input: &[u8], f: Fail) -> CodecError {
    let offset = input.len().saturating_sub(f.remaining);
    match f.why {
        Why::Codec(error) => error,
        Why::Expected(expected) => CodecError::Expected {
            protocol,
            offset,
            expected,
        },
        Why::Kind(kind) => CodecError::Expected {
            protocol,
            offset,
            expected: expected_by(kind),
        },
    }
}

/// What a bare nom combinator that failed was looking for.
fn expected_by(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Tag => "a literal",
        ErrorKind::Char | ErrorKind::OneOf => "a particular character",
        ErrorKind::Digit => "a digit",
        ErrorKind::Space | ErrorKind::MultiSpace => "whitespace",
        ErrorKind::CrLf => "CRLF",
        ErrorKind::Eof => "the end",
        ErrorKind::MapRes | ErrorKind::MapOpt | ErrorKind::Verify => "a valid value",
        _ => "valid syntax",
    }
}

/// What [`crlf_line`] found instead of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFault {
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
pub(crate) fn crlf_line(
    input: &[u8],
    max_content: usize,
    scanned: usize,
    on_fault: impl FnOnce(LineFault) -> CodecError,
) -> PResult<'_, &[u8]> {
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
            _ => fail(
                input.get(lf..).unwrap_or_default(),
                on_fault(LineFault::BareLf),
            ),
        },
        None if input.len() >= max_content.saturating_add(2) => fail(
            input.get(window_end..).unwrap_or_default(),
            on_fault(LineFault::TooLong),
        ),
        None => incomplete(1),
    }
}

/// A streaming MQTT variable byte integer (1 to 4 bytes, 7 bits each, least
/// significant first): the value and the rest. A fifth continuation byte is
/// malformed.
#[inline]
pub(crate) fn mqtt_varint(input: &[u8]) -> PResult<'_, u32> {
    let mut value: u32 = 0;
    for (i, &b) in input.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((input.get(i + 1..).unwrap_or_default(), value));
        }
    }
    if input.len() >= 4 {
        Err(nom::Err::Error(Fail {
            remaining: input.len(),
            why: Why::Expected("variable byte integer of at most 4 bytes"),
        }))
    } else {
        incomplete(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nom::Parser;
    use nom::bytes::streaming::tag;
    use nom::error::context;

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
            Err(CodecError::Expected {
                protocol: "test",
                offset: 0,
                expected: "variable byte integer of at most 4 bytes"
            })
        );
    }

    #[test]
    fn errors_name_the_offset_and_what_was_expected() {
        let input = b"AB-CD";
        let mut p = (tag(&b"AB"[..]), context("a space", tag(&b" "[..])));
        assert_eq!(
            finish("test", input, p.parse(input)),
            Err(CodecError::Expected {
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
            Err(CodecError::Expected { .. })
        ));
        // The codec's own error passes through unchanged.
        let own = CodecError::HeadTooLarge { limit: 3 };
        assert_eq!(
            finish("test", input, fail::<()>(&input[1..], own.clone())),
            Err(own)
        );
    }
}
