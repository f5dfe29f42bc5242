//! Little-endian integers, length-encoded integers and strings: a bounds-checked
//! reader over a payload, and the matching writers.

use bytes::{BufMut, BytesMut};

use super::PROTO;
use crate::CodecError;

const SHORT: CodecError = CodecError::malformed(PROTO, "packet shorter than its fields");

/// A cursor over one payload; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.buf.len() {
            return Err(SHORT);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, tail) = self.buf.split_first().ok_or(SHORT)?;
        self.buf = tail;
        Ok(b)
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(self.uint(2)? as u16)
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(self.uint(4)? as u32)
    }
    /// A little-endian unsigned integer of `n` (≤ 8) bytes.
    pub fn uint(&mut self, n: usize) -> Result<u64, CodecError> {
        let bytes = self.take(n)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
    /// A length-encoded integer; `None` for the NULL marker `0xFB`.
    pub fn lenenc(&mut self) -> Result<Option<u64>, CodecError> {
        match self.u8()? {
            0xFB => Ok(None),
            0xFC => self.uint(2).map(Some),
            0xFD => self.uint(3).map(Some),
            0xFE => self.uint(8).map(Some),
            0xFF => Err(CodecError::malformed(
                PROTO,
                "0xFF is not a length-encoded integer",
            )),
            b => Ok(Some(u64::from(b))),
        }
    }
    /// A length-encoded string (NULL is an error here).
    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self
            .lenenc()?
            .ok_or(CodecError::malformed(PROTO, "unexpected NULL"))?;
        self.take(usize::try_from(n).map_err(|_| SHORT)?)
    }
    /// A NUL-terminated string (without the NUL).
    pub fn nul_str(&mut self) -> Result<&'a [u8], CodecError> {
        let end = memchr::memchr(0, self.buf)
            .ok_or(CodecError::malformed(PROTO, "string without its NUL"))?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }
    /// A NUL-terminated string, or the rest when no NUL follows (lenient, as
    /// servers are with trailing plugin names).
    pub fn nul_str_or_rest(&mut self) -> &'a [u8] {
        match memchr::memchr(0, self.buf) {
            Some(end) => {
                let s = self.buf.get(..end).unwrap_or_default();
                self.buf = self.buf.get(end + 1..).unwrap_or_default();
                s
            }
            None => std::mem::take(&mut self.buf),
        }
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
}
