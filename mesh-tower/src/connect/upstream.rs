//! The body of an upstream's answer: hyper's for HTTP/1.1, the `h2` stream for HTTP/2.
//!
//! For HTTP/2 the mesh drives `h2` itself (see `http2.rs`), so the body is h2's receive stream:
//! each DATA frame's flow-control credit is handed back as the frame is passed on, so the
//! peer's window reopens at the pace the caller reads, and trailers (gRPC's status) follow the
//! data.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use mesh_core::BoxError;
use std::pin::Pin;
use std::task::{Context, Poll};

/// An upstream response body.
#[derive(Debug)]
pub(crate) enum Upstream {
    Http1(Incoming),
    H2 {
        recv: h2::RecvStream,
        /// All DATA frames were read; trailers (if any) come next.
        data_done: bool,
        /// The stream's place under the peer's stream limit. The dispatch moves it into the
        /// response body's hold, which gives it back when the stream ends; standalone it is
        /// given back when this body is dropped.
        slot: Option<super::http2::StreamSlot>,
    },
}

impl Upstream {
    pub(crate) fn h2(recv: h2::RecvStream, slot: Option<super::http2::StreamSlot>) -> Self {
        Upstream::H2 {
            recv,
            data_done: false,
            slot,
        }
    }

    /// The HTTP/2 stream slot, for whoever tracks the end of the stream.
    pub(crate) fn take_slot(&mut self) -> Option<super::http2::StreamSlot> {
        match self {
            Upstream::H2 { slot, .. } => slot.take(),
            Upstream::Http1(_) => None,
        }
    }
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Upstream::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstream::H2 {
                recv, data_done, ..
            } => {
                if !*data_done {
                    match recv.poll_data(cx) {
                        Poll::Ready(Some(Ok(data))) => {
                            // The frame leaves the stream's buffer now: give its window back.
                            let _ = recv.flow_control().release_capacity(data.len());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                        Poll::Ready(None) => *data_done = true,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                match recv.poll_trailers(cx) {
                    Poll::Ready(Ok(Some(trailers))) => {
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Poll::Ready(Ok(None)) => Poll::Ready(None),
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Upstream::Http1(b) => b.is_end_stream(),
            Upstream::H2 { recv, .. } => recv.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstream::Http1(b) => b.size_hint(),
            Upstream::H2 { recv, .. } if recv.is_end_stream() => SizeHint::with_exact(0),
            Upstream::H2 { .. } => SizeHint::default(),
        }
    }
}
