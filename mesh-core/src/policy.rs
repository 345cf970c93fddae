//! Policy types that the traffic-policy work fills in: retries, circuit breakers, outlier
//! detection and upstream TLS.
//!
//! They exist now so the config model (and the xDS translation written against it) has its final
//! shape. Until the middleware that enforces a policy lands, validation *rejects* a config that
//! sets it, naming the field: silently accepting a retry policy that is never applied would be
//! worse than refusing it.

use crate::duration;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const NOT_YET: &str = "is not supported yet by this version of the mesh (it would not be enforced)";

/// Envoy's `RetryPolicy` (route level).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Comma-separated conditions (`5xx,reset,connect-failure,...`).
    #[serde(default)]
    pub retry_on: String,
    /// Maximum retries (Envoy default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// Timeout per attempt.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_try_timeout: Option<Duration>,
}

impl RetryPolicy {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.push(path, NOT_YET);
    }
}

/// Envoy's `CircuitBreakers.Thresholds` for the default priority.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Maximum connections to the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Maximum requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Maximum concurrent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Maximum concurrent retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// Envoy's `OutlierDetection` (the consecutive-5xx core; the rest lands with the middleware).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection (Envoy default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Analysis interval (Envoy default 10 s).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Base ejection time (Envoy default 30 s).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_ejection_time: Option<Duration>,
    /// Maximum share of endpoints ejected at once, percent (Envoy default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// Envoy's `UpstreamTlsContext`, reduced to what an in-process client needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// SNI to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// PEM file of trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate chain, for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key, for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Accepted subject alternative names (exact), e.g. SPIFFE IDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_subject_alt_names: Vec<String>,
}

/// Rejects a policy whose middleware has not landed yet.
pub(crate) fn reject_unenforced<T>(value: &Option<T>, path: &FieldPath, errors: &mut Errors) {
    if value.is_some() {
        errors.push(path, NOT_YET);
    }
}
