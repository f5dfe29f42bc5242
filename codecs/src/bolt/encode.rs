//! Frames the gateway makes itself, request-id remapping, and the CRC32.
use bytes::Bytes;

use super::{Frame, Kind, SWITCH_CRC, Version, cmd, codec, head_len, status};
use crate::hessian2::{truncate_utf16, write_int};

/// The timeout written into gateway-made heartbeats (as sofa-bolt-node does).
const HEARTBEAT_TIMEOUT_MS: i32 = 3000;

/// The command version (`ver2`) of gateway-made frames.
const VER2: u8 = 1;

/// The `ver1` byte of gateway-made v2 frames.
const VER1: u8 = 2;

/// Longest error message sent, in UTF-16 units: one Hessian `S` chunk.
const MAX_MESSAGE_UNITS: usize = 0xffff;

/// The CRC32 tables (IEEE, reflected polynomial 0xEDB88320) for slicing by
/// eight, built at compile time: `CRC_TABLES[0]` is the classic byte table,
/// `CRC_TABLES[k]` advances a byte through `k` more zero bytes.
// In bounds: every index is below 256 or 8 (and a const evaluation cannot go
// out of bounds anyway).
#[allow(clippy::indexing_slicing)]
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

/// Entry `byte` of table `t` (`t` < 8).
#[inline(always)]
fn table(t: usize, byte: u32) -> u32 {
    // In bounds: callers pass t < 8, and a u8 indexes a 256-entry table.
    #[allow(clippy::indexing_slicing)]
    CRC_TABLES[t & 7][(byte & 0xff) as usize]
}

/// CRC32 (IEEE 802.3, as `java.util.zip.CRC32` and zlib) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let Ok(block) = <[u8; 8]>::try_from(block) else {
            continue;
        };
        let [b0, b1, b2, b3, b4, b5, b6, b7] = block;
        let a = u32::from_le_bytes([b0, b1, b2, b3]) ^ c;
        let b = u32::from_le_bytes([b4, b5, b6, b7]);
        c = table(7, a)
            ^ table(6, a >> 8)
            ^ table(5, a >> 16)
            ^ table(4, a >> 24)
            ^ table(3, b)
            ^ table(2, b >> 8)
            ^ table(1, b >> 16)
            ^ table(0, b >> 24);
    }
    for &byte in blocks.remainder() {
        c = table(0, c ^ u32::from(byte)) ^ (c >> 8);
    }
    !c
}

/// Length of a frame part as its wire field; parts over the field's range
/// are the caller's mistake and get a clamped length (keep them small).
fn len16(part: &[u8]) -> u16 {
    u16::try_from(part.len()).unwrap_or(u16::MAX)
}

