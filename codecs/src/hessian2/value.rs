//! A value model of Hessian 2 for tests and tools: decode with
//! [`Reader::read_value`], encode with [`Value::encode`].
use super::reader::{ClassDef, Reader, is_string_tag, malformed, truncated};
use super::write;
use crate::CodecError;

/// Most elements allocated ahead for a declared length.
const PREALLOC: usize = 1024;

/// One decoded Hessian 2 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `N`.
    Null,
    /// `T` / `F`.
    Bool(bool),
    /// A 32-bit int (any int form).
    Int(i32),
    /// A 64-bit long (any long form).
    Long(i64),
    /// A double (any double form).
    Double(f64),
    /// A date, in milliseconds since the Unix epoch (UTC).
    Date(i64),
    /// A string; surrogate pairs written as two 3-byte sequences are joined,
    /// lone surrogates become U+FFFD.
    String(String),
    /// Binary data, chunks joined.
    Binary(Vec<u8>),
    /// A list, with its type name when typed (type references resolved).
    List {
        /// The list's type (e.g. `[int`), if it has one.
        type_name: Option<String>,
        /// The elements.
        items: Vec<Value>,
    },
    /// A map, with its type name when typed (e.g. `java.util.Hashtable`).
    Map {
        /// The map's type, if it has one.
        type_name: Option<String>,
        /// Key/value pairs in wire order (keys may be of any type).
        entries: Vec<(Value, Value)>,
    },
    /// An object instance: its class name and fields in definition order.
    Object {
        /// The class name of its definition.
        class: String,
        /// Field names and values.
        fields: Vec<(String, Value)>,
    },
    /// `Q`: a reference to the n-th list, map or object of the message (not resolved).
    Ref(u32),
}

impl Value {
    /// A string value.
    pub fn string(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    /// The field `name` of an object, or the value under the string key `name` of a map.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object { fields, .. } => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            Value::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::String(s) if s == name))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Append this value's Hessian 2 encoding to `out`, in the compact forms
    /// Java writes. Each object class gets a definition (`C`) the first time it
    /// is used within this call, so the output is one self-contained message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut classes: Vec<(&str, Vec<&str>)> = Vec::new();
        self.encode_with(out, &mut classes);
    }

    fn encode_with<'v>(&'v self, out: &mut Vec<u8>, classes: &mut Vec<(&'v str, Vec<&'v str>)>) {
        match self {
            Value::Null => write::write_null(out),
            Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
            Value::Int(v) => write::write_int(out, *v),
            Value::Long(v) => write::write_long(out, *v),
            Value::Double(v) => write::write_double(out, *v),
            Value::Date(ms) => write::write_date(out, *ms),
            Value::String(s) => write::write_string(out, s),
            Value::Binary(b) => write::write_binary(out, b),
            Value::List { type_name, items } => {
                let n = items.len();
                match type_name {
                    Some(t) if n <= 7 => {
                        out.push(0x70 + n as u8);
                        write::write_string(out, t);
                    }
                    Some(t) => {
                        out.push(b'V');
                        write::write_string(out, t);
                        write::write_int(out, n as i32);
                    }
                    None if n <= 7 => out.push(0x78 + n as u8),
                    None => {
                        out.push(b'X');
                        write::write_int(out, n as i32);
                    }
                }
                for item in items {
                    item.encode_with(out, classes);
                }
            }
            Value::Map { type_name, entries } => {
                match type_name {
                    Some(t) => {
                        out.push(b'M');
                        write::write_string(out, t);
                    }
                    None => out.push(b'H'),
                }
                for (k, v) in entries {
                    k.encode_with(out, classes);
                    v.encode_with(out, classes);
                }
                out.push(b'Z');
            }
            Value::Object { class, fields } => {
                let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                let index = match classes
                    .iter()
                    .position(|(c, f)| *c == class.as_str() && *f == names)
                {
                    Some(i) => i,
                    None => {
                        out.push(b'C');
                        write::write_string(out, class);
                        write::write_int(out, names.len() as i32);
                        for name in &names {
                            write::write_string(out, name);
                        }
                        classes.push((class.as_str(), names));
                        classes.len() - 1
                    }
                };
                if index <= 0xf {
                    out.push(0x60 + index as u8);
                } else {
                    out.push(b'O');
                    write::write_int(out, index as i32);
                }
                for (_, v) in fields {
                    v.encode_with(out, classes);
                }
            }
            Value::Ref(n) => {
                out.push(b'Q');
                write::write_int(out, *n as i32);
            }
        }
    }
}

