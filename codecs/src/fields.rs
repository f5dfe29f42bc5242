//! A head's fields as an ordered list a proxy edits before writing the head
//! anew (HTTP/1, RTSP): names compared ASCII case-insensitively, the fields
//! the head already had borrowed from its wire bytes, edits owned.
//!
//! Writing never produces a line another parser could read differently: a
//! field whose name is not a token or whose value holds CR, LF or NUL is
//! left out.
use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

/// One field: name and value.
pub type FieldLine<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The fields of a head, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldList<'a> {
    lines: Vec<FieldLine<'a>>,
}

impl<'a> FieldList<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            lines: Vec::with_capacity(n),
        }
    }

    /// Append a field borrowed from the head's wire bytes.
    pub fn push(&mut self, name: &'a [u8], value: &'a [u8]) {
        self.lines.push((Cow::Borrowed(name), Cow::Borrowed(value)));
    }

    /// Append a field (another line even when the name is there).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.lines
            .push((Cow::Owned(name.to_vec()), Cow::Owned(value.to_vec())));
    }

    /// Remove every field named `name`.
    pub fn remove(&mut self, name: &[u8]) {
        self.lines.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Replace the fields named `name` by one with `value`, where the first
    /// of them was (at the end when there was none).
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        match self
            .lines
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                if let Some(line) = self.lines.get_mut(first) {
                    line.1 = Cow::Owned(value.to_vec());
                }
                let mut i = 0;
                self.lines.retain(|(n, _)| {
                    i += 1;
                    i - 1 <= first || !n.eq_ignore_ascii_case(name)
                });
            }
            None => self.add(name, value),
        }
    }

    /// The values of the fields named `name`, in order.
    pub fn get_all<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
        self.lines
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Write the fields as `Name: value\r\n` lines, leaving out any a
    /// parser could misread (see the module docs).
    pub fn write(&self, out: &mut BytesMut) {
        for (name, value) in self.iter() {
            if is_token(name) && !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                out.put_slice(name);
                out.put_slice(b": ");
                out.put_slice(value);
                out.put_slice(b"\r\n");
            }
        }
    }
}

/// Whether `name` is an RFC 9110 token (a valid field name).
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: &FieldList) -> String {
        let mut out = BytesMut::new();
        f.write(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn edits_keep_order_and_ignore_case() {
        let mut f = FieldList::default();
        f.push(b"Host", b"h");
        f.push(b"X-A", b"1");
        f.push(b"Accept", b"*/*");
        f.push(b"x-a", b"2");
        f.set(b"x-a", b"3");
        assert_eq!(text(&f), "Host: h\r\nX-A: 3\r\nAccept: */*\r\n");
        f.add(b"x-a", b"4");
        assert_eq!(f.get_all(b"X-A").collect::<Vec<_>>(), [b"3", b"4"]);
        f.remove(b"X-a");
        f.set(b"x-new", b"v");
        assert_eq!(text(&f), "Host: h\r\nAccept: */*\r\nx-new: v\r\n");
    }

    #[test]
    fn lines_a_parser_could_misread_are_left_out() {
        let mut f = FieldList::default();
        f.add(b"x-ok", b"1");
        f.add(b"x-bad", b"a\nInjected: 1");
        f.add(b"bad name", b"1");
        f.add(b"x-nul", b"a\0");
        assert_eq!(text(&f), "x-ok: 1\r\n");
    }
}
