//! Redis RESP2/RESP3: commands (multi-bulk arrays and inline), replies
//! (every RESP3 type, attributes, push), as zero-copy views.
//!
//! * [`CommandDecoder`] turns client bytes into [`Command`]s: RESP arrays of bulk
//!   strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands (`GET k\r\n`,
//!   split like `redis-server` does, quotes and `\xHH` escapes included).
//!   A command keeps its exact wire bytes; the arguments are views into them
//!   (inline commands with quotes keep their unescaped arguments in one side buffer).
//! * [`ReplyDecoder`] frames server replies of every RESP2/RESP3 type. An
//!   attribute (`|`) and the reply it annotates are one [`Reply`].
//! * [`Value`] is a full value model (decode / encode) for tests, merging
//!   replies and gateway-made answers; the hot path never builds one.
//!
//! Both decoders check lengths and counts against [`Limits`] as soon as a
//! length line is seen, before anything is buffered, and keep a resume point so
//! a large frame arriving in many reads is not rescanned from its start.
//! Between two calls that returned `Ok(None)`, the caller may only *append* to
//! the buffer (the usual `FramedRead` contract).
use bytes::{Bytes, BytesMut};

use crate::{CodecError, Decoder, Field, Metadata, Verdict, WireHead};

mod command;
mod keys;
mod parse;
mod reply;
mod slot;
mod value;

pub use slot::{SLOTS, crc16, hash_tag, key_slot};
pub use value::Value;

/// Size limits of the Redis codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (default 512 MiB, as Redis' proto-max-bulk-len).
    pub max_bulk: usize,
    /// Most arguments in one command / elements in one aggregate (default 1,048,576).
    /// For maps and attributes this counts key/value pairs.
    pub max_elements: usize,
    /// Longest inline command line (default 64 KiB, as Redis). Also the longest
    /// simple line of a reply (`+`, `-`, `:`, `,`, `(`, `#`, `_`).
    pub max_inline: usize,
    /// Deepest nesting of aggregate replies (default 8192: Redis relays script
    /// replies nested up to its Lua stack limit, about 8000 levels). An
    /// attribute counts as one level for the value it annotates.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk: 512 * 1024 * 1024,
            max_elements: 1024 * 1024,
            max_inline: 64 * 1024,
            max_depth: 8192,
        }
    }
}

/// A client command: its wire bytes and its arguments as views into them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The exact bytes of the command on the wire.
    wire: Bytes,
    /// Argument ranges: into `wire`, or into `unescaped` when it is `Some`.
    args: Vec<(usize, usize)>,
    /// Unescaped arguments of an inline command that used quotes.
    unescaped: Option<Bytes>,
    /// Sent inline rather than as a RESP array.
    inline: bool,
}

impl Command {
    /// The command name as sent (e.g. `get`); compare case-insensitively.
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }
    /// `true` if the command name equals `name` ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }
    /// Number of arguments including the name.
    pub fn argc(&self) -> usize {
        self.args.len()
    }
    /// Argument `i` (0 is the name).
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.args.get(i)?;
        let source = self.unescaped.as_ref().unwrap_or(&self.wire);
        source.get(start..end)
    }
    /// The keys this command touches, per the command table (e.g. all args of
    /// MGET/DEL, every other arg of MSET, EVAL's numkeys); empty for PING.
    ///
    /// Unknown commands have no keys, so they take the default route.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let plan = keys::plan(self);
        plan.extra
            .into_iter()
            .chain((plan.start..plan.end).step_by(plan.step.max(1)))
            .filter_map(|i| self.arg(i))
    }
    /// Whether the command only reads data (Redis' `readonly` flag), so a
    /// proxy may send it to a replica.
    pub fn is_read_only(&self) -> bool {
        keys::is_read_only(self)
    }
    /// Whether the command was sent inline (`PING\r\n`) rather than as a RESP array.
    pub fn is_inline(&self) -> bool {
        self.inline
    }
    /// All arguments, the name first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        (0..self.args.len()).map(|i| self.arg(i).unwrap_or_default())
    }
    /// Build a command as a RESP array of bulk strings (for commands the gateway
    /// makes itself, e.g. when it splits a multi-key command across shards).
    pub fn from_args<I, A>(args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        command::from_args(args)
    }
}

impl WireHead for Command {
    fn wire(&self) -> &Bytes {
        &self.wire
    }
    fn has_body(&self) -> bool {
        false
    }
}

impl Metadata for Command {
    /// Command (the name) and Key (the first key).
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::Command => Some(self.name()),
            Field::Key => self.keys().next(),
            _ => None,
        }
    }
}

