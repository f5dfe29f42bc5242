//! memcached's text protocol (classic commands and meta commands), for a
//! proxy: requests decoded into views of the wire bytes with their command
//! and keys, replies framed so a pipeline can count them, and the `VALUE`
//! blocks of retrieval replies walked for merging multi-key `get`s.
//!
//! Parsing is nom 8 in streaming mode over `&[u8]`: `Incomplete` is
//! `Ok(None)`; the line is bounded ([`Limits::max_line`]) before it is
//! parsed, a data block's size ([`Limits::max_value`]) before it is
//! buffered. A command line memcached would answer `CLIENT_ERROR` (a bad
//! key, a missing argument) is still a frame ([`Verb::Invalid`]): the line is
//! consumed and the stream stays in step, as on memcached itself. Only a
//! stream that cannot be resynchronised (a line or value over the limits, a
//! data block not followed by `\r\n`) is an error.
//!
//! The binary protocol (magic `0x80`) is not served.

mod reply;
#[cfg(test)]
mod tests;

pub use reply::{Reply, ReplyDecoder, ReplyKind, Value, values};

use bytes::{Bytes, BytesMut};
use nom::IResult;
use nom::Parser;
use nom::bytes::streaming::{tag, take, take_till};

use crate::{CodecError, Field, Metadata, Verdict};

/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;

const PROTOCOL: &str = "memcached";

/// Bounds on what one request or reply may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command (or reply) line, `\r\n` included.
    pub max_line: usize,
    /// Largest data block of a storage command or a value in a reply
    /// (memcached's `-I`, 1 MiB by default).
    pub max_value: usize,
    /// Most keys in one `get`/`gets`/`gat`/`gats` (and values in its reply).
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_value: 1024 * 1024,
            max_keys: 4096,
        }
    }
}

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    /// `mg`
    MetaGet,
    /// `ms`
    MetaSet,
    /// `md`
    MetaDelete,
    /// `ma`
    MetaArithmetic,
    /// `mn`: answered `MN` once every earlier request is answered.
    MetaNoop,
    Version,
    Stats,
    FlushAll,
    Verbosity,
    Quit,
    /// A line memcached would not run: answer `CLIENT_ERROR {0}` (or
    /// `ERROR` for an unknown command, as memcached does).
    Invalid(&'static str),
}

/// The commands of the text protocol, by name (lowercase, as memcached wants them).
const VERBS: [(&[u8], Verb); 24] = [
    (b"get", Verb::Get),
    (b"gets", Verb::Gets),
    (b"gat", Verb::Gat),
    (b"gats", Verb::Gats),
    (b"set", Verb::Set),
    (b"add", Verb::Add),
    (b"replace", Verb::Replace),
    (b"append", Verb::Append),
    (b"prepend", Verb::Prepend),
    (b"cas", Verb::Cas),
    (b"delete", Verb::Delete),
    (b"incr", Verb::Incr),
    (b"decr", Verb::Decr),
    (b"touch", Verb::Touch),
    (b"mg", Verb::MetaGet),
    (b"ms", Verb::MetaSet),
    (b"md", Verb::MetaDelete),
    (b"ma", Verb::MetaArithmetic),
    (b"mn", Verb::MetaNoop),
    (b"version", Verb::Version),
    (b"stats", Verb::Stats),
    (b"flush_all", Verb::FlushAll),
    (b"verbosity", Verb::Verbosity),
    (b"quit", Verb::Quit),
];

/// The reason an unknown command is refused (answered `ERROR`).
pub const UNKNOWN_COMMAND: &str = "unknown command";

impl Verb {
    fn from_name(name: &[u8]) -> Option<Verb> {
        VERBS.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }

    /// The command's name on the wire.
    pub fn name(self) -> &'static [u8] {
        VERBS
            .iter()
            .find(|&&(_, v)| v == self)
            .map_or(b"invalid", |&(n, _)| n)
    }

    /// `get`, `gets`, `gat`, `gats`: any number of keys, one `VALUE ... END` reply.
    pub fn is_retrieval(self) -> bool {
        matches!(self, Verb::Get | Verb::Gets | Verb::Gat | Verb::Gats)
    }

    /// Commands with a data block after the line.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Verb::Set | Verb::Add | Verb::Replace | Verb::Append | Verb::Prepend | Verb::Cas
        )
    }

    /// Meta commands (`mg`, `ms`, `md`, `ma`; `mn` has no key).
    pub fn is_meta(self) -> bool {
        matches!(
            self,
            Verb::MetaGet | Verb::MetaSet | Verb::MetaDelete | Verb::MetaArithmetic
        )
    }

    /// Commands that name no key (`version`, `stats`, `flush_all`, ...).
    pub fn is_keyless(self) -> bool {
        matches!(
            self,
            Verb::MetaNoop
                | Verb::Version
                | Verb::Stats
                | Verb::FlushAll
                | Verb::Verbosity
                | Verb::Quit
                | Verb::Invalid(_)
        )
    }
}

/// One client request: its wire bytes (line and data block) and what the
/// proxy needs to route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    wire: Bytes,
    /// Length of the command line, line end included.
    line: usize,
    verb: Verb,
    /// Offset and length of the first key in `wire` (0, 0 when keyless).
    key: (u32, u16),
    /// `noreply` (classic) or the `q` flag (meta): no reply, or only some.
    noreply: bool,
}

impl Request {
    pub fn verb(&self) -> Verb {
        self.verb
    }

    /// The request as it came, data block included.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The command line without its line end.
    pub fn line(&self) -> &[u8] {
        let line = self.wire.get(..self.line).unwrap_or_default();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// The data block (storage commands), `\r\n` included.
    pub fn data(&self) -> &[u8] {
        self.wire.get(self.line..).unwrap_or_default()
    }

    /// The first (for most commands, the only) key.
    pub fn key(&self) -> Option<&[u8]> {
        if self.verb.is_keyless() {
            return None;
        }
        let (at, len) = (self.key.0 as usize, usize::from(self.key.1));
        self.wire.get(at..at + len)
    }

    /// Every key, in order (retrieval commands name several).
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let skip = match self.verb {
            Verb::Gat | Verb::Gats => 2,
            _ => 1,
        };
        let many = self.verb.is_retrieval();
        let mut tokens = tokens(self.line()).skip(skip);
        let mut first = self.key();
        std::iter::from_fn(move || if many { tokens.next() } else { first.take() })
    }

    /// The part of a retrieval line before its keys (`get`, `gat 300`).
    pub fn retrieval_prefix(&self) -> &[u8] {
        self.line()
            .get(..self.key.0 as usize)
            .unwrap_or_default()
            .trim_ascii_end()
    }

    /// The client wants no reply: `noreply`, or a meta command's `q` flag
    /// (whose reply is suppressed only on its common outcome, see
    /// [`Request::quiet_drops`]).
    pub fn noreply(&self) -> bool {
        self.noreply
    }

    /// Whether this is a meta command in quiet mode (`q` flag).
    pub fn is_quiet_meta(&self) -> bool {
        self.noreply && self.verb.is_meta()
    }

    /// A quiet meta command's line without its `q` flag, data block kept,
    /// so the server answers it and the proxy can keep count; the
    /// gateway drops the answer when [`Request::quiet_drops`] says so.
    pub fn without_quiet(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.wire.len());
        // The verb and the key stay whatever they are (a key may be `q`).
        let kept = tokens(self.line())
            .enumerate()
            .filter(|&(i, t)| i < 2 || t != b"q")
            .map(|(_, t)| t);
        for (i, t) in kept.enumerate() {
            if i > 0 {
                out.extend_from_slice(b" ");
            }
            out.extend_from_slice(t);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.data());
        out.freeze()
    }

    /// In quiet mode, the reply the server would not have sent: `EN` (miss)
    /// for `mg`, `HD` (success) for `ms`, `md` and `ma`.
    pub fn quiet_drops(&self, reply: &[u8]) -> bool {
        let code = reply.get(..2).unwrap_or_default();
        match self.verb {
            Verb::MetaGet => code == b"EN",
            Verb::MetaSet | Verb::MetaDelete | Verb::MetaArithmetic => code == b"HD",
            _ => false,
        }
    }
}

impl Metadata for Request {
    /// Command (the verb) and Key (the first key).
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::Command => Some(self.verb.name()),
            Field::Key => self.key(),
            _ => None,
        }
    }
}

