//! Outlier detection: passive health checking from real traffic.
//!
//! Active health checks cost probes and see only the health endpoint; the requests themselves
//! are a better signal. Every response (or local failure) of an endpoint is reported to its
//! cluster's [`Detector`], which ejects the endpoint — the balancer skips it — when Envoy's
//! rules say so:
//!
//! - **consecutive 5xx** (`consecutive_5xx`, default 5) — and connect failures and resets,
//!   which count as 5xx unless `split_external_local_origin_errors` counts them apart as
//!   **consecutive local-origin failures**;
//! - **consecutive gateway failures** (502/503/504, default enforcement 0%);
//! - at each `interval`: **success rate** (ejects endpoints below `mean − stdev × factor`, among
//!   endpoints with enough volume, when enough endpoints have it) and **failure percentage**
//!   (ejects at or above a threshold).
//!
//! An ejection lasts `base_ejection_time × ejections so far`, capped at `max_ejection_time`, and
//! ends at the first sweep after it expires; each sweep that finds an endpoint healthy lowers its
//! multiplier again. `max_ejection_percent` bounds how much of the cluster can be out (one
//! endpoint may always be), and each rule's `enforcing_*` percentage is the chance a detection
//! ejects. Counters live with the endpoint's stats, so they survive config updates.
//!
//! gRFC A50 implements the success-rate and failure-percentage rules for gRPC; the consecutive
//! rules here follow Envoy, whose config this is.

#[cfg(test)]
mod tests;

use crate::balance::EndpointStats;
use mesh_core::policy::OutlierDetection;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use tokio::time::Instant;

pub use crate::endpoint::EndpointHealth;

/// What one attempt on an endpoint came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status (gRPC trailers-only statuses are reported by HTTP status).
    Status(u16),
    /// Connect failure, reset, or a connection lost before the response.
    LocalFailure,
}

