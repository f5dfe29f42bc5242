//! Switchyard's wire formats: pure, I/O-free codecs and sniffers.
//!
//! Every codec follows one contract ([`Decoder`]):
//! `decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError>`, where
//! `Ok(None)` means "need more bytes", limits are checked before a body is buffered,
//! and no input can make it panic. Decoded items are *views*: `Bytes` split off the
//! input buffer, so a frame forwarded unchanged is written from its original bytes.
//!
//! Every request head exposes routing [`Metadata`] (method, host, path, command,
//! keys, ...) so the router and filters never look at protocol structs.
//!
//! Detection lives in [`detect`]: `sniff(buf, enabled) -> Verdict`.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod bolt;
pub mod detect;
pub mod dubbo;
pub mod error;
pub mod fields;
pub mod hessian2;
pub mod http1;
pub mod http2;
pub mod meta;
pub mod mqtt;
pub mod mysql;
pub(crate) mod parse;
pub mod proxy_protocol;
pub mod redis;
pub mod rtsp;
pub mod tls;
pub mod websocket;

pub use detect::{Protocol, Shape, Verdict, sniff};
pub use error::CodecError;
pub use meta::{Field, Metadata};

use bytes::{Bytes, BytesMut};

/// The one decode contract every codec implements.
pub trait Decoder {
    /// What one successful decode step yields.
    type Item;
    /// Decode the next item from `src`, consuming its bytes.
    ///
    /// * `Ok(Some(item))`: one item was taken off the front of `src`.
    /// * `Ok(None)`: `src` holds an incomplete item; read more and call again.
    /// * `Err(_)`: the stream is malformed or over a limit; the connection cannot
    ///   be resynchronised and should be answered with an error and closed.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError>;
}

/// One step of a message on an ordered request/response protocol
/// (HTTP/1.1, Redis, RTSP control).
///
/// A message is a `Head`, then — only when the head says it has a body —
/// any number of `Body` slices and one `End`. Heads without a body
/// (every Redis command and reply) are complete on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<H> {
    /// The start of a message.
    Head(H),
    /// Raw body bytes as they appeared on the wire (chunk framing included),
    /// to be forwarded unchanged.
    Body(Bytes),
    /// The end of the current message's body.
    End,
}

/// A decoded head that can be forwarded as it came in.
pub trait WireHead {
    /// The exact bytes of the head on the wire.
    fn wire(&self) -> &Bytes;
    /// Whether `Body`/`End` parts follow this head.
    fn has_body(&self) -> bool;
}
