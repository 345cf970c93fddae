//! Circuit breaking: per-cluster limits on requests, retries and pending requests in flight.
//!
//! Envoy's circuit breakers are not a "trip after N failures" switch: they are concurrency
//! limits that make an overloaded cluster fail *fast* instead of queueing without bound, which
//! is what turns one slow upstream into a cascading outage. [`Limits`] holds the live counters of
//! one cluster (they survive config updates; the thresholds are swapped in place) and hands out
//! guards: a request that would exceed `max_requests` is refused at once with
//! [`ErrorKind::Overflow`], naming the cluster and the threshold,
//! and counted. gRPC callers see UNAVAILABLE, as gRFC A32 specifies for `max_requests`.
//!
//! Retries have their own limit, because retries are exactly the traffic that grows when an
//! upstream fails: `max_retries` (default 3 in flight), or a **retry budget** — retries may be
//! at most `budget_percent` of the requests in flight (never fewer than `min_retry_concurrency`).
//! A budget scales with load where a fixed number cannot: at 1000 requests in flight, 3
//! concurrent retries are nothing; at 5, they are more than half the traffic.
//!
//! ```
//! use mesh_core::policy::{CircuitBreakers, Thresholds};
//! use mesh_tower::breaker::Limits;
//! let limits = Limits::new("api".into());
//! limits.configure(Some(&CircuitBreakers {
//!     thresholds: vec![Thresholds { max_requests: Some(1), ..Default::default() }],
//! }));
//! let first = limits.try_request().unwrap();
//! let err = limits.try_request().unwrap_err();
//! assert_eq!(err.to_string(), "cluster \"api\": max_requests (1) reached: request refused (circuit breaker overflow)");
//! drop(first);
//! assert!(limits.try_request().is_ok());
//! ```

use crate::error::{ErrorKind, MeshError};
use mesh_core::policy::CircuitBreakers;
use mesh_core::policy::breaker::defaults;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Live limits and counters of one cluster.
#[derive(Debug)]
pub struct Limits {
    cluster: Arc<str>,
    max_connections: AtomicU32,
    max_requests: AtomicU32,
    max_pending: AtomicU32,
    max_retries: AtomicU32,
    /// Budget percent × 1000 (0: no budget), and its floor.
    budget_milli: AtomicU32,
    min_retry_concurrency: AtomicU32,
    connections: Arc<AtomicU32>,
    requests: Arc<AtomicU32>,
    pending: Arc<AtomicU32>,
    retries: Arc<AtomicU32>,
    overflows: Overflows,
    /// The same refusals as Envoy's cluster stats, through the `metrics` facade (handles
    /// registered once, with the cluster).
    exported: Exported,
}

/// Envoy's overflow counters of one cluster (`envoy_cluster_upstream_cx_overflow`,
/// `…_rq_pending_overflow` for `max_requests` and `max_pending_requests` as Envoy counts
/// both, `…_rq_retry_overflow`), labelled `envoy_cluster_name`.
#[derive(Debug)]
struct Exported {
    connections: metrics::Counter,
    requests: metrics::Counter,
    retries: metrics::Counter,
}

impl Exported {
    fn new(cluster: &str) -> Self {
        let counter = |name: &'static str| metrics::counter!(name, "envoy_cluster_name" => cluster.to_owned());
        Self {
            connections: counter("envoy_cluster_upstream_cx_overflow"),
            requests: counter("envoy_cluster_upstream_rq_pending_overflow"),
            retries: counter("envoy_cluster_upstream_rq_retry_overflow"),
        }
    }
}

/// How many requests each threshold refused.
#[derive(Debug, Default)]
pub struct Overflows {
    /// `max_connections`.
    pub connections: AtomicU64,
    /// `max_requests`.
    pub requests: AtomicU64,
    /// `max_pending_requests`.
    pub pending: AtomicU64,
    /// `max_retries` or the retry budget.
    pub retries: AtomicU64,
}

