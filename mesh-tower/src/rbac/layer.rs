use super::{Rbac, RbacEngine};
use arc_swap::ArcSwap;
use std::sync::Arc;
use tower_layer::Layer;

/// Applies [`Rbac`]. Holds the engine to consult: a fixed one, or a live handle the owner
/// swaps when the policy changes (requests read it lock-free).
#[derive(Clone, Debug)]
pub struct RbacLayer {
    engine: Arc<ArcSwap<RbacEngine>>,
}

impl RbacLayer {
    /// A layer enforcing `engine`.
    pub fn new(engine: RbacEngine) -> Self {
        Self::live(Arc::new(ArcSwap::from_pointee(engine)))
    }

    /// A layer enforcing whatever `engine` holds at each request.
    pub fn live(engine: Arc<ArcSwap<RbacEngine>>) -> Self {
        Self { engine }
    }
}

impl<S> Layer<S> for RbacLayer {
    type Service = Rbac<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rbac {
            inner,
            engine: self.engine.clone(),
        }
    }
}
