//! Dubbo 2 (the `dubbo://` exchange protocol): frames as zero-copy views.
//!
//! Every frame is a 16-byte header and a body:
//!
//! ```text
//! 0      2      3       4                12           16
//! | dabb | flag | status | request id u64 | body len u32 | body ...
//! flag: 0x80 request, 0x40 two-way, 0x20 event, low 5 bits serialization id
//! ```
//!
//! * [`Decoder`] frames both directions (requests and responses look alike);
//!   it checks the magic and [`Limits::max_body`] as soon as the header is
//!   there, before any of the body is buffered.
//! * A [`Frame`] is the frame's exact bytes. Only a Hessian 2 request that is
//!   not an event is ever looked into, and only on demand:
//!   [`Frame::invocation`] reads the body's leading strings (Dubbo version,
//!   service path, service version, method, parameter descriptor), skips the
//!   arguments and reads the attachments map. Responses, events and other
//!   serializations are forwarded byte-exact without a look at the body.
//! * Routing [`Metadata`]: [`Field::Service`] (the `interface` attachment,
//!   else the service path), [`Field::RpcMethod`], and [`Field::Header`] for
//!   any attachment (`group`, `version`, `timeout`, ...).
//! * The multiplexed driver remaps request ids with
//!   [`header_with_request_id`] (a new header + the original body, no copy),
//!   answers heartbeats with [`heartbeat_response`], sends its own with
//!   [`heartbeat_request`], and fails requests with [`response`].
use std::sync::OnceLock;

use bytes::{Buf, Bytes, BytesMut};

use nom::bytes::streaming::{tag, take};
use nom::number::streaming::be_u32;

use crate::parse::{Fail, Parsed, fail, nom_to_codec};
use crate::{CodecError, Field, Metadata, Protocol, Verdict};

mod encode;
mod invocation;

pub use encode::{
    encode, header_with_request_id, heartbeat_request, heartbeat_response, response,
    with_attachments,
};
pub use invocation::{Invocation, parameter_count};

/// Name used in this module's errors.
const PROTO: &str = "dubbo";

/// The magic number that starts every frame.
pub const MAGIC: [u8; 2] = [0xda, 0xbb];
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Flag bit: the frame is a request.
pub const FLAG_REQUEST: u8 = 0x80;
/// Flag bit: the request expects a response.
pub const FLAG_TWO_WAY: u8 = 0x40;
/// Flag bit: an event (a heartbeat when its body is null).
pub const FLAG_EVENT: u8 = 0x20;
/// Flag bits holding the serialization id.
pub const SERIALIZATION_MASK: u8 = 0x1f;
/// Serialization id of Hessian 2, the default and the only one looked into.
pub const SERIALIZATION_HESSIAN2: u8 = 2;

/// The 16-byte header (streaming): the magic (as much of it as is there must
/// match), flag, status and request id (read from the wire by [`Frame`]'s
/// accessors), and the body length it returns.
fn header(input: &[u8]) -> Parsed<'_, u32> {
    let (rest, _magic) = tag::<_, _, Fail<'_>>(&MAGIC[..])(input).or_else(|e| match e {
        nom::Err::Incomplete(n) => Err(nom::Err::Incomplete(n)),
        _ => fail(CodecError::malformed(PROTO, "bad magic")),
    })?;
    let (rest, _flag_status_id) = take(HEADER_LEN - 6)(rest)?;
    be_u32(rest)
}

/// Most bytes reserved ahead for a body still arriving: a peer announcing a
/// large body does not get it all allocated for a few bytes sent.
const RESERVE_CAP: usize = 256 * 1024;

/// Response status codes (the header's fourth byte), as in Dubbo's `Response`.
pub mod status {
    /// The call completed (its result or exception is in the body).
    pub const OK: u8 = 20;
    /// The client timed out.
    pub const CLIENT_TIMEOUT: u8 = 30;
    /// The server timed out.
    pub const SERVER_TIMEOUT: u8 = 31;
    /// The request could not be read.
    pub const BAD_REQUEST: u8 = 40;
    /// The response could not be read.
    pub const BAD_RESPONSE: u8 = 50;
    /// No such service.
    pub const SERVICE_NOT_FOUND: u8 = 60;
    /// The service failed.
    pub const SERVICE_ERROR: u8 = 70;
    /// The server failed.
    pub const SERVER_ERROR: u8 = 80;
    /// The client failed.
    pub const CLIENT_ERROR: u8 = 90;
    /// The server's thread pool is exhausted.
    pub const SERVER_THREADPOOL_EXHAUSTED_ERROR: u8 = 100;
}

/// Size limits of the Dubbo codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body (default 8 MiB, as Dubbo's default `payload`).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 8 * 1024 * 1024,
        }
    }
}

/// One Dubbo frame: its exact wire bytes, and the invocation read from the
/// body the first time it is asked for.
#[derive(Debug, Clone)]
pub struct Frame {
    wire: Bytes,
    invocation: OnceLock<Result<Option<Invocation>, CodecError>>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.wire == other.wire
    }
}

impl Eq for Frame {}

impl Frame {
    /// A frame over `wire`, which must hold a whole frame (header checked by the caller).
    fn new(wire: Bytes) -> Self {
        Self {
            wire,
            invocation: OnceLock::new(),
        }
    }

