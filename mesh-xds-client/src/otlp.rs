//! Spans out over OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`),
//! to an OpenTelemetry Collector, Jaeger, Tempo or anything else that receives OTLP.
//!
//! Why here and written out: the mesh's spans are plain records ([`SpanRecord`]); sending them
//! needs the OTLP messages and a gRPC client, which this crate already has (tonic, prost).
//! OpenTelemetry's SDK and exporter crates would add their own pipeline, runtime glue and a
//! second copy of what the mesh already decides (sampling, context); the eight messages of
//! the stable OTLP trace protocol are written out below instead, field numbers as in
//! `opentelemetry/proto/trace/v1/trace.proto`.
//!
//! The request path never waits on the exporter: [`SpanSink::record`] puts the span in a
//! bounded queue or, when it is full (a receiver down or slow), drops it and counts it
//! ([`OtlpExporter::dropped`], metric `mesh_trace_spans_dropped_total`). A task sends batches
//! of up to 512 spans, at least every 200 ms while spans come; a batch the receiver refuses
//! is dropped and counted too, and the next one is tried.

use mesh_tower::trace::{AttrValue, SpanKind, SpanRecord, SpanSink};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

const QUEUE: usize = 4096;
const BATCH: usize = 512;
const LINGER: Duration = Duration::from_millis(200);

/// OTLP's trace messages (the subset the mesh sends).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub(super) resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ExportTraceServiceResponse {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub(super) resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub(super) scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub(super) attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub(super) scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub(super) spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub(super) trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub(super) parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub(super) name: String,
        /// 2 server, 3 client.
        #[prost(int32, tag = "6")]
        pub(super) kind: i32,
        #[prost(fixed64, tag = "7")]
        pub(super) start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub(super) end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub(super) attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub(super) status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Status {
        #[prost(string, tag = "2")]
        pub(super) message: String,
        /// 1 ok, 2 error.
        #[prost(int32, tag = "3")]
        pub(super) code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct KeyValue {
        #[prost(string, tag = "1")]
        pub(super) key: String,
        #[prost(message, optional, tag = "2")]
        pub(super) value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3")]
        pub(super) value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
    }
}

/// Exports the mesh's spans over OTLP/gRPC. Cheap to share; the export task stops when the
/// last handle is dropped.
///
/// ```no_run
/// # async fn f() -> Result<(), mesh_xds_client::ClientError> {
/// use mesh_tower::trace::{Sampler, Tracer};
/// let exporter = mesh_xds_client::otlp::OtlpExporter::start(
///     "http://127.0.0.1:4317",
///     &[("service.name", "checkout")],
/// )?;
/// let tracer = Tracer::new(Sampler::Ratio(0.01), exporter);
/// # let _ = tracer;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct OtlpExporter {
    tx: mpsc::Sender<SpanRecord>,
    dropped: Arc<AtomicU64>,
}

impl OtlpExporter {
    /// Starts exporting to `endpoint` (`http://host:4317`), the spans' resource described by
    /// `resource` (`service.name`, …). Spawns its task on the current tokio runtime.
    pub fn start(
        endpoint: &str,
        resource: &[(&str, &str)],
    ) -> Result<Arc<Self>, crate::ClientError> {
        let bad =
            |e: String| crate::ClientError::Config(format!("OTLP endpoint {endpoint:?}: {e}"));
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let resource = pb::Resource {
            attributes: resource
                .iter()
                .map(|(k, v)| kv(k, AttrValue::Str((*v).to_owned())))
                .collect(),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(rx, channel, resource, dropped.clone()));
        Ok(Arc::new(Self { tx, dropped }))
    }

    /// Spans dropped so far (queue full, or a batch the receiver did not take).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl SpanSink for OtlpExporter {
    fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            count_dropped(&self.dropped, 1);
        }
    }
}

fn count_dropped(dropped: &AtomicU64, n: u64) {
    dropped.fetch_add(n, Ordering::Relaxed);
    metrics::counter!("mesh_trace_spans_dropped_total").increment(n);
}

async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    channel: tonic::transport::Channel,
    resource: pb::Resource,
    dropped: Arc<AtomicU64>,
) {
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    while let Some(first) = rx.recv().await {
        let mut batch = vec![span(first)];
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(s)) => batch.push(span(s)),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let req = pb::ExportTraceServiceRequest {
            resource_spans: vec![pb::ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![pb::ScopeSpans {
                    scope: Some(pb::InstrumentationScope {
                        name: "mesh".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans: batch,
                }],
            }],
        };
        let codec = tonic_prost::ProstCodec::<
            pb::ExportTraceServiceRequest,
            pb::ExportTraceServiceResponse,
        >::default();
        let sent = match grpc.ready().await {
            Ok(()) => grpc
                .unary(tonic::Request::new(req), path.clone(), codec)
                .await
                .map(drop)
                .map_err(|s| s.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            count_dropped(&dropped, n);
            tracing::debug!(error = %e, spans = n, "OTLP export failed: spans dropped");
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, v: AttrValue) -> pb::KeyValue {
    let value = match v {
        AttrValue::Str(s) => pb::Value::String(s),
        AttrValue::Int(i) => pb::Value::Int(i),
        AttrValue::Bool(b) => pb::Value::Bool(b),
    };
    pb::KeyValue {
        key: key.to_owned(),
        value: Some(pb::AnyValue { value: Some(value) }),
    }
}

fn span(s: SpanRecord) -> pb::Span {
    pb::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        name: s.name,
        kind: match s.kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
        start_time_unix_nano: nanos(s.start),
        end_time_unix_nano: nanos(s.end),
        attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(match s.error {
            Some(message) => pb::Status { message, code: 2 },
            None => pb::Status {
                message: String::new(),
                code: 1,
            },
        }),
    }
}
