//! The compiled policy of the [`ratelimit`](crate::ratelimit) layer, built once per route when the
//! route table compiles and read by the layer per request.

use super::rewrite::Mutations;
use crate::body::MeshBody;
use crate::grpc;
use http::Response;
use mesh_core::config::headers::HeaderMutations;
use mesh_core::policy::{FractionalPercent, LocalRateLimit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

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
    pub(crate) fn refuses(&self, now: Instant, r1: u64, r2: u64) -> bool {
        self.enabled.hits(r1) && !self.try_acquire(now) && self.enforced.hits(r2)
    }

    pub(crate) fn refusal(&self, is_grpc: bool) -> Response<MeshBody> {
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
