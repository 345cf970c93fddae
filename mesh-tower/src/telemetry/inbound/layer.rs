use super::InboundMetrics;
use crate::telemetry::Telemetry;
use tower_layer::Layer;

/// Adds [`InboundMetrics`] for a workload's [`Telemetry`].
#[derive(Clone, Debug)]
pub struct InboundMetricsLayer {
    telemetry: Telemetry,
    listener_log: Option<super::ListenerLog>,
}

impl InboundMetricsLayer {
    /// Records as `telemetry`'s workload.
    pub fn new(telemetry: Telemetry) -> Self {
        Self {
            telemetry,
            listener_log: None,
        }
    }

    /// Writing to a server's own access log when its config has one.
    pub(crate) fn with_listener_log(mut self, log: Option<super::ListenerLog>) -> Self {
        self.listener_log = log;
        self
    }
}

impl<S> Layer<S> for InboundMetricsLayer {
    type Service = InboundMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundMetrics::new(inner, self.telemetry.clone())
            .with_listener_log(self.listener_log.clone())
    }
}
