//! Envoy's `RetryPolicy` and `HedgePolicy`.

use crate::config::route::HeaderMatcher;
use crate::duration;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Envoy's `RetryPolicy` (route or virtual host level).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Comma-separated conditions, e.g. `5xx,reset,connect-failure` or, for gRPC,
    /// `unavailable,cancelled`. See [`RetryCondition`].
    #[serde(default)]
    pub retry_on: String,
    /// Maximum retries (Envoy's default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// Timeout per attempt. The route timeout still bounds the whole request, retries included.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_try_timeout: Option<Duration>,
    /// Backoff between attempts (Envoy's default: 25 ms base, 10× base max, full jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_back_off: Option<RetryBackOff>,
    /// HTTP statuses retried under `retriable-status-codes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u32>,
    /// Response headers that make a response retriable under `retriable-headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_headers: Vec<HeaderMatcher>,
    /// Host predicates; `envoy.retry_host_predicates.previous_hosts` sends a retry to an
    /// endpoint not tried before, when there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_host_predicate: Vec<RetryHostPredicate>,
    /// How many picks a retry makes to satisfy the host predicates (Envoy's default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selection_retry_max_attempts: Option<u32>,
}

/// The name of the previous-hosts predicate.
pub const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// Envoy's `RetryPolicy.RetryHostPredicate` (by name; the only config-free kind we know).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryHostPredicate {
    /// Extension name.
    pub name: String,
}

/// Envoy's `RetryPolicy.RetryBackOff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackOff {
    /// The first retry waits a random time in `[0, base_interval)`; each later retry doubles the
    /// range.
    #[serde(with = "duration")]
    pub base_interval: Duration,
    /// The range's cap (default 10 × `base_interval`).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_interval: Option<Duration>,
}

/// Envoy's default backoff base.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// One `retry_on` condition (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryCondition {
    /// Any 5xx response, and any of `reset`, `connect-failure`, `refused-stream`.
    FiveXx,
    /// 502, 503, 504, and connect failures / resets.
    GatewayError,
    /// The upstream did not respond (reset, disconnect, read timeout of an attempt).
    Reset,
    /// Reset before any response bytes (safe for non-idempotent requests).
    ResetBeforeRequest,
    /// The connection could not be established.
    ConnectFailure,
    /// 409.
    Retriable4xx,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// Statuses in `retriable_status_codes`.
    RetriableStatusCodes,
    /// Responses matching `retriable_headers`.
    RetriableHeaders,
    /// gRPC CANCELLED (1).
    Cancelled,
    /// gRPC DEADLINE_EXCEEDED (4).
    DeadlineExceeded,
    /// gRPC INTERNAL (13).
    Internal,
    /// gRPC RESOURCE_EXHAUSTED (8).
    ResourceExhausted,
    /// gRPC UNAVAILABLE (14).
    Unavailable,
}

impl RetryCondition {
    /// Parses one token of `retry_on`.
    pub fn parse(token: &str) -> Option<Self> {
        use RetryCondition::*;
        Some(match token {
            "5xx" => FiveXx,
            "gateway-error" => GatewayError,
            "reset" => Reset,
            "reset-before-request" => ResetBeforeRequest,
            "connect-failure" => ConnectFailure,
            "retriable-4xx" => Retriable4xx,
            "refused-stream" => RefusedStream,
            "retriable-status-codes" => RetriableStatusCodes,
            "retriable-headers" => RetriableHeaders,
            "cancelled" => Cancelled,
            "deadline-exceeded" => DeadlineExceeded,
            "internal" => Internal,
            "resource-exhausted" => ResourceExhausted,
            "unavailable" => Unavailable,
            _ => return None,
        })
    }
}

impl RetryPolicy {
    /// The parsed `retry_on` conditions (unknown tokens skipped; validation refuses them).
    pub fn conditions(&self) -> impl Iterator<Item = RetryCondition> + '_ {
        tokens(&self.retry_on).filter_map(RetryCondition::parse)
    }

    /// `num_retries`, or Envoy's default of 1.
    pub fn max_retries(&self) -> u32 {
        self.num_retries.unwrap_or(1)
    }

    /// Whether the previous-hosts predicate is on.
    pub fn avoids_previous_hosts(&self) -> bool {
        self.retry_host_predicate
            .iter()
            .any(|p| p.name == PREVIOUS_HOSTS)
    }

    /// `(base, max)` of the backoff, with Envoy's defaults.
    pub fn backoff(&self) -> (Duration, Duration) {
        match &self.retry_back_off {
            Some(b) => (
                b.base_interval,
                b.max_interval.unwrap_or(b.base_interval * 10),
            ),
            None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10),
        }
    }

    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        for t in tokens(&self.retry_on) {
            if t == "envoy-ratelimited" || t == "http3-post-connect-failure" {
                errors.push(
                    &path.field("retry_on"),
                    format!("condition {t:?} does not apply to an in-process client"),
                );
            } else if RetryCondition::parse(t).is_none() {
                errors.push(
                    &path.field("retry_on"),
                    format!("unknown retry condition {t:?}"),
                );
            }
        }
        if let Some(t) = self.per_try_timeout {
            errors.check(
                !t.is_zero(),
                &path.field("per_try_timeout"),
                "must be greater than 0 (leave it unset for none)",
            );
        }
        if let Some(b) = &self.retry_back_off {
            let bp = path.field("retry_back_off");
            errors.check(
                !b.base_interval.is_zero(),
                &bp.field("base_interval"),
                "must be greater than 0",
            );
            if let Some(max) = b.max_interval {
                errors.check(
                    max >= b.base_interval,
                    &bp.field("max_interval"),
                    "must not be less than base_interval",
                );
            }
        }
        for (i, code) in self.retriable_status_codes.iter().enumerate() {
            errors.check(
                (100..=599).contains(code),
                &path.field("retriable_status_codes").index(i),
                format!("{code} is not an HTTP status"),
            );
        }
        for (i, h) in self.retriable_headers.iter().enumerate() {
            h.validate(&path.field("retriable_headers").index(i), errors);
        }
        for (i, p) in self.retry_host_predicate.iter().enumerate() {
            errors.check(
                p.name == PREVIOUS_HOSTS,
                &path.field("retry_host_predicate").index(i).field("name"),
                format!("unsupported host predicate {:?}", p.name),
            );
        }
    }
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Envoy's `HedgePolicy`. Only `hedge_on_per_try_timeout` is supported: when an attempt's
/// per-try timeout fires, a new attempt starts *without* cancelling the slow one, and the first
/// good response wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgePolicy {
    /// Hedge instead of cancelling on per-try timeout.
    #[serde(default)]
    pub hedge_on_per_try_timeout: bool,
}
