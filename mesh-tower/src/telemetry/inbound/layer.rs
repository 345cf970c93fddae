use super::InboundMetrics;
use crate::telemetry::Telemetry;
use tower_layer::Layer;

/// Adds [`InboundMetrics`] for a workload's [`Telemetry`].
#[derive(Clone, Debug)]
pub struct InboundMetricsLayer {
    /// None: records nothing, only passes the request body on wrapped (so that a stack has
    /// one type whether the mesh records or not).
    telemetry: Option<Telemetry>,
    listener_log: Option<super::ListenerLog>,
}

impl InboundMetricsLayer {
    /// Records as `telemetry`'s workload.
    pub fn new(telemetry: Telemetry) -> Self {
        Self {
            telemetry: Some(telemetry),
            listener_log: None,
        }
    }

    /// Records nothing (a mesh without telemetry); the stack's types stay those of one
    /// that records.
    pub(crate) fn none() -> Self {
        Self {
            telemetry: None,
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
        InboundMetrics::maybe(inner, self.telemetry.clone())
            .with_listener_log(self.listener_log.clone())
    }
}
