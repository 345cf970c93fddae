//! A route's retry policy compiled for the request path, and what it retries.

use super::headers::{HeaderRule, compile_header};
use crate::error::{ErrorKind, MeshError};
use http::Response;
use mesh_core::config::route::DEFAULT_BUFFER_LIMIT;
use mesh_core::policy::{HedgePolicy, RetryCondition as C};
use std::time::Duration;

/// A compiled retry policy (see [`mesh_core::policy::RetryPolicy`] for the fields' meaning).
#[derive(Debug)]
pub struct RetryPolicy {
    on: u32,
    pub(crate) max_retries: u32,
    pub(crate) per_try_timeout: Option<Duration>,
    backoff: (Duration, Duration),
    status_codes: Vec<u16>,
    headers: Vec<HeaderRule>,
    pub(crate) previous_hosts: bool,
    pub(crate) host_attempts: u32,
    pub(crate) hedge_on_per_try_timeout: bool,
    pub(crate) buffer_limit: usize,
}

const fn bit(c: C) -> u32 {
    1 << (c as u32)
}

impl RetryPolicy {
    /// Whether the policy can do anything: retry, or bound attempts with a per-try timeout.
    /// A policy that cannot is treated as no policy (the request is sent once, unbuffered).
    pub(crate) fn is_active(&self) -> bool {
        self.max_retries > 0 || self.per_try_timeout.is_some()
    }

    /// Compiles `config`, with the route's hedge policy and body buffer limit.
    pub fn new(
        config: &mesh_core::policy::RetryPolicy,
        hedge: Option<&HedgePolicy>,
        buffer_limit: Option<u32>,
    ) -> Result<Self, String> {
        let headers = config
            .retriable_headers
            .iter()
            .map(compile_header)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            on: config.conditions().fold(0, |acc, c| acc | bit(c)),
            max_retries: config.max_retries(),
            per_try_timeout: config.per_try_timeout,
            backoff: config.backoff(),
            status_codes: config
                .retriable_status_codes
                .iter()
                .filter_map(|c| u16::try_from(*c).ok())
                .collect(),
            headers,
            previous_hosts: config.avoids_previous_hosts(),
            host_attempts: config.host_selection_retry_max_attempts.unwrap_or(1),
            hedge_on_per_try_timeout: hedge.is_some_and(|h| h.hedge_on_per_try_timeout),
            buffer_limit: buffer_limit.unwrap_or(DEFAULT_BUFFER_LIMIT) as usize,
        })
    }

    fn has(&self, c: C) -> bool {
        self.on & bit(c) != 0
    }

    /// Whether a response should be retried.
    pub fn retriable_response<T>(&self, res: &Response<T>) -> bool {
        let s = res.status().as_u16();
        if (self.has(C::FiveXx) && s >= 500)
            || (self.has(C::GatewayError) && (502..=504).contains(&s))
            || (self.has(C::Retriable4xx) && s == 409)
            || (self.has(C::RetriableStatusCodes) && self.status_codes.contains(&s))
            || (self.has(C::RetriableHeaders)
                && self.headers.iter().any(|h| h.matches(res.headers())))
        {
            return true;
        }
        // gRPC: only a trailers-only response carries its status in the headers (as in Envoy).
        let code = res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok());
        match code {
            Some(1) => self.has(C::Cancelled),
            Some(4) => self.has(C::DeadlineExceeded),
            Some(8) => self.has(C::ResourceExhausted),
            Some(13) => self.has(C::Internal),
            Some(14) => self.has(C::Unavailable),
            _ => false,
        }
    }

    /// Whether a failed attempt should be retried. Connect failures were never sent; resets
    /// and per-try timeouts may have reached the upstream (so `reset-before-request` skips
    /// them). Local refusals (circuit breaker, no endpoint, no route) are not retried.
    pub fn retriable_error(&self, e: &MeshError) -> bool {
        match e.kind() {
            ErrorKind::Connect => {
                self.has(C::ConnectFailure)
                    || self.has(C::FiveXx)
                    || self.has(C::GatewayError)
                    || self.has(C::Reset)
                    || self.has(C::ResetBeforeRequest)
            }
            ErrorKind::Upstream => {
                self.has(C::Reset)
                    || self.has(C::FiveXx)
                    || self.has(C::GatewayError)
                    || (self.has(C::RefusedStream) && e.is_refused_stream())
            }
            ErrorKind::PerTryTimeout => {
                self.has(C::FiveXx) || self.has(C::GatewayError) || self.has(C::Reset)
            }
            _ => false,
        }
    }

    /// The wait before retry number `n` (1-based): uniform in `[0, min(base × 2^(n-1), max))`
    /// (full jitter), `r` a uniform random number.
    pub fn backoff(&self, n: u32, r: u64) -> Duration {
        let (base, max) = self.backoff;
        let upper = base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(30))
            .min(max);
        let nanos = upper.as_nanos() as u64;
        if nanos == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(r % nanos)
        }
    }
}
