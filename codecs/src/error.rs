//! The error every codec returns.

/// Why a byte stream could not be decoded. Every variant is final for the
/// connection: the stream cannot be resynchronised after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A head (HTTP head, RTSP head, ...) grew past its configured limit.
    #[error("head larger than the limit of {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// A frame or a length-prefixed element declared or reached a size over its limit.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    FrameTooLarge {
        what: &'static str,
        size: u64,
        limit: usize,
    },
    /// Nesting (of aggregates, attributes, ...) deeper than its limit.
    #[error("{what} nested {depth} levels deep is over the limit of {limit} levels")]
    TooDeep {
        what: &'static str,
        depth: usize,
        limit: usize,
    },
    /// More elements (arguments, aggregate members) than the limit.
    #[error("{what} of {count} elements is over the limit of {limit} elements")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: usize,
    },
    /// The bytes break the protocol's grammar.
    #[error("malformed {protocol}: {reason}")]
    Malformed {
        protocol: &'static str,
        reason: &'static str,
    },
    /// A parser stopped at `offset` (from the start of the frame or head it
    /// was parsing) where it expected something else.
    #[error("malformed {protocol} at byte {offset}: expected {expected}")]
    Expected {
        protocol: &'static str,
        offset: usize,
        expected: &'static str,
    },
    /// Valid protocol, but a feature this codec refuses (for example RTSP/2.0).
    #[error("unsupported {protocol}: {reason}")]
    Unsupported {
        protocol: &'static str,
        reason: &'static str,
    },
}

impl CodecError {
    /// Shorthand for [`CodecError::Malformed`].
    pub const fn malformed(protocol: &'static str, reason: &'static str) -> Self {
        Self::Malformed { protocol, reason }
    }
}
