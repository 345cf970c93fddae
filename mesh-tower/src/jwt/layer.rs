use super::{Jwt, JwtEngine};
use arc_swap::ArcSwap;
use std::sync::Arc;
use tower_layer::Layer;

/// Applies [`Jwt`]. Holds the engine to consult: a fixed one, or a live handle the owner swaps
/// when the config changes (requests read it lock-free).
#[derive(Clone, Debug)]
pub struct JwtLayer {
    engine: Arc<ArcSwap<JwtEngine>>,
}

impl JwtLayer {
    /// A layer enforcing `engine`.
    pub fn new(engine: JwtEngine) -> Self {
        Self::live(Arc::new(ArcSwap::from_pointee(engine)))
    }

    /// A layer enforcing whatever `engine` holds at each request.
    pub fn live(engine: Arc<ArcSwap<JwtEngine>>) -> Self {
        Self { engine }
    }
}

impl<S> Layer<S> for JwtLayer {
    type Service = Jwt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Jwt {
            inner,
            engine: self.engine.clone(),
        }
    }
}
