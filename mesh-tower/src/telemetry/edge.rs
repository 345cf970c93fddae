//! The label sets of client and server edges, and the calls that find them.

use super::Telemetry;
use super::labels;
use crate::stats::{
    AccessLog, Edge, EdgeRef, Flags, LogLine, Outcome, Recording, UNKNOWN, grpc_status,
};
use crate::trace::{OpenSpan, TraceContext};
use metrics::Label;
use std::sync::Arc;
use tokio::time::Instant;

fn protocol(grpc: bool) -> &'static str {
    if grpc { "grpc" } else { "http" }
}

/// A client edge's labels (`reporter="source"`).
fn client_labels(t: &Telemetry) -> impl Fn(&[Label], &EdgeRef<'_>) -> Vec<Label> + '_ {
    move |local, at| {
        let [host, name, namespace] = labels::service_of_cluster(at.service);
        let mut l = Vec::with_capacity(24);
        l.push(Label::new("reporter", "source"));
        l.extend_from_slice(local);
        let own = at.peer.and(t.workload().principal.as_deref());
        l.push(Label::new(
            "source_principal",
            own.unwrap_or(UNKNOWN).to_owned(),
        ));
        match at.workload.and_then(labels::workload_descriptor) {
            Some(peer) => l.extend(peer.labels(labels::destination_side())),
            None => l.extend(labels::unknown_peer(labels::destination_side(), None)),
        }
        l.push(Label::new(
            "destination_principal",
            at.peer.unwrap_or(UNKNOWN).to_owned(),
        ));
        l.push(Label::new("destination_service", host));
        l.push(Label::new("destination_service_name", name));
        l.push(Label::new("destination_service_namespace", namespace));
        l.push(Label::new("request_protocol", protocol(at.grpc)));
        l.push(Label::new("connection_security_policy", UNKNOWN));
        l
    }
}

/// A server edge's labels (`reporter="destination"`).
fn server_labels(t: &Telemetry) -> impl Fn(&[Label], &EdgeRef<'_>) -> Vec<Label> + '_ {
    move |local, at| {
        let [host, name, namespace] = labels::service_of_host(at.service);
        let mut l = Vec::with_capacity(24);
        l.push(Label::new("reporter", "destination"));
        let caller_ns = at.peer.and_then(labels::spiffe_namespace);
        // The caller's metadata, if it names the namespace its certificate proves.
        let caller = at
            .workload
            .and_then(super::exchange::decode)
            .filter(|w| caller_ns.is_some_and(|ns| ns == w.namespace));
        match caller {
            Some(w) => l.extend(w.labels(labels::source_side())),
            None => l.extend(labels::unknown_peer(labels::source_side(), caller_ns)),
        }
        l.push(Label::new(
            "source_principal",
            at.peer.unwrap_or(UNKNOWN).to_owned(),
        ));
        l.extend_from_slice(local);
        let own = at.peer.and(t.workload().principal.as_deref());
        l.push(Label::new(
            "destination_principal",
            own.unwrap_or(UNKNOWN).to_owned(),
        ));
        l.push(Label::new("destination_service", host));
        l.push(Label::new("destination_service_name", name));
        l.push(Label::new("destination_service_namespace", namespace));
        l.push(Label::new("request_protocol", protocol(at.grpc)));
        let policy = if at.peer.is_some() {
            "mutual_tls"
        } else {
            "none"
        };
        l.push(Label::new("connection_security_policy", policy));
        l
    }
}

/// A call on a client, from `call` to its response.
#[derive(Debug)]
pub(crate) struct ClientCall {
    telemetry: Telemetry,
    start: Instant,
    /// Its access log line, when the workload logs.
    log: Option<Box<LogLine>>,
    grpc: bool,
    /// The gRPC method (gRPC calls only; A66's `grpc.method`).
    method: Option<http::uri::PathAndQuery>,
    /// The channel's target (A66's `grpc.target`).
    target: Option<Arc<str>>,
    /// The call's span (sampled calls of a tracing mesh) and context (traced calls).
    span: Option<Box<OpenSpan>>,
    context: Option<TraceContext>,
    /// gRPC's per-attempt and retry handles of the call's method (gRPC calls only).
    attempts: Option<Arc<crate::stats::AttemptHandles>>,
}

/// Where a client call went, as far as the mesh knows.
struct Dest<'a> {
    service: &'a str,
    endpoint: Option<std::net::SocketAddr>,
    peer: Option<&'a str>,
    workload: Option<&'a str>,
}

const NOWHERE: Dest<'static> = Dest {
    service: UNKNOWN,
    endpoint: None,
    peer: None,
    workload: None,
};

