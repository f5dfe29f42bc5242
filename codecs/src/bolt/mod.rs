//! SOFA Bolt v1 and v2: command frames as zero-copy views.
//!
//! ```text
//! v1 request:  proto=1 type cmdcode(2) ver2 requestId(4) codec timeout(4)
//!              classLen(2) headerLen(2) contentLen(4) class header content   (22-byte head)
//! v1 response: proto=1 type cmdcode(2) ver2 requestId(4) codec status(2)
//!              classLen(2) headerLen(2) contentLen(4) class header content   (20-byte head)
//! v2:          proto=2 ver1 ... codec switch ... as v1 ...  [CRC32(4)]      (24 / 22-byte head)
//! ```
//!
//! The type byte is 0 response, 1 request, 2 oneway; the command code 0
//! heartbeat, 1 request, 2 response. In v2, bit 0 of the switch byte appends a
//! CRC32 (IEEE, big-endian) of all the frame's bytes before it.
//!
//! * [`Decoder`] frames both directions (the type byte says which head
//!   follows). It checks [`Limits::max_frame`] as soon as the fixed head is
//!   there, before any of the rest is buffered, and verifies v2 CRCs.
//! * A [`Frame`] is the frame's exact bytes with accessors for every field;
//!   its header is read as SOFA's simple map on demand ([`Frame::header_map`]).
//!   The content (usually a Hessian body) is never looked into.
//! * Routing [`Metadata`]: [`Field::Service`] (header `service`, else
//!   `sofa_head_target_service`), [`Field::RpcMethod`]
//!   (`sofa_head_method_name`; clients that put the method only in the body,
//!   as sofa-rpc-node does, have none), [`Field::Header`] for any header key.
//! * The multiplexed driver remaps ids with [`with_request_id`] (a copy, so a
//!   v2 CRC can be recomputed), answers heartbeats with [`heartbeat_response`],
//!   sends its own with [`heartbeat_request`], and fails requests with [`response`].
use bytes::{Buf, Bytes, BytesMut};

use nom::bytes::streaming::take;
use nom::number::streaming::u8;

use crate::parse::{Parsed, array, fail, nom_to_codec};
use crate::{CodecError, Field, Metadata, Protocol, Verdict};

mod encode;
mod header_map;

pub use encode::{
    SERVER_EXCEPTION_CLASS, crc32, encode_header_map, heartbeat_request, heartbeat_response,
    request, response, server_exception, server_exception_content, with_header, with_request_id,
};
pub use header_map::{HeaderMap, header_map};

/// Name used in this module's errors.
const PROTO: &str = "bolt";

/// Most bytes reserved ahead for a frame still arriving.
const RESERVE_CAP: usize = 256 * 1024;

/// v2 switch bit: a CRC32 follows the frame.
pub const SWITCH_CRC: u8 = 0x01;

const TYPE_RESPONSE: u8 = 0;
const TYPE_REQUEST: u8 = 1;
const TYPE_ONEWAY: u8 = 2;

/// Command codes.
pub mod cmd {
    /// A heartbeat (request or answer).
    pub const HEARTBEAT: u16 = 0;
    /// An RPC request.
    pub const REQUEST: u16 = 1;
    /// An RPC response.
    pub const RESPONSE: u16 = 2;
}

/// Serialization (codec) ids.
pub mod codec {
    /// Hessian 2.
    pub const HESSIAN2: u8 = 1;
    /// Protocol Buffers (SOFA-RPC).
    pub const PROTOBUF: u8 = 11;
}

/// Response status codes, as in Bolt's `ResponseStatus`.
pub mod status {
    /// The call succeeded.
    pub const SUCCESS: u16 = 0x0000;
    /// A generic error.
    pub const ERROR: u16 = 0x0001;
    /// The server threw (the content is usually the exception).
    pub const SERVER_EXCEPTION: u16 = 0x0002;
    /// Unknown.
    pub const UNKNOWN: u16 = 0x0003;
    /// The server's thread pool is busy.
    pub const SERVER_THREADPOOL_BUSY: u16 = 0x0004;
    /// Communication error.
    pub const ERROR_COMM: u16 = 0x0005;
    /// No processor for the request.
    pub const NO_PROCESSOR: u16 = 0x0006;
    /// The call timed out.
    pub const TIMEOUT: u16 = 0x0007;
    /// The client could not send.
    pub const CLIENT_SEND_ERROR: u16 = 0x0008;
    /// Encoding or decoding failed.
    pub const CODEC_EXCEPTION: u16 = 0x0009;
    /// The connection was closed.
    pub const CONNECTION_CLOSED: u16 = 0x0010;
    /// The server could not serialize the response.
    pub const SERVER_SERIAL_EXCEPTION: u16 = 0x0011;
    /// The server could not deserialize the request.
    pub const SERVER_DESERIAL_EXCEPTION: u16 = 0x0012;
}

