//! A full RESP2/RESP3 value model: decode a framed reply into a tree, encode a
//! tree back to the exact bytes.
use bytes::{Bytes, BytesMut};

use super::parse::{self, malformed};
use super::{Limits, ReplyDecoder};
use crate::{CodecError, Decoder};

/// Deepest nesting [`Reply::to_value`](super::Reply::to_value) recurses into.
const MAX_VALUE_DEPTH: usize = 512;

/// A RESP2/RESP3 value.
///
/// The three nulls are kept apart (`$-1`, `*-1`, `_`) so that decoding then
/// encoding gives back the same bytes; [`Value::is_null`] covers all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR message` (the line after `-`).
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// RESP3 null `_`.
    Null,
    /// RESP2 null bulk string `$-1`.
    NullBulk,
    /// RESP2 null array `*-1`.
    NullArray,
    /// `*N`
    Array(Vec<Value>),
    /// `#t` / `#f`
    Boolean(bool),
    /// `,3.14` — the text as sent (`inf`, `-inf`, `nan` included).
    Double(Bytes),
    /// `(12345678901234567890` — the digits as sent.
    BigNumber(Bytes),
    /// `!N\r\n...` blob error.
    BlobError(Bytes),
    /// `=N\r\ntxt:...` verbatim string.
    Verbatim { format: [u8; 3], text: Bytes },
    /// `%N` map, pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// `~N` set, in wire order.
    Set(Vec<Value>),
    /// `|N` attribute pairs, then the value they annotate.
    Attribute(Vec<(Value, Value)>, Box<Value>),
    /// `>N` out-of-band push.
    Push(Vec<Value>),
}

impl Value {
    /// `$-1`, `*-1` or `_`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null | Value::NullBulk | Value::NullArray)
    }

    /// Decode one complete value off the front of `src` (`Ok(None)`: incomplete,
    /// nothing consumed). Framing and limits are those of [`ReplyDecoder`].
    pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Value>, CodecError> {
        let mut decoder = ReplyDecoder::new(*limits);
        match decoder.decode(src)? {
            Some(reply) => reply.to_value().map(Some),
            None => Ok(None),
        }
    }

    /// Append the RESP encoding of this value.
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        dst.extend_from_slice(&out);
    }

    /// The RESP encoding of this value.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        Bytes::from(out)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(s) => line(out, b'+', s),
            Value::Error(s) => line(out, b'-', s),
            Value::Integer(n) => {
                out.push(b':');
                parse::put_int(out, *n);
                out.extend_from_slice(b"\r\n");
            }
            Value::Bulk(b) => blob(out, b'$', &[b]),
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(items) => list(out, b'*', items),
            Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Double(d) => line(out, b',', d),
            Value::BigNumber(d) => line(out, b'(', d),
            Value::BlobError(b) => blob(out, b'!', &[b]),
            Value::Verbatim { format, text } => blob(out, b'=', &[format, b":", text]),
            Value::Map(pairs) => map(out, b'%', pairs),
            Value::Set(items) => list(out, b'~', items),
            Value::Attribute(pairs, value) => {
                map(out, b'|', pairs);
                value.encode_into(out);
            }
            Value::Push(items) => list(out, b'>', items),
        }
    }
}

fn header(out: &mut Vec<u8>, t: u8, n: usize) {
    out.push(t);
    parse::put_int(out, i64::try_from(n).unwrap_or(i64::MAX));
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, t: u8, content: &[u8]) {
    out.push(t);
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
}