/// The kind of a reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// An ordinary reply (any type but the two below).
    Value,
    /// `-ERR ...` or RESP3 blob error `!`.
    Error,
    /// RESP3 push `>`: out of band, not the answer to a command.
    Push,
}

/// One complete reply as it came from the server (an attribute `|` and the
/// value it annotates are one reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    wire: Bytes,
    kind: ReplyKind,
}

impl Reply {
    /// The exact bytes of the reply on the wire.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
    /// Value, error or out-of-band push (decided by the type after any attribute).
    pub fn kind(&self) -> ReplyKind {
        self.kind
    }
    /// Decode the full value of this reply (allocates; not for the hot path).
    ///
    /// Nesting deeper than 512 levels is refused with an error rather than
    /// recursed into.
    pub fn to_value(&self) -> Result<Value, CodecError> {
        value::from_wire(&self.wire)
    }
}

/// Decodes client commands.
#[derive(Debug, Default)]
pub struct CommandDecoder {
    limits: Limits,
    /// A multi-bulk command being read.
    partial: Option<command::Partial>,
    /// How far the current inline line was scanned for its LF.
    inline_scanned: usize,
    /// How far the current `*`/`$` length line was scanned for its LF.
    len_scanned: usize,
    /// The byte found where a `$` was expected (for the error text).
    unexpected: u8,
}

impl CommandDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            partial: None,
            inline_scanned: 0,
            len_scanned: 0,
            unexpected: 0,
        }
    }

    /// The reply redis-server gives to the protocol error `e` that this
    /// decoder just returned, in its words (`-ERR Protocol error: invalid
    /// bulk length`, `... expected '$', got 'f'`, ...): clients and tests
    /// match on them. Redis closes the connection after it.
    pub fn error_reply(&self, e: &CodecError) -> Bytes {
        self.protocol_error(e)
    }
}

impl Decoder for CommandDecoder {
    type Item = Command;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, CodecError> {
        self.decode_command(src)
    }
}

/// Whether a reply is out of band (answers no command): RESP3 pushes, except
/// the ones acknowledging `(P|S)(UN)SUBSCRIBE`, which Redis sends in place
/// of replies (one per channel) even on a connection that is not subscribed.
pub fn is_out_of_band(wire: &[u8]) -> bool {
    wire.first() == Some(&b'>') && !is_subscription_ack(wire)
}

/// A push (`>`) whose first element names a subscribe-family command.
fn is_subscription_ack(wire: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"subscribe",
        b"unsubscribe",
        b"psubscribe",
        b"punsubscribe",
        b"ssubscribe",
        b"sunsubscribe",
    ];
    let Ok(Some((_, first))) = parse::len_line(wire, 0) else {
        return false;
    };
    let name = match wire.get(first) {
        Some(b'$') => match parse::len_line(wire, first) {
            Ok(Some((len, at))) => usize::try_from(len)
                .ok()
                .and_then(|len| wire.get(at..at.saturating_add(len))),
            _ => None,
        },
        Some(b'+') => match parse::find_line(wire, first + 1, 0, 16) {
            Ok(Ok(line)) => wire.get(line.start..line.end),
            _ => None,
        },
        _ => None,
    };
    name.is_some_and(|n| NAMES.iter().any(|c| c.eq_ignore_ascii_case(n)))
}

/// How many replies Redis sends to `cmd` outside `MULTI`: one per channel
/// (at least one) for `UNSUBSCRIBE`, `PUNSUBSCRIBE` and `SUNSUBSCRIBE`, one
/// for everything else. (`SUBSCRIBE` and `PSUBSCRIBE` also answer once per
/// channel, but switch the connection to push mode.)
pub fn reply_count(cmd: &Command) -> usize {
    if is_unsubscribe(cmd) {
        cmd.argc().saturating_sub(1).max(1)
    } else {
        1
    }
}

/// `UNSUBSCRIBE`, `PUNSUBSCRIBE` or `SUNSUBSCRIBE`.
pub fn is_unsubscribe(cmd: &Command) -> bool {
    let name = cmd.name();
    name.len() >= 11
        && name
            .get(name.len() - 11..)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"unsubscribe"))
        && (cmd.is("UNSUBSCRIBE") || cmd.is("PUNSUBSCRIBE") || cmd.is("SUNSUBSCRIBE"))
}

/// Decodes server replies.
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    limits: Limits,
    /// The reply being read.
    partial: Option<reply::Partial>,
}

impl ReplyDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }
}

