//! The same limiter on the server side: one bucket per server (a `servers:` entry's
//! `local_ratelimit` filter), refusing callers before any token or policy work. A refused
//! request never reaches the handler; HTTP callers get the configured status (429), gRPC
//! callers `UNAVAILABLE` (or `RESOURCE_EXHAUSTED`). A route of the server's inbound routes may
//! have its own bucket (a per-route `LocalRateLimit`, as Envoy's) or none (`disabled`).

use super::RateLimiter;
use crate::refusal::{RefusalBody, RefusalFuture};
use crate::route::inbound::PerRoute;
use arc_swap::ArcSwap;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Refuses requests over the server's local rate limit; passes the others to `S`.
#[derive(Clone, Debug)]
pub struct InboundRateLimit<S> {
    inner: S,
    limiter: Arc<ArcSwap<PerRoute<RateLimiter>>>,
    rng: crate::draw::Draw,
}

/// Applies [`InboundRateLimit`] with whatever limiters the handle holds at each request (none
/// for the request's route: no limit), swapped by the owner when the config changes.
#[derive(Clone, Debug)]
pub struct InboundRateLimitLayer {
    limiter: Arc<ArcSwap<PerRoute<RateLimiter>>>,
}

impl InboundRateLimitLayer {
    /// A layer reading `limiter`.
    pub fn live(limiter: Arc<ArcSwap<PerRoute<RateLimiter>>>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for InboundRateLimitLayer {
    type Service = InboundRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundRateLimit {
            inner,
            limiter: self.limiter.clone(),
            rng: crate::draw::Draw::new(None),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for InboundRateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<RefusalBody<ResBody>>;
    type Error = S::Error;
    type Future = RefusalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(limiter) = self.limiter.load().get(&req)
            && limiter.refuses(Instant::now(), self.rng.u64(), self.rng.u64())
        {
            let grpc = crate::grpc::is_grpc(req.headers());
            return RefusalFuture::denied(limiter.refusal(grpc));
        }
        RefusalFuture::inner(self.inner.call(req))
    }
}
