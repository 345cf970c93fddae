//! Istio's standard request metrics, recorded in-process on both ends of a call.
//!
//! Why: Kiali's graph, Grafana's Istio dashboards and most alerting read
//! `istio_requests_total` and `istio_request_duration_milliseconds` with Istio's fixed label
//! set. A sidecar emits them for its application; with the mesh inside the process there is
//! no sidecar, so the mesh must, or the workload drops out of every graph. The client records
//! with `reporter="source"`, a server with `reporter="destination"`, each with its own
//! workload's labels (from the bootstrap's node metadata, as Istio's agent writes it), the
//! peer's (from endpoint metadata or the Istio cluster name on the client, from the caller's
//! certificate on the server), and what happened: the HTTP status, the gRPC status from the
//! trailers, and Envoy's response flags for what the mesh itself did (`UH`, `UF`, `UO`, `NR`,
//! `NC`, `UT`, `FI`, `RL`, `UC`, `DC`).
//!
//! Metrics go through the [`metrics`] facade, so the application picks the exporter; with the
//! `prometheus` feature, `prometheus::install` gives a ready Prometheus text endpoint with
//! Envoy's histogram buckets. Install the recorder before building the mesh: handles are
//! registered once and cached.
//!
//! Cost: a label set is built once per edge (cluster, endpoint and peer identity on the client;
//! caller identity and authority on the server) and once per outcome (status, gRPC status,
//! flags) on that edge, and its metric handles are cached; a request finds its handles with
//! one hash and a read lock, allocates nothing, and records when its response stream ends
//! (the last frame, an error, or the body dropped), as Envoy does: the duration covers the
//! whole stream and the gRPC status is the one in the trailers.
//!
//! Where this differs from Istio's sidecar: there is no metadata exchange between the two
//! ends, so a server knows its caller by certificate only (`source_principal`, and
//! `source_workload_namespace` from a SPIFFE ID); the other `source_*` labels there are
//! `unknown`. Request sizes are not recorded (`istio_request_bytes`); response sizes are.

mod edge;
mod exchange;
pub mod inbound;
mod labels;
#[cfg(feature = "prometheus")]
pub mod prometheus;

pub use crate::stats::{AccessLog, LogFormat};
pub(crate) use edge::{ClientCall, InboundCall};
pub use inbound::{InboundBody, InboundMetrics, InboundMetricsLayer, InboundRequestBody};
pub use labels::Workload;

use crate::stats::Edges;
use std::fmt;
use std::sync::Arc;

pub use crate::stats::{
    CLIENT_ATTEMPT_DURATION, CLIENT_ATTEMPT_RCVD, CLIENT_ATTEMPT_SENT, CLIENT_ATTEMPT_STARTED,
    CLIENT_CALL_DURATION, CLIENT_CALL_HEDGES, CLIENT_CALL_RETRIES, CLIENT_CALL_RETRY_DELAY,
    COUNT_BUCKETS, LATENCY_BUCKETS, REQUEST_DURATION, REQUESTS_TOTAL, RESPONSE_BYTES, Retried,
    SERVER_CALL_DURATION, SERVER_CALL_RCVD, SERVER_CALL_SENT, SERVER_CALL_STARTED, SIZE_BUCKETS,
};

/// Envoy's default histogram buckets (milliseconds for durations), which Istio's dashboards
/// assume.
pub const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Request telemetry for a workload: give it to [`MeshBuilder::telemetry`] for the client
/// side (every channel and HTTP client of the mesh records) and to servers through
/// [`InboundMetricsLayer`] (a [`MeshServer`](crate::server::MeshServer) of the mesh adds it itself).
/// Cheap to clone.
///
/// [`MeshBuilder::telemetry`]: crate::MeshBuilder::telemetry
///
/// ```
/// use mesh_tower::telemetry::{Telemetry, Workload};
/// let telemetry = Telemetry::new(Workload {
///     name: "frontend".into(),
///     namespace: "shop".into(),
///     app: Some("frontend".into()),
///     version: Some("v1".into()),
///     ..Workload::default()
/// });
/// assert_eq!(telemetry.workload().canonical_service(), "frontend");
/// ```
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    workload: Workload,
    client: Edges,
    server: Edges,
    /// gRPC's per-attempt and retry handles, by method and channel (A66, A96).
    attempts: crate::stats::AttemptCache,
    access_log: Option<AccessLog>,
    tracer: Option<crate::trace::Tracer>,
    /// Istio's metadata exchange headers this workload sends (see `exchange`).
    exchange: Option<(http::HeaderValue, http::HeaderValue)>,
}

impl Telemetry {
    /// Telemetry reporting as `workload`.
    pub fn new(workload: Workload) -> Self {
        Self::build(workload, None, None)
    }

    fn build(
        workload: Workload,
        access_log: Option<AccessLog>,
        tracer: Option<crate::trace::Tracer>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: Edges::new(
                    labels::local_source(&workload),
                    crate::stats::CLIENT_CALL_DURATION,
                ),
                server: Edges::new(
                    labels::local_destination(&workload),
                    crate::stats::SERVER_CALL_DURATION,
                ),
                attempts: Default::default(),
                exchange: exchange::headers(&workload),
                workload,
                access_log,
                tracer,
            }),
        }
    }

    /// The same workload, also writing one access log line per request to `log` (when its
    /// response stream ends, with what its metrics record plus the method, authority, path,
    /// protocol, upstream cluster and endpoint and the peer's identity).
    pub fn with_access_log(self, log: AccessLog) -> Self {
        Self::build(
            self.inner.workload.clone(),
            Some(log),
            self.inner.tracer.clone(),
        )
    }

    /// The same workload, also tracing its calls and served requests with `tracer` (see
    /// [`crate::trace`]).
    pub fn with_tracer(self, tracer: crate::trace::Tracer) -> Self {
        Self::build(
            self.inner.workload.clone(),
            self.inner.access_log.clone(),
            Some(tracer),
        )
    }

    /// The tracer, if the mesh traces.
    pub fn tracer(&self) -> Option<&crate::trace::Tracer> {
        self.inner.tracer.as_ref()
    }

    /// The metadata exchange headers a client sends on mTLS clusters.
    pub(crate) fn exchange_headers(&self) -> Option<(http::HeaderValue, http::HeaderValue)> {
        self.inner.exchange.clone()
    }

    /// Where access log lines go, if anywhere.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.inner.access_log.as_ref()
    }

    /// The local workload the metrics describe.
    pub fn workload(&self) -> &Workload {
        &self.inner.workload
    }

    pub(crate) fn client(&self) -> &Edges {
        &self.inner.client
    }

    pub(crate) fn server(&self) -> &Edges {
        &self.inner.server
    }

    pub(crate) fn attempts(&self) -> &crate::stats::AttemptCache {
        &self.inner.attempts
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("workload", &self.inner.workload)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod attempt_tests;
#[cfg(test)]
mod tests;
