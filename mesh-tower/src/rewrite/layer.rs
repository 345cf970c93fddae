use super::RewriteService;
use tower_layer::Layer;

/// Applies [`RewriteService`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RewriteLayer;

impl<S> Layer<S> for RewriteLayer {
    type Service = RewriteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RewriteService::new(inner)
    }
}
