use super::Timeout;
use std::time::Duration;
use tower_layer::Layer;

/// Applies [`Timeout`]; holds only the default limit.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    default: Option<Duration>,
}

impl TimeoutLayer {
    /// A layer whose default limit (for requests without a route decision) is `default`.
    pub const fn new(default: Option<Duration>) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.default)
    }
}
