//! Trace context in headers: W3C Trace Context (`traceparent`, `tracestate`) and Zipkin's B3
//! (`b3` single header, `x-b3-*` headers). Extraction understands all; injection writes what
//! the tracer's [`Propagation`] says.

use super::{SpanId, TraceContext, TraceId};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Which headers carry the context out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Propagation {
    /// W3C `traceparent` and `tracestate`.
    pub w3c: bool,
    /// B3 multi-header (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`),
    /// what Envoy's Zipkin tracer and Istio's sidecars send.
    pub b3: bool,
}

impl Propagation {
    /// W3C only (the default, as OpenTelemetry's `tracecontext`: one header per hop).
    pub const W3C: Self = Self {
        w3c: true,
        b3: false,
    };
    /// W3C and B3 (for peers that read only B3: Envoy's Zipkin tracer, older sidecars).
    pub const W3C_AND_B3: Self = Self {
        w3c: true,
        b3: true,
    };

    /// OpenTelemetry's `OTEL_PROPAGATORS` (`tracecontext`, `b3`, `b3multi`, comma separated).
    pub fn from_otel(list: &str) -> Result<Self, String> {
        let mut p = Self {
            w3c: false,
            b3: false,
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "tracecontext" => p.w3c = true,
                "b3" | "b3multi" => p.b3 = true,
                "baggage" | "none" => {}
                other => return Err(format!("propagator {other:?} is not supported")),
            }
        }
        Ok(p)
    }
}

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A B3 trace id: 32 or 16 hex digits (the short form is the low half).
fn b3_trace(s: &str) -> Option<TraceId> {
    match s.len() {
        32 => hex::<16>(s).map(TraceId),
        16 => hex::<8>(s).map(|low| {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            TraceId(id)
        }),
        _ => None,
    }
    .filter(|t| t.0 != [0; 16])
}

pub(crate) fn parse_traceparent(v: &str) -> Option<TraceContext> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four fields; a later version may add more (W3C: parse the first
    // four), ff is invalid.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    hex::<1>(version)?;
    let trace_id = TraceId(hex::<16>(trace)?);
    let span_id = SpanId(hex::<8>(span)?);
    let flags = hex::<1>(flags)?[0];
    if trace_id.0 == [0; 16] || span_id.0 == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        tracestate: None,
    })
}

/// The caller's context from `headers`: W3C first, then B3 (single, then multi).
pub(crate) fn extract(headers: &HeaderMap) -> Option<TraceContext> {
    let text = |h: &HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(mut ctx) = text(&TRACEPARENT).and_then(parse_traceparent) {
        ctx.tracestate = headers.get(&TRACESTATE).cloned();
        return Some(ctx);
    }
    if let Some(b3) = text(&B3) {
        // traceid-spanid[-sampled[-parentspanid]]
        let mut p = b3.split('-');
        let trace_id = b3_trace(p.next()?)?;
        let span_id = SpanId(hex::<8>(p.next()?)?);
        let sampled = !matches!(p.next(), Some("0"));
        return Some(TraceContext {
            trace_id,
            span_id,
            sampled,
            tracestate: None,
        });
    }
    let trace_id = b3_trace(text(&B3_TRACE)?)?;
    let span_id = SpanId(hex::<8>(text(&B3_SPAN)?)?);
    let sampled = text(&B3_FLAGS) == Some("1") || !matches!(text(&B3_SAMPLED), Some("0" | "false"));
    Some(TraceContext {
        trace_id,
        span_id,
        sampled,
        tracestate: None,
    })
}

/// `s` in a shared buffer: the ids of many requests are cut from one 4 KiB block per thread
/// (each piece holds the block by reference count until its header is sent), so a header value
/// costs no allocation of its own. The block is replaced when used up; a piece kept long (a
/// request held by the application) keeps at most its block alive.
fn slab_copy(s: &[u8]) -> bytes::Bytes {
    use std::cell::RefCell;
    const BLOCK: usize = 4096;
    thread_local!(static SLAB: RefCell<bytes::BytesMut> = RefCell::new(bytes::BytesMut::new()));
    SLAB.with_borrow_mut(|slab| {
        if slab.capacity() - slab.len() < s.len() {
            *slab = bytes::BytesMut::with_capacity(BLOCK.max(s.len()));
        }
        slab.extend_from_slice(s);
        slab.split().freeze()
    })
}

/// Writes `ctx` (the span the next hop continues; `parent` is its own parent, for B3).
pub(crate) fn inject(
    p: Propagation,
    ctx: &TraceContext,
    parent: Option<SpanId>,
    headers: &mut HeaderMap,
) {
    // Never indexed in HPACK: a fresh id per request would only churn both ends' dynamic
    // tables (HTTP/2 encodes a sensitive value as a literal that is never added).
    let value = |s: &[u8]| {
        let mut v = HeaderValue::from_maybe_shared(slab_copy(s)).expect("hex is a header value");
        v.set_sensitive(true);
        v
    };
    if p.w3c {
        headers.insert(TRACEPARENT.clone(), value(&ctx.traceparent_bytes()));
        match &ctx.tracestate {
            Some(ts) => {
                headers.insert(TRACESTATE.clone(), ts.clone());
            }
            None => {
                headers.remove(&TRACESTATE);
            }
        }
    }
    if p.b3 {
        headers.remove(&B3);
        headers.insert(B3_TRACE.clone(), value(&ctx.trace_id.hex()));
        headers.insert(B3_SPAN.clone(), value(&ctx.span_id.hex()));
        match parent {
            Some(parent) => {
                headers.insert(B3_PARENT.clone(), value(&parent.hex()));
            }
            None => {
                headers.remove(&B3_PARENT);
            }
        }
        headers.insert(
            B3_SAMPLED.clone(),
            HeaderValue::from_static(if ctx.sampled { "1" } else { "0" }),
        );
    }
}