    /// Take `wire` as one whole frame (header and exactly its body), for frames
    /// that did not come through a [`Decoder`] (tests, tools).
    pub fn parse(wire: Bytes) -> Result<Frame, CodecError> {
        let body_len = match nom_to_codec(PROTO, &wire, header(&wire))? {
            Some((_, body_len)) => body_len as usize,
            None => return Err(CodecError::malformed(PROTO, "truncated")),
        };
        match HEADER_LEN.saturating_add(body_len).cmp(&wire.len()) {
            std::cmp::Ordering::Equal => Ok(Frame::new(wire)),
            std::cmp::Ordering::Less => Err(CodecError::malformed(PROTO, "bytes after the frame")),
            std::cmp::Ordering::Greater => Err(CodecError::malformed(PROTO, "truncated")),
        }
    }

    /// The exact bytes of the frame on the wire (header and body).
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The 16-byte header.
    pub fn header(&self) -> &[u8] {
        self.wire.get(..HEADER_LEN).unwrap_or_default()
    }

    /// The body (a view into the wire bytes).
    pub fn body(&self) -> Bytes {
        self.wire.slice(HEADER_LEN.min(self.wire.len())..)
    }

    fn byte(&self, at: usize) -> u8 {
        self.wire.get(at).copied().unwrap_or(0)
    }

    /// The flag byte.
    pub fn flag(&self) -> u8 {
        self.byte(2)
    }

    /// Whether this is a request (else a response).
    pub fn is_request(&self) -> bool {
        self.flag() & FLAG_REQUEST != 0
    }

    /// Whether this is a request that expects a response.
    pub fn is_two_way(&self) -> bool {
        self.is_request() && self.flag() & FLAG_TWO_WAY != 0
    }

    /// Whether this is an event (heartbeats, read-only notices).
    pub fn is_event(&self) -> bool {
        self.flag() & FLAG_EVENT != 0
    }

    /// Whether this is a heartbeat (request or response): an event whose body
    /// is null (the Hessian 2 `N`).
    pub fn is_heartbeat(&self) -> bool {
        self.is_event() && self.wire.get(HEADER_LEN..) == Some(b"N")
    }

    /// The serialization id (2 is Hessian 2).
    pub fn serialization_id(&self) -> u8 {
        self.flag() & SERIALIZATION_MASK
    }

    /// The response status (see [`status`]); `None` for requests.
    pub fn status(&self) -> Option<u8> {
        (!self.is_request()).then(|| self.byte(3))
    }

    /// The request id (a response carries the id of the request it answers).
    pub fn request_id(&self) -> u64 {
        self.wire.get(4..12).map_or(0, |mut b| b.get_u64())
    }

    /// The body length from the header.
    pub fn body_len(&self) -> usize {
        self.wire.len().saturating_sub(HEADER_LEN)
    }

    /// The invocation of a Hessian 2 request that is not an event, read from
    /// the body on the first call and kept; `Ok(None)` for responses, events
    /// and other serializations. An error says the body is not a well-formed
    /// invocation (the frame can still be forwarded as it is).
    pub fn invocation(&self) -> Result<Option<&Invocation>, CodecError> {
        self.invocation
            .get_or_init(|| self.parse_invocation())
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    /// Read the invocation from the body, without keeping it.
    pub fn parse_invocation(&self) -> Result<Option<Invocation>, CodecError> {
        if !self.is_request()
            || self.is_event()
            || self.serialization_id() != SERIALIZATION_HESSIAN2
        {
            return Ok(None);
        }
        Invocation::parse(&self.body()).map(Some)
    }
}

impl Metadata for Frame {
    /// Service (the `interface` attachment, else the service path), RpcMethod,
    /// and Header(name) for an attachment (names compared ignoring ASCII case;
    /// `version` falls back to the service version field). `None` for
    /// anything else, and for frames without an invocation.
    fn get(&self, field: &Field) -> Option<&[u8]> {
        let inv = self.invocation().ok().flatten()?;
        match field {
            Field::Service => Some(inv.service()),
            Field::RpcMethod => Some(inv.method()),
            Field::Header(name) => inv.attachment(name).or_else(|| {
                (name.eq_ignore_ascii_case("version") && !inv.service_version().is_empty())
                    .then(|| inv.service_version())
            }),
            _ => None,
        }
    }
}

/// Frames Dubbo byte streams, in either direction.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
}

impl Decoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
}

impl crate::Decoder for Decoder {
    type Item = Frame;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some((_, body_len)) = nom_to_codec(PROTO, src, header(src))? else {
            src.reserve(HEADER_LEN.saturating_sub(src.len()));
            return Ok(None);
        };
        if body_len as usize > self.limits.max_body {
            return Err(CodecError::FrameTooLarge {
                what: "dubbo body",
                size: u64::from(body_len),
                limit: self.limits.max_body,
            });
        }
        let total = HEADER_LEN.saturating_add(body_len as usize);
        if src.len() < total {
            src.reserve((total - src.len()).min(RESERVE_CAP));
            return Ok(None);
        }
        Ok(Some(Frame::new(src.split_to(total).freeze())))
    }
}

/// Sniff the first client bytes: magic `0xda 0xbb`, then a flag byte with the
/// request bit (`0x80`) set. Matches after 3 bytes.
pub fn sniff(buf: &[u8]) -> Verdict {
    match buf {
        [] | [0xda] | [0xda, 0xbb] => Verdict::NeedMore,
        [0xda, 0xbb, flag, ..] if flag & 0x80 != 0 => Verdict::Match(Protocol::Dubbo),
        _ => Verdict::Reject,
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
