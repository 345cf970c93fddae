use super::Direct;
use tower_layer::Layer;

/// Applies [`Direct`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectLayer;

impl<S> Layer<S> for DirectLayer {
    type Service = Direct<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Direct::new(inner)
    }
}
