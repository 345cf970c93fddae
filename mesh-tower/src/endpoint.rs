//! The state every balancer, the outlier detector and the dispatch share about one endpoint,
//! below all of them: outlier state lives with the endpoint's stats (so it survives config
//! updates), and the balancers read it without depending on the detector that writes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-endpoint outlier state (part of [`EndpointStats`](crate::balance::EndpointStats)): what
/// the cluster's [`Detector`](crate::outlier::Detector) counts and decides.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    pub(crate) ejected: AtomicBool,
    pub(crate) consecutive_5xx: AtomicU32,
    pub(crate) consecutive_gateway: AtomicU32,
    pub(crate) consecutive_local: AtomicU32,
    pub(crate) success: AtomicU64,
    pub(crate) failure: AtomicU64,
    pub(crate) ejection: Mutex<Ejection>,
}

#[derive(Debug, Default)]
pub(crate) struct Ejection {
    pub(crate) until: Option<Instant>,
    pub(crate) count: u32,
    pub(crate) total: u64,
}

impl EndpointHealth {
    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// How many times the endpoint was ejected.
    pub fn ejections(&self) -> u64 {
        lock(&self.ejection).total
    }
}

/// Which cluster and endpoint served a response (in the response's extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedBy {
    /// The cluster.
    pub cluster: Arc<str>,
    /// The endpoint's address.
    pub endpoint: SocketAddr,
    /// The endpoint's Istio workload descriptor, when discovery gave one (see
    /// [`EndpointInfo::workload`](crate::balance::EndpointInfo::workload)).
    pub workload: Option<Arc<str>>,
}

/// Hosts earlier attempts of this request went to, for the retry host predicate
/// (`envoy.retry_host_predicates.previous_hosts`); the retry layer puts it in the request.
#[derive(Clone, Debug, Default)]
pub struct PreviousHosts {
    /// The addresses to avoid.
    pub hosts: Vec<SocketAddr>,
    /// Extra picks allowed to find another host (`host_selection_retry_max_attempts`).
    pub attempts: u32,
    /// Where the cluster records this attempt's pick (see [`AttemptNote`]).
    pub note: Option<Arc<AttemptNote>>,
}

/// Where the cluster records the endpoint it picked for one attempt of a retried request.
///
/// An attempt cut by its per-try timeout returns nothing: no [`ServedBy`], no error naming an
/// endpoint. Through this note the retry layer still knows where it went, and with the
/// previous-hosts predicate the next attempt avoids it (Envoy records a host when it selects
/// it, not when it answers).
///
/// ```
/// use mesh_tower::cluster::AttemptNote;
/// let note = AttemptNote::default();
/// assert_eq!(note.endpoint(), None);
/// note.picked("10.0.0.7:8080".parse().unwrap());
/// assert_eq!(note.endpoint(), Some("10.0.0.7:8080".parse().unwrap()));
/// ```
#[derive(Debug, Default)]
pub struct AttemptNote {
    picked: std::sync::OnceLock<SocketAddr>,
}

impl AttemptNote {
    /// Records the endpoint picked for the attempt (the first record stands).
    pub fn picked(&self, endpoint: SocketAddr) {
        let _ = self.picked.set(endpoint);
    }

    /// The endpoint picked for the attempt, once it has been.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.picked.get().copied()
    }
}

thread_local! {
    /// Set while a timeout drops the requests it cut (see [`dropping_timed_out`]).
    static TIMING_OUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `drop_them`, which drops requests a timeout (the route's, or an attempt's per-try
/// timeout) cut short. A cluster's response future dropped meanwhile, still waiting for its
/// answer, counts as a failure of its endpoint for outlier detection, as Envoy counts
/// timeouts: an endpoint that accepts and never answers is ejected like one that fails. Any
/// other drop (the caller went away) says nothing about the endpoint. Drops are synchronous,
/// so a thread-local flag carries this without a per-request allocation.
pub(crate) fn dropping_timed_out(drop_them: impl FnOnce()) {
    /// Clears the flag even if a drop panics (a task's panic is caught, and the worker thread
    /// would otherwise count every later drop as a timeout).
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            TIMING_OUT.with(|t| t.set(false));
        }
    }
    TIMING_OUT.with(|t| t.set(true));
    let _clear = Clear;
    drop_them();
}

/// Whether the current drop is a timeout's (see [`dropping_timed_out`]).
pub(crate) fn is_dropping_timed_out() -> bool {
    TIMING_OUT.with(std::cell::Cell::get)
}
