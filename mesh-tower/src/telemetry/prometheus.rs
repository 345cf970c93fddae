//! A ready Prometheus text endpoint for the mesh's metrics (the `prometheus` feature).
//!
//! [`install`] sets `metrics-exporter-prometheus` as the process's recorder, with Envoy's
//! buckets for Istio's histograms (as real histograms with `_bucket` series, which the Istio
//! dashboards' `histogram_quantile` queries need, not summaries), and returns the handle
//! whose [`render`](PrometheusHandle::render) is the `/metrics` body. Mount it on any HTTP
//! server, or use the `serve` example's `--admin` endpoint.

pub use metrics_exporter_prometheus::{BuildError, PrometheusHandle};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Installs the Prometheus recorder for the whole process (once; a second call fails) and
/// returns the handle that renders it. Call it before building a mesh: the mesh registers its
/// metric handles with the recorder in place at the time.
///
/// ```
/// let handle = mesh_tower::telemetry::prometheus::install().unwrap();
/// metrics::counter!("demo_total").increment(1);
/// assert!(handle.render().contains("demo_total 1"));
/// ```
pub fn install() -> Result<PrometheusHandle, BuildError> {
    builder()?.install_recorder()
}

/// The builder [`install`] uses (Envoy's buckets for `istio_*` histograms, gRPC's for its
/// durations, message sizes and retry counts), to add to or to build a recorder without
/// installing it.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    let mut b = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Prefix("istio_".into()), &super::ENVOY_BUCKETS)?;
    for suffix in ["call.duration", "attempt.duration", "call.retry_delay"] {
        b = b.set_buckets_for_metric(Matcher::Suffix(suffix.into()), &super::LATENCY_BUCKETS)?;
    }
    b = b.set_buckets_for_metric(
        Matcher::Suffix("compressed_message_size".into()),
        &super::SIZE_BUCKETS,
    )?;
    for name in [super::CLIENT_CALL_RETRIES, super::CLIENT_CALL_HEDGES] {
        b = b.set_buckets_for_metric(Matcher::Full(name.into()), &super::COUNT_BUCKETS)?;
    }
    Ok(b)
}

/// The text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
