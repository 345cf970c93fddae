//! Request rewrites and header mutations: `prefix_rewrite`, `regex_rewrite`,
//! `host_rewrite_literal`, and `request/response_headers_to_add/remove` at every level.
//!
//! Mutations are compiled per route into one ordered list per direction, levels in Envoy's
//! order — weighted cluster, route, virtual host, route config — each level removing before it
//! adds, so with Envoy's default (`most_specific_header_mutations_wins: false`) an outer level's
//! overwrite wins. The weighted cluster's list depends on the cluster drawn, so it travels in the
//! [`RouteDecision`] and runs first. The path is rewritten once, before retries, so every attempt
//! and the backend see the same path Envoy would send.

mod future;
mod layer;

pub use self::future::ResponseFuture;
pub use self::layer::RewriteLayer;

use crate::error::MeshError;
use crate::policy::RouteDecision;
pub use crate::policy::rewrite::{HeaderOps, Mutations, PathRewrite, Rewrite};
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Rewrites requests and mutates headers by the route's [`Rewrite`].
#[derive(Clone, Debug)]
pub struct RewriteService<S> {
    inner: S,
}

impl<S> RewriteService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, T> Service<Request<B>> for RewriteService<S>
where
    S: Service<Request<B>, Response = Response<T>, Error = MeshError>,
{
    type Response = Response<T>;
    type Error = MeshError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let (rewrite, cluster_level) = match req.extensions().get::<RouteDecision>() {
            Some(d) => (d.route.rewrite.clone(), d.cluster_headers.clone()),
            None => (None, None),
        };
        if rewrite.is_none() && cluster_level.is_none() {
            return ResponseFuture::new(self.inner.call(req), None, None);
        }
        if let Some(rw) = &rewrite {
            rw.apply_request(cluster_level.as_deref(), &mut req);
        } else if let Some(c) = &cluster_level {
            c.request.apply(req.headers_mut());
        }
        ResponseFuture::new(self.inner.call(req), rewrite, cluster_level)
    }
}

/// Shared handle to a compiled rewrite.
pub type SharedRewrite = Arc<Rewrite>;

#[cfg(test)]
mod tests;
