//! Peak-EWMA power-of-two-choices: latency-aware balancing (Finagle's and Linkerd's algorithm).
//!
//! Each endpoint keeps an exponentially weighted moving average of its response latency that
//! jumps *up* to any slower observation at once and decays *down* over `decay` (10 s by
//! default): one slow response is believed immediately, recovery has to be earned. A pick draws
//! two endpoints at random and takes the one with the lower `ewma × (in_flight + 1)`, so a
//! slow endpoint and a busy one both lose — unlike least request, which sees only the queue,
//! and round robin, which sees nothing. Endpoints not yet measured count as `default_rtt`
//! (30 ms, Linkerd's choice) so new ones get tried without being flooded.
//!
//! Latencies are recorded with [`Ewma::observe`]; the clock behind it is the mesh's own and not
//! API:
//!
//! ```compile_fail
//! let _ = mesh_tower::balance::peak_ewma::now_nanos();
//! ```

use super::{Balance, EndpointInfo, PickContext};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency state of one endpoint (part of [`EndpointStats`](super::EndpointStats)).
#[derive(Debug, Default)]
pub struct Ewma {
    /// The average, in nanoseconds, as `f64` bits; 0 until the first observation.
    value: AtomicU64,
    /// When it was last updated, in nanoseconds since the process's clock base.
    stamp: AtomicU64,
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock base.
pub(crate) fn now_nanos() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// The instant `nanos` after the process's clock base.
pub(crate) fn instant_of(nanos: u64) -> Instant {
    base() + Duration::from_nanos(nanos)
}

impl Ewma {
    /// The current estimate (`None` before the first observation).
    pub fn get(&self) -> Option<Duration> {
        let v = f64::from_bits(self.value.load(Ordering::Relaxed));
        (v > 0.0).then(|| Duration::from_nanos(v as u64))
    }

    /// Records one response latency observed at `now` (nanoseconds from [`now_nanos`]).
    pub(crate) fn observe_at(&self, rtt: Duration, now: u64, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let old = f64::from_bits(self.value.load(Ordering::Relaxed));
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let next = if old == 0.0 || rtt > old {
            rtt // peak: a slower response is believed at once
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let w = (-elapsed / decay.as_nanos().max(1) as f64).exp();
            old * w + rtt * (1.0 - w)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Records one response latency observed now.
    pub fn observe(&self, rtt: Duration, decay: Duration) {
        self.observe_at(rtt, now_nanos(), decay);
    }
}

/// Default decay window.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for endpoints not measured yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Peak-EWMA P2C picker.
#[derive(Debug)]
pub struct PeakEwma {
    default_rtt: f64,
}

impl PeakEwma {
    /// A picker assuming `default_rtt` for unmeasured endpoints.
    pub fn new(default_rtt: Duration) -> Self {
        Self {
            default_rtt: default_rtt.as_nanos() as f64,
        }
    }

    /// `ewma × (in_flight + 1)`: lower is better.
    pub fn cost(&self, e: &EndpointInfo) -> f64 {
        let rtt = e
            .stats
            .ewma
            .get()
            .map_or(self.default_rtt, |d| d.as_nanos() as f64);
        rtt * (e.stats.in_flight() as f64 + 1.0)
    }
}

impl Balance for PeakEwma {
    fn pick(&self, endpoints: &[EndpointInfo], _: &PickContext<'_>) -> Option<usize> {
        match endpoints.len() {
            0 => None,
            1 => Some(0),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                Some(if self.cost(&endpoints[b]) < self.cost(&endpoints[a]) {
                    b
                } else {
                    a
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_average_jumps_up_and_decays_down() {
        let e = Ewma::default();
        let decay = Duration::from_secs(10);
        e.observe_at(Duration::from_millis(10), 0, decay);
        assert_eq!(e.get(), Some(Duration::from_millis(10)));
        e.observe_at(Duration::from_millis(100), MS, decay);
        assert_eq!(
            e.get(),
            Some(Duration::from_millis(100)),
            "a peak is taken at once"
        );
        // One decay window later a fast response pulls it 1 - 1/e of the way down.
        e.observe_at(Duration::from_millis(10), MS + 10_000 * MS, decay);
        let got = e.get().unwrap().as_secs_f64() * 1000.0;
        let want = 100.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    }

    #[test]
    fn slow_and_busy_endpoints_lose() {
        let eps = endpoints(3);
        let decay = Duration::from_secs(10);
        eps[0]
            .stats
            .ewma
            .observe_at(Duration::from_millis(100), 0, decay);
        eps[1]
            .stats
            .ewma
            .observe_at(Duration::from_millis(10), 0, decay);
        eps[2]
            .stats
            .ewma
            .observe_at(Duration::from_millis(10), 0, decay);
        let _busy: Vec<_> = (0..20).map(|_| eps[2].stats.start()).collect();
        let p = PeakEwma::new(DEFAULT_RTT);
        fastrand::seed(11);
        let ctx = PickContext::for_test();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[p.pick(&eps, &ctx).unwrap()] += 1;
        }
        // Endpoint 1 wins every pair it is in (2/3 of draws); 0 (100 ms) beats 2 (10 ms × 21).
        assert!((1850..=2150).contains(&counts[1]), "{counts:?}");
        assert!(counts[0] > counts[2] * 5, "{counts:?}");
    }
}
