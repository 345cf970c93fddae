//! Client-side weighted round robin: weights the endpoints report about themselves.
//!
//! Round robin by configured weights cannot know that one endpoint runs on a machine twice as
//! fast, or shares it with a noisy neighbour. With this policy (Envoy's and gRPC's
//! `client_side_weighted_round_robin`, gRFC A58) every endpoint reports its load on its
//! responses ([ORCA](orca)), and its weight becomes `qps / utilization`: an endpoint that
//! serves more per unit of CPU gets more. Errors count as extra utilization, so an endpoint
//! that answers fast with failures is not rewarded.
//!
//! Weights are damped in time: a weight counts only after the endpoint has reported for the
//! `blackout_period` (one early report on a cold endpoint must not swing traffic), and is
//! forgotten after `weight_expiration_period` without reports. Endpoints without a usable
//! weight get the median of the others (Envoy's choice), so a new endpoint gets an average
//! share; with no weights at all this is plain round robin.
//!
//! Picking is the weighted round robin schedule (earliest deadline first) over the current
//! weights, swapped atomically; a pick that finds `weight_update_period` elapsed rebuilds it
//! from the endpoints' reported weights (the clock is read on every eighth pick only). No
//! timer task is needed and a cluster nobody calls costs nothing.

pub(crate) mod oob;
pub mod orca;

use super::peak_ewma::{instant_of, now_nanos};
use super::{Balance, EndpointInfo, PickContext, RoundRobin};
use arc_swap::ArcSwap;
use mesh_core::config::cluster::ClientSideWeightedRoundRobinConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The weight an endpoint reported last (part of [`EndpointStats`](super::EndpointStats)).
#[derive(Debug)]
pub struct ReportedWeight {
    /// The weight, as `f64` bits.
    weight: AtomicU64,
    /// When the current run of reports began ([`UNSET`] when there is none).
    non_empty_since: AtomicU64,
    /// When the last report arrived.
    last_update: AtomicU64,
}

const UNSET: u64 = u64::MAX;

/// Picks between clock reads.
const CLOCK_EVERY: u64 = 8;

/// A schedule and the weights it was built from.
#[derive(Debug)]
struct Built {
    schedule: RoundRobin,
    /// Scaled to integers, index-aligned with the endpoint list.
    weights: Vec<u32>,
}

impl Default for ReportedWeight {
    fn default() -> Self {
        Self {
            weight: AtomicU64::new(0),
            non_empty_since: AtomicU64::new(UNSET),
            last_update: AtomicU64::new(0),
        }
    }
}

impl ReportedWeight {
    /// Records a weight computed from a report at `now`: nanoseconds on the balancers' own
    /// monotonic clock (its epoch is private; tests and benches pass `0` and offsets).
    pub fn update_at(&self, weight: f64, now: u64) {
        let _ =
            self.non_empty_since
                .compare_exchange(UNSET, now, Ordering::Relaxed, Ordering::Relaxed);
        self.weight.store(weight.to_bits(), Ordering::Relaxed);
        self.last_update.store(now, Ordering::Relaxed);
    }

    /// The weight if it is usable at `now`: reported for at least `blackout`, and refreshed
    /// within `expiration` (an expired weight starts a new blackout when reports resume).
    pub fn get_at(&self, now: u64, blackout: Duration, expiration: Duration) -> Option<f64> {
        let since = self.non_empty_since.load(Ordering::Relaxed);
        if since == UNSET {
            return None;
        }
        let last = self.last_update.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= expiration.as_nanos() as u64 {
            self.non_empty_since.store(UNSET, Ordering::Relaxed);
            return None;
        }
        if now.saturating_sub(since) < blackout.as_nanos() as u64 {
            return None;
        }
        Some(f64::from_bits(self.weight.load(Ordering::Relaxed)))
    }
}

/// What the response path needs to turn reports into weights (one per cluster state).
#[derive(Debug, PartialEq)]
pub struct ReportSettings {
    penalty: f64,
    metric_names: Vec<String>,
    /// Reports on responses become weights (client-side WRR without out-of-band reports).
    weights: bool,
    /// Their named metrics go to load reports (LRS, gRFC A64).
    load: bool,
}

