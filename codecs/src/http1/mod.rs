//! HTTP/1.x: request and response heads (httparse) and body framing
//! (content-length, chunked, close-delimited), as zero-copy views.
//!
//! A head is its wire bytes (`Bytes` split off the input) plus byte ranges
//! for the method, target, path and each header; nothing is copied or
//! allocated per header. Bodies are yielded as raw wire slices, chunk
//! framing included, so a proxy forwards them unchanged; the decoders only
//! decide where each message ends (RFC 9112 §6), strictly enough to refuse
//! request smuggling (Transfer-Encoding with Content-Length, conflicting
//! Content-Length values, malformed chunk lines).
//!
//! Decoding yields `Part::Head(h)`, then, when `h.has_body()`, one or more
//! `Part::Body(bytes)` and a `Part::End`. Pipelined messages follow one
//! another on the same decoder.
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::{CodecError, Decoder, Field, Metadata, Part, Verdict, WireHead};

mod body;
mod encode;
mod forward;
mod head;
mod path;
mod sniff;
#[cfg(test)]
mod tests;

use body::{BodyState, Chunk};
use head::{Fields, HeadScan, Locate, Span};

pub use body::MAX_CHUNK_LINE;
pub use encode::reason_phrase;
pub use forward::{ClientConnection, shadow_request_head};
pub use path::{PathError, normalize_path};
pub use sniff::SNIFF_LIMIT;

/// The protocol name in [`CodecError`]s.
const PROTOCOL: &str = "http1";

/// Size limits of the HTTP/1 codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request/response head (request line + headers + CRLF CRLF). Default 64 KiB.
    /// Also bounds the empty lines before a head and a chunked body's trailer section.
    pub max_head_bytes: usize,
    /// Most header fields in one head. Default 128.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 64 * 1024,
            max_headers: 128,
        }
    }
}

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all.
    Empty,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Responses only: the body runs until the server closes.
    UntilClose,
}

impl BodyLength {
    fn state(self) -> Option<BodyState> {
        match self {
            BodyLength::Empty | BodyLength::Length(0) => None,
            BodyLength::Length(remaining) => Some(BodyState::Length { remaining }),
            BodyLength::Chunked => Some(BodyState::Chunked(Chunk::START)),
            BodyLength::UntilClose => Some(BodyState::UntilClose),
        }
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'!'
            | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    )
}

/// First header named `name` (ASCII case-insensitive).
fn find_header<'a>(wire: &'a [u8], headers: &[(Span, Span)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.get(wire).eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.get(wire))
}

/// A decoded request head; a view into the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    wire: Bytes,
    method: Span,
    target: Span,
    /// `None`: absolute-form target without a path, which means `/`.
    path: Option<Span>,
    version: Version,
    headers: Vec<(Span, Span)>,
    host: Option<Span>,
    /// The authority of an absolute-form target.
    authority: Option<Span>,
    body: BodyLength,
    keep_alive: bool,
    expects_continue: bool,
    upgrade: bool,
    /// `TE` lists `trailers`.
    te_trailers: bool,
    /// The head must be written anew before it is forwarded (see `forwarded`).
    rewrite: bool,
}

impl RequestHead {
    pub fn method(&self) -> &[u8] {
        self.method.get(&self.wire)
    }
    /// The request target as sent (path and query).
    pub fn target(&self) -> &[u8] {
        self.target.get(&self.wire)
    }
    /// The path part of the target (no query string). For an absolute-form
    /// target (`http://host/p?q`) the path after the authority (`/` when it
    /// has none); `*` for asterisk-form; empty for authority-form (CONNECT).
    pub fn path(&self) -> &[u8] {
        match self.path {
            Some(span) => span.get(&self.wire),
            None => b"/",
        }
    }
    /// What follows the path in the target: `?query` (empty when none).
    pub fn query(&self) -> &[u8] {
        let from = match (self.path, self.authority) {
            (Some(p), _) => p.end(),
            (None, Some(a)) => a.end(),
            (None, None) => return b"",
        };
        Span::new(from, self.target.end()).get(&self.wire)
    }
    pub fn version(&self) -> Version {
        self.version
    }
    /// First header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.wire, &self.headers, name)
    }
    /// All headers in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (n.get(&self.wire), v.get(&self.wire)))
    }
    /// The `Host` header value (there is at most one: several are refused).
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|span| span.get(&self.wire))
    }
    /// The authority of an absolute-form target (`GET http://a.example/x`),
    /// which takes the place of `Host` (RFC 9112 §3.2.2).
    pub fn authority(&self) -> Option<&[u8]> {
        self.authority.map(|span| span.get(&self.wire))
    }
    /// The host the request is for: the absolute-form target's authority,
    /// else `Host`.
    pub fn effective_host(&self) -> Option<&[u8]> {
        self.authority().or_else(|| self.host())
    }
    pub fn body(&self) -> BodyLength {
        self.body
    }
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool {
        self.expects_continue
    }
    /// `Connection: upgrade` with an `Upgrade` header (WebSocket, h2c).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }
}

