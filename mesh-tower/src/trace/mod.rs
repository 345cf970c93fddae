//! Distributed tracing: a span per call, per attempt and per served request, linked across
//! processes by W3C `traceparent` (and B3, which Zipkin users have), exported by a
//! [`SpanSink`] (the xDS client crate has an OTLP one).
//!
//! Why in the mesh: a sidecar traces every hop without the application's help; in-process,
//! the mesh is the only part that sees each attempt of a retried call, the endpoint each went
//! to and how each ended. So the mesh opens the spans (gRPC's A72 names: `Sent.<service>.<method>`
//! for a call, `Attempt.<service>.<method>` for each attempt, `Recv.<service>.<method>` on the
//! server) and carries the context in headers; the application only passes the
//! [`TraceContext`] of the request it serves into the requests it makes, to keep one trace.
//!
//! Cost: without a tracer nothing happens on the request path (one empty extension lookup
//! per attempt). With one, an unsampled request gets its context propagated (a header) and
//! no span; a sampled one allocates its spans, handed to the sink when they end; the sink
//! must not block (the OTLP exporter queues and drops, counted, when its queue is full).

mod propagation;
mod span;

pub use propagation::Propagation;
pub use span::{AttrValue, SpanKind, SpanRecord};
pub(crate) use span::{CallTrace, OpenSpan};

use std::sync::Arc;

/// A trace id (16 bytes, never all zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id (8 bytes, never all zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// Lowercase hex of `bytes` into `out` (twice as long): ids go into headers on every traced
/// attempt, so without `fmt`'s per-byte machinery.
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

impl TraceId {
    /// Its 32 hex digits.
    pub(crate) fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.0);
        out
    }
}

impl SpanId {
    /// Its 16 hex digits.
    pub(crate) fn hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        hex_into(&mut out, &self.0);
        out
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

impl TraceId {
    fn random() -> Self {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }
}

impl SpanId {
    pub(crate) fn random() -> Self {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }
}

/// The trace a request belongs to and the span it is in: on a served request, the server's
/// span (pass it on, as an extension of the requests the handler makes, to keep one trace);
/// on a response from the mesh, the call's span.
///
/// ```
/// use mesh_tower::trace::TraceContext;
/// let ctx = TraceContext::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
/// assert!(ctx.sampled);
/// assert_eq!(ctx.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
/// # let mut outgoing = http::Request::new(());
/// // In a handler: the requests it makes continue the trace.
/// outgoing.extensions_mut().insert(ctx);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span: the parent of spans started from this context.
    pub span_id: SpanId,
    /// Whether the trace is recorded.
    pub sampled: bool,
    /// W3C `tracestate`, passed on unchanged.
    pub tracestate: Option<http::HeaderValue>,
}

impl TraceContext {
    /// Parses a W3C `traceparent` value.
    pub fn from_traceparent(v: &str) -> Option<Self> {
        propagation::parse_traceparent(v)
    }

    /// The caller's context in request headers, as a server reads it: W3C `traceparent`
    /// (with `tracestate`), else B3 (the `b3` header, then `x-b3-*`).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        propagation::extract(headers)
    }

    /// The `traceparent` value for this context.
    pub fn traceparent(&self) -> String {
        String::from_utf8(self.traceparent_bytes().to_vec()).unwrap_or_default()
    }

    /// `00-<trace>-<span>-<flags>`, on the stack.
    pub(crate) fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        out[3..35].copy_from_slice(&self.trace_id.hex());
        out[36..52].copy_from_slice(&self.span_id.hex());
        if self.sampled {
            out[54] = b'1';
        }
        out
    }
}

/// Which calls are recorded: a request continuing a trace follows its caller's choice
/// (parent-based, as OpenTelemetry's default); a new trace is recorded with this ratio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Every new trace.
    AlwaysOn,
    /// No new trace (continued ones still follow their caller).
    AlwaysOff,
    /// This share of new traces (0 to 1), by trace id, so every process of a trace agrees.
    Ratio(f64),
}

impl Sampler {
    fn sample(&self, trace: &TraceId) -> bool {
        match *self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::Ratio(r) => {
                // OpenTelemetry's TraceIdRatioBased: the low 8 bytes against the ratio.
                let low = u64::from_be_bytes(trace.0[8..].try_into().unwrap_or_default());
                (low >> 1) < (r.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
            }
        }
    }
}

/// Where finished spans go. `record` is called on the request path: it must not block.
pub trait SpanSink: Send + Sync + 'static {
    /// Takes a finished, sampled span.
    fn record(&self, span: SpanRecord);
}

/// A mesh's tracer: the sampler, the propagation formats and the sink. Cheap to clone.
///
/// ```
/// use mesh_tower::trace::{Propagation, Sampler, SpanRecord, SpanSink, Tracer};
/// use std::sync::{Arc, Mutex};
/// #[derive(Default)]
/// struct Spans(Mutex<Vec<SpanRecord>>);
/// impl SpanSink for Spans {
///     fn record(&self, span: SpanRecord) { self.0.lock().unwrap().push(span) }
/// }
/// let tracer = Tracer::new(Sampler::Ratio(0.01), Arc::new(Spans::default()))
///     .with_propagation(Propagation::W3C_AND_B3);
/// let telemetry = mesh_tower::telemetry::Telemetry::new(Default::default()).with_tracer(tracer);
/// # let _ = telemetry;
/// ```
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

struct Inner {
    sampler: Sampler,
    propagation: Propagation,
    sink: Arc<dyn SpanSink>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sampler", &self.inner.sampler)
            .field("propagation", &self.inner.propagation)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer sampling new traces with `sampler`, handing spans to `sink`, propagating W3C
    /// `traceparent` (B3 too with [`with_propagation`](Self::with_propagation)).
    pub fn new(sampler: Sampler, sink: Arc<dyn SpanSink>) -> Self {
        Self {
            inner: Arc::new(Inner {
                sampler,
                propagation: Propagation::W3C,
                sink,
            }),
        }
    }

    /// The same, propagating `p` (extraction always understands both W3C and B3).
    pub fn with_propagation(self, p: Propagation) -> Self {
        Self {
            inner: Arc::new(Inner {
                sampler: self.inner.sampler,
                propagation: p,
                sink: self.inner.sink.clone(),
            }),
        }
    }

    /// A context for a new span under `parent` (none: a new trace, sampled by the sampler).
    fn child_of(&self, parent: Option<&TraceContext>) -> (TraceContext, Option<SpanId>) {
        match parent {
            Some(p) => (
                TraceContext {
                    trace_id: p.trace_id,
                    span_id: SpanId::random(),
                    sampled: p.sampled,
                    tracestate: p.tracestate.clone(),
                },
                Some(p.span_id),
            ),
            None => {
                let trace_id = TraceId::random();
                let sampled = self.inner.sampler.sample(&trace_id);
                (
                    TraceContext {
                        trace_id,
                        span_id: SpanId::random(),
                        sampled,
                        tracestate: None,
                    },
                    None,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
