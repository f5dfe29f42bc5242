//! Writing RTSP messages: requests and responses with a fresh
//! `Content-Length` (bodies may have been rewritten), interleaved frames,
//! and the gateway's own error responses.

use bytes::{BufMut, Bytes, BytesMut};

use super::Version;

fn put_version(out: &mut BytesMut, v: Version) {
    out.put_slice(b"RTSP/");
    out.put_u8(b'0' + v.major.min(9));
    out.put_u8(b'.');
    out.put_u8(b'0' + v.minor.min(9));
}

/// Header fields, any `Content-Length` among them replaced by the body's
/// (and none when the body is empty), then the blank line and the body.
fn put_headers_and_body<'a>(
    out: &mut BytesMut,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
) {
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.put_slice(b"Content-Length: ");
        out.put_slice(body.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

/// Append a request to `out`.
pub fn write_request<'a>(
    out: &mut BytesMut,
    method: &[u8],
    uri: &[u8],
    version: Version,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
) {
    out.put_slice(method);
    out.put_u8(b' ');
    out.put_slice(uri);
    out.put_u8(b' ');
    put_version(out, version);
    out.put_slice(b"\r\n");
    put_headers_and_body(out, headers, body);
}

/// Append a response to `out`.
pub fn write_response<'a>(
    out: &mut BytesMut,
    version: Version,
    status: u16,
    reason: &[u8],
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
) {
    put_version(out, version);
    out.put_u8(b' ');
    out.put_slice(status.min(999).to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason);
    out.put_slice(b"\r\n");
    put_headers_and_body(out, headers, body);
}

/// Append an interleaved frame; `None` if the payload is over 65535 bytes.
pub fn write_interleaved(out: &mut BytesMut, channel: u8, payload: &[u8]) -> Option<()> {
    let len = u16::try_from(payload.len()).ok()?;
    out.put_u8(b'$');
    out.put_u8(channel);
    out.put_u16(len);
    out.put_slice(payload);
    Some(())
}

/// An RTSP/1.0 response made by the gateway: `status` with its standard
/// reason, the request's `CSeq` when known, and `extra` headers.
pub fn error_response(status: u16, cseq: Option<&[u8]>, extra: &[(&str, &str)]) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(extra.len() + 1);
    if let Some(c) = cseq {
        headers.push((b"CSeq", c));
    }
    headers.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    write_response(
        &mut out,
        Version::RTSP_1_0,
        status,
        reason_phrase(status).as_bytes(),
        headers,
        b"",
    );
    out.freeze()
}

/// The reason phrase RFC 2326 §7.1.1 gives a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Time-out",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => "Unknown",
    }
}