impl ReportSettings {
    /// From the cluster's policy config.
    pub fn new(config: &ClientSideWeightedRoundRobinConfig) -> Self {
        Self {
            penalty: config.error_utilization_penalty.map_or(1.0, |p| p.0),
            metric_names: config.metric_names_for_computing_utilization.clone(),
            weights: true,
            load: false,
        }
    }

    /// What responses' reports are read for: weights, load reports (named metrics), or both.
    pub(crate) fn reading(mut self, weights: bool, load: bool) -> Self {
        self.weights = weights;
        self.load = load;
        self
    }

    /// Whether a response without a report in its head may carry one in its trailers worth
    /// watching for: always for weights (the body wrapper is the WRR policy's cost); for
    /// load reports alone, only gRPC answers (whose servers send reports there), so that an
    /// HTTP cluster reporting load pays nothing per response.
    pub(crate) fn watch_trailers(&self, headers: &http::HeaderMap) -> bool {
        self.weights
            || headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    }

    /// Reads a response's report (headers or trailers) for what this cluster uses it for.
    /// `Ok(false)` when there was none.
    pub(crate) fn observe(
        &self,
        headers: &http::HeaderMap,
        stats: &super::EndpointStats,
    ) -> Result<bool, orca::ReportError> {
        let mut found = false;
        if self.weights {
            found = self.record(headers, &stats.reported)?;
        }
        if self.load
            && let Some(named) = orca::named_metrics(headers)?
        {
            stats.load.named(&named);
            found = true;
        }
        Ok(found)
    }

    /// Reads a report from response headers or trailers into `weight`. `Ok(false)` when
    /// there was no report; an error when it was malformed (the weight is left alone).
    pub fn record(
        &self,
        headers: &http::HeaderMap,
        weight: &ReportedWeight,
    ) -> Result<bool, orca::ReportError> {
        let Some(report) = orca::LoadReport::from_headers(headers, &self.metric_names)? else {
            return Ok(false);
        };
        if let Some(w) = report.weight(self.penalty) {
            weight.update_at(w, now_nanos());
        }
        Ok(true)
    }
}

/// Client-side weighted round-robin picker.
///
/// ```
/// use mesh_core::config::cluster::ClientSideWeightedRoundRobinConfig;
/// use mesh_tower::balance::ClientSideWrr;
/// let wrr = ClientSideWrr::new(&ClientSideWeightedRoundRobinConfig::default());
/// # let _ = wrr;
/// ```
#[derive(Debug)]
pub struct ClientSideWrr {
    blackout: Duration,
    expiration: Duration,
    period: u64,
    /// When the schedule is next rebuilt.
    next_update: AtomicU64,
    /// Picks so far (the clock is read every [`CLOCK_EVERY`] picks).
    picks: AtomicU64,
    built: ArcSwap<Built>,
    /// Slow start: window (ns), aggression, minimum factor.
    ramp: Option<(Duration, f64, f64)>,
}

impl ClientSideWrr {
    /// A picker with `config`'s periods; the first pick builds the schedule.
    pub fn new(config: &ClientSideWeightedRoundRobinConfig) -> Self {
        let (blackout, expiration, period) = config.periods();
        Self {
            blackout,
            expiration,
            period: period.as_nanos() as u64,
            next_update: AtomicU64::new(0),
            picks: AtomicU64::new(0),
            built: ArcSwap::from_pointee(Built {
                schedule: RoundRobin::new(0),
                weights: Vec::new(),
            }),
            ramp: config.slow_start_config.as_ref().and_then(|s| {
                Some((
                    s.slow_start_window?,
                    s.aggression.map_or(1.0, |a| a.default_value),
                    s.min_weight_percent.map_or(0.1, |p| p.value / 100.0),
                ))
            }),
        }
    }

    /// The weights of the schedule in force, scaled to integers (index-aligned with the
    /// endpoint list; empty before the first pick).
    pub fn weights(&self) -> Vec<u32> {
        self.built.load().weights.clone()
    }

