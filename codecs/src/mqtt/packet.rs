//! Framing (the fixed header) and the field reader every body parser uses.
use bytes::Bytes;

use nom::Parser;
use nom::bytes::complete as nom_bytes;
use nom::multi::length_data;
use nom::number::{complete, streaming};

use super::{PacketType, Version};
use crate::CodecError;
use crate::parse::{self, Fail, Parsed, mqtt_varint};

pub(super) const PROTO: &str = "mqtt";

/// Largest value of a 4-byte variable byte integer (remaining length,
/// property length, subscription identifier): 268,435,455.
pub const MAX_VARINT: u32 = 0x0fff_ffff;

pub(super) fn malformed(reason: &'static str) -> CodecError {
    CodecError::malformed(PROTO, reason)
}

const TRUNCATED: &str = "field runs past the end of the packet";

/// A decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FixedHeader {
    pub kind: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Bytes taken by the first byte and the remaining length (2..=5).
    pub header_len: usize,
    /// The remaining length: variable header + payload.
    pub remaining: usize,
}

/// Read a variable byte integer at the start of `buf`: `Ok(None)` while it is
/// incomplete, an error on a fifth byte. Returns the value and its length.
#[inline]
pub(super) fn varint(buf: &[u8]) -> Result<Option<(u32, usize)>, CodecError> {
    match mqtt_varint(buf) {
        Ok((rest, value)) => Ok(Some((value, buf.len() - rest.len()))),
        Err(nom::Err::Incomplete(_)) => Ok(None),
        Err(_) => Err(malformed(VARINT_TOO_LONG)),
    }
}

const VARINT_TOO_LONG: &str = "variable byte integer longer than 4 bytes";

/// Append `value` as a variable byte integer (minimal length). Values over
/// [`MAX_VARINT`] are not representable; the caller checks.
pub(super) fn put_varint(out: &mut Vec<u8>, value: usize) {
    let mut v = value.min(MAX_VARINT as usize);
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Bytes a variable byte integer takes for `value`.
pub(super) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Decode the fixed header at the start of `buf`; `Ok(None)` while incomplete.
///
/// Checks the packet type against what the session allows so far
/// (`version` is `None` before CONNECT) and the fixed-header flags, both on
/// the first byte alone, before the remaining length is even complete.
pub(super) fn fixed_header(
    buf: &[u8],
    version: Option<Version>,
) -> Result<Option<FixedHeader>, CodecError> {
    match parse::finish(PROTO, buf, fixed_header_parser(buf, version)) {
        Ok(Some((header, _))) => Ok(Some(header)),
        Ok(None) => Ok(None),
        Err(CodecError::Syntax { .. }) => Err(malformed(VARINT_TOO_LONG)),
        Err(e) => Err(e),
    }
}

/// The fixed header as a streaming nom parser: the first byte (checked at
/// once), then the remaining length.
#[inline]
fn fixed_header_parser(input: &[u8], version: Option<Version>) -> Parsed<'_, FixedHeader> {
    let (rest, first) = streaming::be_u8(input)?;
    let at = |e| parse::fail(e);
    let Some(kind) = PacketType::from_type(first >> 4) else {
        return at(malformed("reserved packet type 0"));
    };
    let flags = first & 0x0f;
    match version {
        None if kind != PacketType::Connect => {
            return at(malformed("first packet must be CONNECT"));
        }
        Some(_) if kind == PacketType::Connect => {
            return at(malformed("CONNECT after the first packet"));
        }
        Some(Version::V31 | Version::V311) if kind == PacketType::Auth => {
            return at(malformed("AUTH is MQTT 5 only"));
        }
        _ => {}
    }
    if let Err(e) = check_flags(kind, flags, version) {
        return at(e);
    }
    let (rest, remaining) = mqtt_varint(rest)?;
    Ok((
        rest,
        FixedHeader {
            kind,
            flags,
            header_len: input.len() - rest.len(),
            remaining: remaining as usize,
        },
    ))
}

/// The fixed-header flags each packet type must carry. MQTT 3.1 did not
/// define them for most packets (and let PUBREL/SUBSCRIBE/UNSUBSCRIBE carry
/// DUP), so only CONNECT and PUBLISH are checked there, as mosquitto does.
fn check_flags(kind: PacketType, flags: u8, version: Option<Version>) -> Result<(), CodecError> {
    match kind {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(malformed("PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(malformed("DUP set on a QoS 0 PUBLISH"));
            }
            Ok(())
        }
        PacketType::Connect => {
            if flags == 0 {
                Ok(())
            } else {
                Err(malformed("invalid fixed header flags"))
            }
        }
        _ if version == Some(Version::V31) => Ok(()),
        PacketType::Pubrel | PacketType::Subscribe | PacketType::Unsubscribe => {
            if flags == 0x02 {
                Ok(())
            } else {
                Err(malformed("invalid fixed header flags"))
            }
        }
        _ => {
            if flags == 0 {
                Ok(())
            } else {
                Err(malformed("invalid fixed header flags"))
            }
        }
    }
}

/// Whether `s` is an MQTT UTF-8 string: valid UTF-8 without U+0000.
pub(super) fn valid_utf8(s: &[u8]) -> bool {
    memchr::memchr(0, s).is_none() && std::str::from_utf8(s).is_ok()
}

