//! Bodies in flight: an HTTP/2 stream's receive half as an `http_body::Body`
//! (releasing flow-control window as the gateway takes each chunk), and the
//! [`Pump`] that moves any body onto an HTTP/2 send stream within the
//! receiver's window, trailers included.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http_body::{Body, Frame, SizeHint};

/// The receive half of an HTTP/2 stream as a body.
pub(super) struct H2Body {
    recv: RecvStream,
    data_done: bool,
}

impl H2Body {
    pub(super) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The chunk leaves h2's buffer: let the peer send more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// A request body for an HTTP/1 upstream.
// Unboxed: a box would be an allocation per request with a body; the enum
// is moved once, into hyper's request.
#[allow(clippy::large_enum_variant)]
pub(super) enum ReqBody {
    Empty,
    /// The client's body (kept only when a mirror copy waits for it).
    H2(RetryBody),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::H2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::H2(b) => b.size_hint(),
        }
    }
}

/// The stream reset reason a body error carries, if any.
pub(super) trait ResetReason {
    fn reset_reason(&self) -> Option<Reason>;
}

impl ResetReason for h2::Error {
    fn reset_reason(&self) -> Option<Reason> {
        self.reason()
    }
}

impl ResetReason for hyper::Error {
    fn reset_reason(&self) -> Option<Reason> {
        None
    }
}

/// Why a pump stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpError {
    /// The source failed: reset by its peer (with that reason) or its
    /// connection died (`None`).
    Src(Option<Reason>),
    /// The destination stream was reset (by its peer, with that reason) or
    /// its connection died (`None`).
    Dst(Option<Reason>),
}

/// Moves a body onto an HTTP/2 send stream: a chunk is taken from the source
/// only once the destination has window for it, so the gateway holds at most
/// one chunk per direction beyond h2's bounded send buffer, and the source's
/// peer is held back by flow control.
#[derive(Default)]
pub(super) struct Pump {
    /// Data bytes sent so far (the access log's `bytes_out`).
    pub(super) sent: u64,
    /// The `grpc-status` of the trailers it sent (the access log's).
    pub(super) grpc_status: Option<u32>,
}

impl Pump {
    /// `Ready(Ok)` once the end of the body (or its trailers) was sent.
    pub(super) fn poll<B>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut B>,
        dst: &mut SendStream<Bytes>,
    ) -> Poll<Result<(), PumpError>>
    where
        B: Body<Data = Bytes>,
        B::Error: ResetReason,
    {
        loop {
            dst.reserve_capacity(1);
            if dst.capacity() == 0 {
                loop {
                    match ready!(dst.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(PumpError::Dst(e.reason()))),
                        None => {
                            // No longer streaming: reset, or the connection is gone.
                            let reason = match dst.poll_reset(cx) {
                                Poll::Ready(Ok(r)) => Some(r),
                                _ => None,
                            };
                            return Poll::Ready(Err(PumpError::Dst(reason)));
                        }
                    }
                }
            } else if let Poll::Ready(r) = dst.poll_reset(cx) {
                return Poll::Ready(Err(PumpError::Dst(r.ok())));
            }
            match ready!(src.as_mut().poll_frame(cx)) {
                None => {
                    return Poll::Ready(
                        dst.send_data(Bytes::new(), true)
                            .map_err(|e| PumpError::Dst(e.reason())),
                    );
                }
                Some(Err(e)) => return Poll::Ready(Err(PumpError::Src(e.reset_reason()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = src.is_end_stream();
                        self.sent += data.len() as u64;
                        dst.send_data(data, end)
                            .map_err(|e| PumpError::Dst(e.reason()))?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.grpc_status = trailers
                                .get("grpc-status")
                                .and_then(|v| v.to_str().ok()?.parse().ok());
                            return Poll::Ready(
                                dst.send_trailers(trailers)
                                    .map_err(|e| PumpError::Dst(e.reason())),
                            );
                        }
                    }
                },
            }
        }
    }
}

/// A request body that can be sent again on a retry: streamed from the
/// client with a copy kept (when asked, up to
/// [`MAX_KEPT_BODY`](crate::upstream::retry::MAX_KEPT_BODY) of data and no
/// trailers), or replayed from that copy. Without keeping it costs a branch
/// per chunk.
pub(super) struct RetryBody {
    src: Source,
    /// The copy so far (`None`: not kept, or too long).
    kept: Option<bytes::BytesMut>,
    /// The whole body, once it ended and was kept.
    whole: Option<Bytes>,
    /// A mirror's copy of the request, sent when the body is whole.
    mirror: Option<super::BodyCopy>,
}

enum Source {
    Live(H2Body),
    /// The kept body, until sent.
    Replay(Option<Bytes>),
}

impl RetryBody {
    /// The client's body, kept when `keep` (for a retry) or when a
    /// `mirror` copy waits for it.
    pub(super) fn live(recv: RecvStream, keep: bool, mirror: Option<super::BodyCopy>) -> Self {
        Self {
            src: Source::Live(H2Body::new(recv)),
            kept: (keep || mirror.is_some()).then(bytes::BytesMut::new),
            whole: None,
            mirror,
        }
    }

    /// Whether the body was sent to its end and kept whole.
    pub(super) fn is_whole(&self) -> bool {
        self.whole.is_some()
    }

    /// The same body again, from the kept copy (`None`: not kept whole).
    pub(super) fn again(&self) -> Option<Self> {
        let whole = self.whole.clone()?;
        Some(Self {
            src: Source::Replay(Some(whole.clone())),
            kept: None,
            whole: Some(whole),
            mirror: None,
        })
    }
}

impl Body for RetryBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        match &mut this.src {
            Source::Replay(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Source::Live(body) => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                let ended = body.is_end_stream();
                if let Some(kept) = &mut this.kept {
                    match &frame {
                        Some(Ok(f)) => match f.data_ref() {
                            Some(d)
                                if kept.len() + d.len()
                                    <= crate::upstream::retry::MAX_KEPT_BODY =>
                            {
                                kept.extend_from_slice(d);
                            }
                            // Too long, or trailers: not kept.
                            _ => this.kept = None,
                        },
                        Some(Err(_)) => this.kept = None,
                        None => {}
                    }
                }
                // The pump stops at the last chunk (no poll for the end).
                if frame.is_none() || ended {
                    this.whole = this.kept.take().map(bytes::BytesMut::freeze);
                    if let Some(copy) = this.mirror.take() {
                        match &this.whole {
                            Some(whole) => copy.send(whole.clone()),
                            None => copy.skip(),
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.src {
            Source::Live(b) => b.is_end_stream(),
            Source::Replay(data) => data.is_none(),
        }
    }
}
