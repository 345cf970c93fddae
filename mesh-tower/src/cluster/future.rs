use crate::body::MeshBody;
use crate::error::{ErrorKind, MeshError};
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type Sending = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, MeshError>> + Send>>;

pin_project! {
    /// Response future of [`Dispatch`](super::Dispatch).
    ///
    /// Sending is one boxed future: hyper's send future cannot be named, and boxing it once at
    /// the leaf keeps every layer above it allocation-free. Failures before sending (no
    /// endpoint) allocate nothing.
    pub struct ResponseFuture {
        state: State,
    }
}

enum State {
    Sending(Sending),
    Failed(Option<MeshError>),
}

impl ResponseFuture {
    pub(crate) fn sending(fut: Sending) -> Self {
        Self {
            state: State::Sending(fut),
        }
    }

    pub(crate) fn failed(e: MeshError) -> Self {
        Self {
            state: State::Failed(Some(e)),
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<MeshBody>, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.project().state {
            State::Sending(fut) => fut.as_mut().poll(cx),
            State::Failed(e) => Poll::Ready(Err(e.take().unwrap_or_else(|| {
                MeshError::new(ErrorKind::NoEndpoint, "polled after completion")
            }))),
        }
    }
}
