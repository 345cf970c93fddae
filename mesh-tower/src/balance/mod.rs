//! The balancer seam: how an endpoint is picked for a request.
//!
//! A cluster keeps an immutable list of the endpoints that may take traffic ([`EndpointInfo`],
//! rebuilt whenever discovery or health changes) and a [`Balance`] implementation that picks an
//! index into it. This is gRPC's picker model: picking is a pure, lock-free read of the current
//! list plus whatever atomics the algorithm keeps, and an update swaps in a new list and picker
//! without disturbing requests already in flight.
//!
//! Per-endpoint state that must outlive updates (in-flight count, latency EWMA, outlier state,
//! reported weight) lives in [`EndpointStats`], shared by address across rebuilds, so an
//! endpoint that stays keeps its history.
//!
//! Algorithms live in sub-folders: `round_robin/`, `random/`, `least_request/`, `peak_ewma/`,
//! `ring_hash/`, `maglev/` and `weighted_round_robin/` (weights from the endpoints' own load
//! reports), with `slow_start/` wrapping the first and third.

mod load_counters;
pub use load_counters::{LoadCounters, NamedMetric};
pub mod least_request;
pub mod maglev;
pub mod peak_ewma;
pub mod random;
pub mod ring_hash;
pub mod round_robin;
pub mod slow_start;
pub mod weighted_round_robin;

use http::HeaderMap;
use mesh_core::{Cluster, HealthStatus, LbPolicy, Locality};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use least_request::LeastRequest;
pub use maglev::Maglev;
pub use peak_ewma::PeakEwma;
pub use random::Random;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::ClientSideWrr;

/// Counters for one endpoint that survive config updates.
#[derive(Debug)]
pub struct EndpointStats {
    /// When the endpoint joined its cluster (slow start ramps from here).
    created: std::time::Instant,
    in_flight: AtomicU64,
    /// Outlier detection state (ejection, failure counters): what traffic says of the
    /// endpoint (`EndpointInfo::health_status` is what discovery says).
    pub outlier: crate::endpoint::EndpointHealth,
    /// Peak-EWMA response latency.
    pub ewma: peak_ewma::Ewma,
    /// The weight from the endpoint's own load reports (client-side weighted round robin).
    pub reported: weighted_round_robin::ReportedWeight,
    /// Requests counted for load reports (LRS), when its cluster reports.
    pub(crate) load: load_counters::LoadCounters,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            created: std::time::Instant::now(),
            in_flight: AtomicU64::new(0),
            outlier: Default::default(),
            ewma: Default::default(),
            reported: Default::default(),
            load: Default::default(),
        }
    }
}

impl EndpointStats {
    #[cfg(test)]
    pub(crate) fn created_at(created: std::time::Instant) -> Self {
        Self {
            created,
            ..Self::default()
        }
    }

    /// When the endpoint joined its cluster.
    pub fn created(&self) -> std::time::Instant {
        self.created
    }

    /// Requests currently outstanding (sent, response head not yet received).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// Guard returned by [`EndpointStats::start`].
#[derive(Debug)]
pub struct InFlight(Arc<EndpointStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a balancer sees of an endpoint.
#[derive(Clone, Debug)]
pub struct EndpointInfo {
    /// Address.
    pub address: SocketAddr,
    /// `load_balancing_weight` (1 when unset).
    pub weight: u32,
    /// Health as discovery reports it (EDS `health_status`); outlier ejection is in
    /// `stats.outlier`.
    pub health_status: HealthStatus,
    /// Locality.
    pub locality: Arc<Locality>,
    /// The locality's `load_balancing_weight` (for locality-weighted balancing; 1 when unset).
    pub locality_weight: u32,
    /// Priority level.
    pub priority: u32,
    /// Live counters.
    pub stats: Arc<EndpointStats>,
    /// Istio's workload descriptor from the endpoint's metadata
    /// (`filter_metadata.istio.workload`), for the destination labels of its metrics.
    pub workload: Option<Arc<str>>,
}

/// Per-request input to a pick.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request's hash from the route's `hash_policy` (consistent-hashing policies; `None`:
    /// a random point).
    pub hash: Option<u64>,
    /// 0 for the first pick of a request; higher when a pick is redone to avoid a host (the
    /// hashing policies then move to another point, as Envoy's do).
    pub attempt: u32,
}

impl<'a> PickContext<'a> {
    /// A context for a request with these headers and no hash.
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            hash: None,
            attempt: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_test() -> PickContext<'static> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        PickContext::new(EMPTY.get_or_init(HeaderMap::new))
    }
}

/// Cumulative weights for weighted draws (`O(log n)` per draw).
#[derive(Debug)]
pub(crate) struct Weights {
    /// `None` when all weights are equal (a draw is then `r % n`).
    cumulative: Option<Vec<u64>>,
    n: usize,
}

