//! The bounded cursor over one Hessian 2 message.
use std::borrow::Cow;

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, u8};

use super::{Limits, PROTO};
use crate::CodecError;
use crate::parse::{Fail, Parsed, be_uint, fail};

pub(super) fn malformed(reason: &'static str) -> CodecError {
    CodecError::malformed(PROTO, reason)
}

pub(super) fn truncated() -> CodecError {
    malformed("truncated")
}

/// String keys and values of a map, borrowed when they are single chunks.
pub type StringEntries<'a> = Vec<(Cow<'a, [u8]>, Cow<'a, [u8]>)>;

/// A class definition (`C`) seen earlier in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClassDef {
    /// Position of the class name (the byte after `C`).
    pub at: usize,
    /// Number of fields of each instance.
    pub fields: usize,
}

/// Reads Hessian 2 values one after the other from a complete message.
///
/// The reader keeps the message's class definitions, so an object instance
/// can refer to a class defined in an earlier value (as the arguments and the
/// attachments of a Dubbo request do). Type names of typed lists and maps are
/// remembered only by [`Reader::read_value`] (to resolve type references);
/// [`Reader::skip_value`] has no need for them.
///
/// After an error the position is unspecified and the reader should be dropped.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) limits: Limits,
    pub(super) classes: Vec<ClassDef>,
    /// Type names met by `read_value`, for type references.
    pub(super) types: Vec<String>,
}