/// Size limits of the Bolt codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame, head and CRC included (default 8 MiB).
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 8 * 1024 * 1024,
        }
    }
}

/// The protocol version (the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Protocol code 1.
    V1,
    /// Protocol code 2: adds the `ver1` and `switch` bytes and the optional CRC32.
    V2,
}

impl Version {
    /// The protocol code byte.
    pub const fn code(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// Bytes the v2 `ver1` byte shifts the fields after the protocol code.
    const fn shift(self) -> usize {
        match self {
            Version::V1 => 0,
            Version::V2 => 1,
        }
    }
}

/// The command type (the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A response (type 0).
    Response,
    /// A request expecting a response (type 1).
    Request,
    /// A request expecting none (type 2).
    Oneway,
}

impl Kind {
    /// The type byte.
    pub const fn code(self) -> u8 {
        match self {
            Kind::Response => TYPE_RESPONSE,
            Kind::Request => TYPE_REQUEST,
            Kind::Oneway => TYPE_ONEWAY,
        }
    }
}

/// Length of the fixed head of a frame.
const fn head_len(version: Version, kind: Kind) -> usize {
    let v1 = match kind {
        Kind::Response => 20,
        Kind::Request | Kind::Oneway => 22,
    };
    match version {
        Version::V1 => v1,
        Version::V2 => v1 + 2,
    }
}

/// One Bolt command: its exact wire bytes and where its parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
    version: Version,
    kind: Kind,
    class_len: usize,
    header_len: usize,
    content_len: usize,
    crc: bool,
}

impl Frame {
    /// Take `wire` as one whole frame, for frames that did not come through a
    /// [`Decoder`] (tests, tools). The CRC, if any, is verified.
    pub fn parse(wire: Bytes) -> Result<Frame, CodecError> {
        let head = Head::read(&wire)?.ok_or_else(|| CodecError::malformed(PROTO, "truncated"))?;
        let total = head.total();
        match total.cmp(&(wire.len() as u64)) {
            std::cmp::Ordering::Equal => head.frame(wire),
            std::cmp::Ordering::Less => Err(CodecError::malformed(PROTO, "bytes after the frame")),
            std::cmp::Ordering::Greater => Err(CodecError::malformed(PROTO, "truncated")),
        }
    }

    /// The exact bytes of the frame on the wire (CRC included).
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The length of the content (the payload after class name and header map).
    pub fn content_len(&self) -> usize {
        self.content_len
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Request, oneway request, or response.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is a request (two-way or oneway).
    pub fn is_request(&self) -> bool {
        self.kind != Kind::Response
    }

    /// The command code (see [`cmd`]).
    pub fn cmd_code(&self) -> u16 {
        self.u16_at(2 + self.o())
    }

    /// Whether this is a heartbeat or a heartbeat answer (command code 0).
    pub fn is_heartbeat(&self) -> bool {
        self.cmd_code() == cmd::HEARTBEAT
    }

    /// The v2 `ver1` byte; `None` in v1.
    pub fn ver1(&self) -> Option<u8> {
        (self.version == Version::V2).then(|| self.byte(1))
    }

    /// The command version byte (`ver2`).
    pub fn ver2(&self) -> u8 {
        self.byte(4 + self.o())
    }

    /// The request id (a response carries the id of the request it answers).
    pub fn request_id(&self) -> u32 {
        self.u32_at(5 + self.o())
    }

    /// The codec (serialization) byte (see [`codec`]).
    pub fn codec(&self) -> u8 {
        self.byte(9 + self.o())
    }

    /// The v2 switch byte; `None` in v1.
    pub fn switch(&self) -> Option<u8> {
        (self.version == Version::V2).then(|| self.byte(11))
    }

    /// Whether a CRC32 ends the frame (v2 with the CRC switch on).
    pub fn has_crc(&self) -> bool {
        self.crc
    }

    /// The CRC32 at the end of the frame, when it has one (it was verified on decode).
    pub fn crc(&self) -> Option<u32> {
        self.crc
            .then(|| self.u32_at(self.wire.len().saturating_sub(4)))
    }

    /// The request timeout in milliseconds; `None` for responses.
    pub fn timeout_ms(&self) -> Option<i32> {
        self.is_request().then(|| self.u32_at(10 + self.s()) as i32)
    }

    /// The response status (see [`status`]); `None` for requests.
    pub fn status(&self) -> Option<u16> {
        (!self.is_request()).then(|| self.u16_at(10 + self.s()))
    }

    /// The class name (e.g. `com.alipay.sofa.rpc.core.request.SofaRequest`; may be empty).
    pub fn class_name(&self) -> &[u8] {
        let at = self.head_len();
        self.wire.get(at..at + self.class_len).unwrap_or_default()
    }

    /// The raw header bytes (SOFA-RPC writes a simple map, see [`Frame::header_map`]).
    pub fn header(&self) -> &[u8] {
        let at = self.head_len() + self.class_len;
        self.wire.get(at..at + self.header_len).unwrap_or_default()
    }

    /// The header read as SOFA's simple map (int32 length + bytes for each key
    /// and value, length -1 for null).
    pub fn header_map(&self) -> HeaderMap<'_> {
        header_map(self.header())
    }