/// Assemble a frame. `word` is the timeout (requests) or the status (responses).
#[allow(clippy::too_many_arguments)]
fn build(
    version: Version,
    kind: Kind,
    cmd_code: u16,
    request_id: u32,
    codec: u8,
    word: &[u8],
    class: &[u8],
    header: &[u8],
    content: &[u8],
) -> Bytes {
    let mut out = Vec::with_capacity(
        head_len(version, kind) + class.len() + header.len() + content.len() + 4,
    );
    out.push(version.code());
    if version == Version::V2 {
        out.push(VER1);
    }
    out.push(kind.code());
    out.extend_from_slice(&cmd_code.to_be_bytes());
    out.push(VER2);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.push(codec);
    if version == Version::V2 {
        out.push(SWITCH_CRC);
    }
    out.extend_from_slice(word);
    out.extend_from_slice(&len16(class).to_be_bytes());
    out.extend_from_slice(&len16(header).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(content.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(class);
    out.extend_from_slice(header);
    out.extend_from_slice(content);
    if version == Version::V2 {
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    Bytes::from(out)
}

/// A request frame (command code 1) from its parts: for tests and tools, and
/// for requests the gateway makes. v2 frames get the CRC switch and a CRC32.
/// Class names and headers must be under 64 KiB.
#[allow(clippy::too_many_arguments)]
pub fn request(
    version: Version,
    oneway: bool,
    request_id: u32,
    codec: u8,
    timeout_ms: i32,
    class: &[u8],
    header: &[u8],
    content: &[u8],
) -> Bytes {
    let kind = if oneway { Kind::Oneway } else { Kind::Request };
    build(
        version,
        kind,
        cmd::REQUEST,
        request_id,
        codec,
        &timeout_ms.to_be_bytes(),
        class,
        header,
        content,
    )
}

/// A gateway-made response to request `request_id` (command code 2, `ver2`
/// 1, in the request's `version` and `codec`) with `status` (see [`status`]),
/// no class name and no header.
///
/// The content is the Hessian 2 string of `message` (cut to 65,535 UTF-16
/// units; the compact or `S` form every Hessian version reads) when `codec` is
/// [`codec::HESSIAN2`] and `message` is not empty, and empty otherwise. Java
/// Bolt clients turn a non-success status into an exception by the status
/// alone and read such a content as a plain string; other clients can show it.
/// v2 frames get the CRC switch and a CRC32.
pub fn response(version: Version, request_id: u32, codec: u8, status: u16, message: &str) -> Bytes {
    let mut content = Vec::new();
    if codec == codec::HESSIAN2 && !message.is_empty() {
        let message = truncate_utf16(message, MAX_MESSAGE_UNITS);
        let units: usize = message.chars().map(char::len_utf16).sum();
        if units <= 0x1f {
            content.push(units as u8);
        } else {
            content.push(b'S');
            content.extend_from_slice(&(units as u16).to_be_bytes());
        }
        content.extend_from_slice(message.as_bytes());
    }
    build(
        version,
        Kind::Response,
        cmd::RESPONSE,
        request_id,
        codec,
        &status.to_be_bytes(),
        &[],
        &[],
        &content,
    )
}

/// The answer to heartbeat `request_id`: a response with command code 0,
/// status success, codec Hessian 2 and nothing else (v2: with a CRC32).
pub fn heartbeat_response(version: Version, request_id: u32) -> Bytes {
    build(
        version,
        Kind::Response,
        cmd::HEARTBEAT,
        request_id,
        codec::HESSIAN2,
        &status::SUCCESS.to_be_bytes(),
        &[],
        &[],
        &[],
    )
}

/// A heartbeat: a request with command code 0, codec Hessian 2, a 3000 ms
/// timeout and nothing else (v2: with a CRC32).
pub fn heartbeat_request(version: Version, request_id: u32) -> Bytes {
    build(
        version,
        Kind::Request,
        cmd::HEARTBEAT,
        request_id,
        codec::HESSIAN2,
        &HEARTBEAT_TIMEOUT_MS.to_be_bytes(),
        &[],
        &[],
        &[],
    )
}

/// `frame` with its request id replaced by `id` (a copy; a v2 CRC is recomputed).
pub fn with_request_id(frame: &Frame, id: u32) -> Bytes {
    let mut out = frame.wire().to_vec();
    let at = 5 + frame.version().shift();
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&id.to_be_bytes());
    }
    if frame.has_crc() {
        let body_len = out.len().saturating_sub(4);
        let crc = crc32(out.get(..body_len).unwrap_or_default());
        if let Some(slot) = out.get_mut(body_len..) {
            slot.copy_from_slice(&crc.to_be_bytes());
        }
    }
    Bytes::from(out)
}

/// Encode a simple-map header: each key and value as a big-endian int32
/// length and its bytes, `None` values as length -1.
pub fn encode_header_map<'e>(
    entries: impl IntoIterator<Item = (&'e [u8], Option<&'e [u8]>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let field = |out: &mut Vec<u8>, v: Option<&[u8]>| match v {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&i32::try_from(v.len()).unwrap_or(i32::MAX).to_be_bytes());
            out.extend_from_slice(v);
        }
    };
    for (k, v) in entries {
        field(&mut out, Some(k));
        field(&mut out, v);
    }
    out
}

/// The class SOFA Bolt servers name in their own error responses.
pub const SERVER_EXCEPTION_CLASS: &str = "com.alipay.remoting.rpc.exception.RpcServerException";