impl WireHead for RequestHead {
    fn wire(&self) -> &Bytes {
        &self.wire
    }
    fn has_body(&self) -> bool {
        self.body != BodyLength::Empty
    }
}

impl Metadata for RequestHead {
    /// Method, Host (an absolute-form target's authority, else the Host
    /// header), Path, Header(name).
    fn get(&self, field: &Field) -> Option<&[u8]> {
        match field {
            Field::Method => Some(self.method()),
            Field::Host => self.effective_host(),
            Field::Path => Some(self.path()),
            Field::Header(name) => self.header(name),
            _ => None,
        }
    }

    fn for_each_header(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (name, value) in self.headers() {
            f(name, value);
        }
    }
}

/// A decoded response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    wire: Bytes,
    status: u16,
    version: Version,
    headers: Vec<(Span, Span)>,
    body: BodyLength,
    keep_alive: bool,
    /// `Connection` lists `close` / `keep-alive`.
    close_token: bool,
    keep_alive_token: bool,
    /// Bare LFs or hop-by-hop fields other than `Connection: close|keep-alive`.
    rewrite: bool,
}

impl ResponseHead {
    pub fn status(&self) -> u16 {
        self.status
    }
    pub fn version(&self) -> Version {
        self.version
    }
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.wire, &self.headers, name)
    }
    /// All headers in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (n.get(&self.wire), v.get(&self.wire)))
    }
    pub fn body(&self) -> BodyLength {
        self.body
    }
    /// The server will keep the connection open after this response.
    /// False for close-delimited bodies and for 101 / CONNECT tunnels.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// 1xx other than 101: a final response follows on the same exchange.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

impl WireHead for ResponseHead {
    fn wire(&self) -> &Bytes {
        &self.wire
    }
    fn has_body(&self) -> bool {
        self.body != BodyLength::Empty
    }
}

/// Where a decoder stands in its current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Between messages: the next bytes start a head.
    #[default]
    Head,
    /// Inside a body.
    Body(BodyState),
    /// The body is complete; `Part::End` is due.
    End,
}

impl State {
    fn after_head(body: BodyLength) -> State {
        body.state().map_or(State::Head, State::Body)
    }

    /// One body step (only called outside `State::Head`).
    fn body_step<H>(
        &mut self,
        src: &mut BytesMut,
        max_trailer: usize,
    ) -> Result<Option<Part<H>>, CodecError> {
        match self {
            State::Head => Ok(None),
            State::End => {
                *self = State::Head;
                Ok(Some(Part::End))
            }
            State::Body(body) => {
                let (n, done) = body::advance(body, src, max_trailer)?;
                if n == 0 {
                    if done {
                        *self = State::Head;
                        return Ok(Some(Part::End));
                    }
                    return Ok(None);
                }
                if done {
                    *self = State::End;
                }
                Ok(Some(Part::Body(src.split_to(n.min(src.len())).freeze())))
            }
        }
    }
}

