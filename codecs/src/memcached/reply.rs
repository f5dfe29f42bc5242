//! Server replies, framed one per request: a retrieval's `VALUE` blocks and
//! their `END` are one reply, so are `stats`' `STAT` lines and their `END`;
//! a meta `VA` line with its data block is one; every other reply is a line.

use bytes::{Bytes, BytesMut};
use nom::IResult;
use nom::Parser;

use super::{Limits, PROTOCOL, data_block, line, number, tokens};
use crate::CodecError;

/// What a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `VALUE ...` blocks and `END` (also a bare `END`: no key found).
    Values,
    /// `STAT ...` lines and `END`.
    Stats,
    /// A meta `VA <size> ...` line and its data block.
    MetaValue,
    /// `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`.
    Error,
    /// Any other one-line reply (`STORED`, `HD`, `EN`, a number, `VERSION ...`).
    Line,
}

/// One reply as it came from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    wire: Bytes,
    kind: ReplyKind,
}

impl Reply {
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
    pub fn kind(&self) -> ReplyKind {
        self.kind
    }
}

/// Decodes server replies.
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    limits: Limits,
}

impl ReplyDecoder {
    pub fn new(limits: Limits) -> Self {
        ReplyDecoder { limits }
    }
}

/// The `bytes` field of a `VALUE <key> <flags> <bytes> [<cas>]` line.
fn value_size(text: &[u8]) -> Option<u64> {
    number(tokens(text).nth(3))
}

/// One more line within `limit`, or the decode outcome that stops here.
fn bounded_line(input: &[u8], limit: usize) -> Result<Option<(usize, &[u8])>, CodecError> {
    let window = input.get(..limit).unwrap_or(input);
    match line(window) {
        Ok((rest, text)) => Ok(Some((window.len() - rest.len(), text))),
        Err(nom::Err::Incomplete(_)) if input.len() >= limit => {
            Err(CodecError::HeadTooLarge { limit })
        }
        Err(nom::Err::Incomplete(_)) => Ok(None),
        Err(_) => Err(CodecError::malformed(PROTOCOL, "bad reply line")),
    }
}

/// A data block of `size` at `input`: its length with `\r\n`, or `None` (need more).
fn bounded_block(input: &[u8], size: u64, limits: &Limits) -> Result<Option<usize>, CodecError> {
    if size > limits.max_value as u64 {
        return Err(CodecError::FrameTooLarge {
            what: "memcached value",
            size,
            limit: limits.max_value,
        });
    }
    let size = size as usize;
    let parsed: IResult<&[u8], &[u8]> = data_block(size).parse(input);
    match parsed {
        Ok(_) => Ok(Some(size + 2)),
        Err(nom::Err::Incomplete(_)) => Ok(None),
        Err(_) => Err(CodecError::malformed(PROTOCOL, "bad data block in a reply")),
    }
}

impl crate::Decoder for ReplyDecoder {
    type Item = Reply;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, CodecError> {
        let limits = self.limits;
        let Some((first_len, first)) = bounded_line(src, limits.max_line)? else {
            return Ok(None);
        };
        let kind = if first.starts_with(b"VALUE ") {
            ReplyKind::Values
        } else if first.starts_with(b"STAT ") {
            ReplyKind::Stats
        } else if first.starts_with(b"VA ") {
            ReplyKind::MetaValue
        } else if first == b"ERROR"
            || first.starts_with(b"CLIENT_ERROR")
            || first.starts_with(b"SERVER_ERROR")
        {
            ReplyKind::Error
        } else if first == b"END" {
            ReplyKind::Values
        } else {
            ReplyKind::Line
        };
        let total = match kind {
            ReplyKind::MetaValue => {
                let Some(size) = number(tokens(first).nth(1)) else {
                    return Err(CodecError::malformed(PROTOCOL, "VA without a size"));
                };
                let rest = src.get(first_len..).unwrap_or_default();
                match bounded_block(rest, size, &limits)? {
                    Some(n) => first_len + n,
                    None => return Ok(None),
                }
            }
            ReplyKind::Values if first != b"END" => {
                let mut at = 0;
                let mut count = 0usize;
                loop {
                    let rest = src.get(at..).unwrap_or_default();
                    let Some((n, text)) = bounded_line(rest, limits.max_line)? else {
                        return Ok(None);
                    };
                    at += n;
                    if text == b"END" {
                        break at;
                    }
                    if !text.starts_with(b"VALUE ") {
                        return Err(CodecError::malformed(PROTOCOL, "expected VALUE or END"));
                    }
                    count += 1;
                    if count > limits.max_keys {
                        return Err(CodecError::TooMany {
                            what: "memcached values",
                            count: count as u64,
                            limit: limits.max_keys,
                        });
                    }
                    let Some(size) = value_size(text) else {
                        return Err(CodecError::malformed(PROTOCOL, "VALUE without a size"));
                    };
                    let rest = src.get(at..).unwrap_or_default();
                    match bounded_block(rest, size, &limits)? {
                        Some(n) => at += n,
                        None => return Ok(None),
                    }
                }
            }
            ReplyKind::Stats => {
                let mut at = first_len;
                let mut lines = 1usize;
                loop {
                    let rest = src.get(at..).unwrap_or_default();
                    let Some((n, text)) = bounded_line(rest, limits.max_line)? else {
                        return Ok(None);
                    };
                    at += n;
                    lines += 1;
                    if text == b"END" {
                        break at;
                    }
                    if lines > limits.max_keys {
                        return Err(CodecError::TooMany {
                            what: "memcached stats lines",
                            count: lines as u64,
                            limit: limits.max_keys,
                        });
                    }
                }
            }
            _ => first_len,
        };
        Ok(Some(Reply {
            wire: src.split_to(total).freeze(),
            kind,
        }))
    }
}

/// One `VALUE` block of a retrieval reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    pub key: &'a [u8],
    /// The `VALUE` line, its data block and line ends, as on the wire.
    pub block: &'a [u8],
}

/// The `VALUE` blocks of a (decoded) retrieval reply, in order.
pub fn values(reply: &[u8]) -> impl Iterator<Item = Value<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = reply.get(at..)?;
        let (after, text) = line(rest).ok()?;
        if !text.starts_with(b"VALUE ") {
            return None;
        }
        let line_len = rest.len() - after.len();
        let key = tokens(text).nth(1)?;
        let size = usize::try_from(value_size(text)?).ok()?;
        let len = line_len + size + 2;
        let block = rest.get(..len)?;
        at += len;
        Some(Value { key, block })
    })
}
