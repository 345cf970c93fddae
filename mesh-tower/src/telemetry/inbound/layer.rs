use super::InboundMetrics;
use crate::telemetry::Telemetry;
use tower_layer::Layer;

/// Adds [`InboundMetrics`] for a workload's [`Telemetry`].
#[derive(Clone, Debug)]
pub struct InboundMetricsLayer {
    telemetry: Telemetry,
}

impl InboundMetricsLayer {
    /// Records as `telemetry`'s workload.
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for InboundMetricsLayer {
    type Service = InboundMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundMetrics::new(inner, self.telemetry.clone())
    }
}
