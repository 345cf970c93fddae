use super::{Mirror, MirrorStats};
use std::sync::Arc;
use tower_layer::Layer;

/// Applies [`Mirror`].
#[derive(Clone, Debug, Default)]
pub struct MirrorLayer {
    seed: Option<u64>,
    stats: Arc<MirrorStats>,
}

impl MirrorLayer {
    /// Mirror fractions drawn from a random seed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mirror fractions drawn from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed: Some(seed),
            stats: Arc::default(),
        }
    }
}

impl<S> Layer<S> for MirrorLayer {
    type Service = Mirror<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Mirror::new(inner, self.seed, self.stats.clone())
    }
}
