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

mod layer;
#[cfg(test)]
mod tests;

pub use self::layer::RateLimitLayer;

use crate::body::MeshBody;
use crate::error::MeshError;
use crate::grpc;
use crate::rewrite::Mutations;
use crate::route::RouteDecision;
use futures_util::future::Either;
use http::{Request, Response};
use mesh_core::config::headers::HeaderMutations;
use mesh_core::policy::{FractionalPercent, LocalRateLimit};
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// A token bucket with Envoy's local rate limit settings.
#[derive(Debug)]
pub struct RateLimiter {
    max: u32,
    per_fill: u32,
    interval_nanos: u128,
    start: Instant,
    /// Tokens (high 32 bits) and the fill tick they were counted at (low 32 bits).
    state: AtomicU64,
    enabled: FractionalPercent,
    enforced: FractionalPercent,
    status: u16,
    resource_exhausted: bool,
    headers: Mutations,
}

impl RateLimiter {
    /// Compiles a config; `None` when it has no bucket (the filter then passes everything).
    pub fn new(c: &LocalRateLimit) -> Result<Option<Self>, String> {
        let Some(b) = &c.token_bucket else {
            return Ok(None);
        };
        let headers = Mutations::compile(&[HeaderMutations {
            response_add: &c.response_headers_to_add,
            ..HeaderMutations::default()
        }])?;
        Ok(Some(Self {
            max: b.max_tokens,
            per_fill: b.tokens_per_fill.unwrap_or(1),
            interval_nanos: b.fill_interval.max(Duration::from_millis(1)).as_nanos(),
            start: Instant::now(),
            state: AtomicU64::new(u64::from(b.max_tokens) << 32),
            enabled: c.filter_enabled.unwrap_or_default(),
            enforced: c.filter_enforced.unwrap_or_default(),
            status: c.status.map_or(429, |s| s as u16),
            resource_exhausted: c.rate_limited_as_resource_exhausted,
            headers,
        }))
    }

    /// Takes a token at `now`; false when the bucket is empty.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let tick =
            (now.saturating_duration_since(self.start).as_nanos() / self.interval_nanos) as u32;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (tokens, last) = ((cur >> 32) as u32, cur as u32);
            let elapsed = u64::from(tick.wrapping_sub(last));
            let refilled = (u64::from(tokens) + elapsed * u64::from(self.per_fill))
                .min(u64::from(self.max)) as u32;
            let (next, ok) = if refilled == 0 {
                (refilled, false)
            } else {
                (refilled - 1, true)
            };
            let new = (u64::from(next) << 32) | u64::from(tick);
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return ok,
                Err(now) => cur = now,
            }
        }
    }

    /// Whether a request is refused (`r1`, `r2`: uniform random numbers for the rollout
    /// fractions).
    fn refuses(&self, now: Instant, r1: u64, r2: u64) -> bool {
        self.enabled.hits(r1) && !self.try_acquire(now) && self.enforced.hits(r2)
    }

    fn refusal(&self, is_grpc: bool) -> Response<MeshBody> {
        let grpc_code = self.resource_exhausted.then_some(8);
        let mut res = grpc::local_answer(is_grpc, self.status, grpc_code, "local_rate_limited");
        self.headers.response.apply(res.headers_mut());
        res.extensions_mut().insert(RateLimited);
        res
    }
}

/// In the extensions of a response the rate limiter refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited;

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
