//! The rewrite layer's response future: applies response header mutations.

use super::{Mutations, Rewrite};
use crate::error::MeshError;
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pin_project! {
    /// Response future of [`RewriteService`](super::RewriteService).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        rewrite: Option<Arc<Rewrite>>,
        cluster_level: Option<Arc<Mutations>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        rewrite: Option<Arc<Rewrite>>,
        cluster_level: Option<Arc<Mutations>>,
    ) -> Self {
        Self {
            inner,
            rewrite,
            cluster_level,
        }
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<T>, MeshError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = match this.inner.poll(cx) {
            Poll::Ready(Ok(res)) => res,
            other => return other,
        };
        if let Some(c) = this.cluster_level {
            c.response.apply(res.headers_mut());
        }
        if let Some(rw) = this.rewrite {
            rw.headers.response.apply(res.headers_mut());
        }
        Poll::Ready(Ok(res))
    }
}
