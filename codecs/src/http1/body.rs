//! Body framing as an incremental state machine over raw bytes, each chunked
//! state's grammar a nom parser (see [`advance_chunked`]): it only
//! decides how many bytes at the front of the buffer belong to the current
//! body (chunk framing included), so they can be forwarded unchanged without
//! ever buffering a whole chunk.
use nom::bytes::complete::take_while;
use nom::number::complete::u8;

use super::{PROTOCOL, is_tchar};
use crate::CodecError;
use crate::parse::{Fail, Parsed, expected, fail};

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Where a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyState {
    /// `Content-Length`: bytes still to come.
    Length { remaining: u64 },
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Until the connection closes.
    UntilClose,
}

/// Position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// In the hex digits of a chunk size (`line` bytes of the line so far).
    Size {
        value: u64,
        digits: usize,
        line: usize,
    },
    /// After the digits: optional whitespace, then `;` extensions, until CR.
    Ext {
        value: u64,
        line: usize,
        in_ext: bool,
    },
    /// The chunk-size line's CR was seen; LF must follow.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// After the last-chunk: trailer field lines until an empty line.
    Trailer {
        total: usize,
        line: usize,
        in_name: bool,
        cr: bool,
    },
}

impl Chunk {
    pub(super) const START: Chunk = Chunk::Size {
        value: 0,
        digits: 0,
        line: 0,
    };
}

fn malformed(reason: &'static str) -> CodecError {
    CodecError::malformed(PROTOCOL, reason)
}

/// Advance `state` over the front of `buf`. Returns how many bytes belong to
/// the body and whether the body ended with the last of them. Consumes at
/// least one byte when `buf` is not empty (or fails).
pub(super) fn advance(
    state: &mut BodyState,
    buf: &[u8],
    max_trailer: usize,
) -> Result<(usize, bool), CodecError> {
    match state {
        BodyState::Length { remaining } => {
            let n = clamp(*remaining, buf.len());
            *remaining -= n as u64;
            Ok((n, *remaining == 0))
        }
        BodyState::UntilClose => Ok((buf.len(), false)),
        BodyState::Chunked(chunk) => advance_chunked(chunk, buf, max_trailer),
    }
}