/// A cursor over one packet's bytes that hands out `Bytes` views of it.
pub(super) struct Reader<'a> {
    wire: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// Read `wire[pos..end]`; `end` is clamped to the packet.
    pub fn new(wire: &'a Bytes, pos: usize, end: usize) -> Self {
        let end = end.min(wire.len());
        Self {
            wire,
            pos: pos.min(end),
            end,
        }
    }

    /// The whole packet.
    pub fn wire(&self) -> &'a Bytes {
        self.wire
    }

    /// Offset of the next byte in the packet.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Run a complete-mode nom parser on what is left; running out of
    /// bytes is [`TRUNCATED`].
    #[inline]
    fn run<O>(
        &mut self,
        mut parser: impl Parser<&'a [u8], Output = O, Error = Fail<'a>>,
    ) -> Result<O, CodecError> {
        let input = self.wire.get(self.pos..self.end).unwrap_or_default();
        match parser.parse_complete(input) {
            Ok((rest, value)) => {
                self.pos = self.end - rest.len();
                Ok(value)
            }
            Err(_) => Err(malformed(TRUNCATED)),
        }
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        self.run(complete::be_u8)
    }

    pub fn u16(&mut self) -> Result<u16, CodecError> {
        self.run(complete::be_u16)
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        self.run(complete::be_u32)
    }

    /// A variable byte integer inside the packet.
    pub fn varint(&mut self) -> Result<u32, CodecError> {
        let input = self.wire.get(self.pos..self.end).unwrap_or_default();
        match varint(input)? {
            Some((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            None => Err(malformed(TRUNCATED)),
        }
    }

    /// `n` bytes as a view.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the body parsers take fields by type")
    )]
    pub fn take(&mut self, n: usize) -> Result<Bytes, CodecError> {
        self.view(nom_bytes::take(n))
    }

    /// Binary data: a two-byte length, then that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, CodecError> {
        self.view(length_data(complete::be_u16))
    }

    /// What `parser` takes, as a view of the packet.
    #[inline]
    fn view(
        &mut self,
        parser: impl Parser<&'a [u8], Output = &'a [u8], Error = Fail<'a>>,
    ) -> Result<Bytes, CodecError> {
        let out = self.run(parser)?;
        Ok(self.wire.slice_ref(out))
    }

    /// A UTF-8 string: a two-byte length, then valid UTF-8 without U+0000.
    pub fn string(&mut self) -> Result<Bytes, CodecError> {
        let s = self.binary()?;
        if valid_utf8(&s) {
            Ok(s)
        } else {
            Err(malformed("invalid UTF-8 string"))
        }
    }

    /// Step over `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        self.run(nom_bytes::take(n)).map(|_| ())
    }

    /// Everything left, as a view.
    pub fn rest(&mut self) -> Bytes {
        let out = self.wire.slice(self.pos..self.end);
        self.pos = self.end;
        out
    }

    /// The bytes from `start` (at most the current position) to the end,
    /// as a view; everything is then read.
    pub fn rest_from(&mut self, start: usize) -> Bytes {
        let out = self.wire.slice(start.min(self.pos)..self.end);
        self.pos = self.end;
        out
    }

    /// Fail if anything is left.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(malformed("trailing bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (bytes, value) in [
            (&b"\x00"[..], 0),
            (b"\x7f", 127),
            (b"\x80\x01", 128),
            (b"\xff\x7f", 16_383),
            (b"\x80\x80\x01", 16_384),
            (b"\xff\xff\x7f", 2_097_151),
            (b"\x80\x80\x80\x01", 2_097_152),
            (b"\xff\xff\xff\x7f", 268_435_455),
        ] {
            assert_eq!(varint(bytes).unwrap(), Some((value, bytes.len())));
            let mut out = Vec::new();
            put_varint(&mut out, value as usize);
            assert_eq!(out, bytes);
            assert_eq!(varint_len(value as usize), bytes.len());
            for n in 0..bytes.len() {
                assert_eq!(varint(&bytes[..n]).unwrap(), None);
            }
        }
        // Non-minimal encodings are read (the fixed header is forwarded as is).
        assert_eq!(varint(b"\x80\x00").unwrap(), Some((0, 2)));
        assert!(varint(b"\xff\xff\xff\xff").is_err());
        assert!(varint(b"\x80\x80\x80\x80\x01").is_err());
    }

    #[test]
    fn utf8() {
        assert!(valid_utf8(b""));
        assert!(valid_utf8("a/é/😀".as_bytes()));
        assert!(!valid_utf8(b"a\0b"));
        assert!(!valid_utf8(b"\xff"));
        assert!(!valid_utf8(b"\xed\xa0\x80")); // a surrogate, U+D800
    }

    #[test]
    fn reader() {
        let wire = Bytes::from_static(b"\x01\x00\x02\x00\x03abc\x00\x02\xc3\x28\xff");
        let mut r = Reader::new(&wire, 0, wire.len());
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(&r.string().unwrap()[..], b"abc");
        let at = r.pos();
        assert!(r.string().is_err());
        let mut r = Reader::new(&wire, at, wire.len());
        assert_eq!(&r.binary().unwrap()[..], b"\xc3\x28");
        assert!(r.finish().is_err());
        assert!(r.u16().is_err());
        assert_eq!(&r.rest()[..], b"\xff");
        assert!(r.finish().is_ok());
        assert!(r.u8().is_err());
        assert!(r.u32().is_err());
        assert!(r.varint().is_err());
        assert!(r.take(1).is_err());
    }
}