    /// Rebuilds the schedule from the endpoints' reported weights at `now`.
    pub fn rebuild_at(&self, endpoints: &[EndpointInfo], now: u64) {
        let reported: Vec<Option<f64>> = endpoints
            .iter()
            .map(|e| e.stats.reported.get_at(now, self.blackout, self.expiration))
            .collect();
        let mut valid: Vec<f64> = reported.iter().flatten().copied().collect();
        let default = if valid.is_empty() {
            1.0
        } else {
            let mid = valid.len() / 2;
            *valid.select_nth_unstable_by(mid, f64::total_cmp).1
        };
        let max = reported
            .iter()
            .map(|w| w.unwrap_or(default))
            .fold(f64::MIN_POSITIVE, f64::max);
        // Slow start scales young endpoints down; then the heaviest is scaled to 1e6, so
        // integer weights keep ratios down to 1e-6.
        let ramp = |e: &EndpointInfo| match self.ramp {
            Some((window, aggression, min)) => {
                let age = instant_of(now).saturating_duration_since(e.stats.created());
                super::slow_start::ramp(age, window, aggression, min)
            }
            None => 1.0,
        };
        let weights: Vec<u32> = reported
            .iter()
            .zip(endpoints)
            .map(|(w, e)| ((w.unwrap_or(default) * ramp(e) / max * 1e6).round() as u32).max(1))
            .collect();
        self.built.store(Arc::new(Built {
            schedule: RoundRobin::weighted(&weights),
            weights,
        }));
    }

    fn maybe_rebuild(&self, endpoints: &[EndpointInfo], stale: bool) {
        let now = now_nanos();
        let due = self.next_update.load(Ordering::Relaxed);
        if (now >= due || stale)
            && self
                .next_update
                .compare_exchange(due, now + self.period, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.rebuild_at(endpoints, now);
        }
    }
}