/// `min(remaining, available)` as a `usize`.
fn clamp(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Advance over the front of `buf` in a chunked body. Each state's grammar is
/// a nom parser (complete mode over the bytes that are there) that takes the
/// longest run valid in that state and the byte that ends it, so every byte
/// is handed out as soon as it is known to belong to the body, and a state
/// resumes where the last buffer ended. Chunk data is counted, not parsed.
fn advance_chunked(
    chunk: &mut Chunk,
    buf: &[u8],
    max_trailer: usize,
) -> Result<(usize, bool), CodecError> {
    let mut i = 0;
    while let Some(input) = buf.get(i..).filter(|rest| !rest.is_empty()) {
        if let Chunk::Data { remaining } = chunk {
            let n = clamp(*remaining, input.len());
            *remaining -= n as u64;
            i += n;
            if *remaining == 0 {
                *chunk = Chunk::DataCr;
            }
            continue;
        }
        let (rest, step) = match chunk_step(*chunk, input, max_trailer) {
            Ok(done) => done,
            Err(nom::Err::Error(fail) | nom::Err::Failure(fail)) => return Err(to_error(fail)),
            // Complete-mode parsers over non-empty input; kept total all the same.
            Err(nom::Err::Incomplete(_)) => return Ok((i, false)),
        };
        i += input.len() - rest.len();
        match step {
            Step::Next(next) => *chunk = next,
            Step::End(last) => {
                *chunk = last;
                return Ok((i, true));
            }
        }
    }
    Ok((i, false))
}

/// What one state's parser decided.
enum Step {
    /// Go on in this state.
    Next(Chunk),
    /// The body ended (the empty line after the trailers).
    End(Chunk),
}

/// The chunked grammar's errors keep the HTTP/1 codec's `Malformed` reasons
/// (what was expected, in words); limits are their own errors.
fn to_error(fail: Fail<'_>) -> CodecError {
    match fail {
        Fail::Codec(e) => e,
        Fail::Expected { expected, .. } => malformed(expected),
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte of a chunk extension (`;` and whitespace included).
fn is_ext(b: u8) -> bool {
    !is_ctl(b)
}

/// A byte of a trailer field value.
fn is_field_value(b: u8) -> bool {
    b == b'\t' || !is_ctl(b)
}

/// `line` bytes of a chunk-size line, if within the limit.
fn check_line<'a>(line: usize) -> Result<usize, nom::Err<Fail<'a>>> {
    if line > MAX_CHUNK_LINE {
        return fail(line_too_long(MAX_CHUNK_LINE + 1));
    }
    Ok(line)
}

/// One state's parser over `input` (not empty, not chunk data).
fn chunk_step(chunk: Chunk, input: &[u8], max_trailer: usize) -> Parsed<'_, Step> {
    match chunk {
        Chunk::Size {
            value,
            digits,
            line,
        } => {
            let (rest, run) = take_while(is_hex)(input)?;
            let line = check_line(line + run.len())?;
            let Some(value) = run
                .iter()
                .try_fold(value, |v, &b| v.checked_mul(16)?.checked_add(hex_value(b)?))
            else {
                return fail(malformed("chunk size overflows"));
            };
            let digits = digits + run.len();
            let Some((&b, after)) = rest.split_first() else {
                return Ok((
                    rest,
                    Step::Next(Chunk::Size {
                        value,
                        digits,
                        line,
                    }),
                ));
            };
            let line = check_line(line + 1)?;
            if digits == 0 {
                return expected(rest, "invalid chunk size");
            }
            let next = match b {
                b'\r' => Chunk::SizeLf { value },
                b';' => Chunk::Ext {
                    value,
                    line,
                    in_ext: true,
                },
                b' ' | b'\t' => Chunk::Ext {
                    value,
                    line,
                    in_ext: false,
                },
                _ => return expected(rest, "invalid chunk size"),
            };
            Ok((after, Step::Next(next)))
        }
        Chunk::Ext {
            value,
            line,
            in_ext,
        } => {
            let (rest, run) = take_while(if in_ext { is_ext } else { is_ws })(input)?;
            let line = check_line(line + run.len())?;
            let Some((&b, after)) = rest.split_first() else {
                return Ok((
                    rest,
                    Step::Next(Chunk::Ext {
                        value,
                        line,
                        in_ext,
                    }),
                ));
            };
            let line = check_line(line + 1)?;
            let next = match b {
                b'\r' => Chunk::SizeLf { value },
                b';' => Chunk::Ext {
                    value,
                    line,
                    in_ext: true,
                },
                _ => return expected(rest, "invalid chunk extension"),
            };
            Ok((after, Step::Next(next)))
        }
        Chunk::SizeLf { value } => {
            let (rest, _) = byte(b'\n', "chunk-size line not ended by CRLF")(input)?;
            let next = if value == 0 {
                Chunk::Trailer {
                    total: 0,
                    line: 0,
                    in_name: true,
                    cr: false,
                }
            } else {
                Chunk::Data { remaining: value }
            };
            Ok((rest, Step::Next(next)))
        }
        Chunk::DataCr => {
            let (rest, _) = byte(b'\r', "chunk data not followed by CRLF")(input)?;
            Ok((rest, Step::Next(Chunk::DataLf)))
        }
        Chunk::DataLf => {
            let (rest, _) = byte(b'\n', "chunk data not followed by CRLF")(input)?;
            Ok((rest, Step::Next(Chunk::START)))
        }
        Chunk::Trailer {
            total,
            line,
            in_name,
            cr,
        } => trailer_step(total, line, in_name, cr, input, max_trailer),
        // Counted by the caller.
        Chunk::Data { remaining } => Ok((input, Step::Next(Chunk::Data { remaining }))),
    }
}

/// The trailer section: field lines (`name:value CRLF`) until an empty line,
/// at most `max_trailer` bytes in all.
fn trailer_step(
    total: usize,
    line: usize,
    in_name: bool,
    cr: bool,
    input: &[u8],
    max_trailer: usize,
) -> Parsed<'_, Step> {
    let within = |total: usize| {
        if total > max_trailer {
            fail(CodecError::HeadTooLarge { limit: max_trailer })
        } else {
            Ok(total)
        }
    };
    if cr {
        let total = within(total + 1)?;
        let (rest, _) = byte(b'\n', "bare CR in trailer section")(input)?;
        let next = Chunk::Trailer {
            total,
            line: 0,
            in_name: true,
            cr: false,
        };
        return match (line, in_name) {
            (0, _) => Ok((
                rest,
                Step::End(Chunk::Trailer {
                    total,
                    line,
                    in_name,
                    cr: false,
                }),
            )),
            (_, true) => expected(input, "trailer field without a colon"),
            (_, false) => Ok((rest, Step::Next(next))),
        };
    }
    let (rest, run) = take_while(if in_name { is_tchar } else { is_field_value })(input)?;
    let total = within(total + run.len())?;
    let line = line + run.len();
    let Some((&b, after)) = rest.split_first() else {
        return Ok((
            rest,
            Step::Next(Chunk::Trailer {
                total,
                line,
                in_name,
                cr,
            }),
        ));
    };
    let total = within(total + 1)?;
    let next = match b {
        b'\r' => Chunk::Trailer {
            total,
            line,
            in_name,
            cr: true,
        },
        b':' if in_name && line > 0 => Chunk::Trailer {
            total,
            line: line + 1,
            in_name: false,
            cr,
        },
        _ => return expected(rest, "invalid trailer field"),
    };
    Ok((after, Step::Next(next)))
}

/// Exactly the byte `want`; `reason` when another is there.
fn byte(want: u8, reason: &'static str) -> impl Fn(&[u8]) -> Parsed<'_, u8> {
    move |input| match u8::<_, Fail<'_>>(input) {
        Ok((rest, b)) if b == want => Ok((rest, b)),
        _ => expected(input, reason),
    }
}

fn line_too_long(line: usize) -> CodecError {
    CodecError::FrameTooLarge {
        what: "chunk-size line",
        size: line as u64,
        limit: MAX_CHUNK_LINE,
    }
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Control bytes (other than HTAB, which callers allow where it is valid) and DEL.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}
