use crate::stats::{Flags, MessageSizes, Recording};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

pin_project! {
    /// A response body watched to its end for the request's record.
    #[derive(Debug)]
    pub struct InboundBody<B> {
        #[pin]
        inner: B,
        rec: Option<Recording>,
    }
}

impl<B: Body> InboundBody<B> {
    pub(crate) fn new(inner: B, mut rec: Option<Recording>) -> Self {
        if inner.is_end_stream()
            && let Some(r) = &mut rec
        {
            r.finish(Flags::NONE);
        }
        Self { inner, rec }
    }
}

impl<B: Body> Body for InboundBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(rec) = this.rec {
            match &frame {
                Some(Ok(f)) => {
                    rec.frame(f);
                    if f.is_trailers() || this.inner.is_end_stream() {
                        rec.finish(Flags::NONE);
                    }
                }
                None | Some(Err(_)) => rec.finish(Flags::NONE),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A served request's body as the handler gets it: the body as it arrived, its gRPC
    /// messages counted on the way for gRPC's `grpc.server.call.rcvd_total_compressed_message_size`
    /// (gRFC A66). For anything else, and without telemetry, it only passes frames on.
    ///
    /// ```
    /// use http_body_util::BodyExt;
    /// use mesh_tower::telemetry::InboundRequestBody;
    /// # async fn f(req: http::Request<InboundRequestBody<http_body_util::Full<bytes::Bytes>>>) {
    /// let bytes = req.into_body().collect().await.unwrap().to_bytes();
    /// # let _ = bytes; }
    /// ```
    #[derive(Debug)]
    pub struct InboundRequestBody<B> {
        #[pin]
        inner: B,
        count: Option<(MessageSizes, Arc<AtomicU64>)>,
    }
}

impl<B> InboundRequestBody<B> {
    pub(crate) fn new(inner: B, rcvd: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            count: rcvd.map(|r| (MessageSizes::default(), r)),
        }
    }

    /// The body as it arrived.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for InboundRequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some((sizes, rcvd)), Some(Ok(f))) = (this.count, &frame)
            && let Some(d) = f.data_ref()
        {
            sizes.feed_buf(d);
            rcvd.store(sizes.total(), Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