impl Balance for ClientSideWrr {
    fn pick(&self, endpoints: &[EndpointInfo], ctx: &PickContext<'_>) -> Option<usize> {
        let built = self.built.load();
        let stale = built.weights.len() != endpoints.len();
        if stale
            || self
                .picks
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(CLOCK_EVERY)
        {
            drop(built);
            self.maybe_rebuild(endpoints, stale);
            return self.built.load().schedule.pick(endpoints, ctx);
        }
        built.schedule.pick(endpoints, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;

    const S: u64 = 1_000_000_000;

    fn config(blackout: u64) -> ClientSideWeightedRoundRobinConfig {
        ClientSideWeightedRoundRobinConfig {
            blackout_period: Some(Duration::from_secs(blackout)),
            ..Default::default()
        }
    }

    #[test]
    fn weights_wait_out_the_blackout_and_expire() {
        let w = ReportedWeight::default();
        let (blackout, expiry) = (Duration::from_secs(10), Duration::from_secs(180));
        assert_eq!(w.get_at(0, blackout, expiry), None, "never reported");
        w.update_at(5.0, 100 * S);
        assert_eq!(w.get_at(105 * S, blackout, expiry), None, "in blackout");
        w.update_at(7.0, 109 * S);
        assert_eq!(w.get_at(110 * S, blackout, expiry), Some(7.0));
        assert_eq!(w.get_at(289 * S, blackout, expiry), None, "expired");
        // Reports resume: a new blackout starts.
        w.update_at(3.0, 300 * S);
        assert_eq!(w.get_at(301 * S, blackout, expiry), None);
        assert_eq!(w.get_at(310 * S, blackout, expiry), Some(3.0));
        assert_eq!(w.get_at(300 * S, Duration::ZERO, expiry), Some(3.0));
    }

    #[test]
    fn picks_follow_reported_capacity() {
        let eps = endpoints(3);
        let now = now_nanos();
        for (e, w) in eps.iter().zip([100.0, 300.0, 600.0]) {
            e.stats.reported.update_at(w, now);
        }
        let wrr = ClientSideWrr::new(&config(0));
        wrr.rebuild_at(&eps, now);
        let mut counts = [0usize; 3];
        let ctx = PickContext::for_test();
        for _ in 0..10_000 {
            counts[wrr.built.load().schedule.pick(&eps, &ctx).unwrap()] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 10_000.0;
        assert!((share(0) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(1) - 0.3).abs() < 0.01, "{counts:?}");
        assert!((share(2) - 0.6).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn unknown_endpoints_get_the_median_and_no_reports_mean_plain_round_robin() {
        let eps = endpoints(4);
        let wrr = ClientSideWrr::new(&config(0));
        wrr.rebuild_at(&eps, 0);
        assert_eq!(wrr.weights(), vec![1_000_000; 4], "no reports: equal");
        for (e, w) in eps.iter().zip([10.0, 20.0, 40.0]) {
            e.stats.reported.update_at(w, 5 * S);
        }
        wrr.rebuild_at(&eps, 5 * S);
        assert_eq!(wrr.weights(), vec![250_000, 500_000, 1_000_000, 500_000]);
    }

    #[test]
    fn blackout_holds_weights_back_until_it_passes() {
        let eps = endpoints(2);
        let wrr = ClientSideWrr::new(&config(10));
        eps[0].stats.reported.update_at(100.0, S);
        eps[1].stats.reported.update_at(300.0, S);
        wrr.rebuild_at(&eps, 2 * S);
        assert_eq!(wrr.weights(), vec![1_000_000, 1_000_000]);
        wrr.rebuild_at(&eps, 11 * S);
        assert_eq!(wrr.weights(), vec![333_333, 1_000_000]);
    }

    #[test]
    fn slow_start_scales_new_endpoints_down() {
        let now = now_nanos();
        let base = instant_of(now);
        let old = crate::balance::EndpointStats::created_at(base - Duration::from_secs(20));
        let young = crate::balance::EndpointStats::created_at(base);
        let mut eps = endpoints(2);
        eps[0].stats = Arc::new(old);
        eps[1].stats = Arc::new(young);
        let wrr = ClientSideWrr::new(&ClientSideWeightedRoundRobinConfig {
            slow_start_config: Some(mesh_core::config::cluster::SlowStartConfig {
                slow_start_window: Some(Duration::from_secs(10)),
                ..Default::default()
            }),
            ..config(0)
        });
        let at = |s: u64| now + s * S;
        wrr.rebuild_at(&eps, at(0));
        assert_eq!(
            wrr.weights(),
            vec![1_000_000, 100_000],
            "10% floor at age 0"
        );
        wrr.rebuild_at(&eps, at(5));
        assert_eq!(wrr.weights(), vec![1_000_000, 500_000], "linear ramp");
        wrr.rebuild_at(&eps, at(10));
        assert_eq!(wrr.weights(), vec![1_000_000, 1_000_000]);
    }

    #[test]
    fn first_pick_builds_the_schedule_and_list_changes_rebuild_it() {
        let eps = endpoints(2);
        let wrr = ClientSideWrr::new(&config(0));
        let ctx = PickContext::for_test();
        assert!(wrr.pick(&eps, &ctx).is_some());
        assert_eq!(wrr.weights().len(), 2);
        let more = endpoints(5);
        assert!(wrr.pick(&more, &ctx).is_some());
        assert_eq!(wrr.weights().len(), 5, "a new list size forces a rebuild");
        assert_eq!(wrr.pick(&[], &ctx), None);
    }

    #[test]
    fn reports_on_responses_feed_the_weight() {
        let settings = ReportSettings::new(&ClientSideWeightedRoundRobinConfig {
            error_utilization_penalty: Some(mesh_core::policy::Double(2.0)),
            ..Default::default()
        });
        let w = ReportedWeight::default();
        let mut h = http::HeaderMap::new();
        assert_eq!(settings.record(&h, &w), Ok(false));
        h.insert(
            orca::HEADER,
            "TEXT cpu_utilization=0.3, rps_fractional=100, eps=10"
                .parse()
                .unwrap(),
        );
        assert_eq!(settings.record(&h, &w), Ok(true));
        let now = now_nanos();
        let got = w
            .get_at(now, Duration::ZERO, Duration::from_secs(60))
            .unwrap();
        assert!((got - 200.0).abs() < 1e-9, "{got}");
        h.insert(orca::HEADER, "TEXT cpu=".parse().unwrap());
        assert!(settings.record(&h, &w).is_err());
    }
}
