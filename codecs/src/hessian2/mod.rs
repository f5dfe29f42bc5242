//! A minimal, bounded Hessian 2.0 reader (and a small writer), enough to look
//! into RPC bodies (Dubbo) without deserializing them.
//!
//! * [`skip`] walks over one value of any type and returns how many bytes it
//!   took: null, booleans, every int / long / double / date form, strings and
//!   binaries (chunked or not), typed and untyped lists (fixed or variable
//!   length), typed and untyped maps, class definitions (`C`) with object
//!   instances (`O`, `0x60`–`0x6f`), and back-references (`Q`). It allocates
//!   only the table of class definitions it meets (one small entry each).
//! * [`read_string`] reads one string, borrowing it when it is a single chunk.
//! * [`read_value`] decodes one value into a [`Value`] tree; it allocates and is
//!   meant for tests and tools, not the hot path. [`Value::encode`] writes one back.
//! * [`Reader`] does all of the above in sequence over one message, keeping the
//!   per-message class-definition table between values (a Dubbo request's
//!   arguments and attachments share one table).
//!
//! Input is always a *complete*, length-bounded body: running out of bytes is
//! an error ([`CodecError::Malformed`] with reason `"truncated"`), not "need
//! more". Nesting deeper than [`Limits::max_depth`] and collections longer than
//! [`Limits::max_elements`] are refused with [`CodecError::FrameTooLarge`].
//!
//! String lengths count UTF-16 code units, as Java does: a 4-byte UTF-8
//! sequence counts as two, and the 3-byte encodings of surrogate halves that
//! Java writes (CESU-8) are accepted and count one each. The UTF-8 structure
//! (lead and continuation bytes) is checked, overlong forms are let through.
//! Strings are returned as their raw bytes; [`Value::String`] decodes them,
//! pairing surrogate halves.
//!
//! Only the final Hessian 2.0 grammar is read. The pre-2.0 draft encoding that
//! some SOFA stacks still write (`O` with an inline type name, `o`, `V … z`)
//! is rejected as malformed rather than guessed at.
use std::borrow::Cow;

use crate::CodecError;

mod reader;
mod value;
mod write;

pub use reader::{Reader, StringEntries};
pub use value::Value;
pub(crate) use write::truncate_utf16;
pub use write::{
    write_binary, write_date, write_double, write_int, write_long, write_null, write_string,
};

/// Name used in this module's errors.
const PROTO: &str = "hessian2";

/// Bounds on what one read may walk through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists, maps and objects (default 64). A value that is
    /// not a container is at depth 0; a list of ints is at depth 1.
    pub max_depth: usize,
    /// Most elements of one list, entries of one map, fields of one class, and
    /// class definitions in one message (default 1,048,576).
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_elements: 1024 * 1024,
        }
    }
}

/// Walk over the one value at the start of `buf` and return the number of
/// bytes it takes (a class definition before an object counts as part of it).
///
/// ```
/// use switchyard_codecs::hessian2::{skip, Limits};
/// // An untyped fixed list of two ints, then unrelated bytes.
/// assert_eq!(skip(&[0x7a, 0x91, 0x92, 0xff], &Limits::default()), Ok(3));
/// ```
pub fn skip(buf: &[u8], limits: &Limits) -> Result<usize, CodecError> {
    let mut reader = Reader::new(buf, *limits);
    reader.skip_value()?;
    Ok(reader.position())
}

/// Read the string at the start of `buf`: its UTF-8 (or Java CESU-8) bytes and
/// the number of input bytes it took. A single-chunk string is borrowed from
/// `buf`; a chunked one (`R` chunks) is joined into an owned buffer.
///
/// Anything but a string (including null) is an error.
///
/// ```
/// use switchyard_codecs::hessian2::read_string;
/// let (s, used) = read_string(b"\x03foo\x90").unwrap();
/// assert_eq!((&*s, used), (&b"foo"[..], 4));
/// ```
pub fn read_string(buf: &[u8]) -> Result<(Cow<'_, [u8]>, usize), CodecError> {
    let mut reader = Reader::new(buf, Limits::default());
    let s = reader.read_string()?;
    Ok((s, reader.position()))
}

/// Decode the value at the start of `buf` and return it with the number of
/// bytes it took. Allocates; for tests and tools.
pub fn read_value(buf: &[u8], limits: &Limits) -> Result<(Value, usize), CodecError> {
    let mut reader = Reader::new(buf, *limits);
    let value = reader.read_value()?;
    Ok((value, reader.position()))
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
