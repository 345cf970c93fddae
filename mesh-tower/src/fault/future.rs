//! The fault layer's response future.

use crate::body::MeshBody;
use crate::breaker::Guard;
use crate::error::MeshError;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tower_service::Service;

pin_project! {
    /// Response future of [`Fault`](super::Fault): the inner call, an abort, or a delay
    /// followed by one of them.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        guard: Option<Guard>,
    }
}

pin_project! {
    #[project = Proj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Calling { #[pin] fut: S::Future },
        Aborted { res: Option<Response<MeshBody>> },
        Delaying { #[pin] delay: Delay<S, B> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn passthrough(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
            guard: None,
        }
    }

    pub(crate) fn aborted(res: Response<MeshBody>) -> Self {
        Self {
            state: State::Aborted { res: Some(res) },
            guard: None,
        }
    }

    pub(crate) fn delayed(
        t: Duration,
        svc: S,
        req: Request<B>,
        abort: Option<Response<MeshBody>>,
        guard: Option<Guard>,
    ) -> Self {
        Self {
            state: State::Delaying {
                delay: Delay::new(t, svc, req, abort),
            },
            guard,
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<MeshBody>, Error = MeshError>,
{
    type Output = Result<Response<MeshBody>, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                Proj::Calling { fut } => return fut.poll(cx),
                Proj::Aborted { res } => {
                    *this.guard = None;
                    return Poll::Ready(res.take().ok_or_else(|| {
                        MeshError::new(crate::ErrorKind::NoRoute, "polled after completion")
                    }));
                }
                Proj::Delaying { delay } => {
                    let next = match std::task::ready!(delay.poll(cx))? {
                        AfterDelay::Call(fut) => State::Calling { fut },
                        AfterDelay::Abort(res) => State::Aborted { res: Some(*res) },
                    };
                    *this.guard = None;
                    this.state.set(next);
                }
            }
        }
    }
}

pin_project! {
    /// A delayed request (both sides' fault filters): once the delay has passed, the abort
    /// it ends in, or the call of the service it was held for.
    pub(crate) struct Delay<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        sleep: Sleep,
        svc: S,
        req: Option<Request<B>>,
        abort: Option<Response<MeshBody>>,
    }
}

/// What a [`Delay`] ends in.
pub(crate) enum AfterDelay<F> {
    Call(F),
    /// Boxed: a rare path, and the future stays small.
    Abort(Box<Response<MeshBody>>),
}

impl<S, B> Delay<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        t: Duration,
        svc: S,
        req: Request<B>,
        abort: Option<Response<MeshBody>>,
    ) -> Self {
        Self {
            sleep: tokio::time::sleep(t),
            svc,
            req: Some(req),
            abort,
        }
    }
}

impl<S, B> Future for Delay<S, B>
where
    S: Service<Request<B>>,
{
    type Output = Result<AfterDelay<S::Future>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        std::task::ready!(this.sleep.poll(cx));
        if let Some(res) = this.abort.take() {
            return Poll::Ready(Ok(AfterDelay::Abort(Box::new(res))));
        }
        std::task::ready!(this.svc.poll_ready(cx))?;
        let req = this.req.take().expect("polled after completion");
        Poll::Ready(Ok(AfterDelay::Call(this.svc.call(req))))
    }
}
