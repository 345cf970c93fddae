//! Local rate limiting (Envoy's `envoy.filters.http.local_ratelimit`): a token bucket per
//! listener, virtual host or route.
//!
//! A client-side limiter protects a shared upstream from one runaway caller without any
//! coordination. The bucket holds `max_tokens`, gains `tokens_per_fill` every `fill_interval`,
//! and each request takes a token; a request that finds the bucket empty is refused locally
//! with the configured status (429 by default; gRPC callers get UNAVAILABLE, or
//! RESOURCE_EXHAUSTED with `rate_limited_as_resource_exhausted`). `filter_enabled` and
//! `filter_enforced` are Envoy's rollout knobs and, as in Envoy, default to 0%: a config must
//! turn the limiter on explicitly. The bucket is one atomic word — no lock on the request path.
//! A config change starts a new bucket.

mod inbound;
mod layer;
#[cfg(test)]
mod tests;

pub use self::inbound::{InboundRateLimit, InboundRateLimitLayer};
pub use self::layer::RateLimitLayer;

use crate::body::MeshBody;
use crate::error::MeshError;
use crate::grpc;
use crate::policy::RouteDecision;
pub use crate::policy::ratelimit::{RateLimited, RateLimiter};
use futures_util::future::Either;
use http::{Request, Response};
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower_service::Service;

/// Refuses requests over their route's local rate limit.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    rng: crate::draw::Draw,
}

impl<S> RateLimit<S> {
    /// Wraps `inner`; `seed` pins the rollout draws of this instance (tests), `None` draws
    /// from the thread's generator.
    pub fn new(inner: S, seed: Option<u64>) -> Self {
        Self {
            inner,
            rng: crate::draw::Draw::new(seed),
        }
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
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
        if let Some(limiter) = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(|d| d.route.rate_limit.as_ref())
            && limiter.refuses(Instant::now(), self.rng.u64(), self.rng.u64())
        {
            return Either::Left(ready(Ok(limiter.refusal(grpc::is_grpc(req.headers())))));
        }
        Either::Right(self.inner.call(req))
    }
}
