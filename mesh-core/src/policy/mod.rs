//! Traffic policy: retries, hedging, circuit breakers and retry budgets, outlier detection,
//! fault injection and local rate limiting, in Envoy's v3 shapes.
//!
//! Each type is the validated form of one Envoy message, so a control plane's config and a
//! pasted Envoy YAML snippet mean the same here as in Envoy. Defaults are Envoy's, and each is
//! documented on its field; where gRPC's gRFCs narrow a behaviour, the enforcing middleware in
//! `mesh-tower` says so. Upstream TLS is still refused by validation until it is enforced:
//! accepting a policy that is silently not applied would be worse than refusing it.

pub mod breaker;
pub mod fault;
pub mod outlier;
pub mod percent;
pub mod ratelimit;
pub mod retry;

pub use breaker::{CircuitBreakers, RetryBudget, RoutingPriority, Thresholds};
pub use fault::{Empty, FaultAbort, FaultDelay, HttpFault};
pub use outlier::OutlierDetection;
pub use percent::{
    DenominatorType, Double, FractionalPercent, Percent, RuntimeDouble, RuntimeFractionalPercent,
};
pub use ratelimit::{LocalRateLimit, TokenBucket};
pub use retry::{HedgePolicy, RetryBackOff, RetryCondition, RetryHostPredicate, RetryPolicy};

use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

const NOT_YET: &str = "is not supported yet by this version of the mesh (it would not be enforced)";

/// Envoy's `UpstreamTlsContext`, reduced to what an in-process client needs (refused by
/// validation until upstream TLS lands).
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