impl Decoder for ReplyDecoder {
    type Item = Reply;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, CodecError> {
        self.decode_reply(src)
    }
}

/// A gateway-made error reply: `-ERR <message>\r\n` (CR/LF in `message` replaced by spaces).
///
/// If `message` already starts with an error code — a word of at least three
/// ASCII capital letters followed by a space, as in `NOAUTH Authentication
/// required.` or `MOVED 3999 127.0.0.1:6381` — it is sent as is, without `ERR`.
pub fn error_reply(message: &str) -> Bytes {
    let message = message.as_bytes();
    let word_len = message
        .iter()
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    let has_code = word_len >= 3 && message.get(word_len) == Some(&b' ');
    let mut out = Vec::with_capacity(message.len() + 7);
    out.push(b'-');
    if !has_code {
        out.extend_from_slice(b"ERR");
        if !message.is_empty() {
            out.push(b' ');
        }
    }
    out.extend(
        message
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The elements of an array reply (`*N`), each as its exact wire bytes.
///
/// `None` when `reply` is not one complete, non-null array (an error, a null
/// array, another type, trailing bytes): the caller merging replies of split
/// commands then passes the reply on as it is.
pub fn array_elements(reply: &Bytes, limits: Limits) -> Option<Vec<Bytes>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    let (count, header) = match parse::len_line(reply, 0) {
        Ok(Some((n, next))) if n >= 0 => (usize::try_from(n).ok()?, next),
        _ => return None,
    };
    if count > limits.max_elements {
        return None;
    }
    let mut rest = BytesMut::from(reply.get(header..)?);
    let mut decoder = ReplyDecoder::new(limits);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        match decoder.decode(&mut rest) {
            Ok(Some(element)) => out.push(element.wire),
            _ => return None,
        }
    }
    rest.is_empty().then_some(out)
}

/// How far [`sniff`] looks for the end of an inline command line.
const SNIFF_MAX_LINE: usize = 64 * 1024;

/// Request-line endings of the text protocols that look like inline commands.
const FOREIGN_VERSIONS: [&[u8]; 5] = [
    b" HTTP/1.0",
    b" HTTP/1.1",
    b" HTTP/2.0",
    b" RTSP/1.0",
    b" RTSP/2.0",
];

/// Sniff Redis: a RESP array (`*` then any byte) or an inline command
/// (`[A-Za-z]+` then space or CRLF) whose line does not end in ` HTTP/1.x` / ` RTSP/x.y`.
///
/// An inline command is only matched once its whole line is there, so that
/// `GET / HTTP/1.1` is left to HTTP/1.
pub fn sniff(buf: &[u8]) -> Verdict {
    let Some(&first) = buf.first() else {
        return Verdict::NeedMore;
    };
    if first == b'*' {
        return match buf.get(1) {
            None => Verdict::NeedMore,
            // No other protocol starts with `*`: a bad count (`*-10`, `*abc`)
            // gets redis-server's own answer.
            Some(_) => Verdict::Match(crate::Protocol::Redis),
        };
    }
    if !first.is_ascii_alphabetic() {
        return Verdict::Reject;
    }
    // The first word: letters up to a space, a tab or the line end.
    for &b in buf.iter().take(SNIFF_MAX_LINE) {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            break;
        }
        if !b.is_ascii_alphabetic() {
            return Verdict::Reject;
        }
    }
    let window = buf.get(..SNIFF_MAX_LINE).unwrap_or(buf);
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= SNIFF_MAX_LINE {
            Verdict::Reject
        } else {
            Verdict::NeedMore
        };
    };
    let mut line = window.get(..lf).unwrap_or_default();
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    if FOREIGN_VERSIONS.iter().any(|v| line.ends_with(v)) {
        Verdict::Reject
    } else {
        Verdict::Match(crate::Protocol::Redis)
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn array_elements_splits_exact_wire() {
        let reply = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n");
        let parts = array_elements(&reply, Limits::default()).unwrap();
        assert_eq!(parts, [&b"$1\r\na\r\n"[..], b"$-1\r\n", b"*1\r\n:5\r\n"]);
        assert_eq!(
            array_elements(&Bytes::from_static(b"*0\r\n"), Limits::default()),
            Some(vec![])
        );
        for not_array in [
            &b"-ERR x\r\n"[..],
            b"*-1\r\n",
            b":1\r\n",
            b"*2\r\n:1\r\n",
            b"*1\r\n:1\r\n:2\r\n",
        ] {
            assert_eq!(
                array_elements(&Bytes::copy_from_slice(not_array), Limits::default()),
                None
            );
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
