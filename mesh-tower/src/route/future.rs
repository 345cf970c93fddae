//! The route layer's response future.

use crate::error::MeshError;
use mesh_core::BoxError;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pin_project! {
    /// Response future of [`Route`](super::Route): the inner call, with target and route added
    /// to its errors, or the routing error itself.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = Proj]
    #[derive(Debug)]
    enum State<F> {
        Routed {
            #[pin]
            inner: F,
            target: Arc<str>,
            route: Arc<str>,
        },
        Failed { error: Option<MeshError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn routed(inner: F, target: Arc<str>, route: Arc<str>) -> Self {
        Self {
            state: State::Routed {
                inner,
                target,
                route,
            },
        }
    }

    pub(crate) fn failed(error: MeshError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Proj::Routed {
                inner,
                target,
                route,
            } => inner.poll(cx).map_err(|e| {
                MeshError::from_inner(e)
                    .with_target(target.clone())
                    .with_route(route.clone())
            }),
            Proj::Failed { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                MeshError::new(crate::ErrorKind::NoRoute, "polled after completion")
            }))),
        }
    }
}