/// Whether `tag` starts a string chunk.
pub(super) const fn is_string_tag(tag: u8) -> bool {
    matches!(tag, 0x00..=0x1f | 0x30..=0x33 | b'R' | b'S')
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`, with an empty class table.
    pub fn new(buf: &'a [u8], limits: Limits) -> Self {
        Self {
            buf,
            pos: 0,
            limits,
            classes: Vec::new(),
            types: Vec::new(),
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Whether every byte has been read.
    pub fn is_at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next byte, without reading it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Walk over one value of any type.
    pub fn skip_value(&mut self) -> Result<(), CodecError> {
        self.skip_at(0)
    }

    /// Read one string (not null): its bytes, borrowed when it is one chunk.
    pub fn read_string(&mut self) -> Result<Cow<'a, [u8]>, CodecError> {
        let tag = self.byte()?;
        if !is_string_tag(tag) {
            return Err(malformed("expected a string"));
        }
        self.string_after(tag)
    }

    /// Read one string or null (`N`, as `None`).
    pub fn read_string_or_null(&mut self) -> Result<Option<Cow<'a, [u8]>>, CodecError> {
        if self.peek() == Some(b'N') {
            self.pos += 1;
            return Ok(None);
        }
        self.read_string().map(Some)
    }

    /// Read one map (typed or untyped) or null, keeping the entries whose key
    /// and value are both strings, in wire order; the other entries are skipped.
    /// Null reads as no entries.
    pub fn read_string_map(&mut self) -> Result<StringEntries<'a>, CodecError> {
        let mut out = Vec::new();
        match self.byte()? {
            b'N' => return Ok(out),
            b'H' => {}
            b'M' => self.skip_type()?,
            _ => return Err(malformed("expected a map")),
        }
        let inner = self.enter(0)?;
        let mut count = 0usize;
        loop {
            match self.peek() {
                None => return Err(truncated()),
                Some(b'Z') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => {}
            }
            count += 1;
            self.check_elements("hessian2 map", count)?;
            let key = self.string_or_skip(inner)?;
            let value = self.string_or_skip(inner)?;
            if let (Some(key), Some(value)) = (key, value) {
                out.push((key, value));
            }
        }
    }

    /// A string, or `None` after skipping a value of another type.
    fn string_or_skip(&mut self, depth: usize) -> Result<Option<Cow<'a, [u8]>>, CodecError> {
        match self.peek() {
            Some(tag) if is_string_tag(tag) => {
                self.pos += 1;
                self.string_after(tag).map(Some)
            }
            _ => self.skip_at(depth).map(|()| None),
        }
    }

    // ---- bytes -------------------------------------------------------------

    /// Run `parser` (nom, complete mode: the message is whole) over the bytes
    /// not read yet and move past what it read. Running out of bytes is
    /// `truncated`; a parser's own error is returned as it is.
    fn step<T>(&mut self, parser: impl FnOnce(&'a [u8]) -> Parsed<'a, T>) -> Result<T, CodecError> {
        let rest = self.rest();
        match parser(rest) {
            Ok((after, value)) => {
                self.pos += rest.len() - after.len();
                Ok(value)
            }
            Err(nom::Err::Error(Fail::Codec(e)) | nom::Err::Failure(Fail::Codec(e))) => Err(e),
            Err(_) => Err(truncated()),
        }
    }

    /// The next byte (every tag byte): hand-tuned, the hottest read.
    pub(super) fn byte(&mut self) -> Result<u8, CodecError> {
        let b = self.peek().ok_or_else(truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        self.step(take(n))
    }

    /// `n` (at most 8) bytes as a big-endian unsigned number.
    pub(super) fn be(&mut self, n: usize) -> Result<u64, CodecError> {
        self.step(be_uint(n))
    }

    // ---- numbers -----------------------------------------------------------

    /// The int whose tag byte was `tag`, or `None` if `tag` starts no int.
    pub(super) fn int_after(&mut self, tag: u8) -> Result<Option<i32>, CodecError> {
        let t = i32::from(tag);
        Ok(Some(match tag {
            0x80..=0xbf => t - 0x90,
            0xc0..=0xcf => ((t - 0xc8) << 8) + i32::from(self.byte()?),
            0xd0..=0xd7 => ((t - 0xd4) << 16) + self.be(2)? as i32,
            b'I' => self.be(4)? as u32 as i32,
            _ => return Ok(None),
        }))
    }

    /// The long whose tag byte was `tag`, or `None` if `tag` starts no long.
    pub(super) fn long_after(&mut self, tag: u8) -> Result<Option<i64>, CodecError> {
        let t = i64::from(tag);
        Ok(Some(match tag {
            0xd8..=0xef => t - 0xe0,
            0xf0..=0xff => ((t - 0xf8) << 8) + i64::from(self.byte()?),
            0x38..=0x3f => ((t - 0x3c) << 16) + self.be(2)? as i64,
            b'Y' => i64::from(self.be(4)? as u32 as i32),
            b'L' => self.be(8)? as i64,
            _ => return Ok(None),
        }))
    }

    /// The double whose tag byte was `tag`, or `None` if `tag` starts no double.
    pub(super) fn double_after(&mut self, tag: u8) -> Result<Option<f64>, CodecError> {
        Ok(Some(match tag {
            b'D' => f64::from_bits(self.be(8)?),
            0x5b => 0.0,
            0x5c => 1.0,
            0x5d => f64::from(self.byte()? as i8),
            0x5e => f64::from(self.be(2)? as u16 as i16),
            // Thousandths in an int, scaled as Java's Hessian2Input does.
            0x5f => 0.001 * f64::from(self.be(4)? as u32 as i32),
            _ => return Ok(None),
        }))
    }

    /// An int in any encoding (lengths, class and type references).
    pub(super) fn read_int(&mut self) -> Result<i32, CodecError> {
        let tag = self.byte()?;
        self.int_after(tag)?
            .ok_or_else(|| malformed("expected an int"))
    }

    /// A non-negative int used as a count, checked against the element limit
    /// and against the bytes left (every element takes at least one byte).
    fn read_count(&mut self, what: &'static str) -> Result<usize, CodecError> {
        let n = self.read_int()?;
        let n = usize::try_from(n).map_err(|_| malformed("negative length"))?;
        self.check_elements(what, n)?;
        if n > self.buf.len().saturating_sub(self.pos) {
            return Err(truncated());
        }
        Ok(n)
    }

    pub(super) fn check_elements(&self, what: &'static str, n: usize) -> Result<(), CodecError> {
        if n > self.limits.max_elements {
            return Err(CodecError::FrameTooLarge {
                what,
                size: n as u64,
                limit: self.limits.max_elements,
            });
        }
        Ok(())
    }

    /// The depth of a container's elements, if allowed.
    pub(super) fn enter(&self, depth: usize) -> Result<usize, CodecError> {
        if depth >= self.limits.max_depth {
            return Err(CodecError::FrameTooLarge {
                what: "hessian2 value (nesting depth)",
                size: depth as u64 + 1,
                limit: self.limits.max_depth,
            });
        }
        Ok(depth + 1)
    }

    // ---- strings and binaries ---------------------------------------------

    /// The end of `units` UTF-16 code units of UTF-8 starting at `from`.
    fn utf8_end(&self, from: usize, units: usize) -> Result<usize, CodecError> {
        let rest = self.buf.get(from..).unwrap_or_default();
        // Every unit takes at least one byte.
        let head = rest.get(..units).ok_or_else(truncated)?;
        let ascii = head.iter().position(|b| !b.is_ascii()).unwrap_or(units);
        let (mut i, mut n) = (ascii, ascii);
        while n < units {
            let lead = *rest.get(i).ok_or_else(truncated)?;
            let (len, count) = match lead {
                0x00..=0x7f => (1, 1),
                0xc0..=0xdf => (2, 1),
                0xe0..=0xef => (3, 1),
                0xf0..=0xf7 => (4, 2),
                _ => return Err(malformed("invalid UTF-8 in string")),
            };
            let seq = rest.get(i..i + len).ok_or_else(truncated)?;
            if seq.iter().skip(1).any(|&b| b & 0xc0 != 0x80) {
                return Err(malformed("invalid UTF-8 in string"));
            }
            i += len;
            n += count;
        }
        if n > units {
            return Err(malformed("string length splits a character"));
        }
        Ok(from + i)
    }

    /// Walk the chunks of the string whose first tag byte was `tag`, calling
    /// `visit` with each chunk's byte range.
    fn string_chunks(
        &mut self,
        mut tag: u8,
        mut visit: impl FnMut(usize, usize),
    ) -> Result<(), CodecError> {
        // Hand-tuned, not through `step`: strings are most of a Dubbo
        // invocation, and the nom chunk parser cost 17-24 % more
        // instructions on object graphs (see docs/benchmarks.md).
        loop {
            let (units, last) = match tag {
                0x00..=0x1f => (usize::from(tag), true),
                0x30..=0x33 => (
                    (usize::from(tag - 0x30) << 8) | usize::from(self.byte()?),
                    true,
                ),
                b'S' => (self.be(2)? as usize, true),
                b'R' => (self.be(2)? as usize, false),
                _ => return Err(malformed("expected a string chunk")),
            };
            let end = self.utf8_end(self.pos, units)?;
            visit(self.pos, end);
            self.pos = end;
            if last {
                return Ok(());
            }
            tag = self.byte()?;
        }
    }

    /// The bytes of the string whose first tag byte was `tag`.
    pub(super) fn string_after(&mut self, tag: u8) -> Result<Cow<'a, [u8]>, CodecError> {
        let buf = self.buf;
        let mut out: Cow<'a, [u8]> = Cow::Borrowed(&[]);
        let mut chunks = 0usize;
        self.string_chunks(tag, |start, end| {
            let chunk = buf.get(start..end).unwrap_or_default();
            chunks += 1;
            if chunks == 1 {
                out = Cow::Borrowed(chunk);
            } else {
                out.to_mut().extend_from_slice(chunk);
            }
        })?;
        Ok(out)
    }

    /// Walk the chunks of the binary whose first tag byte was `tag`, calling
    /// `visit` with each chunk.
    pub(super) fn binary_chunks(
        &mut self,
        mut tag: u8,
        mut visit: impl FnMut(&'a [u8]),
    ) -> Result<(), CodecError> {
        loop {
            let (chunk, last) = self.step(|input| binary_chunk(tag, input))?;
            visit(chunk);
            if last {
                return Ok(());
            }
            tag = self.byte()?;
        }
    }

    // ---- classes and types -------------------------------------------------

    /// Read a class definition (after its `C`) into the class table.
    pub(super) fn class_def(&mut self) -> Result<(), CodecError> {
        self.check_elements("hessian2 class definitions", self.classes.len() + 1)?;
        let at = self.pos;
        self.read_string()?;
        let fields = self.read_count("hessian2 class fields")?;
        for _ in 0..fields {
            self.read_string()?;
        }
        self.classes.push(ClassDef { at, fields });
        Ok(())
    }

    /// The class definition an instance refers to.
    pub(super) fn class_ref(&self, index: i32) -> Result<ClassDef, CodecError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.classes.get(i))
            .copied()
            .ok_or_else(|| malformed("object of an undefined class"))
    }

    /// Skip the type of a typed list or map: a string, or an int referring to
    /// an earlier type.
    fn skip_type(&mut self) -> Result<(), CodecError> {
        let tag = self.byte()?;
        if is_string_tag(tag) {
            self.string_chunks(tag, |_, _| {})
        } else {
            self.int_after(tag)?
                .map(|_| ())
                .ok_or_else(|| malformed("expected a type"))
        }
    }

    // ---- skipping ----------------------------------------------------------

    /// The tag of the next value, reading any class definitions before it.
    pub(super) fn value_tag(&mut self) -> Result<u8, CodecError> {
        loop {
            let tag = self.byte()?;
            if tag != b'C' {
                return Ok(tag);
            }
            self.class_def()?;
        }
    }

    fn skip_at(&mut self, depth: usize) -> Result<(), CodecError> {
        let tag = self.value_tag()?;
        match tag {
            b'N' | b'T' | b'F' | 0x5b | 0x5c | 0x80..=0xbf | 0xd8..=0xef => Ok(()),
            0x00..=0x1f | 0x30..=0x33 | b'R' | b'S' => self.string_chunks(tag, |_, _| {}),
            0x20..=0x2f | 0x34..=0x37 | b'A' | b'B' => self.binary_chunks(tag, |_| {}),
            0x5d | 0xc0..=0xcf | 0xf0..=0xff => self.take(1).map(drop),
            0x5e | 0xd0..=0xd7 | 0x38..=0x3f => self.take(2).map(drop),
            b'I' | b'Y' | 0x4b | 0x5f => self.take(4).map(drop),
            b'D' | b'L' | 0x4a => self.take(8).map(drop),
            b'Q' => self.read_int().map(drop),
            b'H' => self.skip_entries(depth),
            b'M' => {
                self.skip_type()?;
                self.skip_entries(depth)
            }
            b'U' => {
                self.skip_type()?;
                self.skip_until_end(depth)
            }
            b'W' => self.skip_until_end(depth),
            b'V' => {
                self.skip_type()?;
                let n = self.read_count("hessian2 list")?;
                self.skip_n(depth, n)
            }
            b'X' => {
                let n = self.read_count("hessian2 list")?;
                self.skip_n(depth, n)
            }
            0x70..=0x77 => {
                self.skip_type()?;
                self.skip_n(depth, usize::from(tag - 0x70))
            }
            0x78..=0x7f => self.skip_n(depth, usize::from(tag - 0x78)),
            b'O' => {
                let index = self.read_int()?;
                let def = self.class_ref(index)?;
                self.skip_n(depth, def.fields)
            }
            0x60..=0x6f => {
                let def = self.class_ref(i32::from(tag - 0x60))?;
                self.skip_n(depth, def.fields)
            }
            b'Z' => Err(malformed("unexpected end marker")),
            // 0x40, 0x45, 0x47, 0x50 (and `C`, read above).
            _ => Err(malformed("reserved tag byte")),
        }
    }

    /// Skip `n` values one level down.
    fn skip_n(&mut self, depth: usize, n: usize) -> Result<(), CodecError> {
        let inner = self.enter(depth)?;
        for _ in 0..n {
            self.skip_at(inner)?;
        }
        Ok(())
    }

    /// Whether the next byte is the end marker `Z` (consumed if so).
    pub(super) fn at_end_marker(&mut self) -> Result<bool, CodecError> {
        match self.peek() {
            None => Err(truncated()),
            Some(b'Z') => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Skip list elements up to `Z`.
    fn skip_until_end(&mut self, depth: usize) -> Result<(), CodecError> {
        let inner = self.enter(depth)?;
        let mut count = 0usize;
        while !self.at_end_marker()? {
            count += 1;
            self.check_elements("hessian2 list", count)?;
            self.skip_at(inner)?;
        }
        Ok(())
    }

    /// Skip map entries up to `Z`.
    fn skip_entries(&mut self, depth: usize) -> Result<(), CodecError> {
        let inner = self.enter(depth)?;
        let mut count = 0usize;
        while !self.at_end_marker()? {
            count += 1;
            self.check_elements("hessian2 map", count)?;
            self.skip_at(inner)?;
            self.skip_at(inner)?;
        }
        Ok(())
    }
}

// ---- the binary chunk grammar (nom, complete input) -------------------------

/// The rest of a binary chunk whose tag byte was `tag`: its bytes, and
/// whether it is the last chunk.
#[inline]
fn binary_chunk(tag: u8, input: &[u8]) -> Parsed<'_, (&[u8], bool)> {
    let (rest, (len, last)) = match tag {
        0x20..=0x2f => (input, (usize::from(tag - 0x20), true)),
        0x34..=0x37 => {
            let (rest, low) = u8(input)?;
            (
                rest,
                ((usize::from(tag - 0x34) << 8) | usize::from(low), true),
            )
        }
        b'B' | b'A' => {
            let (rest, len) = be_u16(input)?;
            (rest, (usize::from(len), tag == b'B'))
        }
        _ => return fail(malformed("expected a binary chunk")),
    };
    let (rest, chunk) = take(len)(rest)?;
    Ok((rest, (chunk, last)))
}