/// The outlier detector of one cluster.
#[derive(Debug)]
pub struct Detector {
    config: OutlierDetection,
    endpoints: Vec<Arc<EndpointStats>>,
    rng: Mutex<fastrand::Rng>,
    /// The cluster, for gRPC's ejection metrics (gRFC A91).
    cluster: Option<Arc<str>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Detector {
    /// A detector over `endpoints` with `config`; `seed` drives the enforcement rolls.
    pub fn new(config: OutlierDetection, endpoints: Vec<Arc<EndpointStats>>, seed: u64) -> Self {
        Self {
            config,
            endpoints,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            cluster: None,
        }
    }

    /// This detector, counting its ejections as `cluster`'s in gRPC's metrics (gRFC A91:
    /// `grpc.lb.outlier_detection.ejections_enforced` and `_unenforced`, labelled with the
    /// cluster as `grpc.lb.backend_service` and the detection method).
    pub fn for_cluster(mut self, cluster: Arc<str>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    fn count(&self, enforced: bool, method: &'static str) {
        let name = if enforced {
            "grpc.lb.outlier_detection.ejections_enforced"
        } else {
            "grpc.lb.outlier_detection.ejections_unenforced"
        };
        let cluster = self.cluster.as_deref().unwrap_or("").to_owned();
        metrics::counter!(name, "grpc.target" => "mesh", "grpc.lb.backend_service" => cluster, "grpc.lb.outlier_detection.detection_method" => method)
            .increment(1);
    }

    /// Spawns the interval sweep; it stops when the detector is dropped.
    pub fn spawn_sweeps(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.config.interval();
        rt.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { break };
                d.sweep(Instant::now());
            }
        });
    }

    /// Records one attempt's outcome on `ep` and ejects it if a consecutive rule trips.
    pub fn report(&self, ep: &EndpointStats, outcome: Outcome) {
        let h = &ep.outlier;
        let c = &self.config;
        let split = c.split_external_local_origin_errors;
        let (is_5xx, is_gateway, local) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504), false),
            Outcome::LocalFailure => (!split, !split, true),
        };
        if local && split {
            let n = h.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= c.consecutive_local_origin_failure() {
                self.eject(
                    ep,
                    c.enforcing_consecutive_local_origin_failure(),
                    "consecutive_local_origin_failure",
                );
            }
            return;
        }
        if split {
            h.consecutive_local.store(0, Ordering::Relaxed);
        }
        if is_5xx {
            h.failure.fetch_add(1, Ordering::Relaxed);
            let n = h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= c.consecutive_5xx() {
                self.eject(ep, c.enforcing_consecutive_5xx(), "consecutive_5xx");
            }
        } else {
            h.success.fetch_add(1, Ordering::Relaxed);
            h.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        if is_gateway {
            let n = h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= c.consecutive_gateway_failure() {
                self.eject(
                    ep,
                    c.enforcing_consecutive_gateway_failure(),
                    "consecutive_gateway_failure",
                );
            }
        } else {
            h.consecutive_gateway.store(0, Ordering::Relaxed);
        }
    }

    fn roll(&self, percent: u32) -> bool {
        percent >= 100 || lock(&self.rng).u32(..100) < percent
    }

    fn ejected_count(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.outlier.is_ejected())
            .count()
    }

    /// Ejects `ep` if enforcement rolls yes and the cluster's ejection cap allows it.
    fn eject(&self, ep: &EndpointStats, enforcing: u32, method: &'static str) {
        let h = &ep.outlier;
        if h.is_ejected() {
            return;
        }
        if !self.roll(enforcing) {
            self.count(false, method);
            return;
        }
        let n = self.endpoints.len().max(1);
        let ejected = self.ejected_count();
        let cap = self.config.max_ejection_percent() as usize;
        if ejected > 0 && ejected * 100 >= cap * n {
            self.count(false, method);
            return;
        }
        self.count(true, method);
        let mut e = lock(&h.ejection);
        e.count += 1;
        e.total += 1;
        let time =
            (self.config.base_ejection_time() * e.count).min(self.config.max_ejection_time());
        e.until = Some(Instant::now() + time);
        h.ejected.store(true, Ordering::Relaxed);
        h.consecutive_5xx.store(0, Ordering::Relaxed);
        h.consecutive_gateway.store(0, Ordering::Relaxed);
        h.consecutive_local.store(0, Ordering::Relaxed);
        tracing::info!(
            endpoint_ejections = e.total,
            ?time,
            "outlier detection ejected an endpoint"
        );
    }

    /// One interval: un-eject expired endpoints, lower multipliers, run the statistical rules,
    /// reset the interval counters.
    pub fn sweep(&self, now: Instant) {
        for ep in &self.endpoints {
            let h = &ep.outlier;
            let mut e = lock(&h.ejection);
            if h.is_ejected() {
                if e.until.is_some_and(|u| u <= now) {
                    h.ejected.store(false, Ordering::Relaxed);
                    e.until = None;
                }
            } else if e.count > 0 {
                e.count -= 1;
            }
        }
        let volumes: Vec<(usize, u64, u64)> = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                let h = &ep.outlier;
                (
                    i,
                    h.success.swap(0, Ordering::Relaxed),
                    h.failure.swap(0, Ordering::Relaxed),
                )
            })
            .collect();
        self.success_rate(&volumes);
        self.failure_percentage(&volumes);
    }

    fn success_rate(&self, volumes: &[(usize, u64, u64)]) {
        let c = &self.config;
        let min_volume = u64::from(c.success_rate_request_volume());
        let rates: Vec<(usize, f64)> = volumes
            .iter()
            .filter(|(_, s, f)| s + f >= min_volume && s + f > 0)
            .map(|&(i, s, f)| (i, s as f64 * 100.0 / (s + f) as f64))
            .collect();
        if rates.len() < c.success_rate_minimum_hosts() as usize || rates.is_empty() {
            return;
        }
        let mean = rates.iter().map(|r| r.1).sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean - var.sqrt() * f64::from(c.success_rate_stdev_factor()) / 1000.0;
        for (i, rate) in rates {
            if rate < threshold {
                self.eject(
                    &self.endpoints[i],
                    c.enforcing_success_rate(),
                    "success_rate",
                );
            }
        }
    }

    fn failure_percentage(&self, volumes: &[(usize, u64, u64)]) {
        let c = &self.config;
        let min_volume = u64::from(c.failure_percentage_request_volume());
        let eligible: Vec<(usize, f64)> = volumes
            .iter()
            .filter(|(_, s, f)| s + f >= min_volume && s + f > 0)
            .map(|&(i, s, f)| (i, f as f64 * 100.0 / (s + f) as f64))
            .collect();
        if eligible.len() < c.failure_percentage_minimum_hosts() as usize {
            return;
        }
        for (i, pct) in eligible {
            if pct >= f64::from(c.failure_percentage_threshold()) {
                self.eject(
                    &self.endpoints[i],
                    c.enforcing_failure_percentage(),
                    "failure_percentage",
                );
            }
        }
    }
}
