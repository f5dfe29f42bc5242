//! The gateway's one error type: what went wrong, on which side, and whether
//! the request may be retried.

use std::fmt;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched the request.
    NoRoute,
    /// The cluster has no host to send to.
    NoHost,
    /// Connecting to the upstream host failed (refused, unreachable, ...).
    ConnectFailed,
    /// Connecting to the upstream host took longer than `connect_timeout`.
    ConnectTimeout,
    /// A circuit breaker of the cluster is full (`max_connections`,
    /// `max_pending`): answered "unavailable" without trying a host.
    Overflow,
    /// The upstream closed the connection before the response was complete.
    UpstreamClosed,
    /// The upstream did not answer within the request timeout.
    UpstreamTimeout,
    /// The upstream sent bytes that break the protocol.
    UpstreamProtocol,
    /// The client sent bytes that break the protocol.
    DownstreamProtocol,
    /// An I/O error on an established connection.
    Io,
}

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// A gateway error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    side: Side,
    retryable: bool,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(kind: ErrorKind, side: Side, context: impl Into<String>) -> Self {
        let retryable = matches!(kind, ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout);
        Self {
            kind,
            side,
            retryable,
            context: context.into(),
            source: None,
        }
    }
    pub fn upstream(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self::new(kind, Side::Upstream, context)
    }
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Mark whether retrying on another connection is safe.
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn side(&self) -> Side {
        self.side
    }
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
