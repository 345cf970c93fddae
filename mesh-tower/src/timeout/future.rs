//! The timeout's response future.

use crate::error::MeshError;
use mesh_core::BoxError;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

pin_project! {
    /// Response future of [`Timeout`](super::Timeout).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        // `None` once the limit passed: dropped there, so the cluster below can tell a timeout
        // from a caller going away.
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        limit: Option<super::Limit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, limit: Option<super::Limit>) -> Self {
        Self {
            inner: Some(inner),
            sleep: limit.map(|l| tokio::time::sleep(l.after)),
            limit,
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
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(MeshError::timeout(Duration::ZERO)));
        };
        if let Poll::Ready(res) = inner.poll(cx) {
            return Poll::Ready(res.map_err(MeshError::from_inner));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                crate::endpoint::dropping_timed_out(|| this.inner.set(None));
                Poll::Ready(Err(match this.limit {
                    Some(l) => l.error(),
                    None => MeshError::timeout(Duration::ZERO),
                }))
            }
            _ => Poll::Pending,
        }
    }
}
