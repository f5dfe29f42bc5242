//! Writing Hessian 2 scalars in their most compact forms (as Java's
//! `Hessian2Output` does), for gateway-made bodies and for tests.

/// Longest string chunk written, in UTF-16 code units (as Java's `Hessian2Output`).
const CHUNK_UNITS: usize = 0x8000;

/// Write null (`N`).
pub fn write_null(out: &mut Vec<u8>) {
    out.push(b'N');
}

/// Write a 32-bit int in its shortest form.
pub fn write_int(out: &mut Vec<u8>, v: i32) {
    match v {
        -0x10..=0x2f => out.push((v + 0x90) as u8),
        -0x800..=0x7ff => out.extend_from_slice(&[(0xc8 + (v >> 8)) as u8, v as u8]),
        -0x40000..=0x3ffff => {
            out.extend_from_slice(&[(0xd4 + (v >> 16)) as u8, (v >> 8) as u8, v as u8]);
        }
        _ => {
            out.push(b'I');
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Write a 64-bit long in its shortest form.
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    match v {
        -0x8..=0xf => out.push((v + 0xe0) as u8),
        -0x800..=0x7ff => out.extend_from_slice(&[(0xf8 + (v >> 8)) as u8, v as u8]),
        -0x40000..=0x3ffff => {
            out.extend_from_slice(&[(0x3c + (v >> 16)) as u8, (v >> 8) as u8, v as u8]);
        }
        _ => match i32::try_from(v) {
            Ok(v) => {
                out.push(b'Y');
                out.extend_from_slice(&v.to_be_bytes());
            }
            Err(_) => {
                out.push(b'L');
                out.extend_from_slice(&v.to_be_bytes());
            }
        },
    }
}

/// Write a double in its shortest exact form.
pub fn write_double(out: &mut Vec<u8>, v: f64) {
    let bits = v.to_bits();
    if bits == 0.0f64.to_bits() {
        out.push(0x5b);
    } else if bits == 1.0f64.to_bits() {
        out.push(0x5c);
    } else if f64::from(v as i8).to_bits() == bits {
        out.extend_from_slice(&[0x5d, v as i8 as u8]);
    } else if f64::from(v as i16).to_bits() == bits {
        out.push(0x5e);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else {
        let mills = (v * 1000.0) as i32;
        if (0.001 * f64::from(mills)).to_bits() == bits {
            out.push(0x5f);
            out.extend_from_slice(&mills.to_be_bytes());
        } else {
            out.push(b'D');
            out.extend_from_slice(&bits.to_be_bytes());
        }
    }
}

/// Write a date (milliseconds since the epoch), in minutes when exact.
pub fn write_date(out: &mut Vec<u8>, millis: i64) {
    match i32::try_from(millis / 60_000) {
        Ok(minutes) if millis % 60_000 == 0 => {
            out.push(0x4b);
            out.extend_from_slice(&minutes.to_be_bytes());
        }
        _ => {
            out.push(0x4a);
            out.extend_from_slice(&millis.to_be_bytes());
        }
    }
}

/// Write a string as Java's `Hessian2Output` does: `R` chunks of 32,768
/// UTF-16 units while more than that is left, then a final chunk in the
/// one-byte compact form (up to 31 units), the two-byte compact form (up to
/// 1,023) or as `S`.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    let mut rest = s;
    let mut units = utf16_len(rest);
    while units > CHUNK_UNITS {
        // Cut at a character boundary at or before CHUNK_UNITS units.
        let mut n = 0usize;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            if n + c.len_utf16() > CHUNK_UNITS {
                cut = i;
                break;
            }
            n += c.len_utf16();
        }
        let (chunk, tail) = rest.split_at(cut);
        out.push(b'R');
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(chunk.as_bytes());
        rest = tail;
        units -= n;
    }
    if units <= 0x1f {
        out.push(units as u8);
    } else if units <= 0x3ff {
        out.extend_from_slice(&[0x30 + (units >> 8) as u8, units as u8]);
    } else {
        out.push(b'S');
        out.extend_from_slice(&(units as u16).to_be_bytes());
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Write binary data: up to 15 bytes compact, up to 1023 in the two-byte
/// form, longer as `A` chunks of 32,768 bytes and a final chunk.
pub fn write_binary(out: &mut Vec<u8>, mut data: &[u8]) {
    while data.len() > CHUNK_UNITS {
        let (chunk, tail) = data.split_at(CHUNK_UNITS);
        out.push(b'A');
        out.extend_from_slice(&(CHUNK_UNITS as u16).to_be_bytes());
        out.extend_from_slice(chunk);
        data = tail;
    }
    let n = data.len();
    if n <= 0xf {
        out.push(0x20 + n as u8);
    } else if n <= 0x3ff {
        out.extend_from_slice(&[0x34 + (n >> 8) as u8, n as u8]);
    } else {
        out.push(b'B');
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
    out.extend_from_slice(data);
}

/// Length of `s` in UTF-16 code units (Hessian's string length).
pub(super) fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

/// The longest prefix of `s` of at most `max_units` UTF-16 code units.
pub(crate) fn truncate_utf16(s: &str, max_units: usize) -> &str {
    if s.len() <= max_units {
        return s;
    }
    let mut n = 0usize;
    for (i, c) in s.char_indices() {
        n += c.len_utf16();
        if n > max_units {
            return s.get(..i).unwrap_or_default();
        }
    }
    s
}