/// A gateway-made error response in the form SOFA Bolt servers send their
/// own: status `status`, class name [`SERVER_EXCEPTION_CLASS`] and, as the
/// content, that exception serialized in Hessian with `message` as its
/// `detailMessage` (cut to 65,535 UTF-16 units), an empty stack trace and no
/// cause. Clients show the message: Java's as the exception's message,
/// sofa-rpc-node as `RpcServerException: message`.
///
/// The object is written in the Hessian encoding SOFA stacks use for it (the
/// pre-final 2.0 draft of Hessian 3.1: `O` with the type inline, `o`, `V … z`),
/// byte for byte as sofa-bolt-node's server writes it. A codec other than
/// Hessian 2, or an empty message, gets no class and no content (the status
/// alone), which every client accepts.
pub fn server_exception(
    version: Version,
    request_id: u32,
    codec: u8,
    status: u16,
    message: &str,
) -> Bytes {
    let (class, content) = if codec == codec::HESSIAN2 && !message.is_empty() {
        (
            SERVER_EXCEPTION_CLASS.as_bytes(),
            server_exception_content(message),
        )
    } else {
        (&[][..], Vec::new())
    };
    build(
        version,
        Kind::Response,
        cmd::RESPONSE,
        request_id,
        codec,
        &status.to_be_bytes(),
        class,
        &[],
        &content,
    )
}

/// The Hessian content of [`server_exception`]: an `RpcServerException`
/// with fields `detailMessage` (`message`), `stackTrace` (an empty
/// `[java.lang.StackTraceElement` list) and `cause` (null).
pub fn server_exception_content(message: &str) -> Vec<u8> {
    const TRACE_TYPE: &[u8] = b"[java.lang.StackTraceElement";
    let class = SERVER_EXCEPTION_CLASS.as_bytes();
    let mut out = Vec::with_capacity(160 + message.len());
    // The class definition: `O`, the type as a length and raw bytes, the
    // field count and the field names.
    out.push(b'O');
    write_int(&mut out, class.len() as i32);
    out.extend_from_slice(class);
    write_int(&mut out, 3);
    for field in ["detailMessage", "stackTrace", "cause"] {
        draft_string(&mut out, field);
    }
    // The instance of definition 0, then its three values.
    out.push(b'o');
    write_int(&mut out, 0);
    draft_string(&mut out, truncate_utf16(message, MAX_MESSAGE_UNITS));
    out.push(b'V');
    out.push(b't');
    out.extend_from_slice(&len16(TRACE_TYPE).to_be_bytes());
    out.extend_from_slice(TRACE_TYPE);
    out.extend_from_slice(&[b'n', 0, b'z']);
    out.push(b'N');
    out
}

/// A string of at most 65,535 UTF-16 units in one chunk, in the forms the
/// draft grammar has: compact up to 31 units, else `S` and a 16-bit length.
fn draft_string(out: &mut Vec<u8>, s: &str) {
    let units: usize = s.chars().map(char::len_utf16).sum();
    if units <= 0x1f {
        out.push(units as u8);
    } else {
        out.push(b'S');
        out.extend_from_slice(&(units.min(0xffff) as u16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// `frame` with its header replaced by `header` (e.g. from
/// [`encode_header_map`]): every other byte as it was, the header length
/// updated, a v2 CRC recomputed. `None` when `header` is 64 KiB or more.
pub fn with_header(frame: &Frame, header: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(header.len()).ok()?;
    let wire = frame.wire();
    let head = head_len(frame.version(), frame.kind());
    let start = head + frame.class_name().len();
    let end = start + frame.header().len();
    let body_end = wire.len() - if frame.has_crc() { 4 } else { 0 };
    let mut out = Vec::with_capacity(wire.len() + header.len());
    out.extend_from_slice(wire.get(..start)?);
    // The header length is the middle field of classLen(2) headerLen(2) contentLen(4).
    out.get_mut(head - 6..head - 4)?
        .copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(wire.get(end..body_end)?);
    if frame.has_crc() {
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    Some(Bytes::from(out))
}
