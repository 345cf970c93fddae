//! Slow start (Envoy's `slow_start_config` for round robin and least request): a new endpoint
//! takes a growing share of traffic over a window instead of its full share at once.
//!
//! A freshly started instance (cold caches, JIT, connection pools) can fall over under a full
//! share of traffic. While any endpoint of the set is younger than `slow_start_window`, picks
//! are weighted random over *effective* weights, `weight × max(min_weight_percent,
//! (age / window)^(1 / aggression))`; once every endpoint is past the window, the cluster's own
//! policy picks again. Ages come from the endpoint's stats, which survive config updates, so
//! only endpoints that are really new ramp up.

use super::{Balance, EndpointInfo, PickContext};
use std::time::{Duration, Instant};

/// Wraps a balancer with a slow-start ramp.
#[derive(Debug)]
pub struct SlowStart {
    inner: Box<dyn Balance>,
    window: Duration,
    aggression: f64,
    min_factor: f64,
    /// When the youngest endpoint leaves the window: after it, `inner` decides alone.
    warm_at: Instant,
}

impl SlowStart {
    /// Ramps `endpoints` (as of now) ahead of `inner`.
    pub fn new(
        inner: Box<dyn Balance>,
        endpoints: &[EndpointInfo],
        window: Duration,
        aggression: f64,
        min_weight_percent: f64,
    ) -> Self {
        let youngest = endpoints
            .iter()
            .map(|e| e.stats.created())
            .max()
            .unwrap_or_else(Instant::now);
        Self {
            inner,
            window,
            aggression: if aggression > 0.0 { aggression } else { 1.0 },
            min_factor: (min_weight_percent / 100.0).clamp(0.0, 1.0),
            warm_at: youngest + window,
        }
    }

    /// The ramp factor of an endpoint of age `age`.
    pub fn factor(&self, age: Duration) -> f64 {
        ramp(age, self.window, self.aggression, self.min_factor)
    }

    /// A pick at `now` (public for deterministic tests).
    pub fn pick_at(
        &self,
        endpoints: &[EndpointInfo],
        ctx: &PickContext<'_>,
        now: Instant,
        r: f64,
    ) -> Option<usize> {
        if now >= self.warm_at || endpoints.is_empty() {
            return self.inner.pick(endpoints, ctx);
        }
        // Two passes over the effective weights (sum, then walk) instead of collecting them:
        // no allocation per pick.
        let weight = |e: &EndpointInfo| {
            let age = now.saturating_duration_since(e.stats.created());
            f64::from(e.weight.max(1)) * self.factor(age)
        };
        let total: f64 = endpoints.iter().map(weight).sum();
        let mut at = r * total;
        for (i, e) in endpoints.iter().enumerate() {
            let w = weight(e);
            if at < w {
                return Some(i);
            }
            at -= w;
        }
        Some(endpoints.len() - 1)
    }
}

/// The slow-start factor of an endpoint of age `age`: `max(min_factor, (age / window)^(1 /
/// aggression))`, 1 past the window.
pub fn ramp(age: Duration, window: Duration, aggression: f64, min_factor: f64) -> f64 {
    if age >= window {
        return 1.0;
    }
    let aggression = if aggression > 0.0 { aggression } else { 1.0 };
    let ratio = age.as_secs_f64() / window.as_secs_f64();
    ratio.powf(1.0 / aggression).max(min_factor)
}

impl Balance for SlowStart {
    fn pick(&self, endpoints: &[EndpointInfo], ctx: &PickContext<'_>) -> Option<usize> {
        self.pick_at(endpoints, ctx, Instant::now(), fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::RoundRobin;
    use crate::balance::tests::endpoints;

    #[test]
    fn a_new_endpoint_ramps_up_over_the_window() {
        let eps = endpoints(2);
        let ss = SlowStart::new(
            Box::new(RoundRobin::new(2)),
            &eps,
            Duration::from_secs(60),
            1.0,
            10.0,
        );
        assert_eq!(ss.factor(Duration::ZERO), 0.1, "the floor");
        assert!(
            (ss.factor(Duration::from_secs(30)) - 0.5).abs() < 1e-9,
            "linear"
        );
        assert_eq!(ss.factor(Duration::from_secs(60)), 1.0);
        let fast = SlowStart::new(
            Box::new(RoundRobin::new(2)),
            &eps,
            Duration::from_secs(60),
            2.0,
            10.0,
        );
        assert!(
            (fast.factor(Duration::from_secs(15)) - 0.5).abs() < 1e-9,
            "aggression 2: sqrt"
        );

        // An hour-old endpoint next to one 15 s into its 60 s window: weights 1 : 0.25.
        let now = Instant::now();
        let mut eps = endpoints(2);
        eps[0].stats = std::sync::Arc::new(crate::balance::EndpointStats::created_at(
            now - Duration::from_secs(3600),
        ));
        eps[1].stats = std::sync::Arc::new(crate::balance::EndpointStats::created_at(now));
        let ss = SlowStart::new(
            Box::new(RoundRobin::new(2)),
            &eps,
            Duration::from_secs(60),
            1.0,
            10.0,
        );
        let ctx = PickContext::for_test();
        let mut rng = fastrand::Rng::with_seed(4);
        let at = now + Duration::from_secs(15);
        let to_new = (0..10_000)
            .filter(|_| ss.pick_at(&eps, &ctx, at, rng.f64()) == Some(1))
            .count();
        // 0.25 / 1.25 = 20% of 10000: sd 40; ±4 sd.
        assert!((1840..=2160).contains(&to_new), "{to_new}");
        // Past the window the inner policy decides (round robin alternates).
        let late = now + Duration::from_secs(61);
        let a = ss.pick_at(&eps, &ctx, late, 0.0);
        let b = ss.pick_at(&eps, &ctx, late, 0.0);
        assert_ne!(a, b, "round robin again");
    }
}
