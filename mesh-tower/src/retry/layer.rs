use super::{Retry, RetryLimits};
use std::sync::Arc;
use tower_layer::Layer;

/// Applies [`Retry`]: per-route retry policies, admitted by `limits` when given.
#[derive(Clone, Default)]
pub struct RetryLayer {
    limits: Option<Arc<dyn RetryLimits>>,
}

impl std::fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer").finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// Retries bounded only by each policy's `num_retries`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries also admitted by per-cluster limits (circuit breakers, budgets).
    pub fn with_limits(limits: Arc<dyn RetryLimits>) -> Self {
        Self {
            limits: Some(limits),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.limits.clone())
    }
}
