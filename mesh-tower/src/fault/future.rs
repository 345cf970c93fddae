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
        Delaying {
            #[pin]
            sleep: Sleep,
            svc: S,
            req: Option<Request<B>>,
            abort: Option<Response<MeshBody>>,
        },
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
                sleep: tokio::time::sleep(t),
                svc,
                req: Some(req),
                abort,
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
                Proj::Delaying {
                    sleep,
                    svc,
                    req,
                    abort,
                } => {
                    std::task::ready!(sleep.poll(cx));
                    if let Some(res) = abort.take() {
                        this.state.set(State::Aborted { res: Some(res) });
                        continue;
                    }
                    std::task::ready!(svc.poll_ready(cx))?;
                    let Some(req) = req.take() else {
                        return Poll::Ready(Err(MeshError::new(
                            crate::ErrorKind::NoRoute,
                            "polled after completion",
                        )));
                    };
                    let fut = svc.call(req);
                    *this.guard = None;
                    this.state.set(State::Calling { fut });
                }
            }
        }
    }
}