impl ClientCall {
    /// A call of `req` starting now, on a channel to `target` (none: the HTTP client).
    pub(crate) fn start<B>(
        telemetry: &Telemetry,
        req: &mut http::Request<B>,
        target: Option<&Arc<str>>,
        listener_log: Option<&AccessLog>,
    ) -> Self {
        let grpc = crate::grpc::is_grpc(req.headers());
        let (span, context) = match telemetry.tracer() {
            Some(t) => {
                let (span, ctx) = t.client_call(req);
                (span, Some(ctx))
            }
            None => (None, None),
        };
        // Each attempt finds the method's handles in the request (A66).
        let attempts = grpc.then(|| {
            let h = telemetry
                .attempts()
                .get(req.uri().path(), target.map_or("", |t| &**t));
            req.extensions_mut()
                .insert(crate::stats::CallAttempts(h.clone()));
            h
        });
        let start = Instant::now();
        Self {
            span,
            context,
            attempts,
            telemetry: telemetry.clone(),
            start,
            log: (listener_log.or(telemetry.access_log()))
                .map(|sink| LogLine::start(sink, "source", req, start)),
            grpc,
            method: req.uri().path_and_query().filter(|_| grpc).cloned(),
            target: target.cloned(),
        }
    }

    fn recording(mut self, to: Dest<'_>, outcome: Outcome) -> Recording {
        let at = EdgeRef {
            service: to.service,
            endpoint: to.endpoint,
            peer: to.peer,
            workload: to.workload,
            grpc: self.grpc,
            method: self.method.as_ref().map(|m| m.path()),
            target: self.target.as_deref(),
        };
        let edge = self
            .telemetry
            .client()
            .get(&at, client_labels(&self.telemetry));
        if let Some(line) = &mut self.log {
            if line.upstream_cluster.is_none() {
                line.upstream_cluster = (to.service != UNKNOWN).then(|| to.service.into());
            }
            line.upstream_host = to.endpoint;
            line.peer = to.peer.map(str::to_owned);
        }
        Recording::new(edge, self.start, outcome)
            .logging(self.log)
            .tracing(self.span)
    }

    /// The call's trace context, when the mesh traces.
    pub(crate) fn context(&self) -> Option<&TraceContext> {
        self.context.as_ref()
    }

    /// The record of a response (the upstream's, or one the mesh made), to finish when its
    /// body ends.
    pub(crate) fn response<B>(mut self, res: &http::Response<B>) -> Recording {
        let served = res.extensions().get::<crate::ServedBy>();
        let peer = res
            .extensions()
            .get::<crate::tls::PeerIdentity>()
            .and_then(|p| p.spiffe_id());
        let mut flags = Flags::NONE;
        if res
            .extensions()
            .get::<crate::policy::fault::FaultInjected>()
            .is_some()
        {
            flags = flags.with(Flags::FI);
        }
        if res
            .extensions()
            .get::<crate::policy::ratelimit::RateLimited>()
            .is_some()
        {
            flags = flags.with(Flags::RL);
        }
        let to = Dest {
            service: served.map_or(UNKNOWN, |s| &s.cluster),
            endpoint: served.map(|s| s.endpoint),
            peer,
            workload: served.and_then(|s| s.workload.as_deref()),
        };
        let outcome = Outcome {
            code: res.status().as_u16(),
            grpc: grpc_status(res.headers()),
            flags,
        };
        if let (Some(h), Some(r)) = (
            &self.attempts,
            res.extensions().get::<crate::stats::Retried>(),
        ) {
            h.retried(r);
        }
        if let Some(line) = &mut self.log {
            line.response(res.headers(), res.extensions());
            // The cluster's own name (a reference count, not a copy).
            line.upstream_cluster = served.map(|s| s.cluster.clone());
        }
        self.recording(to, outcome)
    }

    /// Records a call whose caller dropped it before its answer: code 0, `DC`.
    pub(crate) fn cancelled(self) {
        let outcome = Outcome {
            code: 0,
            grpc: None,
            flags: Flags::DC,
        };
        self.recording(NOWHERE, outcome).finish(Flags::NONE);
    }

