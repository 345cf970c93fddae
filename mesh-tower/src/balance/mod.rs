//! The balancer seam: how an endpoint is picked for a request.
//!
//! A cluster keeps an immutable list of the endpoints that may take traffic ([`EndpointInfo`],
//! rebuilt whenever discovery or health changes) and a [`Balance`] implementation that picks an
//! index into it. This is gRPC's picker model: picking is a pure, lock-free read of the current
//! list plus whatever atomics the algorithm keeps, and an update swaps in a new list and picker
//! without disturbing requests already in flight.
//!
//! Per-endpoint state that must outlive updates (in-flight counts now; latency EWMA and
//! outlier state later) lives in [`EndpointStats`], shared by address across rebuilds, so an
//! endpoint that stays keeps its history.
//!
//! Algorithms live in sub-folders (`round_robin/` now; least-request, peak-EWMA P2C, ring hash
//! and maglev plug in the same way).

pub mod round_robin;

use http::HeaderMap;
use mesh_core::{HealthStatus, LbPolicy, Locality};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use round_robin::RoundRobin;

/// Counters for one endpoint that survive config updates.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicU64,
    /// Outlier detection state (ejection, failure counters).
    pub health: crate::outlier::EndpointHealth,
}

impl EndpointStats {
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
    /// Health from discovery.
    pub health: HealthStatus,
    /// Locality.
    pub locality: Arc<Locality>,
    /// Priority level.
    pub priority: u32,
    /// Live counters.
    pub stats: Arc<EndpointStats>,
}

/// Per-request input to a pick.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    /// The request headers (for hash policies).
    pub headers: &'a HeaderMap,
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
pub(crate) fn for_policy(policy: LbPolicy, endpoints: &[EndpointInfo]) -> Box<dyn Balance> {
    match policy {
        LbPolicy::RoundRobin => Box::new(RoundRobin::new(endpoints.len())),
    }
}
