//! Least request (Envoy's `LEAST_REQUEST`): of `choice_count` random endpoints (default 2), the
//! one with the fewest requests in flight.
//!
//! Power-of-two-choices gets most of the benefit of "least loaded" without a global scan and
//! without herding: every client sees slightly different samples. With unequal weights, samples
//! are drawn by weight and compared by `in_flight / weight^…`: Envoy's `active_request_bias`
//! (default 1.0) as the exponent on `(in_flight + 1)`.

use super::{Balance, EndpointInfo, PickContext, Weights};

/// Least-request picker.
#[derive(Debug)]
pub struct LeastRequest {
    choices: u32,
    bias: f64,
    weights: Weights,
}

impl LeastRequest {
    /// `choice_count` samples per pick; `bias` weighs in-flight requests against weights.
    pub fn new(weights: &[u32], choice_count: u32, bias: f64) -> Self {
        Self {
            choices: choice_count.max(1),
            bias,
            weights: Weights::new(weights),
        }
    }

    /// Effective weight: `weight / (in_flight + 1)^bias`; the highest wins.
    fn score(&self, e: &EndpointInfo) -> f64 {
        let load = e.stats.in_flight() as f64 + 1.0;
        // The common bias of 1.0 needs no `powf` (a tenth of the pick's cost).
        let load = if self.bias == 1.0 {
            load
        } else {
            load.powf(self.bias)
        };
        f64::from(e.weight.max(1)) / load
    }
}

impl Balance for LeastRequest {
    fn pick(&self, endpoints: &[EndpointInfo], _: &PickContext<'_>) -> Option<usize> {
        if endpoints.is_empty() {
            return None;
        }
        let mut best = self.weights.index_for(fastrand::u64(..));
        for _ in 1..self.choices {
            let c = self.weights.index_for(fastrand::u64(..));
            if self.score(&endpoints[c]) > self.score(&endpoints[best]) {
                best = c;
            }
        }
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;

    #[test]
    fn the_busier_endpoint_loses_the_comparison() {
        let eps = endpoints(2);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].stats.start()).collect();
        let lr = LeastRequest::new(&[1, 1], 2, 1.0);
        fastrand::seed(9);
        let ctx = PickContext::for_test();
        let picks: Vec<_> = (0..1000).map(|_| lr.pick(&eps, &ctx).unwrap()).collect();
        let to_busy = picks.iter().filter(|&&i| i == 0).count();
        // Only a sample of two copies of the busy one picks it: 1/4 of the time.
        assert!((180..=320).contains(&to_busy), "{to_busy}");
    }

    #[test]
    fn all_choices_sampled_means_the_least_loaded_always_wins() {
        let eps = endpoints(3);
        let _b: Vec<_> = (0..3).map(|_| eps[0].stats.start()).collect();
        let _c = eps[2].stats.start();
        let lr = LeastRequest::new(&[1, 1, 1], 64, 1.0);
        let ctx = PickContext::for_test();
        assert!((0..200).all(|_| lr.pick(&eps, &ctx) == Some(1)));
    }
}
