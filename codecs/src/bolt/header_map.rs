//! SOFA's simple-map header: for each entry, the key then the value, each as
//! a big-endian int32 length and that many bytes (length -1: null).
use nom::bytes::complete::take;
use nom::number::complete::be_i32;

use super::PROTO;
use crate::CodecError;
use crate::parse::{Fail, Parsed, complete_to_codec, fail};

/// The entries of a simple-map header, in wire order, as views.
///
/// Each item is a key and its value (`None` for a null value; a null key reads
/// as an empty key). A malformed entry (a negative length other than -1, or a
/// length past the end) yields one error, after which the iterator ends.
#[derive(Debug, Clone)]
pub struct HeaderMap<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterate over `bytes` read as a simple-map header.
pub fn header_map(bytes: &[u8]) -> HeaderMap<'_> {
    HeaderMap {
        rest: bytes,
        failed: false,
    }
}

const TRUNCATED: CodecError = CodecError::malformed(PROTO, "truncated header map");

/// One length-prefixed string (complete input: the header is whole); `None`
/// for length -1.
fn field(input: &[u8]) -> Parsed<'_, Option<&[u8]>> {
    let (rest, len) = be_i32::<_, Fail<'_>>(input).or_else(|_| fail(TRUNCATED))?;
    if len == -1 {
        return Ok((rest, None));
    }
    let Ok(len) = usize::try_from(len) else {
        return fail(CodecError::malformed(PROTO, "negative header map length"));
    };
    let (rest, value) = take::<_, _, Fail<'_>>(len)(rest).or_else(|_| fail(TRUNCATED))?;
    Ok((rest, Some(value)))
}

impl<'a> HeaderMap<'a> {
    /// The next length-prefixed string.
    fn field(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        let (rest, value) = complete_to_codec(PROTO, self.rest, field(self.rest))?;
        self.rest = rest;
        Ok(value)
    }
}

impl<'a> Iterator for HeaderMap<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>), CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let entry = self
            .field()
            .and_then(|key| Ok((key.unwrap_or_default(), self.field()?)));
        if entry.is_err() {
            self.failed = true;
        }
        Some(entry)
    }
}

impl std::iter::FusedIterator for HeaderMap<'_> {}
