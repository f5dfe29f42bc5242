//! HTTP/1.x: request and response heads (httparse) and body framing
//! (content-length, chunked, close-delimited), as zero-copy views.
//!
//! API SKELETON — the bodies are being written; signatures are fixed.
use bytes::{Bytes, BytesMut};

use crate::{CodecError, Decoder, Field, Metadata, Part, Verdict, WireHead};

/// Size limits of the HTTP/1 codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request/response head (request line + headers + CRLF CRLF). Default 64 KiB.
    pub max_head_bytes: usize,
    /// Most header fields in one head. Default 128.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_head_bytes: 64 * 1024, max_headers: 128 }
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

/// A decoded request head; a view into the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead { /* fields are the implementer's */ }

impl RequestHead {
    pub fn method(&self) -> &[u8] { todo!() }
    /// The request target as sent (path and query).
    pub fn target(&self) -> &[u8] { todo!() }
    /// The path part of the target (no query string).
    pub fn path(&self) -> &[u8] { todo!() }
    pub fn version(&self) -> Version { todo!() }
    /// First header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> { todo!() }
    /// All headers in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> { std::iter::empty() }
    pub fn body(&self) -> BodyLength { todo!() }
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool { todo!() }
    /// `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool { todo!() }
    /// `Connection: upgrade` with an `Upgrade` header (WebSocket, h2c).
    pub fn is_upgrade(&self) -> bool { todo!() }
}

impl WireHead for RequestHead {
    fn wire(&self) -> &Bytes { todo!() }
    fn has_body(&self) -> bool { todo!() }
}

impl Metadata for RequestHead {
    /// Method, Host (the Host header), Path, Header(name).
    fn get(&self, field: &Field) -> Option<&[u8]> { todo!() }
}

/// A decoded response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead { /* fields are the implementer's */ }

impl ResponseHead {
    pub fn status(&self) -> u16 { todo!() }
    pub fn version(&self) -> Version { todo!() }
    pub fn header(&self, name: &str) -> Option<&[u8]> { todo!() }
    pub fn body(&self) -> BodyLength { todo!() }
    /// The server will keep the connection open after this response.
    pub fn keep_alive(&self) -> bool { todo!() }
    /// 1xx other than 101: a final response follows on the same exchange.
    pub fn is_interim(&self) -> bool { todo!() }
}

impl WireHead for ResponseHead {
    fn wire(&self) -> &Bytes { todo!() }
    fn has_body(&self) -> bool { todo!() }
}

/// Decodes a stream of requests (pipelined requests one after another).
#[derive(Debug, Default)]
pub struct RequestDecoder { /* */ }

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self { todo!() }
}

impl Decoder for RequestDecoder {
    type Item = Part<RequestHead>;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> { todo!() }
}

/// Decodes the responses of one upstream connection.
#[derive(Debug, Default)]
pub struct ResponseDecoder { /* */ }

impl ResponseDecoder {
    pub fn new(limits: Limits) -> Self { todo!() }
    /// Tell the decoder about the request the next response answers
    /// (a response to `HEAD` has no body). Call before decoding its response.
    pub fn expect_response_to(&mut self, method: &[u8]) { todo!() }
    /// At EOF: finish a close-delimited body. Returns `Some(Part::End)` if a
    /// close-delimited body was in progress, `None` otherwise.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Part<ResponseHead>>, CodecError> { todo!() }
}

impl Decoder for ResponseDecoder {
    type Item = Part<ResponseHead>;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> { todo!() }
}

/// A complete gateway-made response: `HTTP/1.1 <status> <reason>`, `Content-Type:
/// text/plain`, `Content-Length`, `Connection: close` when `close`, and `body`.
pub fn error_response(status: u16, body: &str, close: bool) -> Bytes { todo!() }

/// A complete response with the given status, extra headers and body
/// (used by direct responses).
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8], close: bool) -> Bytes { todo!() }

/// Sniff HTTP/1.x: a request line `METHOD SP target SP HTTP/1.[01] CRLF`.
pub fn sniff(buf: &[u8]) -> Verdict { todo!() }
