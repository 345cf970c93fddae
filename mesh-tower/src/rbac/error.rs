//! Why a request was refused.

use std::fmt;
use std::sync::Arc;

/// A request the RBAC filters refused: which filter, and for a `DENY` filter which policy
/// matched (an `ALLOW` filter refuses because none did). The caller only ever sees
/// `RBAC: access denied`, as from Envoy; this detail is for logs and audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The filter's name (`envoy.filters.http.rbac`, Istio's `….DENY`, …).
    pub filter: Arc<str>,
    /// The `DENY` policy that matched; `None` when an `ALLOW` filter matched no policy.
    pub policy: Option<Arc<str>>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(p) => write!(
                f,
                "RBAC filter {:?}: DENY policy {p:?} matched",
                self.filter
            ),
            None => write!(f, "RBAC filter {:?}: no ALLOW policy matched", self.filter),
        }
    }
}

impl std::error::Error for Denied {}

/// What the caller is told (Envoy's words).
pub(crate) const ACCESS_DENIED: &str = "RBAC: access denied";
