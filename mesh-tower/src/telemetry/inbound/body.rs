use crate::stats::{Flags, Recording};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
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
