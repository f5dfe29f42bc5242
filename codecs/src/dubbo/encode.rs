//! Frames the gateway makes itself, and request-id remapping.
use bytes::Bytes;

use crate::CodecError;

use super::{
    FLAG_EVENT, FLAG_REQUEST, FLAG_TWO_WAY, Frame, HEADER_LEN, MAGIC, SERIALIZATION_HESSIAN2,
    SERIALIZATION_MASK, status,
};
use crate::hessian2;

/// Longest error message sent, in UTF-16 units: one Hessian `S` chunk.
const MAX_MESSAGE_UNITS: usize = 0xffff;

/// The 16-byte header of a frame.
fn header(flag: u8, status: u8, request_id: u64, body_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let [m0, m1] = MAGIC;
    let id = request_id.to_be_bytes();
    let len = body_len.to_be_bytes();
    for (slot, b) in h.iter_mut().zip(
        [m0, m1, flag, status]
            .iter()
            .chain(id.iter())
            .chain(len.iter()),
    ) {
        *slot = *b;
    }
    h
}

/// A whole frame from its header fields and body. Bodies over 4 GiB cannot
/// be framed; their length field is cut to `u32::MAX`, so keep bodies small.
pub fn encode(flag: u8, status: u8, request_id: u64, body: &[u8]) -> Bytes {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header(flag, status, request_id, len));
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// A gateway-made error response to request `request_id`, as Dubbo's Java
/// `ExchangeCodec` writes one: the `status` (see [`status`], not `OK`), and a
/// body that is the Hessian 2 string of `error_message` (cut to 65,535 UTF-16
/// units). `serialization_id` goes into the flag byte as given; the body is
/// Hessian 2 whatever it is, so pass the request's id when it is
/// [`SERIALIZATION_HESSIAN2`] and `SERIALIZATION_HESSIAN2` otherwise.
pub fn response(request_id: u64, status: u8, serialization_id: u8, error_message: &str) -> Bytes {
    let mut body = Vec::with_capacity(error_message.len() + 3);
    hessian2::write_string(
        &mut body,
        hessian2::truncate_utf16(error_message, MAX_MESSAGE_UNITS),
    );
    encode(
        serialization_id & SERIALIZATION_MASK,
        status,
        request_id,
        &body,
    )
}

/// The answer to heartbeat request `request_id`: an event response with
/// status OK and a null body (flag `0x22` for Hessian 2).
pub fn heartbeat_response(request_id: u64, serialization_id: u8) -> Bytes {
    encode(
        FLAG_EVENT | (serialization_id & SERIALIZATION_MASK),
        status::OK,
        request_id,
        b"N",
    )
}

/// A heartbeat request: a two-way Hessian 2 event with a null body (flag `0xe2`).
pub fn heartbeat_request(request_id: u64) -> Bytes {
    encode(
        FLAG_REQUEST | FLAG_TWO_WAY | FLAG_EVENT | SERIALIZATION_HESSIAN2,
        0,
        request_id,
        b"N",
    )
}

/// The header of `frame` with its request id replaced by `id`. Write it, then
/// [`Frame::body`], to forward the frame under a new id without copying the body.
pub fn header_with_request_id(frame: &Frame, id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    for (slot, b) in h.iter_mut().zip(frame.header()) {
        *slot = *b;
    }
    for (slot, b) in h.iter_mut().skip(4).zip(id.to_be_bytes()) {
        *slot = b;
    }
    h
}

/// `frame` (a Hessian 2 request) with its attachments edited: the string
/// attachments are handed to `edit` as a field list (names compared ASCII
/// case-insensitively), entries of other types are kept as they were, and
/// the body is written anew up to the arguments byte for byte, then an
/// untyped map (`H … Z`) of the edited attachments. `Ok(None)`: not a
/// request with an invocation, or a serialization other than Hessian 2.
pub fn with_attachments(
    frame: &Frame,
    edit: impl FnOnce(&mut crate::fields::FieldList<'_>),
) -> Result<Option<Bytes>, CodecError> {
    use crate::hessian2::Reader;
    let Some(inv) = frame.invocation()? else {
        return Ok(None);
    };
    let body = frame.body();
    let map = inv.attachments_wire();
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut fields = crate::fields::FieldList::default();
    if !map.is_empty() && map.first() != Some(&b'N') {
        if map.first() != Some(&b'H') {
            return Err(CodecError::malformed(super::PROTO, "typed attachments map"));
        }
        let inner = map.get(1..).unwrap_or_default();
        let mut r = Reader::new(inner, hessian2::Limits::default());
        loop {
            match r.peek() {
                None => return Err(CodecError::malformed(super::PROTO, "truncated attachments")),
                Some(b'Z') => break,
                Some(_) => {}
            }
            let start = r.position();
            r.skip_value()?;
            let mid = r.position();
            r.skip_value()?;
            let end = r.position();
            let key = inner.get(start..mid).unwrap_or_default();
            let value = inner.get(mid..end).unwrap_or_default();
            match (hessian2::read_string(key), hessian2::read_string(value)) {
                (Ok((k, kn)), Ok((v, vn))) if kn == key.len() && vn == value.len() => {
                    fields.add(&k, &v);
                }
                _ => kept.push(inner.get(start..end).unwrap_or_default()),
            }
        }
    }
    edit(&mut fields);
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(body.get(..inv.attachments_at()).unwrap_or_default());
    out.push(b'H');
    for entry in kept {
        out.extend_from_slice(entry);
    }
    for (k, v) in fields.iter() {
        hessian2::write_string(&mut out, &String::from_utf8_lossy(k));
        hessian2::write_string(&mut out, &String::from_utf8_lossy(v));
    }
    out.push(b'Z');
    let after = inv.attachments_at() + map.len();
    out.extend_from_slice(body.get(after..).unwrap_or_default());
    Ok(Some(encode(
        frame.flag(),
        frame.header().get(3).copied().unwrap_or(0),
        frame.request_id(),
        &out,
    )))
}
