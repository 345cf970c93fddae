use super::Fault;
use tower_layer::Layer;

/// Applies [`Fault`].
#[derive(Clone, Copy, Debug)]
pub struct FaultLayer {
    seed: Option<u64>,
}

impl FaultLayer {
    /// Fault draws from a random seed.
    pub fn new() -> Self {
        Self { seed: None }
    }

    /// Fault draws from `seed` (reproducible tests).
    pub fn seeded(seed: u64) -> Self {
        Self { seed: Some(seed) }
    }
}

impl Default for FaultLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault::new(inner, self.seed)
    }
}
