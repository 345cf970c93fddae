//! What the route layer decides for a request ([`RouteDecision`]) and the compiled route it
//! decided on ([`RoutePolicy`]), with every policy of that route resolved.

use super::fault::FaultPolicy;
use super::local::LocalAnswer;
use super::mirror::MirrorPolicy;
use super::ratelimit::RateLimiter;
use super::retry::RetryPolicy;
use super::rewrite::{Mutations, Rewrite};
use crate::error::{ErrorKind, MeshError};
use http::{HeaderMap, HeaderName};
use mesh_core::config::route::DEFAULT_BUFFER_LIMIT;
use std::sync::Arc;
use std::time::Duration;

/// A route compiled, with every policy of it resolved (timeouts, retries, faults, rate limit,
/// rewrites, mirrors, local answers, hash policy, cluster choice): built once per route
/// config and shared by every request that matches the route. What the route layer decided
/// for *one* request is a [`RouteDecision`], which points here.
#[derive(Debug)]
pub struct RoutePolicy {
    /// Route name (`"<virtual host>/<index>"` when the route has none).
    pub name: Arc<str>,
    /// The virtual host that matched.
    pub virtual_host: Arc<str>,
    /// Route timeout in force (`None`: disabled).
    pub timeout: Option<Duration>,
    /// Stream idle timeout (no response, or no response body frame, for this long).
    pub idle_timeout: Option<Duration>,
    /// Honour the caller's `grpc-timeout` (gRFC A31): cap (`None`: uncapped) and offset.
    pub grpc_timeout: Option<(Option<Duration>, Duration)>,
    /// The limit on gRPC requests besides the caller's own deadline (gRFC A31):
    /// `grpc_timeout_header_max` if set, else `max_stream_duration`; `None`: unlimited. The
    /// HTTP route timeout (and its 15 s default) does not apply to gRPC.
    pub grpc_limit: Option<Duration>,
    /// Retry policy (route's, else the virtual host's).
    pub retry: Option<Arc<RetryPolicy>>,
    /// Request body bytes kept for replay.
    pub buffer_limit: usize,
    /// Fault injection in force.
    pub fault: Option<Arc<FaultPolicy>>,
    /// Local rate limit in force.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Path/host rewrite and header mutations.
    pub rewrite: Option<Arc<Rewrite>>,
    /// Shadow clusters.
    pub mirrors: Vec<MirrorPolicy>,
    /// A redirect or direct response answered locally.
    pub local: Option<Arc<LocalAnswer>>,
    /// The request hash for consistent-hashing clusters.
    pub hash_policy: super::hash::HashPolicy,
    pub(crate) clusters: ClusterPick,
}

impl RoutePolicy {
    /// Whether the route forwards with no policy-layer work: no local answer, rate limit,
    /// fault, rewrite or header mutation, mirror, or retry policy that can retry. Such routes
    /// skip the policy layers in a [`Mesh`](crate::Mesh) service (the timeout still applies).
    pub fn is_plain(&self) -> bool {
        self.local.is_none()
            && self.rate_limit.is_none()
            && self.fault.is_none()
            && self.rewrite.is_none()
            && self.mirrors.is_empty()
            && self.retry.as_ref().is_none_or(|p| !p.is_active())
    }

    /// A forwarding route to `cluster` with no policy (for tests and standalone layers).
    pub fn to_cluster(name: &str, cluster: &str, timeout: Option<Duration>) -> Self {
        Self {
            name: name.into(),
            virtual_host: "".into(),
            timeout,
            idle_timeout: None,
            grpc_timeout: None,
            grpc_limit: timeout,
            retry: None,
            buffer_limit: DEFAULT_BUFFER_LIMIT as usize,
            fault: None,
            rate_limit: None,
            rewrite: None,
            mirrors: Vec::new(),
            local: None,
            hash_policy: super::hash::HashPolicy::default(),
            clusters: ClusterPick::One(cluster.into()),
        }
    }
}

impl RoutePolicy {
    /// The cluster for one request; `r` is a uniform random number (seedable in tests).
    pub(crate) fn pick_cluster(
        &self,
        headers: &HeaderMap,
        r: u64,
    ) -> Result<(Arc<str>, Option<Arc<Mutations>>), MeshError> {
        match &self.clusters {
            ClusterPick::One(c) => Ok((c.clone(), None)),
            ClusterPick::None => Ok((Arc::from(""), None)),
            ClusterPick::Weighted(cum) => {
                let total = cum.last().map_or(0, |x| x.0);
                let point = r % total.max(1);
                let i = cum.partition_point(|(bound, _, _)| *bound <= point);
                let (_, c, m) = &cum[i.min(cum.len() - 1)];
                Ok((c.clone(), m.clone()))
            }
            ClusterPick::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(|v| (Arc::from(v), None))
                .ok_or_else(|| {
                    MeshError::new(
                        ErrorKind::UnknownCluster,
                        format!(
                            "cluster_header {:?} is missing from the request",
                            name.as_str()
                        ),
                    )
                }),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ClusterPick {
    One(Arc<str>),
    /// Cumulative weights: pick `r` in `[0, total)`, first entry whose bound exceeds `r`; each
    /// with its weighted-cluster header mutations.
    Weighted(Vec<(u64, Arc<str>, Option<Arc<Mutations>>)>),
    Header(HeaderName),
    /// Local answers have no cluster.
    None,
}

/// The route layer's decision, stored in the request's extensions.
#[derive(Clone, Debug)]
pub struct RouteDecision {
    /// The target (listener) name.
    pub target: Arc<str>,
    /// The route that matched.
    pub route: Arc<RoutePolicy>,
    /// The cluster chosen (empty for a local answer).
    pub cluster: Arc<str>,
    /// The chosen weighted cluster's header mutations.
    pub cluster_headers: Option<Arc<crate::policy::rewrite::Mutations>>,
    /// The request's hash from the route's `hash_policy` (for ring hash and Maglev).
    pub hash: Option<u64>,
}
