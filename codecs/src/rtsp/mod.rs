//! RTSP 1.0 (RFC 2326): the sniffer, a decoder of the control and media
//! stream of one RTSP TCP connection, and the helpers a proxy needs to
//! rewrite it (URLs, `Transport`, re-encoding a message).
//!
//! One connection carries, in either direction, three kinds of [`Message`]:
//! requests (a server may send `ANNOUNCE`, `GET_PARAMETER`, ... too),
//! responses, and interleaved binary frames (`$`, channel, 16-bit length,
//! RTP/RTCP payload; RFC 2326 §10.12). A request or response is decoded whole,
//! head and `Content-Length` body together (bounded by [`Limits`]): RTSP bodies
//! are small (SDP, parameters) and a proxy rewrites them. Interleaved frames
//! are views of the input (`split_to(..).freeze()`), forwarded from their
//! original bytes.
//!
//! RTSP/2.0 (RFC 7826) has the same framing, so its messages decode; the
//! version is on the head and the proxy refuses them (505).

mod encode;
mod sniff;
pub mod transport;
pub mod url;

#[cfg(test)]
mod tests;

pub use encode::{error_response, reason_phrase, write_interleaved, write_request, write_response};
pub use sniff::sniff;

use bytes::{Buf, Bytes, BytesMut};
use nom::Parser;
use nom::bytes::{complete, streaming};
use nom::combinator::{opt, rest as rest_of_line, success};
use nom::multi::length_data;
use nom::number::streaming as number;
use nom::sequence::preceded;

use crate::meta::{Field, Metadata};
use crate::parse::{self, Fail, Parsed};
use crate::{CodecError, Decoder};

const PROTOCOL: &str = "rtsp";

fn malformed(reason: &'static str) -> CodecError {
    CodecError::malformed(PROTOCOL, reason)
}

/// Size limits of one connection's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest start line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Largest `Content-Length` body (SDP, parameters), in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// The protocol version on a start line, `RTSP/<major>.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    /// RTSP/1.0, the version this codec serves.
    pub const RTSP_1_0: Version = Version { major: 1, minor: 0 };

    fn parse(v: &[u8]) -> Option<Version> {
        match v {
            [b'R', b'T', b'S', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                Some(Version {
                    major: major - b'0',
                    minor: minor - b'0',
                })
            }
            _ => None,
        }
    }
}

/// A byte range inside a head's wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        Span {
            start,
            end: start.saturating_add(part.len()),
        }
    }

    fn get<'a>(&self, wire: &'a [u8]) -> &'a [u8] {
        wire.get(self.start..self.end).unwrap_or_default()
    }
}

/// What a request and a response share: the head's wire bytes, its header
/// fields as ranges of them, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Start line, headers and the blank line, as received.
    wire: Bytes,
    headers: Vec<(Span, Span)>,
    body: Bytes,
}

impl Head {
    /// The exact head bytes (start line through the blank line).
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The body (`Content-Length` bytes; empty without one).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Header fields in order, values trimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (n.get(&self.wire), v.get(&self.wire)))
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// `CSeq`, as sent.
    pub fn cseq(&self) -> Option<&[u8]> {
        self.header("cseq")
    }

    /// The session id of the `Session` header (without `;timeout=`).
    pub fn session_id(&self) -> Option<&[u8]> {
        self.header("session").map(session_id)
    }
}

/// The id part of a `Session` header value: `12345678;timeout=60` → `12345678`.
pub fn session_id(value: &[u8]) -> &[u8] {
    let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    value.get(..end).unwrap_or_default().trim_ascii()
}

/// The `timeout` parameter of a `Session` header value, in seconds.
pub fn session_timeout(value: &[u8]) -> Option<u64> {
    value.split(|&b| b == b';').skip(1).find_map(|p| {
        let (k, v) = split_once(p, b'=')?;
        if k.trim_ascii().eq_ignore_ascii_case(b"timeout") {
            std::str::from_utf8(v.trim_ascii()).ok()?.parse().ok()
        } else {
            None
        }
    })
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// An RTSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: Head,
    method: Span,
    uri: Span,
    pub version: Version,
}

impl Request {
    pub fn method(&self) -> &[u8] {
        self.method.get(&self.head.wire)
    }

    /// The request URI: an absolute `rtsp://` URL or `*`.
    pub fn uri(&self) -> &[u8] {
        self.uri.get(&self.head.wire)
    }
}

impl std::ops::Deref for Request {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

impl Metadata for Request {
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::Method => Some(self.method()),
            Field::Host => url::Url::parse(self.uri()).map(|u| u.host_port),
            Field::Path => Some(url::Url::parse(self.uri()).map_or(self.uri(), |u| u.path)),
            Field::Header(name) => self.head.header(name),
            _ => None,
        }
    }
}

