//! Envoy's `LocalRateLimit` (`envoy.filters.http.local_ratelimit`).

use super::FractionalPercent;
use crate::config::headers::HeaderValueOption;
use crate::duration;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Envoy's `LocalRateLimit`: a token bucket shared by the requests it governs (one bucket per
/// route or virtual host that configures it, or per listener for the filter's own config).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalRateLimit {
    /// Envoy's stats prefix (informational).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stat_prefix: String,
    /// The bucket. Without one the filter passes everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_bucket: Option<TokenBucket>,
    /// Share of requests the filter looks at. Envoy's default is 0% (off), for safety.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_enabled: Option<FractionalPercent>,
    /// Share of limited requests actually refused (the rest are only counted). Default 0%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_enforced: Option<FractionalPercent>,
    /// HTTP status of a refusal (default 429). A gRPC caller gets it mapped to a gRPC code as
    /// Envoy maps local replies (429 becomes UNAVAILABLE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// gRPC callers get RESOURCE_EXHAUSTED instead of the mapped status.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rate_limited_as_resource_exhausted: bool,
    /// Headers added to refusals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
}

/// Envoy's `TokenBucket`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Capacity, and the tokens at start.
    pub max_tokens: u32,
    /// Tokens added per fill (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_fill: Option<u32>,
    /// Time between fills.
    #[serde(with = "duration")]
    pub fill_interval: Duration,
}

impl LocalRateLimit {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(b) = &self.token_bucket {
            let bp = path.field("token_bucket");
            errors.check(
                b.max_tokens > 0,
                &bp.field("max_tokens"),
                "must be greater than 0",
            );
            errors.check(
                b.tokens_per_fill != Some(0),
                &bp.field("tokens_per_fill"),
                "must be greater than 0",
            );
            errors.check(
                b.fill_interval >= Duration::from_millis(50),
                &bp.field("fill_interval"),
                "must be at least 50ms (Envoy's minimum)",
            );
        }
        if let Some(s) = self.status {
            errors.check(
                (400..600).contains(&s),
                &path.field("status"),
                "must be in [400, 600)",
            );
        }
        for (i, h) in self.response_headers_to_add.iter().enumerate() {
            h.validate(&path.field("response_headers_to_add").index(i), errors);
        }
    }
}
