//! The retry layer's response future.

use crate::body::MeshBody;
use crate::error::MeshError;
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type Retrying = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, MeshError>> + Send>>;

pin_project! {
    /// Response future of [`Retry`](super::Retry): the inner future untouched when the route
    /// has no retry policy, else the retry loop (one allocation per request with a policy).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = Proj]
    enum State<F> {
        Direct { #[pin] inner: F },
        Retrying { run: Retrying },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn direct(inner: F) -> Self {
        Self {
            state: State::Direct { inner },
        }
    }

    pub(crate) fn retrying(run: Retrying) -> Self {
        Self {
            state: State::Retrying { run },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, MeshError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Proj::Direct { inner } => inner.poll(cx),
            Proj::Retrying { run } => run.as_mut().poll(cx),
        }
    }
}
