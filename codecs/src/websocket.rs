//! WebSocket frames (RFC 6455 §5), server side: client frames must be
//! masked and are unmasked into their payload; server frames are written
//! unmasked. Used to carry a byte-stream protocol (MQTT over WebSocket)
//! inside binary messages, so fragment boundaries carry no meaning.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{CodecError, Decoder as DecodeTrait};

/// Opcodes.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Close status codes the gateway sends.
pub mod status {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
}

/// One frame, payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Bytes,
}

/// Decodes client → server frames.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: usize,
}

impl Decoder {
    /// `max_frame`: the largest payload accepted (over it: FrameTooLarge).
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }
}

const WS: &str = "websocket";

impl DecodeTrait for Decoder {
    type Item = Frame;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let (Some(&b0), Some(&b1)) = (src.first(), src.get(1)) else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(CodecError::malformed(
                WS,
                "reserved bits set without an extension",
            ));
        }
        let opcode = b0 & 0x0f;
        let fin = b0 & 0x80 != 0;
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
            return Err(CodecError::malformed(WS, "unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(CodecError::malformed(WS, "client frame not masked"));
        }
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                let Some(b) = src.get(2..4).and_then(|b| <[u8; 2]>::try_from(b).ok()) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes(b)), 4)
            }
            127 => {
                let Some(b) = src.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                    return Ok(None);
                };
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode >= 0x8 && (len > 125 || !fin) {
            return Err(CodecError::malformed(
                WS,
                "control frame too long or fragmented",
            ));
        }
        if len > self.max_frame as u64 {
            return Err(CodecError::FrameTooLarge {
                what: "websocket frame",
                size: len,
                limit: self.max_frame,
            });
        }
        let Some(mask) = src
            .get(at..at + 4)
            .and_then(|m| <[u8; 4]>::try_from(m).ok())
        else {
            return Ok(None);
        };
        at += 4;
        let len = len as usize;
        if src.len() < at + len {
            src.reserve(at + len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(at + len);
        let mut payload = frame.split_off(at);
        for (b, m) in payload.iter_mut().zip(mask.iter().cycle()) {
            *b ^= m;
        }
        Ok(Some(Frame {
            fin,
            opcode,
            payload: payload.freeze(),
        }))
    }
}

/// Append a server frame (unmasked, FIN set) to `out`.
pub fn encode(opcode: u8, payload: &[u8], out: &mut BytesMut) {
    out.reserve(payload.len() + 10);
    out.put_u8(0x80 | (opcode & 0x0f));
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
}

/// A close frame with a status code.
pub fn close(status: u16, out: &mut BytesMut) {
    encode(opcode::CLOSE, &status.to_be_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 65535 => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn unmasks_and_splits_frames() {
        let mut src = BytesMut::new();
        src.extend_from_slice(&masked(opcode::BINARY, false, b"\x10\x0c"));
        src.extend_from_slice(&masked(opcode::CONTINUATION, true, &[7u8; 300]));
        src.extend_from_slice(&masked(opcode::PING, true, b"hi"));
        let mut d = Decoder::new(1 << 20);
        let a = d.decode(&mut src).unwrap().unwrap();
        assert_eq!(
            (a.fin, a.opcode, &a.payload[..]),
            (false, opcode::BINARY, &b"\x10\x0c"[..])
        );
        let b = d.decode(&mut src).unwrap().unwrap();
        assert_eq!(b.payload.len(), 300);
        assert!(b.payload.iter().all(|x| *x == 7));
        assert_eq!(d.decode(&mut src).unwrap().unwrap().opcode, opcode::PING);
        assert_eq!(d.decode(&mut src).unwrap(), None);
    }

    #[test]
    fn needs_more_at_every_prefix() {
        let frame = masked(opcode::BINARY, true, &[1u8; 70_000]);
        let mut d = Decoder::new(1 << 20);
        for cut in [0, 1, 2, 5, 9, 13, 14, 1000, frame.len() - 1] {
            let mut src = BytesMut::from(&frame[..cut]);
            assert_eq!(d.decode(&mut src).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn refuses_unmasked_oversize_and_bad_control_frames() {
        let mut d = Decoder::new(100);
        let mut unmasked = BytesMut::from(&[0x82u8, 0x01, 0x00][..]);
        assert!(d.decode(&mut unmasked).is_err());
        let mut big = BytesMut::from(&masked(opcode::BINARY, true, &[0u8; 101])[..]);
        assert!(matches!(
            d.decode(&mut big),
            Err(CodecError::FrameTooLarge { .. })
        ));
        let mut frag_ping = BytesMut::from(&masked(opcode::PING, false, b"x")[..]);
        assert!(d.decode(&mut frag_ping).is_err());
        let mut rsv = BytesMut::from(&[0xC2u8, 0x80, 0, 0, 0, 0][..]);
        assert!(d.decode(&mut rsv).is_err());
    }

    #[test]
    fn encodes_every_length_form() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let mut out = BytesMut::new();
            encode(opcode::BINARY, &vec![9u8; n], &mut out);
            let header = match n {
                n if n < 126 => 2,
                n if n <= 65535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + n);
            assert_eq!(out[0], 0x82);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data: Vec<u8>) {
            let mut src = BytesMut::from(&data[..]);
            let mut d = Decoder::new(4096);
            while let Ok(Some(_)) = d.decode(&mut src) {}
        }
    }
}
