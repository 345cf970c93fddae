//! Local answers: Envoy's `redirect` and `direct_response` route actions.
//!
//! A route can answer without any upstream: a redirect (3xx and a `location` built from the
//! request: scheme, host, port, path — whole, prefix-rewritten or regex-rewritten — and query)
//! or a fixed status and body. [`LocalAnswers`] answers those routes and passes every other request
//! on. gRPC callers get a trailers-only status instead (a redirect is meaningless to them).

mod layer;

pub use self::layer::LocalAnswersLayer;

use crate::body::MeshBody;
use crate::error::MeshError;
use crate::policy::RouteDecision;
pub use crate::policy::local::{LocalAnswer, Redirect};
use futures_util::future::Either;
use http::{Request, Response};
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tower_service::Service;

/// Answers `redirect` and `direct_response` routes locally.
#[derive(Clone, Debug)]
pub struct LocalAnswers<S> {
    inner: S,
}

impl<S> LocalAnswers<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for LocalAnswers<S>
where
    S: Service<Request<B>, Response = Response<MeshBody>, Error = MeshError>,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = Either<Ready<Result<Response<MeshBody>, MeshError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let local = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(|d| d.route.local.as_ref());
        match local {
            Some(answer) => Either::Left(ready(Ok(answer.respond(&req)))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests;