    /// The value of the first header whose key equals `name` (ignoring ASCII
    /// case); `None` when absent, null, or the header is not a simple map.
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.header_map()
            .map_while(Result::ok)
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| v)
    }

    /// The content (a view into the wire bytes; usually a Hessian body).
    pub fn content(&self) -> Bytes {
        let at = self.head_len() + self.class_len + self.header_len;
        let end = (at + self.content_len).min(self.wire.len());
        self.wire.slice(at.min(end)..end)
    }

    fn head_len(&self) -> usize {
        head_len(self.version, self.kind)
    }

    /// Shift of the fields after the protocol code (v2's `ver1`).
    fn o(&self) -> usize {
        self.version.shift()
    }

    /// Shift of the fields after the codec (v2's `ver1` and `switch`).
    fn s(&self) -> usize {
        2 * self.version.shift()
    }

    fn byte(&self, at: usize) -> u8 {
        self.wire.get(at).copied().unwrap_or(0)
    }

    fn u16_at(&self, at: usize) -> u16 {
        self.wire.get(at..at + 2).map_or(0, |mut b| b.get_u16())
    }

    fn u32_at(&self, at: usize) -> u32 {
        self.wire.get(at..at + 4).map_or(0, |mut b| b.get_u32())
    }
}

impl Metadata for Frame {
    /// Service (header `service`, else `sofa_head_target_service`), RpcMethod
    /// (header `sofa_head_method_name`), Header(name) for any header; `None`
    /// for anything else.
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::Service => self
                .header_value("service")
                .or_else(|| self.header_value("sofa_head_target_service")),
            Field::RpcMethod => self.header_value("sofa_head_method_name"),
            Field::Header(name) => self.header_value(name),
            _ => None,
        }
    }
}

/// The fixed head of a frame (streaming): protocol code, [ver1], type, then
/// the lengths at the end of the head; the fields between are skipped (the
/// [`Frame`] accessors read them from the wire bytes), except v2's switch.
fn head(input: &[u8]) -> Parsed<'_, Head> {
    let (rest, proto) = u8(input)?;
    let version = match proto {
        1 => Version::V1,
        2 => Version::V2,
        _ => return fail(CodecError::malformed(PROTO, "unknown protocol code")),
    };
    let (rest, _ver1) = take(version.shift())(rest)?;
    let (rest, kind) = u8(rest)?;
    let kind = match kind {
        TYPE_RESPONSE => Kind::Response,
        TYPE_REQUEST => Kind::Request,
        TYPE_ONEWAY => Kind::Oneway,
        _ => return fail(CodecError::malformed(PROTO, "unknown command type")),
    };
    // cmdcode(2) ver2 requestId(4) codec [switch] timeout(4) | status(2)
    let between = head_len(version, kind) - 8 - 2 - version.shift();
    let (rest, fields) = take(between)(rest)?;
    // The switch byte is the 12th of a v2 head: fields[11 - 3].
    let crc = version == Version::V2 && fields.get(8).is_some_and(|s| s & SWITCH_CRC != 0);
    // classLen(2) headerLen(2) contentLen(4), as one array (three nom
    // integer parsers in a row cost 13 % more instructions per frame).
    let (rest, &[c0, c1, h0, h1, n0, n1, n2, n3]) = array::<8>(rest)?;
    Ok((
        rest,
        Head {
            version,
            kind,
            class_len: usize::from(u16::from_be_bytes([c0, c1])),
            header_len: usize::from(u16::from_be_bytes([h0, h1])),
            content_len: u32::from_be_bytes([n0, n1, n2, n3]) as usize,
            crc,
        },
    ))
}

