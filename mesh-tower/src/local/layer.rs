use super::LocalAnswers;
use tower_layer::Layer;

/// Applies [`LocalAnswers`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAnswersLayer;

impl<S> Layer<S> for LocalAnswersLayer {
    type Service = LocalAnswers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LocalAnswers::new(inner)
    }
}