/// Find, parse and split off the next head. `parse` returns the parsed
/// head and its length in bytes.
fn next_head<P>(
    src: &mut BytesMut,
    scan: &mut HeadScan,
    limits: &Limits,
    parse: impl Fn(&[u8], usize) -> Result<Option<(P, usize)>, httparse::Error>,
) -> Result<Option<(P, Bytes)>, CodecError> {
    let max = limits.max_head_bytes;
    let parsed = match head::locate(src, scan, max)? {
        Locate::NeedMore => None,
        Locate::Probe => parse(src, limits.max_headers).map_err(|e| head::parse_error(e, max))?,
        Locate::Complete(end) => {
            let parsed = parse(src.get(..end).unwrap_or_default(), limits.max_headers)
                .map_err(|e| head::parse_error(e, max))?;
            if parsed.is_none() {
                return Err(CodecError::malformed(PROTOCOL, "incomplete head"));
            }
            parsed
        }
    };
    let Some((parsed, len)) = parsed else {
        return Ok(None);
    };
    if len > max {
        return Err(CodecError::HeadTooLarge { limit: max });
    }
    if len > src.len() || len == 0 {
        return Err(CodecError::malformed(PROTOCOL, "head length out of range"));
    }
    *scan = HeadScan::default();
    Ok(Some((parsed, src.split_to(len).freeze())))
}

/// Decodes a stream of requests (pipelined requests one after another).
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    scan: HeadScan,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Head,
            scan: HeadScan::default(),
        }
    }

    /// Between messages: no head bytes consumed and no body in progress.
    /// (Bytes of an incomplete head may still sit in the caller's buffer.)
    pub fn is_idle(&self) -> bool {
        self.state == State::Head
    }

    fn decode_head(&mut self, src: &mut BytesMut) -> Result<Option<RequestHead>, CodecError> {
        let parsed = next_head(src, &mut self.scan, &self.limits, |buf, max_headers| {
            Ok(head::parse_request(buf, max_headers)?.map(|p| {
                let len = p.len;
                (p, len)
            }))
        })?;
        let Some((p, wire)) = parsed else {
            return Ok(None);
        };
        let fields = Fields::scan(&wire, &p.headers);
        if fields.hosts > 1 {
            return Err(CodecError::malformed(PROTOCOL, "more than one Host field"));
        }
        let body = fields.request_body(p.version)?;
        let path = head::target_path(&wire, p.target);
        let authority = head::target_authority(&wire, p.target)?;
        let upgrade = fields.conn_upgrade && fields.upgrade;
        let rewrite = authority.is_some()
            || fields.length_repeated
            || fields.hop_by_hop
            || fields.connection_names_fields
            || fields.close
            || (fields.upgrade_field || fields.conn_upgrade) && !upgrade
            || head::has_bare_lf(&wire);
        self.state = State::after_head(body);
        Ok(Some(RequestHead {
            method: p.method,
            target: p.target,
            path,
            version: p.version,
            headers: p.headers,
            host: fields.host,
            authority,
            body,
            keep_alive: fields.persistent(p.version),
            expects_continue: fields.expect_continue,
            upgrade,
            te_trailers: fields.te_trailers,
            rewrite,
            wire,
        }))
    }
}

impl Decoder for RequestDecoder {
    type Item = Part<RequestHead>;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        if self.state != State::Head {
            return self.state.body_step(src, self.limits.max_head_bytes);
        }
        Ok(self.decode_head(src)?.map(Part::Head))
    }
}

/// What the request a response answers changes about its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answering {
    /// `HEAD`: no body whatever the headers say.
    Head,
    /// `CONNECT`: a 2xx turns the connection into a tunnel.
    Connect,
    Other,
}

/// Decodes the responses of one upstream connection.
#[derive(Debug, Default)]
pub struct ResponseDecoder {
    limits: Limits,
    state: State,
    scan: HeadScan,
    /// Methods of the requests whose final responses are still to come, oldest first.
    pending: VecDeque<Answering>,
}