/// The fixed head of a frame, read from the first bytes of a buffer.
struct Head {
    version: Version,
    kind: Kind,
    class_len: usize,
    header_len: usize,
    content_len: usize,
    crc: bool,
}

impl Head {
    /// Read the head; `Ok(None)` if not all of it is there yet.
    fn read(buf: &[u8]) -> Result<Option<Head>, CodecError> {
        Ok(nom_to_codec(PROTO, buf, head(buf))?.map(|(_, head)| head))
    }

    /// Length of the whole frame.
    fn total(&self) -> u64 {
        head_len(self.version, self.kind) as u64
            + self.class_len as u64
            + self.header_len as u64
            + self.content_len as u64
            + if self.crc { 4 } else { 0 }
    }

    /// The frame over `wire` (exactly `total()` bytes), its CRC verified.
    fn frame(self, wire: Bytes) -> Result<Frame, CodecError> {
        if self.crc {
            let (body, tail) = wire.split_at(wire.len().saturating_sub(4));
            let expected = tail.first_chunk::<4>().map(|b| u32::from_be_bytes(*b));
            if expected != Some(crc32(body)) {
                return Err(CodecError::malformed(PROTO, "CRC32 mismatch"));
            }
        }
        Ok(Frame {
            wire,
            version: self.version,
            kind: self.kind,
            class_len: self.class_len,
            header_len: self.header_len,
            content_len: self.content_len,
            crc: self.crc,
        })
    }
}

/// Frames Bolt byte streams, in either direction.
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
        let Some(head) = Head::read(src)? else {
            // The longest fixed head is 24 bytes.
            src.reserve(24usize.saturating_sub(src.len()));
            return Ok(None);
        };
        let total = head.total();
        if total > self.limits.max_frame as u64 {
            return Err(CodecError::FrameTooLarge {
                what: "bolt frame",
                size: total,
                limit: self.limits.max_frame,
            });
        }
        let total = total as usize;
        if src.len() < total {
            src.reserve((total - src.len()).min(RESERVE_CAP));
            return Ok(None);
        }
        head.frame(src.split_to(total).freeze()).map(Some)
    }
}

/// Bodies of 1 GiB and more are taken as noise, not Bolt.
const MAX_CONTENT_HIGH_BYTE: u8 = 0x3f;

/// Sniff the first client bytes: the whole fixed header must be consistent
/// (protocol code, command type, a command code that fits the type, a known
/// switch bit, a sane content length). `Match` once it is all there; every
/// Bolt frame is at least that long.
pub fn sniff(buf: &[u8]) -> Verdict {
    let Some(&proto) = buf.first() else {
        return Verdict::NeedMore;
    };
    // Offset added to the v1 positions by v2's ver1 byte.
    let o = match proto {
        1 => 0,
        2 => 1,
        _ => return Verdict::Reject,
    };
    let Some(&kind) = buf.get(1 + o) else {
        return Verdict::NeedMore;
    };
    let request = match kind {
        TYPE_REQUEST | TYPE_ONEWAY => true,
        TYPE_RESPONSE => false,
        _ => return Verdict::Reject,
    };
    // Offset after the codec byte: v2's switch byte.
    let s = o + o;
    let content_at = if request { 18 + s } else { 16 + s };
    let header_len = content_at + 4;
    // A byte that is not there yet cannot contradict the header.
    let byte_ok = |at: usize, ok: &dyn Fn(u8) -> bool| buf.get(at).is_none_or(|&b| ok(b));
    let heartbeat = cmd::HEARTBEAT as u8;
    let own = if request { cmd::REQUEST } else { cmd::RESPONSE } as u8;
    let consistent =
        // cmdcode, big-endian u16: 0 heartbeat, 1 request, 2 response, fitting the type.
        byte_ok(2 + o, &|b| b == 0)
        && byte_ok(3 + o, &|b| b == heartbeat || b == own)
        // v2 switch: only bit 0 (CRC32) is defined.
        && (o == 0 || byte_ok(11, &|b| b <= 1))
        // Response status codes are small.
        && (request || byte_ok(10 + s, &|b| b == 0))
        && byte_ok(content_at, &|b| b <= MAX_CONTENT_HIGH_BYTE);
    if !consistent {
        return Verdict::Reject;
    }
    if buf.len() >= header_len {
        Verdict::Match(Protocol::Bolt)
    } else {
        Verdict::NeedMore
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