/// Space-separated tokens of a line.
fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// One line (up to `\n`) and its length with the line end; streaming.
fn line(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let (rest, body) = take_till(|b| b == b'\n').parse(input)?;
    let (rest, _) = tag(&b"\n"[..]).parse(rest)?;
    Ok((rest, body.strip_suffix(b"\r").unwrap_or(body)))
}

/// A data block of `len` bytes and its `\r\n`; streaming.
fn data_block(len: usize) -> impl Fn(&[u8]) -> IResult<&[u8], &[u8]> {
    move |input| {
        let (rest, data) = take(len).parse(input)?;
        let (rest, _) = tag(&b"\r\n"[..]).parse(rest)?;
        Ok((rest, data))
    }
}

/// A key memcached accepts: 1..=250 bytes, no control characters or spaces.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

fn number(t: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(t?).ok()?.parse().ok()
}

/// Where the line's first key is, and whether it ends in `noreply`/`q`.
struct LineFacts {
    verb: Verb,
    key: (u32, u16),
    noreply: bool,
    /// The data block that follows, for storage commands.
    data: Option<u64>,
}

/// What a command line says; `Verb::Invalid` when memcached would refuse it.
fn classify(line: &[u8], limits: &Limits) -> LineFacts {
    let invalid = |why| LineFacts {
        verb: Verb::Invalid(why),
        key: (0, 0),
        noreply: false,
        data: None,
    };
    let mut toks = tokens(line);
    let Some(verb) = toks.next().and_then(Verb::from_name) else {
        return invalid(UNKNOWN_COMMAND);
    };
    let args: Vec<&[u8]> = toks.collect();
    let key_at = |k: &[u8]| {
        let at = k.as_ptr() as usize - line.as_ptr() as usize;
        (u32::try_from(at).unwrap_or(0), k.len() as u16)
    };
    let noreply_last = args.last().is_some_and(|t| *t == b"noreply");
    let mut facts = LineFacts {
        verb,
        key: (0, 0),
        noreply: false,
        data: None,
    };
    let key_index = match verb {
        _ if verb.is_keyless() => {
            if verb == Verb::FlushAll || verb == Verb::Verbosity {
                facts.noreply = noreply_last;
            }
            return facts;
        }
        Verb::Gat | Verb::Gats => {
            if args.len() < 2 {
                return invalid(UNKNOWN_COMMAND);
            }
            if number(args.first().copied()).is_none() {
                return invalid("invalid exptime argument");
            }
            1
        }
        _ => 0,
    };
    // Too few arguments: memcached answers `ERROR`, as for an unknown command.
    let Some(&key) = args.get(key_index) else {
        return invalid(UNKNOWN_COMMAND);
    };
    if verb.is_retrieval() {
        let keys = args.get(key_index..).unwrap_or_default();
        if keys.len() > limits.max_keys {
            return invalid("too many keys");
        }
        if !keys.iter().all(|k| valid_key(k)) {
            return invalid("bad command line format");
        }
    } else if !valid_key(key) {
        return invalid("bad command line format");
    }
    facts.key = key_at(key);
    let need = |n: usize| args.len() == n || (args.len() == n + 1 && noreply_last);
    match verb {
        Verb::Set | Verb::Add | Verb::Replace | Verb::Append | Verb::Prepend | Verb::Cas => {
            let n = if verb == Verb::Cas { 5 } else { 4 };
            if !need(n) {
                return invalid(UNKNOWN_COMMAND);
            }
            let nums = args.get(1..n).unwrap_or_default();
            if nums.iter().any(|t| number(Some(t)).is_none()) {
                return invalid("bad command line format");
            }
            facts.data = number(args.get(3).copied());
            facts.noreply = noreply_last;
        }
        Verb::Delete => {
            // `delete <key> [0] [noreply]` (the old time argument must be 0).
            let ok = match args.get(1..).unwrap_or_default() {
                [] => true,
                [t] => *t == b"noreply" || *t == b"0",
                [t, n] => *t == b"0" && *n == b"noreply",
                _ => false,
            };
            if !ok {
                return invalid("bad command line format.  Usage: delete <key> [noreply]");
            }
            facts.noreply = noreply_last;
        }
        Verb::Incr | Verb::Decr | Verb::Touch => {
            if !need(2) {
                return invalid(UNKNOWN_COMMAND);
            }
            if number(args.get(1).copied()).is_none() {
                return invalid(if verb == Verb::Touch {
                    "invalid exptime argument"
                } else {
                    "invalid numeric delta argument"
                });
            }
            facts.noreply = noreply_last;
        }
        Verb::MetaSet => {
            // `ms <key> <datalen> <flags>*`
            let Some(len) = number(args.get(1).copied()) else {
                return invalid("bad data chunk");
            };
            facts.data = Some(len);
            facts.noreply = args.get(2..).unwrap_or_default().contains(&&b"q"[..]);
        }
        Verb::MetaGet | Verb::MetaDelete | Verb::MetaArithmetic => {
            facts.noreply = args.get(1..).unwrap_or_default().contains(&&b"q"[..]);
        }
        _ => {}
    }
    facts
}

