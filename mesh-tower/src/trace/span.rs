//! Spans: opened when a call, an attempt or a served request starts, handed to the sink when
//! it ends.

use super::{SpanId, TraceContext, TraceId, Tracer, propagation};
use std::net::SocketAddr;
use std::time::SystemTime;

/// What a span says about its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A call or an attempt made by this process.
    Client,
    /// A request this process served.
    Server,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// A number.
    Int(i64),
    /// A flag.
    Bool(bool),
}

/// A finished span.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent (none: the trace's root).
    pub parent_span_id: Option<SpanId>,
    /// gRFC A72's names for gRPC (`Sent.`/`Attempt.`/`Recv.<service>.<method>`); `<METHOD>
    /// <authority or path>` for HTTP.
    pub name: String,
    /// Client or server.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes (OpenTelemetry's names where there is one).
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A span in progress.
pub(crate) struct OpenSpan {
    tracer: Tracer,
    ctx: TraceContext,
    parent: Option<SpanId>,
    name: String,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<(&'static str, AttrValue)>,
}

impl std::fmt::Debug for OpenSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSpan")
            .field("name", &self.name)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl OpenSpan {
    /// A span of `ctx` (sampled only: an unsampled one is never made, nor its name).
    fn start(
        tracer: &Tracer,
        ctx: &TraceContext,
        parent: Option<SpanId>,
        name: impl FnOnce() -> String,
        kind: SpanKind,
    ) -> Option<Box<Self>> {
        ctx.sampled.then(|| {
            Box::new(Self {
                tracer: tracer.clone(),
                ctx: ctx.clone(),
                parent,
                name: name(),
                kind,
                start: SystemTime::now(),
                attributes: Vec::with_capacity(6),
            })
        })
    }

    /// Adds an attribute.
    pub(crate) fn attr(&mut self, key: &'static str, value: AttrValue) {
        self.attributes.push((key, value));
    }

    /// Ends it: `code` is the HTTP status (0: no answer), `grpc` the gRPC status, `error` why
    /// the mesh failed it.
    pub(crate) fn end(mut self, code: u16, grpc: Option<u16>, error: Option<String>) {
        if code != 0 {
            self.attr("http.response.status_code", AttrValue::Int(code.into()));
        }
        if let Some(g) = grpc {
            self.attr("rpc.grpc.status_code", AttrValue::Int(g.into()));
        }
        let failed = match (self.kind, grpc) {
            (_, Some(g)) => g != 0,
            (SpanKind::Client, None) => code == 0 || code >= 400,
            (SpanKind::Server, None) => code == 0 || code >= 500,
        };
        let error = error.or_else(|| {
            failed.then(|| match grpc {
                Some(g) => format!("gRPC status {g}"),
                None if code == 0 => "no response".to_owned(),
                None => format!("HTTP {code}"),
            })
        });
        let s = self;
        s.tracer.inner.sink.record(SpanRecord {
            trace_id: s.ctx.trace_id,
            span_id: s.ctx.span_id,
            parent_span_id: s.parent,
            name: s.name,
            kind: s.kind,
            start: s.start,
            end: SystemTime::now(),
            attributes: s.attributes,
            error,
        });
    }
}

/// The name of a request's span: A72's `<prefix>.<service>.<method>` for gRPC, else
/// `<METHOD> <what>`.
fn name<B>(prefix: &str, req: &http::Request<B>, what: &str) -> String {
    if crate::request::is_grpc(req.headers()) {
        let method = req.uri().path().trim_start_matches('/').replace('/', ".");
        format!("{prefix}.{method}")
    } else {
        format!("{} {what}", req.method())
    }
}

fn authority<B>(req: &http::Request<B>) -> &str {
    crate::request::authority(req).unwrap_or("-")
}

/// A call's trace, as its attempts find it (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct CallTrace {
    ctx: TraceContext,
    tracer: Tracer,
}

impl Tracer {
    /// Starts the span of a client call: a child of the [`TraceContext`] the application put
    /// in `req` (or of the `traceparent`/B3 headers it set), else a new trace. Returns the
    /// call's context, and its span when sampled.
    ///
    /// A sampled call records its trace in `req` for its attempts, each a span of its own
    /// whose context goes out in that attempt's headers. An unsampled one is propagated
    /// here, once, for all its attempts: nobody records the span its `traceparent` names,
    /// so a span id per attempt would tell nobody anything, and the request path is spared
    /// an extension and a context per attempt (most calls are unsampled).
    pub(crate) fn client_call<B>(
        &self,
        req: &mut http::Request<B>,
    ) -> (Option<Box<OpenSpan>>, TraceContext) {
        let parent = match req.extensions().get::<TraceContext>() {
            Some(p) => Some(p.clone()),
            None => propagation::extract(req.headers()),
        };
        let (ctx, parent) = self.child_of(parent.as_ref());
        if !ctx.sampled {
            propagation::inject(self.inner.propagation, &ctx, parent, req.headers_mut());
            return (None, ctx);
        }
        let span = OpenSpan::start(
            self,
            &ctx,
            parent,
            || name("Sent", req, authority(req)),
            SpanKind::Client,
        )
        .map(|mut s| {
            s.attr(
                "http.request.method",
                AttrValue::Str(req.method().to_string()),
            );
            s
        });
        req.extensions_mut().insert(CallTrace {
            ctx: ctx.clone(),
            tracer: self.clone(),
        });
        (span, ctx)
    }

    /// Starts the span of a served request: a child of the caller's context in its headers,
    /// else a new trace. Puts the span's [`TraceContext`] in `req` for the handler.
    pub(crate) fn server<B>(&self, req: &mut http::Request<B>) -> Option<Box<OpenSpan>> {
        let parent = propagation::extract(req.headers());
        let (ctx, parent) = self.child_of(parent.as_ref());
        let span = OpenSpan::start(
            self,
            &ctx,
            parent,
            || name("Recv", req, req.uri().path()),
            SpanKind::Server,
        )
        .map(|mut s| {
            s.attr(
                "http.request.method",
                AttrValue::Str(req.method().to_string()),
            );
            s.attr("url.path", AttrValue::Str(req.uri().path().to_owned()));
            s
        });
        req.extensions_mut().insert(ctx);
        span
    }
}

impl CallTrace {
    /// Starts an attempt of the call to `endpoint` of `cluster`: its context goes out in
    /// `req`'s headers (the next hop's parent is the attempt), its span (if sampled) comes
    /// back.
    pub(crate) fn attempt<B>(
        &self,
        req: &mut http::Request<B>,
        cluster: &str,
        endpoint: SocketAddr,
    ) -> Option<Box<OpenSpan>> {
        let (ctx, parent) = self.tracer.child_of(Some(&self.ctx));
        propagation::inject(
            self.tracer.inner.propagation,
            &ctx,
            parent,
            req.headers_mut(),
        );
        let mut span = OpenSpan::start(
            &self.tracer,
            &ctx,
            parent,
            || name("Attempt", req, authority(req)),
            SpanKind::Client,
        )?;
        let attempt = req
            .headers()
            .get("x-envoy-attempt-count")
            .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
            .unwrap_or(1);
        span.attr("previous-rpc-attempts", AttrValue::Int(attempt - 1));
        span.attr("transparent-retry", AttrValue::Bool(false));
        span.attr("server.address", AttrValue::Str(endpoint.to_string()));
        span.attr("upstream_cluster", AttrValue::Str(cluster.to_owned()));
        Some(span)
    }
}