impl Weights {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = (!equal).then(|| {
            let mut sum = 0u64;
            weights
                .iter()
                .map(|w| {
                    sum += u64::from((*w).max(1));
                    sum
                })
                .collect()
        });
        Self {
            cumulative,
            n: weights.len(),
        }
    }

    /// The index for a uniform draw `r` (0 when empty).
    pub(crate) fn index_for(&self, r: u64) -> usize {
        match &self.cumulative {
            None => (r % self.n.max(1) as u64) as usize,
            Some(cum) => {
                let total = *cum.last().unwrap_or(&1);
                let point = r % total;
                cum.partition_point(|c| *c <= point).min(cum.len() - 1)
            }
        }
    }
}

/// A load-balancing algorithm over one endpoint list.
///
/// Implementations must be cheap and non-blocking: `pick` runs on every request.
///
/// ```
/// use mesh_tower::balance::{Balance, EndpointInfo, PickContext};
/// /// Always the endpoint with the fewest requests in flight.
/// #[derive(Debug)]
/// struct Fewest;
/// impl Balance for Fewest {
///     fn pick(&self, endpoints: &[EndpointInfo], _: &PickContext<'_>) -> Option<usize> {
///         (0..endpoints.len()).min_by_key(|&i| endpoints[i].stats.in_flight())
///     }
/// }
/// ```
pub trait Balance: Send + Sync + fmt::Debug + 'static {
    /// The index of the endpoint to use, or `None` when none can take the request.
    fn pick(&self, endpoints: &[EndpointInfo], ctx: &PickContext<'_>) -> Option<usize>;
}

/// Builds the balancer for a cluster's policy over a new endpoint list.
pub(crate) fn for_cluster(cluster: &Cluster, endpoints: &[EndpointInfo]) -> Box<dyn Balance> {
    let inner = policy_balancer(cluster, endpoints);
    let slow = match cluster.lb_policy {
        LbPolicy::RoundRobin => cluster
            .round_robin_lb_config
            .as_ref()
            .and_then(|c| c.slow_start_config.as_ref()),
        LbPolicy::LeastRequest => cluster
            .least_request_lb_config
            .as_ref()
            .and_then(|c| c.slow_start_config.as_ref()),
        _ => None,
    };
    match slow.and_then(|s| s.slow_start_window.map(|w| (s, w))) {
        Some((s, window)) => Box::new(slow_start::SlowStart::new(
            inner,
            endpoints,
            window,
            s.aggression.map_or(1.0, |a| a.default_value),
            s.min_weight_percent.map_or(10.0, |p| p.value),
        )),
        None => inner,
    }
}

fn policy_balancer(cluster: &Cluster, endpoints: &[EndpointInfo]) -> Box<dyn Balance> {
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
    let keyed = || -> Vec<(std::net::SocketAddr, u32)> {
        endpoints.iter().map(|e| (e.address, e.weight)).collect()
    };
    match cluster.lb_policy {
        LbPolicy::RoundRobin => Box::new(RoundRobin::weighted(&weights)),
        LbPolicy::Random => Box::new(Random::new(&weights)),
        LbPolicy::LeastRequest => {
            let c = cluster.least_request_lb_config.clone().unwrap_or_default();
            Box::new(LeastRequest::new(
                &weights,
                c.choice_count.unwrap_or(2),
                c.active_request_bias.map_or(1.0, |p| p.value),
            ))
        }
        LbPolicy::RingHash => {
            let c = cluster.ring_hash_lb_config.clone().unwrap_or_default();
            Box::new(RingHash::new(
                &keyed(),
                c.minimum_ring_size
                    .unwrap_or(ring_hash::DEFAULT_MIN_RING_SIZE),
                c.maximum_ring_size
                    .unwrap_or(ring_hash::DEFAULT_MAX_RING_SIZE),
            ))
        }
        LbPolicy::Maglev => {
            let size = cluster
                .maglev_lb_config
                .as_ref()
                .and_then(|m| m.table_size)
                .unwrap_or(maglev::DEFAULT_TABLE_SIZE);
            Box::new(Maglev::new(&keyed(), size))
        }
        LbPolicy::PeakEwma => Box::new(PeakEwma::new(
            cluster
                .peak_ewma_lb_config
                .as_ref()
                .and_then(|c| c.default_rtt)
                .unwrap_or(peak_ewma::DEFAULT_RTT),
        )),
        LbPolicy::ClientSideWeightedRoundRobin => Box::new(ClientSideWrr::new(
            &cluster
                .client_side_weighted_round_robin_lb_config
                .clone()
                .unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` endpoints on 10.0.0.1:8000.. with weight 1.
    pub(crate) fn endpoints(n: u16) -> Vec<EndpointInfo> {
        (0..n)
            .map(|i| EndpointInfo {
                address: ([10, 0, 0, 1], 8000 + i).into(),
                weight: 1,
                health_status: HealthStatus::Healthy,
                locality: Arc::default(),
                locality_weight: 1,
                priority: 0,
                stats: Arc::default(),
                workload: None,
            })
            .collect()
    }
}