    /// The record of a request the mesh failed with `e`: answered with the gRPC status the
    /// caller sees (code 200) on a gRPC call, else with no answer (code 0, the caller gets the
    /// error).
    pub(crate) fn failed(self, e: &crate::MeshError) -> Recording {
        let grpc = self.grpc;
        if let (Some(h), Some(r)) = (&self.attempts, e.retried()) {
            h.retried(r);
        }
        let to = Dest {
            service: e.cluster().unwrap_or(UNKNOWN),
            endpoint: e.endpoint(),
            ..NOWHERE
        };
        let outcome = Outcome {
            code: if grpc { 200 } else { 0 },
            grpc: grpc.then(|| e.kind().grpc_code()),
            flags: Flags::for_error(e.kind()),
        };
        self.recording(to, outcome)
    }
}

/// An inbound request on a server, from its arrival to its response's head.
#[derive(Debug)]
pub(crate) struct InboundCall {
    edge: Arc<Edge>,
    start: Instant,
    log: Option<Box<LogLine>>,
    span: Option<Box<OpenSpan>>,
    /// A `tracing` span naming the trace, entered while the handler runs, so that the
    /// application's own log lines carry the trace id (traced requests only).
    log_span: Option<tracing::Span>,
    /// The request's gRPC message bytes so far, counted by its body (gRPC calls only).
    rcvd: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl InboundCall {
    /// Finds the edge of `req` on a server of `telemetry`'s workload: the caller's verified
    /// identity ([`PeerInfo`](crate::tls::PeerInfo)), the authority's host, gRPC or not.
    pub(crate) fn start<B>(
        telemetry: &Telemetry,
        req: &mut http::Request<B>,
        metadata: Option<&http::HeaderValue>,
        listener_log: Option<&AccessLog>,
    ) -> Self {
        let span = telemetry.tracer().and_then(|t| t.server(req));
        let log_span = req
            .extensions()
            .get::<TraceContext>()
            .map(|c| tracing::info_span!("request", trace_id = %c.trace_id, span_id = %c.span_id));
        let grpc = crate::grpc::is_grpc(req.headers());
        let info = req.extensions().get::<crate::tls::PeerInfo>();
        let peer = info
            .and_then(|p| p.identity.as_ref())
            .and_then(|i| i.spiffe_id());
        let authority = req
            .uri()
            .authority()
            .map(|a| a.host())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
            })
            .unwrap_or(UNKNOWN);
        // The caller's own description (Istio's metadata exchange): only from an authenticated
        // caller; checked against its certificate when the edge is first made.
        let workload = peer.and(metadata).and_then(|m| m.to_str().ok());
        let at = EdgeRef {
            service: authority,
            endpoint: None,
            peer,
            workload,
            grpc,
            method: grpc.then(|| req.uri().path()),
            target: None,
        };
        let start = Instant::now();
        let log = (listener_log.or(telemetry.access_log())).map(|sink| {
            let mut line = LogLine::start(sink, "destination", req, start);
            line.peer = peer.map(str::to_owned);
            line.remote = info.and_then(|p| p.remote_addr);
            line.local = info.and_then(|p| p.local_addr);
            line
        });
        let edge = telemetry.server().get(&at, server_labels(telemetry));
        edge.call_started();
        Self {
            edge,
            start,
            log,
            span,
            log_span,
            rcvd: grpc.then(Default::default),
        }
    }

    /// Where the request's body counts its gRPC message bytes (gRPC calls only).
    pub(crate) fn rcvd(&self) -> Option<&Arc<std::sync::atomic::AtomicU64>> {
        self.rcvd.as_ref()
    }

    /// The `tracing` span to enter while the handler runs (traced requests).
    pub(crate) fn log_span(&self) -> Option<&tracing::Span> {
        self.log_span.as_ref()
    }

    /// The record of the answer: `code` 0 when the handler failed and there is none.
    pub(crate) fn answered<B>(mut self, code: u16, res: Option<&http::Response<B>>) -> Recording {
        let headers = res.map(http::Response::headers);
        if let (Some(line), Some(res)) = (&mut self.log, res) {
            line.response(res.headers(), res.extensions());
        }
        let outcome = Outcome {
            code,
            grpc: headers.and_then(grpc_status),
            flags: Flags::NONE,
        };
        Recording::new(self.edge, self.start, outcome)
            .logging(self.log)
            .tracing(self.span)
            .counting(self.rcvd)
    }
}