/// An RTSP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub head: Head,
    pub status: u16,
    reason: Span,
    pub version: Version,
}

impl Response {
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.head.wire)
    }
}

impl std::ops::Deref for Response {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

/// An interleaved binary frame: `$`, channel, 16-bit length, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interleaved {
    pub channel: u8,
    /// The whole frame, header included.
    wire: Bytes,
}

impl Interleaved {
    /// The frame as received (4-byte header and payload).
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The RTP or RTCP packet.
    pub fn payload(&self) -> &[u8] {
        self.wire.get(4..).unwrap_or_default()
    }
}

/// One unit of an RTSP connection's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
    Interleaved(Interleaved),
}

/// Decodes the messages of one direction of an RTSP connection.
#[derive(Debug, Clone)]
pub struct MessageDecoder {
    limits: Limits,
    /// Bytes of the current head already searched for its end.
    searched: usize,
    /// Head and body length of a message whose head is complete and whose
    /// body is still arriving.
    pending: Option<(usize, usize)>,
}

impl MessageDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            searched: 0,
            pending: None,
        }
    }
}

impl Default for MessageDecoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// A start line and headers, parsed (ranges of the head bytes).
enum StartLine {
    Request {
        method: Span,
        uri: Span,
        version: Version,
    },
    Response {
        status: u16,
        reason: Span,
        version: Version,
    },
}

struct ParsedHead {
    start: StartLine,
    headers: Vec<(Span, Span)>,
    content_length: usize,
}

impl Decoder for MessageDecoder {
    type Item = Message;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if let Some((head_len, body_len)) = self.pending {
            return self.take_message(src, head_len, body_len);
        }
        // Blank lines between messages are ignored (RFC 2326 §15, like HTTP).
        let skip = src
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if skip > 0 {
            src.advance(skip);
            self.searched = 0;
        }
        match src.first() {
            None => Ok(None),
            Some(b'$') => {
                let result = interleaved(src);
                let missing = result.as_ref().err().and_then(parse::needed).unwrap_or(0);
                let Some((channel, len)) = parse::finish(PROTOCOL, src, result)? else {
                    src.reserve(missing);
                    return Ok(None);
                };
                let wire = src.split_to(len).freeze();
                Ok(Some(Message::Interleaved(Interleaved { channel, wire })))
            }
            Some(_) => {
                let Some(head_len) = self.find_head_end(src)? else {
                    return Ok(None);
                };
                let parsed = parse_head(src.get(..head_len).unwrap_or_default(), &self.limits)?;
                if parsed.content_length > self.limits.max_body_bytes {
                    return Err(CodecError::FrameTooLarge {
                        what: "RTSP body",
                        size: parsed.content_length as u64,
                        limit: self.limits.max_body_bytes,
                    });
                }
                self.take_message(src, head_len, parsed.content_length)
            }
        }
    }
}

impl MessageDecoder {
    /// The length of the head at the front of `src` once its blank line is
    /// there; rejects an invalid start line as soon as it is complete.
    fn find_head_end(&mut self, src: &BytesMut) -> Result<Option<usize>, CodecError> {
        let max = self.limits.max_head_bytes;
        let from = self.searched.saturating_sub(3);
        if let Some(end) = find_blank_line(src, from) {
            self.searched = 0;
            return if end > max {
                Err(CodecError::HeadTooLarge { limit: max })
            } else {
                Ok(Some(end))
            };
        }
        self.searched = src.len();
        if src.len() > max {
            return Err(CodecError::HeadTooLarge { limit: max });
        }
        // Garbage is refused at its first line end, not after a whole head.
        if let Some(lf) = memchr::memchr(b'\n', src) {
            parse_start_line(trim_cr(src.get(..lf).unwrap_or_default()), src)?;
        } else if !could_start_message(src) {
            return Err(malformed("not an RTSP start line"));
        }
        Ok(None)
    }

    fn take_message(
        &mut self,
        src: &mut BytesMut,
        head_len: usize,
        body_len: usize,
    ) -> Result<Option<Message>, CodecError> {
        let total = head_len + body_len;
        if src.len() < total {
            self.pending = Some((head_len, body_len));
            src.reserve(total - src.len());
            return Ok(None);
        }
        self.pending = None;
        let mut wire = src.split_to(total).freeze();
        let body = wire.split_off(head_len);
        let parsed = parse_head(&wire, &self.limits)?;
        let head = Head {
            wire,
            headers: parsed.headers,
            body,
        };
        Ok(Some(match parsed.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => Message::Request(Request {
                head,
                method,
                uri,
                version,
            }),
            StartLine::Response {
                status,
                reason,
                version,
            } => Message::Response(Response {
                head,
                status,
                reason,
                version,
            }),
        }))
    }
}

