use super::RateLimit;
use tower_layer::Layer;

/// Applies [`RateLimit`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimitLayer {
    seed: Option<u64>,
}

impl RateLimitLayer {
    /// Rollout fractions drawn from a random seed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rollout fractions drawn from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self { seed: Some(seed) }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.seed)
    }
}