/// Holds one unit of a counter until dropped.
#[derive(Debug)]
pub struct Guard(Arc<AtomicU32>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Admission of retries per cluster (the mesh's cluster state implements it with each
/// cluster's [`Limits`]; the retry layer asks it before every retry).
pub trait RetryLimits: Send + Sync + 'static {
    /// Admits one retry to `cluster`, holding it until the guard drops.
    fn try_retry(&self, cluster: &str) -> Result<Guard, MeshError>;
}

impl Limits {
    /// Limits with Envoy's defaults (1024 requests and pending, 3 retries).
    pub fn new(cluster: Arc<str>) -> Self {
        Self {
            exported: Exported::new(&cluster),
            cluster,
            max_connections: AtomicU32::new(defaults::MAX),
            max_requests: AtomicU32::new(defaults::MAX),
            max_pending: AtomicU32::new(defaults::MAX),
            max_retries: AtomicU32::new(defaults::MAX_RETRIES),
            budget_milli: AtomicU32::new(0),
            min_retry_concurrency: AtomicU32::new(defaults::MIN_RETRY_CONCURRENCY),
            connections: Arc::default(),
            requests: Arc::default(),
            pending: Arc::default(),
            retries: Arc::default(),
            overflows: Overflows::default(),
        }
    }

    /// Applies the cluster's thresholds (default priority); `None` restores the defaults.
    pub fn configure(&self, cb: Option<&CircuitBreakers>) {
        let t = cb.and_then(|c| c.default_priority());
        let get = |v: Option<u32>, d: u32| v.unwrap_or(d);
        self.max_connections.store(
            get(t.and_then(|t| t.max_connections), defaults::MAX),
            Ordering::Relaxed,
        );
        self.max_requests.store(
            get(t.and_then(|t| t.max_requests), defaults::MAX),
            Ordering::Relaxed,
        );
        self.max_pending.store(
            get(t.and_then(|t| t.max_pending_requests), defaults::MAX),
            Ordering::Relaxed,
        );
        self.max_retries.store(
            get(t.and_then(|t| t.max_retries), defaults::MAX_RETRIES),
            Ordering::Relaxed,
        );
        let budget = t.and_then(|t| t.retry_budget.as_ref());
        let pct = budget.map_or(0.0, |b| {
            b.budget_percent
                .map_or(defaults::BUDGET_PERCENT, |p| p.value)
        });
        // A configured budget of 0% still means "a budget" (only the floor applies).
        let milli = if budget.is_some() {
            ((pct * 1000.0) as u32).max(1)
        } else {
            0
        };
        self.budget_milli.store(milli, Ordering::Relaxed);
        self.min_retry_concurrency.store(
            budget
                .and_then(|b| b.min_retry_concurrency)
                .unwrap_or(defaults::MIN_RETRY_CONCURRENCY),
            Ordering::Relaxed,
        );
    }

    /// Admits one request (an attempt) under `max_requests`.
    pub fn try_request(&self) -> Result<Guard, MeshError> {
        let max = self.max_requests.load(Ordering::Relaxed);
        acquire(&self.requests, max).ok_or_else(|| {
            self.overflows.requests.fetch_add(1, Ordering::Relaxed);
            self.exported.requests.increment(1);
            self.overflow("max_requests", max)
        })
    }

    /// Admits one new connection under `max_connections`; the guard lives as long as the
    /// connection.
    pub fn try_connection(&self) -> Result<Guard, MeshError> {
        let max = self.max_connections.load(Ordering::Relaxed);
        acquire(&self.connections, max).ok_or_else(|| {
            self.overflows.connections.fetch_add(1, Ordering::Relaxed);
            self.exported.connections.increment(1);
            self.overflow("max_connections", max)
        })
    }

    /// Open connections.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Admits one request waiting for a connection under `max_pending_requests`.
    pub fn try_pending(&self) -> Result<Guard, MeshError> {
        let max = self.max_pending.load(Ordering::Relaxed);
        acquire(&self.pending, max).ok_or_else(|| {
            self.overflows.pending.fetch_add(1, Ordering::Relaxed);
            self.exported.requests.increment(1);
            self.overflow("max_pending_requests", max)
        })
    }

    /// Admits one retry under the retry budget, or `max_retries` without one.
    pub fn try_retry(&self) -> Result<Guard, MeshError> {
        let budget = self.budget_milli.load(Ordering::Relaxed);
        let (max, what) = if budget > 0 {
            let in_flight = u64::from(self.requests.load(Ordering::Relaxed))
                + u64::from(self.pending.load(Ordering::Relaxed));
            let share = (in_flight * u64::from(budget) / 100_000) as u32;
            (
                share.max(self.min_retry_concurrency.load(Ordering::Relaxed)),
                "retry budget",
            )
        } else {
            (self.max_retries.load(Ordering::Relaxed), "max_retries")
        };
        acquire(&self.retries, max).ok_or_else(|| {
            self.overflows.retries.fetch_add(1, Ordering::Relaxed);
            self.exported.retries.increment(1);
            self.overflow(what, max)
        })
    }

    /// Requests (attempts) in flight.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Retries in flight.
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// What each threshold refused so far.
    pub fn overflows(&self) -> &Overflows {
        &self.overflows
    }

    fn overflow(&self, what: &str, max: u32) -> MeshError {
        MeshError::new(
            ErrorKind::Overflow,
            format!("{what} ({max}) reached: request refused (circuit breaker overflow)"),
        )
        .with_cluster(self.cluster.clone())
    }
}

pub(crate) fn acquire(counter: &Arc<AtomicU32>, max: u32) -> Option<Guard> {
    let mut cur = counter.load(Ordering::Relaxed);
    loop {
        if cur >= max {
            return None;
        }
        match counter.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(Guard(counter.clone())),
            Err(now) => cur = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::policy::{Percent, RetryBudget, Thresholds};

    fn limits(t: Thresholds) -> Limits {
        let l = Limits::new("c".into());
        l.configure(Some(&CircuitBreakers {
            thresholds: vec![t],
        }));
        l
    }

    #[test]
    fn defaults_are_envoys() {
        let l = Limits::new("c".into());
        let held: Vec<_> = (0..3).map(|_| l.try_retry().unwrap()).collect();
        let err = l.try_retry().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overflow);
        assert!(err.to_string().contains("max_retries (3)"), "{err}");
        drop(held);
        let held: Vec<_> = (0..1024).map(|_| l.try_request().unwrap()).collect();
        assert!(l.try_request().is_err());
        assert_eq!(l.overflows().requests.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(l.requests(), 0);
    }

    #[test]
    fn each_threshold_is_enforced_and_counted() {
        let series = crate::test_util::Series::default();
        // Envoy's overflow counters, registered with the cluster when its limits are made.
        let l = metrics::with_local_recorder(&series, || {
            limits(Thresholds {
                max_requests: Some(2),
                max_pending_requests: Some(1),
                max_retries: Some(1),
                ..Default::default()
            })
        });
        let (_a, _b) = (l.try_request().unwrap(), l.try_request().unwrap());
        assert!(l.try_request().is_err());
        let _p = l.try_pending().unwrap();
        let e = l.try_pending().unwrap_err();
        assert!(e.to_string().contains("max_pending_requests (1)"), "{e}");
        let _r = l.try_retry().unwrap();
        assert!(l.try_retry().is_err());
        let exported = |name| series.counter(name, &[("envoy_cluster_name", "c")]);
        assert_eq!(exported("envoy_cluster_upstream_rq_pending_overflow"), 2);
        assert_eq!(exported("envoy_cluster_upstream_rq_retry_overflow"), 1);
        assert_eq!(exported("envoy_cluster_upstream_cx_overflow"), 0);
        let o = l.overflows();
        assert_eq!(
            (
                o.requests.load(Ordering::Relaxed),
                o.pending.load(Ordering::Relaxed),
                o.retries.load(Ordering::Relaxed)
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn retry_budget_scales_with_requests_in_flight() {
        let l = limits(Thresholds {
            max_retries: Some(1000),
            retry_budget: Some(RetryBudget {
                budget_percent: Some(Percent::new(20.0)),
                min_retry_concurrency: Some(2),
            }),
            ..Default::default()
        });
        // Few requests in flight: the floor applies (max_retries is ignored under a budget).
        let floor: Vec<_> = (0..2).map(|_| l.try_retry().unwrap()).collect();
        let e = l.try_retry().unwrap_err();
        assert!(e.to_string().contains("retry budget (2)"), "{e}");
        drop(floor);
        // 50 requests in flight: 20% is 10 retries.
        let _reqs: Vec<_> = (0..50).map(|_| l.try_request().unwrap()).collect();
        let held: Vec<_> = (0..10).map(|_| l.try_retry().unwrap()).collect();
        assert!(l.try_retry().is_err());
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn reconfiguring_keeps_counters() {
        let l = limits(Thresholds {
            max_requests: Some(1),
            ..Default::default()
        });
        let held = l.try_request().unwrap();
        l.configure(Some(&CircuitBreakers {
            thresholds: vec![Thresholds {
                max_requests: Some(2),
                ..Default::default()
            }],
        }));
        let second = l.try_request().unwrap();
        assert!(l.try_request().is_err(), "the held request still counts");
        drop((held, second));
    }
}
