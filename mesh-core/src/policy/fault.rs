//! Envoy's `HTTPFault` (`envoy.filters.http.fault`).

use super::FractionalPercent;
use crate::config::route::HeaderMatcher;
use crate::duration;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Envoy's `HTTPFault`: delay and/or abort a share of requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFault {
    /// Delay injection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort injection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    /// Faults apply only to requests matching all of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    /// Most faults in progress at once (unlimited when unset); a request over it gets no fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active_faults: Option<u32>,
}

/// Envoy's `FaultDelay`: exactly one of `fixed_delay` and `header_delay`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultDelay {
    /// Delay before forwarding.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// Take the delay (milliseconds) from the `x-envoy-fault-delay-request` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_delay: Option<Empty>,
    /// Share of requests delayed (default 100%; with `header_delay`, the share of requests
    /// carrying the header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<FractionalPercent>,
}

/// Envoy's `FaultAbort`: exactly one of `http_status`, `grpc_status`, `header_abort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultAbort {
    /// Answer with this HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// Answer with this gRPC status (HTTP 200, trailers-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Take the status from `x-envoy-fault-abort-request` (HTTP) or
    /// `x-envoy-fault-abort-grpc-request` (gRPC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_abort: Option<Empty>,
    /// Share of requests aborted (default 100%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<FractionalPercent>,
}

/// An empty message (`{}`), for Envoy's marker fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl HttpFault {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(d) = &self.delay {
            let n = usize::from(d.fixed_delay.is_some()) + usize::from(d.header_delay.is_some());
            errors.check(
                n == 1,
                &path.field("delay"),
                "exactly one of fixed_delay and header_delay must be set",
            );
        }
        if let Some(a) = &self.abort {
            let ap = path.field("abort");
            let n = usize::from(a.http_status.is_some())
                + usize::from(a.grpc_status.is_some())
                + usize::from(a.header_abort.is_some());
            errors.check(
                n == 1,
                &ap,
                "exactly one of http_status, grpc_status and header_abort must be set",
            );
            if let Some(s) = a.http_status {
                errors.check(
                    (200..600).contains(&s),
                    &ap.field("http_status"),
                    "must be in [200, 600)",
                );
            }
            if let Some(s) = a.grpc_status {
                errors.check(
                    s <= 16,
                    &ap.field("grpc_status"),
                    "must be a gRPC code (0-16)",
                );
            }
        }
        for (i, h) in self.headers.iter().enumerate() {
            h.validate(&path.field("headers").index(i), errors);
        }
    }
}
