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

/// Why the RBAC layer refused a request: a policy, or no inbound route serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A filter's policy refused it (`403` / `PERMISSION_DENIED`).
    Denied(Denied),
    /// The server's inbound routes do not serve it (gRFC A36: `404` / `UNAVAILABLE`).
    NoRoute(crate::route::NoRoute),
}

impl Refused {
    /// The policy refusal, if that is what it was.
    pub fn denied(&self) -> Option<&Denied> {
        match self {
            Refused::Denied(d) => Some(d),
            Refused::NoRoute(_) => None,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Denied(d) => d.fmt(f),
            Refused::NoRoute(n) => n.fmt(f),
        }
    }
}

impl std::error::Error for Refused {}
