//! Little-endian integers, length-encoded integers and strings: a bounds-checked
//! reader over a payload, and the matching writers.

use bytes::{BufMut, BytesMut};

use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::take;
use nom::combinator::rest;
use nom::number::complete::{le_u16, le_u32, u8};

use super::PROTO;
use crate::CodecError;
use crate::parse::{
    Fail, Parsed, complete_to_codec, le_uint, lenenc_int, lenenc_str, nul_terminated,
};

/// A cursor over one payload; every read is a nom parser over the bytes
/// left (complete mode: the payload is whole), and an error names the byte
/// offset in the payload and what was expected there.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    payload: &'a [u8],
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { payload: buf, buf }
    }
    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Run `parsed` (a parser over [`Reader::rest`]) and move past what it read.
    fn step<T>(&mut self, parsed: Parsed<'a, T>) -> Result<T, CodecError> {
        let (rest, value) = complete_to_codec(PROTO, self.payload, parsed)?;
        self.buf = rest;
        Ok(value)
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        self.step(take(n)(self.buf))
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        self.step(u8(self.buf))
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        self.step(le_u16(self.buf))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        self.step(le_u32(self.buf))
    }
    /// A little-endian unsigned integer of `n` (≤ 8) bytes.
    pub fn uint(&mut self, n: usize) -> Result<u64, CodecError> {
        self.step(le_uint(n)(self.buf))
    }
    /// A length-encoded integer; `None` for the NULL marker `0xFB`.
    pub fn lenenc(&mut self) -> Result<Option<u64>, CodecError> {
        self.step(lenenc_int(self.buf))
    }
    /// A length-encoded string (NULL is an error here).
    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        self.step(lenenc_str(self.buf))
    }
    /// A NUL-terminated string (without the NUL).
    pub fn nul_str(&mut self) -> Result<&'a [u8], CodecError> {
        self.step(nul_terminated(self.buf))
    }
    /// A NUL-terminated string, or the rest when no NUL follows (lenient, as
    /// servers are with trailing plugin names).
    pub fn nul_str_or_rest(&mut self) -> &'a [u8] {
        let (rest, s) = alt((nul_terminated, rest::<&'a [u8], Fail<'a>>))
            .parse_complete(self.buf)
            .unwrap_or_default();
        self.buf = rest;
        s
    }
}

/// Append a length-encoded integer.
pub fn put_lenenc_int(out: &mut BytesMut, n: u64) {
    match n {
        0..=250 => out.put_u8(n as u8),
        251..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(n);
        }
    }
}

/// Append a length-encoded string.
pub fn put_lenenc_str(out: &mut BytesMut, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.put_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trip_at_every_width() {
        for n in [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_lenenc_int(&mut out, n);
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc().unwrap(), Some(n));
            assert!(r.is_empty());
        }
        assert_eq!(Reader::new(&[0xFB]).lenenc().unwrap(), None);
        assert!(Reader::new(&[0xFC, 1]).lenenc().is_err());
        assert!(Reader::new(&[0xFF]).lenenc().is_err());
    }

    #[test]
    fn errors_name_the_payload_offset_and_what_was_expected() {
        let syntax = |offset, expected| CodecError::Syntax {
            protocol: "mysql",
            offset,
            expected,
        };
        let mut r = Reader::new(&[1, 2, 0xFF]);
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert_eq!(
            r.lenenc().unwrap_err(),
            syntax(2, "a length-encoded integer (0xFF is not one)")
        );
        // A string announcing 5 bytes with one there: short from byte 1.
        assert_eq!(
            Reader::new(&[5, b'a']).lenenc_bytes().unwrap_err(),
            syntax(1, "more bytes")
        );
        assert_eq!(
            Reader::new(&[0xFB]).lenenc_bytes().unwrap_err(),
            syntax(0, "a length-encoded string, not NULL")
        );
        let mut r = Reader::new(b"\x01abc");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(
            r.nul_str().unwrap_err(),
            syntax(1, "a NUL-terminated string")
        );
        assert_eq!(r.nul_str_or_rest(), b"abc");
        assert!(r.is_empty());
    }
}