fn blob(out: &mut Vec<u8>, t: u8, parts: &[&[u8]]) {
    header(out, t, parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

fn list(out: &mut Vec<u8>, t: u8, items: &[Value]) {
    header(out, t, items.len());
    for item in items {
        item.encode_into(out);
    }
}

fn map(out: &mut Vec<u8>, t: u8, pairs: &[(Value, Value)]) {
    header(out, t, pairs.len());
    for (k, v) in pairs {
        k.encode_into(out);
        v.encode_into(out);
    }
}

/// Parse one complete, already framed reply, without recursion.
pub(super) fn from_wire(wire: &Bytes) -> Result<Value, CodecError> {
    let mut pos = 0;
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        let mut done = match parse_one(wire, &mut pos)? {
            Parsed::Value(v) => v,
            Parsed::Open(frame) => {
                if stack.len() >= MAX_VALUE_DEPTH {
                    return Err(CodecError::FrameTooLarge {
                        what: "reply value (nesting depth)",
                        size: stack.len() as u64 + 1,
                        limit: MAX_VALUE_DEPTH,
                    });
                }
                stack.push(frame);
                continue;
            }
        };
        // Hand the finished value to the open aggregates, closing those it completes.
        loop {
            let Some(top) = stack.last_mut() else {
                if pos != wire.len() {
                    return Err(malformed("trailing bytes after a reply"));
                }
                return Ok(done);
            };
            match top.push(done) {
                None => break,
                Some(Closed::Value(v)) => {
                    stack.pop();
                    done = v;
                }
                Some(Closed::AttributePairs(pairs)) => {
                    // The annotated value follows at the same level.
                    stack.pop();
                    stack.push(Frame::Annotated(pairs));
                    break;
                }
            }
        }
    }
}

/// An aggregate being filled.
enum Frame {
    /// `*`, `~`, `>` with the count still expected.
    List { t: u8, n: usize, items: Vec<Value> },
    /// `%`, `|` with the pair count still expected and a key waiting for its value.
    Pairs {
        t: u8,
        n: usize,
        pairs: Vec<(Value, Value)>,
        key: Option<Value>,
    },
    /// An attribute's pairs, waiting for the value they annotate.
    Annotated(Vec<(Value, Value)>),
}

enum Closed {
    Value(Value),
    AttributePairs(Vec<(Value, Value)>),
}

impl Frame {
    fn list(t: u8, n: usize) -> Frame {
        Frame::List {
            t,
            n,
            items: Vec::with_capacity(n.min(PREALLOC)),
        }
    }

    fn pairs(t: u8, n: usize) -> Frame {
        Frame::Pairs {
            t,
            n,
            pairs: Vec::with_capacity(n.min(PREALLOC)),
            key: None,
        }
    }

    /// Add one element; `Some` when that closes this frame.
    fn push(&mut self, v: Value) -> Option<Closed> {
        match self {
            Frame::List { t, n, items } => {
                items.push(v);
                (items.len() == *n).then(|| Closed::Value(close_list(*t, std::mem::take(items))))
            }
            Frame::Pairs { t, n, pairs, key } => {
                match key.take() {
                    None => {
                        *key = Some(v);
                        return None;
                    }
                    Some(k) => pairs.push((k, v)),
                }
                (pairs.len() == *n).then(|| close_pairs(*t, std::mem::take(pairs)))
            }
            Frame::Annotated(pairs) => Some(Closed::Value(Value::Attribute(
                std::mem::take(pairs),
                Box::new(v),
            ))),
        }
    }
}

fn close_list(t: u8, items: Vec<Value>) -> Value {
    match t {
        b'~' => Value::Set(items),
        b'>' => Value::Push(items),
        _ => Value::Array(items),
    }
}

fn close_pairs(t: u8, pairs: Vec<(Value, Value)>) -> Closed {
    if t == b'|' {
        Closed::AttributePairs(pairs)
    } else {
        Closed::Value(Value::Map(pairs))
    }
}

/// Elements allocated up front for an aggregate, whatever its count says.
const PREALLOC: usize = 64;

enum Parsed {
    Value(Value),
    Open(Frame),
}

fn truncated() -> CodecError {
    malformed("truncated reply")
}

/// The content of the line whose type byte is at `*pos`; advances past its CRLF.
fn take_line(wire: &Bytes, pos: &mut usize) -> Result<Bytes, CodecError> {
    match parse::find_line(wire, *pos + 1, 0, usize::MAX)? {
        Ok(l) => {
            *pos = l.next;
            Ok(wire.slice(l.start..l.end))
        }
        Err(_) => Err(truncated()),
    }
}

fn take_len(wire: &Bytes, pos: &mut usize) -> Result<i64, CodecError> {
    let (n, next) = parse::len_line(wire, *pos)?.ok_or_else(truncated)?;
    *pos = next;
    Ok(n)
}

fn take_blob(wire: &Bytes, pos: &mut usize, len: i64) -> Result<Bytes, CodecError> {
    let len = usize::try_from(len).map_err(|_| malformed("negative string length"))?;
    let end = pos.checked_add(len).ok_or_else(truncated)?;
    if wire.get(end..end.saturating_add(2)) != Some(b"\r\n".as_slice()) {
        return Err(truncated());
    }
    let body = wire.slice(*pos..end);
    *pos = end + 2;
    Ok(body)
}

/// Parse a scalar, or the header of an aggregate (empty aggregates are values).
fn parse_one(wire: &Bytes, pos: &mut usize) -> Result<Parsed, CodecError> {
    let t = *wire.get(*pos).ok_or_else(truncated)?;
    let value = match t {
        b'+' => Value::Simple(take_line(wire, pos)?),
        b'-' => Value::Error(take_line(wire, pos)?),
        b':' => {
            let l = take_line(wire, pos)?;
            Value::Integer(parse::parse_int(&l).ok_or_else(|| malformed("invalid integer reply"))?)
        }
        b'_' => {
            take_line(wire, pos)?;
            Value::Null
        }
        b'#' => match &take_line(wire, pos)?[..] {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(malformed("invalid boolean reply")),
        },
        b',' => Value::Double(take_line(wire, pos)?),
        b'(' => Value::BigNumber(take_line(wire, pos)?),
        b'$' => {
            let n = take_len(wire, pos)?;
            if n == -1 {
                Value::NullBulk
            } else {
                Value::Bulk(take_blob(wire, pos, n)?)
            }
        }
        b'!' => {
            let n = take_len(wire, pos)?;
            Value::BlobError(take_blob(wire, pos, n)?)
        }
        b'=' => {
            let n = take_len(wire, pos)?;
            let body = take_blob(wire, pos, n)?;
            match (body.get(..3), body.get(3)) {
                (Some(&[a, b, c]), Some(b':')) => Value::Verbatim {
                    format: [a, b, c],
                    text: body.slice(4..),
                },
                _ => return Err(malformed("verbatim string without a 3-byte format")),
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = take_len(wire, pos)?;
            if n == -1 && t == b'*' {
                return Ok(Parsed::Value(Value::NullArray));
            }
            let n = usize::try_from(n).map_err(|_| malformed("negative aggregate length"))?;
            let frame = if matches!(t, b'%' | b'|') {
                Frame::pairs(t, n)
            } else {
                Frame::list(t, n)
            };
            if n > 0 {
                return Ok(Parsed::Open(frame));
            }
            match frame {
                Frame::List { t, .. } => close_list(t, Vec::new()),
                _ if t == b'|' => return Ok(Parsed::Open(Frame::Annotated(Vec::new()))),
                _ => Value::Map(Vec::new()),
            }
        }
        _ => return Err(malformed("unknown reply type byte")),
    };
    Ok(Parsed::Value(value))
}
