use super::InboundBody;
use crate::stats::Flags;
use crate::telemetry::InboundCall;
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pin_project! {
    /// Response future of [`InboundMetrics`](super::InboundMetrics).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<InboundCall>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, call: Option<InboundCall>) -> Self {
        Self { inner, call }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<InboundBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The handler's log lines name the trace (a traced request's `tracing` span).
        let in_trace = this
            .call
            .as_ref()
            .and_then(InboundCall::log_span)
            .map(tracing::Span::enter);
        let out = ready!(this.inner.poll(cx));
        drop(in_trace);
        let call = this.call.take();
        Poll::Ready(match out {
            Ok(res) => {
                let rec = call.map(|c| c.answered(res.status().as_u16(), Some(&res)));
                Ok(res.map(|body| InboundBody::new(body, rec)))
            }
            Err(e) => {
                // No answer: hyper resets the stream. Recorded as response code 0.
                if let Some(call) = call {
                    call.answered::<()>(0, None).finish(Flags::NONE);
                }
                Err(e)
            }
        })
    }
}
