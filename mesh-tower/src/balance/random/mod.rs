//! Random picks, weighted by `load_balancing_weight` (Envoy's `RANDOM`).
//!
//! No shared state at all: the cheapest policy there is, and a good one when many clients
//! balance over the same endpoints (their random choices average out).

use super::{Balance, EndpointInfo, PickContext, Weights};

/// Weighted random picker.
///
/// ```
/// use mesh_tower::balance::Random;
/// let r = Random::new(&[1, 3]);
/// assert_eq!(r.index_for(0), 0); // draws in [0, 1) pick the first, [1, 4) the second
/// assert_eq!(r.index_for(2), 1);
/// ```
#[derive(Debug)]
pub struct Random {
    weights: Weights,
}

impl Random {
    /// A picker over endpoints with these weights.
    pub fn new(weights: &[u32]) -> Self {
        Self {
            weights: Weights::new(weights),
        }
    }

    /// The endpoint for a uniform draw `r`.
    pub fn index_for(&self, r: u64) -> usize {
        self.weights.index_for(r)
    }
}

impl Balance for Random {
    fn pick(&self, endpoints: &[EndpointInfo], _: &PickContext<'_>) -> Option<usize> {
        (!endpoints.is_empty()).then(|| self.weights.index_for(fastrand::u64(..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_honoured_within_tolerance() {
        let r = Random::new(&[1, 2, 7]);
        let mut rng = fastrand::Rng::with_seed(5);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[r.index_for(rng.u64(..))] += 1;
        }
        for (c, share) in counts.iter().zip([0.1, 0.2, 0.7]) {
            let got = f64::from(*c) / 100_000.0;
            assert!((got - share).abs() < 0.01, "{counts:?}");
        }
    }
}
