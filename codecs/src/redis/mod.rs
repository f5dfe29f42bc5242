//! Redis RESP2/RESP3: commands (multi-bulk arrays and inline), replies
//! (every RESP3 type, attributes, push), as zero-copy views.
//!
//! API SKELETON — the bodies are being written; signatures are fixed.
use bytes::{Bytes, BytesMut};

use crate::{CodecError, Decoder, Field, Metadata, Verdict, WireHead};

/// Size limits of the Redis codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (default 512 MiB, as Redis' proto-max-bulk-len).
    pub max_bulk: usize,
    /// Most arguments in one command / elements in one aggregate (default 1,048,576).
    pub max_elements: usize,
    /// Longest inline command line (default 64 KiB, as Redis).
    pub max_inline: usize,
    /// Deepest nesting of aggregate replies (default 128).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bulk: 512 * 1024 * 1024, max_elements: 1024 * 1024, max_inline: 64 * 1024, max_depth: 128 }
    }
}

/// A client command: its wire bytes and its arguments as views into them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command { /* */ }

impl Command {
    /// The command name as sent (e.g. `get`); compare case-insensitively.
    pub fn name(&self) -> &[u8] { todo!() }
    /// `true` if the command name equals `name` ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool { todo!() }
    /// Number of arguments including the name.
    pub fn argc(&self) -> usize { todo!() }
    /// Argument `i` (0 is the name).
    pub fn arg(&self, i: usize) -> Option<&[u8]> { todo!() }
    /// The keys this command touches, per the command table (e.g. all args of
    /// MGET/DEL, every other arg of MSET, EVAL's numkeys); empty for PING.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> { std::iter::empty() }
    /// Whether the command was sent inline (`PING\r\n`) rather than as a RESP array.
    pub fn is_inline(&self) -> bool { todo!() }
}

impl WireHead for Command {
    fn wire(&self) -> &Bytes { todo!() }
    fn has_body(&self) -> bool { false }
}

impl Metadata for Command {
    /// Command (the name) and Key (the first key).
    fn get(&self, field: &Field) -> Option<&[u8]> { todo!() }
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
pub struct Reply { /* */ }

impl Reply {
    pub fn wire(&self) -> &Bytes { todo!() }
    pub fn kind(&self) -> ReplyKind { todo!() }
}

/// Decodes client commands.
#[derive(Debug, Default)]
pub struct CommandDecoder { /* */ }

impl CommandDecoder {
    pub fn new(limits: Limits) -> Self { todo!() }
}

impl Decoder for CommandDecoder {
    type Item = Command;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, CodecError> { todo!() }
}

/// Decodes server replies.
#[derive(Debug, Default)]
pub struct ReplyDecoder { /* */ }

impl ReplyDecoder {
    pub fn new(limits: Limits) -> Self { todo!() }
}

impl Decoder for ReplyDecoder {
    type Item = Reply;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, CodecError> { todo!() }
}

/// A gateway-made error reply: `-ERR <message>\r\n` (CR/LF in `message` replaced by spaces).
pub fn error_reply(message: &str) -> Bytes { todo!() }

/// Sniff Redis: a RESP array (`*<digits>`) or an inline command
/// (`[A-Za-z]+` then space or CRLF) whose line does not end in ` HTTP/1.x` / ` RTSP/x.y`.
pub fn sniff(buf: &[u8]) -> Verdict { todo!() }