/// Decodes client requests.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder { limits }
    }
}

impl crate::Decoder for RequestDecoder {
    type Item = Request;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, CodecError> {
        let window = src.get(..self.limits.max_line).unwrap_or(src);
        let (rest, text) = match line(window) {
            Ok(parsed) => parsed,
            Err(nom::Err::Incomplete(_)) if src.len() >= self.limits.max_line => {
                return Err(CodecError::HeadTooLarge {
                    limit: self.limits.max_line,
                });
            }
            Err(nom::Err::Incomplete(_)) => return Ok(None),
            Err(_) => return Err(CodecError::malformed(PROTOCOL, "bad command line")),
        };
        let line_len = window.len() - rest.len();
        let facts = classify(text, &self.limits);
        let total = match facts.data {
            None => line_len,
            Some(len) if len > self.limits.max_value as u64 => {
                return Err(CodecError::FrameTooLarge {
                    what: "memcached value",
                    size: len,
                    limit: self.limits.max_value,
                });
            }
            Some(len) => {
                let len = len as usize;
                let after = src.get(line_len..).unwrap_or_default();
                match data_block(len)(after) {
                    Ok(_) => line_len + len + 2,
                    Err(nom::Err::Incomplete(_)) => {
                        src.reserve((line_len + len + 2).saturating_sub(src.len()));
                        return Ok(None);
                    }
                    Err(_) => return Err(CodecError::malformed(PROTOCOL, "bad data chunk")),
                }
            }
        };
        let wire = src.split_to(total).freeze();
        Ok(Some(Request {
            wire,
            line: line_len,
            verb: facts.verb,
            key: facts.key,
            noreply: facts.noreply,
        }))
    }
}

/// How long a first line may be before the sniffer gives up.
const SNIFF_MAX_LINE: usize = 64 * 1024;

/// Request lines of protocols that end in a version (HTTP, RTSP) are theirs.
const FOREIGN_VERSIONS: [&[u8]; 4] = [b" HTTP/1.1", b" HTTP/1.0", b" RTSP/1.0", b" RTSP/2.0"];

/// Whether the client's first bytes are a memcached text command.
///
/// A lowercase memcached verb followed by a space or the line end, on a line
/// that does not end like an HTTP or RTSP request line. The line end is
/// waited for (`get k` could still become `get k HTTP/1.1`). With Redis on
/// the same listener, lowercase `get k`/`set k v`/`incr k` are memcached:
/// it comes first in the registry (Redis clients send RESP `*`; only
/// hand-typed inline commands look like memcached's).
pub fn sniff(buf: &[u8]) -> Verdict {
    let word_end = buf
        .iter()
        .take(12)
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'));
    let Some(end) = word_end else {
        // A known verb's prefix may still be coming.
        let word = buf.get(..buf.len().min(12)).unwrap_or_default();
        return if buf.len() < 12 && VERBS.iter().any(|(n, _)| n.starts_with(word)) {
            Verdict::NeedMore
        } else {
            Verdict::Reject
        };
    };
    let word = buf.get(..end).unwrap_or_default();
    if Verb::from_name(word).is_none() {
        return Verdict::Reject;
    }
    let window = buf.get(..SNIFF_MAX_LINE).unwrap_or(buf);
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= SNIFF_MAX_LINE {
            Verdict::Reject
        } else {
            Verdict::NeedMore
        };
    };
    let text = window.get(..lf).unwrap_or_default();
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if FOREIGN_VERSIONS.iter().any(|v| text.ends_with(v)) {
        Verdict::Reject
    } else {
        Verdict::Match(crate::Protocol::Memcached)
    }
}