/// Decode Java's UTF-8 (with CESU-8 surrogate halves) into a `String`.
fn decode_java_utf8(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_owned();
    }
    let mut units: Vec<u16> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&lead) = bytes.get(i) {
        let cont = |k: usize| u32::from(bytes.get(i + k).copied().unwrap_or(0x80) & 0x3f);
        let (cp, len) = match lead {
            0x00..=0x7f => (u32::from(lead), 1),
            0xc0..=0xdf => ((u32::from(lead & 0x1f) << 6) | cont(1), 2),
            0xe0..=0xef => ((u32::from(lead & 0x0f) << 12) | (cont(1) << 6) | cont(2), 3),
            _ => (
                (u32::from(lead & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3),
                4,
            ),
        };
        match char::from_u32(cp) {
            Some(c) => {
                let mut buf = [0u16; 2];
                units.extend_from_slice(c.encode_utf16(&mut buf));
            }
            // A surrogate half (CESU-8) or out of range.
            None if (0xd800..=0xdfff).contains(&cp) => units.push(cp as u16),
            None => units.push(0xfffd),
        }
        i += len;
    }
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

impl<'a> Reader<'a> {
    /// Decode one value of any type into a [`Value`] (allocates).
    pub fn read_value(&mut self) -> Result<Value, CodecError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, CodecError> {
        let tag = self.value_tag()?;
        if let Some(v) = self.int_after(tag)? {
            return Ok(Value::Int(v));
        }
        if let Some(v) = self.long_after(tag)? {
            return Ok(Value::Long(v));
        }
        if let Some(v) = self.double_after(tag)? {
            return Ok(Value::Double(v));
        }
        if is_string_tag(tag) {
            let bytes = self.string_after(tag)?;
            return Ok(Value::String(decode_java_utf8(&bytes)));
        }
        match tag {
            b'N' => Ok(Value::Null),
            b'T' => Ok(Value::Bool(true)),
            b'F' => Ok(Value::Bool(false)),
            0x4a => Ok(Value::Date(self.be(8)? as i64)),
            0x4b => Ok(Value::Date(i64::from(self.be(4)? as u32 as i32) * 60_000)),
            0x20..=0x2f | 0x34..=0x37 | b'A' | b'B' => {
                let mut data = Vec::new();
                self.binary_chunks(tag, |chunk| data.extend_from_slice(chunk))?;
                Ok(Value::Binary(data))
            }
            b'Q' => {
                let n = self.read_int()?;
                let n = u32::try_from(n).map_err(|_| malformed("negative reference"))?;
                Ok(Value::Ref(n))
            }
            b'H' => self.map_entries(depth, None),
            b'M' => {
                let t = self.read_type()?;
                self.map_entries(depth, Some(t))
            }
            b'U' => {
                let t = self.read_type()?;
                self.list_until_end(depth, Some(t))
            }
            b'W' => self.list_until_end(depth, None),
            b'V' => {
                let t = self.read_type()?;
                let n = self.read_list_len()?;
                self.list_n(depth, Some(t), n)
            }
            b'X' => {
                let n = self.read_list_len()?;
                self.list_n(depth, None, n)
            }
            0x70..=0x77 => {
                let t = self.read_type()?;
                self.list_n(depth, Some(t), usize::from(tag - 0x70))
            }
            0x78..=0x7f => self.list_n(depth, None, usize::from(tag - 0x78)),
            b'O' => {
                let index = self.read_int()?;
                let def = self.class_ref(index)?;
                self.object(depth, def)
            }
            0x60..=0x6f => {
                let def = self.class_ref(i32::from(tag - 0x60))?;
                self.object(depth, def)
            }
            b'Z' => Err(malformed("unexpected end marker")),
            _ => Err(malformed("reserved tag byte")),
        }
    }

    /// A list length: non-negative, within the limit and the bytes left.
    fn read_list_len(&mut self) -> Result<usize, CodecError> {
        let n = self.read_int()?;
        let n = usize::try_from(n).map_err(|_| malformed("negative length"))?;
        self.check_elements("hessian2 list", n)?;
        if n > self.buf.len().saturating_sub(self.pos) {
            return Err(truncated());
        }
        Ok(n)
    }

    /// A type name, or a reference to one read earlier.
    fn read_type(&mut self) -> Result<String, CodecError> {
        let tag = self.byte()?;
        if is_string_tag(tag) {
            let name = decode_java_utf8(&self.string_after(tag)?);
            self.check_elements("hessian2 types", self.types.len() + 1)?;
            self.types.push(name.clone());
            return Ok(name);
        }
        let index = self
            .int_after(tag)?
            .ok_or_else(|| malformed("expected a type"))?;
        usize::try_from(index)
            .ok()
            .and_then(|i| self.types.get(i))
            .cloned()
            .ok_or_else(|| malformed("reference to an undefined type"))
    }

    fn list_n(
        &mut self,
        depth: usize,
        type_name: Option<String>,
        n: usize,
    ) -> Result<Value, CodecError> {
        let inner = self.enter(depth)?;
        let mut items = Vec::with_capacity(n.min(PREALLOC));
        for _ in 0..n {
            items.push(self.value_at(inner)?);
        }
        Ok(Value::List { type_name, items })
    }

    fn list_until_end(
        &mut self,
        depth: usize,
        type_name: Option<String>,
    ) -> Result<Value, CodecError> {
        let inner = self.enter(depth)?;
        let mut items = Vec::new();
        while !self.at_end_marker()? {
            self.check_elements("hessian2 list", items.len() + 1)?;
            items.push(self.value_at(inner)?);
        }
        Ok(Value::List { type_name, items })
    }

    fn map_entries(
        &mut self,
        depth: usize,
        type_name: Option<String>,
    ) -> Result<Value, CodecError> {
        let inner = self.enter(depth)?;
        let mut entries = Vec::new();
        while !self.at_end_marker()? {
            self.check_elements("hessian2 map", entries.len() + 1)?;
            let k = self.value_at(inner)?;
            let v = self.value_at(inner)?;
            entries.push((k, v));
        }
        Ok(Value::Map { type_name, entries })
    }

    fn object(&mut self, depth: usize, def: ClassDef) -> Result<Value, CodecError> {
        let inner = self.enter(depth)?;
        // Re-read the definition's names (a side reader over the same bytes).
        let mut names = Reader::new(self.buf, self.limits);
        names.pos = def.at;
        let class = decode_java_utf8(&names.read_string()?);
        names.read_int()?;
        let mut fields = Vec::with_capacity(def.fields.min(PREALLOC));
        for _ in 0..def.fields {
            let name = decode_java_utf8(&names.read_string()?);
            let value = self.value_at(inner)?;
            fields.push((name, value));
        }
        Ok(Value::Object { class, fields })
    }
}