/// Whether a partial first line can still become a request or status line.
fn could_start_message(buf: &[u8]) -> bool {
    let word_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    let word = buf.get(..word_end).unwrap_or_default();
    if b"RTSP/".starts_with(word.get(..5.min(word.len())).unwrap_or_default()) {
        return true;
    }
    word.len() <= 32 && word.iter().all(|&b| is_token(b))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The end of the head: just past the first `\n\r\n` or `\n\n` at or after `from`.
fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let lf = i + memchr::memchr(b'\n', buf.get(i..)?)?;
        match buf.get(lf + 1)? {
            b'\n' => return Some(lf + 2),
            b'\r' if *buf.get(lf + 2)? == b'\n' => return Some(lf + 3),
            _ => {}
        }
        i = lf + 1;
    }
}

/// RFC 2326 token characters (as HTTP's `tchar`).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An interleaved frame, streaming: `$`, the channel, a big-endian length
/// and that many bytes. Returns the channel.
fn interleaved(input: &[u8]) -> Parsed<'_, u8> {
    let (rest, (_, channel, _)) = (
        streaming::tag(&b"$"[..]),
        number::be_u8,
        length_data(number::be_u16),
    )
        .parse(input)?;
    Ok((rest, channel))
}

/// Parse a start line (without its line end); `base` is the head it is part of.
fn parse_start_line(line: &[u8], base: &[u8]) -> Result<StartLine, CodecError> {
    parse::complete(PROTOCOL, line, start_line(line, base)).map(|(start, _)| start)
}

/// The first, second and (if any) third word of a start line.
type Words<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// `first SP second [SP third]`: the words of a start line; the third runs
/// to the end of the line (a reason phrase has spaces).
fn words(line: &[u8]) -> Parsed<'_, Words<'_>> {
    let word = || complete::take_till(|b| b == b' ');
    let space = || complete::tag(&b" "[..]);
    let (rest, first) = word().parse(line)?;
    let (rest, _) = space()
        .parse(rest)
        .map_err(|_: nom::Err<Fail<'_>>| parse::failure(malformed("start line without a space")))?;
    (success(first), word(), opt(preceded(space(), rest_of_line))).parse(rest)
}

/// A request line (`METHOD URI RTSP/1.0`) or a status line
/// (`RTSP/1.0 200 OK`), as a nom parser.
fn start_line<'a>(line: &'a [u8], base: &[u8]) -> Parsed<'a, StartLine> {
    let (rest, (first, second, third)) = words(line)?;
    let at = |e| parse::fail(e);
    if first.starts_with(b"RTSP/") {
        let Some(version) = Version::parse(first) else {
            return at(malformed("bad version in status line"));
        };
        let status = match second {
            [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return at(malformed("bad status code")),
        };
        if status < 100 {
            return at(malformed("bad status code"));
        }
        // No reason phrase: an empty range right after the code (inside `base`).
        let reason = third.unwrap_or(second.get(second.len()..).unwrap_or_default());
        if reason.iter().any(|&b| b < 0x20 && b != b'\t') {
            return at(malformed("control character in reason phrase"));
        }
        return Ok((
            rest,
            StartLine::Response {
                status,
                reason: Span::of(base, reason),
                version,
            },
        ));
    }
    let Some(version) = third else {
        return at(malformed("request line without a version"));
    };
    if first.is_empty() || !first.iter().all(|&b| is_token(b)) {
        return at(malformed("bad method"));
    }
    if second.is_empty() || !second.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return at(malformed("bad request URI"));
    }
    let Some(version) = Version::parse(version) else {
        return at(malformed("bad version in request line"));
    };
    Ok((
        rest,
        StartLine::Request {
            method: Span::of(base, first),
            uri: Span::of(base, second),
            version,
        },
    ))
}

/// Parse a complete head (start line through the blank line).
fn parse_head(head: &[u8], limits: &Limits) -> Result<ParsedHead, CodecError> {
    let lf = memchr::memchr(b'\n', head).ok_or(malformed("head without a line end"))?;
    let start = parse_start_line(trim_cr(head.get(..lf).unwrap_or_default()), head)?;
    let rest = head.get(lf + 1..).unwrap_or_default();
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let fields = match httparse::parse_headers(rest, &mut storage) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete headers")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(CodecError::HeadTooLarge {
                limit: limits.max_head_bytes,
            });
        }
        Err(_) => return Err(malformed("invalid header field")),
    };
    let mut headers = Vec::with_capacity(fields.len());
    let mut content_length = None;
    for f in fields.iter() {
        let value = f.value.trim_ascii();
        if f.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or(malformed("bad Content-Length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(malformed("conflicting Content-Length"));
            }
            content_length = Some(n);
        }
        headers.push((Span::of(head, f.name.as_bytes()), Span::of(head, value)));
    }
    Ok(ParsedHead {
        start,
        headers,
        content_length: content_length.unwrap_or(0),
    })
}