impl ResponseDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Head,
            scan: HeadScan::default(),
            pending: VecDeque::new(),
        }
    }

    /// Tell the decoder about the request the next response answers
    /// (a response to `HEAD` has no body). Call before decoding its response.
    ///
    /// Calls queue up: with pipelining, call once per request in the order
    /// sent; each final (non-1xx) response consumes one. Without a queued
    /// method a response is framed as if it answered a `GET`.
    pub fn expect_response_to(&mut self, method: &[u8]) {
        let answering = if method.eq_ignore_ascii_case(b"HEAD") {
            Answering::Head
        } else if method.eq_ignore_ascii_case(b"CONNECT") {
            Answering::Connect
        } else {
            Answering::Other
        };
        self.pending.push_back(answering);
    }

    /// Between messages: no head bytes consumed and no body in progress.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head
    }

    /// At EOF: finish a close-delimited body. Returns `Some(Part::End)` if a
    /// close-delimited body was in progress, `None` otherwise.
    ///
    /// Bytes still in `src` are decoded first (a `Body` slice of a
    /// close-delimited body, or complete messages), so call it until it
    /// returns `None` or `Part::End`. A response cut short (inside a head,
    /// or a length-delimited or chunked body) is an error.
    pub fn decode_eof(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<Part<ResponseHead>>, CodecError> {
        if self.state == State::Body(BodyState::UntilClose) && src.is_empty() {
            self.state = State::Head;
            return Ok(Some(Part::End));
        }
        if let Some(part) = self.decode(src)? {
            return Ok(Some(part));
        }
        match self.state {
            State::Head if src.is_empty() => Ok(None),
            State::Head => Err(CodecError::malformed(
                PROTOCOL,
                "connection closed inside a response head",
            )),
            _ => Err(CodecError::malformed(
                PROTOCOL,
                "connection closed inside a response body",
            )),
        }
    }

    fn decode_head(&mut self, src: &mut BytesMut) -> Result<Option<ResponseHead>, CodecError> {
        let parsed = next_head(src, &mut self.scan, &self.limits, |buf, max_headers| {
            Ok(head::parse_response(buf, max_headers)?.map(|p| {
                let len = p.len;
                (p, len)
            }))
        })?;
        let Some((p, wire)) = parsed else {
            return Ok(None);
        };
        let status = p.status;
        if status < 100 {
            return Err(CodecError::malformed(PROTOCOL, "status code below 100"));
        }
        let fields = Fields::scan(&wire, &p.headers);
        let answering = self.pending.front().copied().unwrap_or(Answering::Other);
        let interim = (100..200).contains(&status) && status != 101;
        let tunnel =
            status == 101 || (answering == Answering::Connect && (200..300).contains(&status));
        let body = if status < 200
            || status == 204
            || status == 304
            || answering == Answering::Head
            || tunnel
        {
            BodyLength::Empty
        } else {
            fields.response_body(p.version)?
        };
        if !interim {
            self.pending.pop_front();
        }
        self.state = State::after_head(body);
        let rewrite = fields.hop_by_hop
            || fields.upgrade_field
            || fields.te_trailers
            || fields.connection_names_fields
            || fields.conn_upgrade
            || head::has_bare_lf(&wire);
        Ok(Some(ResponseHead {
            status,
            version: p.version,
            headers: p.headers,
            body,
            keep_alive: fields.persistent(p.version) && body != BodyLength::UntilClose && !tunnel,
            close_token: fields.close,
            keep_alive_token: fields.keep_alive,
            rewrite,
            wire,
        }))
    }
}

impl Decoder for ResponseDecoder {
    type Item = Part<ResponseHead>;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        if self.state != State::Head {
            return self.state.body_step(src, self.limits.max_head_bytes);
        }
        Ok(self.decode_head(src)?.map(Part::Head))
    }
}

/// A complete gateway-made response: `HTTP/1.1 <status> <reason>`, `Content-Type:
/// text/plain`, `Content-Length`, `Connection: close` when `close`, and `body`.
pub fn error_response(status: u16, body: &str, close: bool) -> Bytes {
    encode::response(
        status,
        &[("Content-Type", "text/plain; charset=utf-8")],
        body.as_bytes(),
        close,
    )
}

/// A complete response with the given status, extra headers and body
/// (used by direct responses).
///
/// `Content-Length` is computed (and any given `Content-Length` or
/// `Transfer-Encoding` dropped); 1xx, 204 and 304 get neither a length nor
/// the body. With `close`, a given `Connection` header is replaced by
/// `Connection: close`. Headers with an invalid name or a value containing
/// CR, LF or other control bytes are left out. A status outside 100..=999
/// becomes 500.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8], close: bool) -> Bytes {
    encode::response(status, headers, body, close)
}

/// Sniff HTTP/1.x: a request line `METHOD SP target SP HTTP/1.[01] CRLF`.
///
/// `NeedMore` while the bytes could still become one (up to [`SNIFF_LIMIT`]
/// bytes without a line end), `Reject` as soon as they cannot: a Redis inline
/// command (`GET key`, `PING`), an RTSP or HTTP/2 (`PRI * HTTP/2.0`) line or
/// binary bytes.
pub fn sniff(buf: &[u8]) -> Verdict {
    sniff::sniff(buf)
}
