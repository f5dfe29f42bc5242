//! SOFA's simple-map header: for each entry, the key then the value, each as
//! a big-endian int32 length and that many bytes (length -1: null).
use super::PROTO;
use crate::CodecError;

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

impl<'a> HeaderMap<'a> {
    /// One length-prefixed string. Hand-tuned, not nom: this runs for every
    /// routing lookup, and the nom version took +71 % instructions per
    /// Service + RpcMethod lookup (see docs/benchmarks.md).
    fn field(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        let (len, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| CodecError::malformed(PROTO, "truncated header map"))?;
        let len = i32::from_be_bytes(*len);
        if len == -1 {
            self.rest = rest;
            return Ok(None);
        }
        let len = usize::try_from(len)
            .map_err(|_| CodecError::malformed(PROTO, "negative header map length"))?;
        if len > rest.len() {
            return Err(CodecError::malformed(PROTO, "truncated header map"));
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(Some(value))
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
