//! Body framing as an incremental state machine over raw bytes: it only
//! decides how many bytes at the front of the buffer belong to the current
//! body (chunk framing included), so they can be forwarded unchanged without
//! ever buffering a whole chunk.
use super::{PROTOCOL, is_tchar};
use crate::CodecError;

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

fn advance_chunked(
    chunk: &mut Chunk,
    buf: &[u8],
    max_trailer: usize,
) -> Result<(usize, bool), CodecError> {
    let mut i = 0;
    while let Some(&b) = buf.get(i) {
        if let Chunk::Data { remaining } = chunk {
            let n = clamp(*remaining, buf.len() - i);
            *remaining -= n as u64;
            i += n;
            if *remaining == 0 {
                *chunk = Chunk::DataCr;
            }
            continue;
        }
        i += 1;
        *chunk = match *chunk {
            Chunk::Size {
                value,
                digits,
                line,
            } => {
                let line = line + 1;
                if line > MAX_CHUNK_LINE {
                    return Err(line_too_long(line));
                }
                if let Some(d) = hex_value(b) {
                    let value = value
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(d))
                        .ok_or_else(|| malformed("chunk size overflows"))?;
                    Chunk::Size {
                        value,
                        digits: digits + 1,
                        line,
                    }
                } else if digits == 0 {
                    return Err(malformed("invalid chunk size"));
                } else {
                    match b {
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
                        _ => return Err(malformed("invalid chunk size")),
                    }
                }
            }
            Chunk::Ext {
                value,
                line,
                in_ext,
            } => {
                let line = line + 1;
                if line > MAX_CHUNK_LINE {
                    return Err(line_too_long(line));
                }
                match b {
                    b'\r' => Chunk::SizeLf { value },
                    b';' => Chunk::Ext {
                        value,
                        line,
                        in_ext: true,
                    },
                    b' ' | b'\t' => Chunk::Ext {
                        value,
                        line,
                        in_ext,
                    },
                    _ if in_ext && !is_ctl(b) => Chunk::Ext {
                        value,
                        line,
                        in_ext,
                    },
                    _ => return Err(malformed("invalid chunk extension")),
                }
            }
            Chunk::SizeLf { value } => match b {
                b'\n' if value == 0 => Chunk::Trailer {
                    total: 0,
                    line: 0,
                    in_name: true,
                    cr: false,
                },
                b'\n' => Chunk::Data { remaining: value },
                _ => return Err(malformed("chunk-size line not ended by CRLF")),
            },
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(malformed("chunk data not followed by CRLF")),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::START,
                _ => return Err(malformed("chunk data not followed by CRLF")),
            },
            Chunk::Trailer {
                total,
                line,
                in_name,
                cr,
            } => {
                let total = total + 1;
                if total > max_trailer {
                    return Err(CodecError::HeadTooLarge { limit: max_trailer });
                }
                if cr {
                    if b != b'\n' {
                        return Err(malformed("bare CR in trailer section"));
                    }
                    if line == 0 {
                        *chunk = Chunk::Trailer {
                            total,
                            line,
                            in_name,
                            cr: false,
                        };
                        return Ok((i, true));
                    }
                    if in_name {
                        return Err(malformed("trailer field without a colon"));
                    }
                    Chunk::Trailer {
                        total,
                        line: 0,
                        in_name: true,
                        cr: false,
                    }
                } else {
                    match b {
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
                        _ if in_name && is_tchar(b) => Chunk::Trailer {
                            total,
                            line: line + 1,
                            in_name,
                            cr,
                        },
                        b'\t' if !in_name => Chunk::Trailer {
                            total,
                            line: line + 1,
                            in_name,
                            cr,
                        },
                        _ if !in_name && !is_ctl(b) => Chunk::Trailer {
                            total,
                            line: line + 1,
                            in_name,
                            cr,
                        },
                        _ => return Err(malformed("invalid trailer field")),
                    }
                }
            }
            // Handled above the match.
            Chunk::Data { remaining } => Chunk::Data { remaining },
        };
    }
    Ok((i, false))
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
