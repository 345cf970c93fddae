//! The recording core of [`crate::telemetry`]: edges, their outcomes' cached metric handles,
//! and a request's record in progress.
//!
//! Why a module of its own, below everything else: the response body carries a request's
//! [`Recording`] to the end of its stream, so this must not depend on anything that depends
//! on the body (routing, clusters, TLS); the label sets that need those live in
//! `telemetry`, which hands this module finished labels.

mod attempt;
mod filter;
#[cfg(test)]
mod filter_tests;
mod format;
mod grpc;
mod line;
mod log;
mod record;
mod write;

pub use crate::error::Retried;
pub(crate) use attempt::{
    AttemptCache, AttemptHandles, AttemptRecord, CallAttempts, MessageSizes, SentMessages,
};
pub use attempt::{
    CLIENT_ATTEMPT_DURATION, CLIENT_ATTEMPT_RCVD, CLIENT_ATTEMPT_SENT, CLIENT_ATTEMPT_STARTED,
    CLIENT_CALL_HEDGES, CLIENT_CALL_RETRIES, CLIENT_CALL_RETRY_DELAY, COUNT_BUCKETS, SIZE_BUCKETS,
};
pub use format::LogFormat;
pub use grpc::{
    CLIENT_CALL_DURATION, LATENCY_BUCKETS, SERVER_CALL_DURATION, SERVER_CALL_RCVD,
    SERVER_CALL_SENT, SERVER_CALL_STARTED,
};
pub(crate) use line::LogLine;
pub use log::AccessLog;
pub(crate) use record::Recording;
pub(crate) use write::rfc3339;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata};
use std::collections::HashMap;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// `istio_requests_total`: requests, by every label.
pub const REQUESTS_TOTAL: &str = "istio_requests_total";
/// `istio_request_duration_milliseconds`: from the request to the end of its response stream.
pub const REQUEST_DURATION: &str = "istio_request_duration_milliseconds";
/// `istio_response_bytes`: response body bytes.
pub const RESPONSE_BYTES: &str = "istio_response_bytes";

/// Istio's metadata exchange headers (see `telemetry::exchange`): the caller's workload (a
/// base64 `google.protobuf.Struct`) and its id.
pub(crate) static PEER_METADATA: http::HeaderName =
    http::HeaderName::from_static("x-envoy-peer-metadata");
pub(crate) static PEER_METADATA_ID: http::HeaderName =
    http::HeaderName::from_static("x-envoy-peer-metadata-id");

/// The value of a label nothing tells.
pub(crate) const UNKNOWN: &str = "unknown";

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// More distinct edges than this (a server's callers and authorities are the caller's to
/// choose) share one edge whose service is `unknown`, so a hostile caller cannot grow the
/// label sets without bound.
pub(crate) const MAX_EDGES: usize = 4096;
/// Likewise for outcomes on one edge (an upstream chooses its status codes): beyond this, an
/// outcome's handles are registered for each request instead of cached.
const MAX_OUTCOMES: usize = 256;

/// What a request ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) code: u16,
    pub(crate) grpc: Option<u16>,
    pub(crate) flags: Flags,
}

struct Handles {
    requests: Counter,
    duration: Histogram,
    bytes: Histogram,
    /// gRPC's call duration (A66), on gRPC edges.
    call: Option<Histogram>,
    /// gRPC's sent and received message sizes per call (A66), on a server's gRPC edges.
    sizes: Option<(Histogram, Histogram)>,
}

impl Handles {
    fn new(edge: &Edge, o: Outcome) -> Handles {
        let mut sizes = None;
        let call = edge.call.as_ref().map(|c| {
            let mut labels = c.labels.clone();
            labels.push(Label::new("grpc.status", grpc::status_name(o.grpc)));
            metrics::with_recorder(|r| {
                if c.name == SERVER_CALL_DURATION {
                    let h =
                        |name| r.register_histogram(&Key::from_parts(name, labels.clone()), &META);
                    sizes = Some((h(SERVER_CALL_SENT), h(SERVER_CALL_RCVD)));
                }
                r.register_histogram(&Key::from_parts(c.name, labels), &META)
            })
        });
        let mut labels = edge.labels.to_vec();
        labels.push(Label::new("response_code", o.code.to_string()));
        labels.push(Label::new(
            "grpc_response_status",
            o.grpc.map_or_else(String::new, |g| g.to_string()),
        ));
        labels.push(Label::new("response_flags", o.flags.as_str()));
        let key = |name: &'static str| Key::from_parts(name, labels.clone());
        metrics::with_recorder(|r| Handles {
            requests: r.register_counter(&key(REQUESTS_TOTAL), &META),
            duration: r.register_histogram(&key(REQUEST_DURATION), &META),
            bytes: r.register_histogram(&key(RESPONSE_BYTES), &META),
            call,
            sizes,
        })
    }

    fn record(&self, millis: f64, bytes: u64, messages: Option<(u64, u64)>) {
        self.requests.increment(1);
        self.duration.record(millis);
        self.bytes.record(bytes as f64);
        if let Some(call) = &self.call {
            call.record(millis / 1000.0);
        }
        if let (Some((sent, rcvd)), Some((s, r))) = (&self.sizes, messages) {
            sent.record(s as f64);
            rcvd.record(r as f64);
        }
    }
}

/// What an edge's labels were computed from, to tell a hash collision from a hit.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    service: Box<str>,
    endpoint: Option<SocketAddr>,
    peer: Option<Box<str>>,
    workload: Option<Box<str>>,
    grpc: bool,
    method: Option<Box<str>>,
    target: Option<Box<str>>,
}

/// One edge: its labels and the handles of each outcome seen on it.
pub(crate) struct Edge {
    parts: Parts,
    labels: Vec<Label>,
    /// gRPC's call metric (A66), for gRPC calls.
    call: Option<grpc::CallLabels>,
    outcomes: RwLock<Vec<(Outcome, Handles)>>,
}

impl Edge {
    /// Counts a gRPC call arriving on this (server) edge (`grpc.server.call.started`).
    pub(crate) fn call_started(&self) {
        if let Some(c) = self.call.as_ref().and_then(|c| c.started.as_ref()) {
            c.increment(1);
        }
    }

    /// Records a request that ended in `o` after `millis` with `bytes` of response body
    /// (`messages`: a gRPC server call's sent and received message bytes).
    fn record(&self, o: Outcome, millis: f64, bytes: u64, messages: Option<(u64, u64)>) {
        {
            let outcomes = self.outcomes.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, h)) = outcomes.iter().find(|(k, _)| *k == o) {
                h.record(millis, bytes, messages);
                return;
            }
        }
        let handles = Handles::new(self, o);
        handles.record(millis, bytes, messages);
        let mut outcomes = self.outcomes.write().unwrap_or_else(|e| e.into_inner());
        if outcomes.len() < MAX_OUTCOMES && !outcomes.iter().any(|(k, _)| *k == o) {
            outcomes.push((o, handles));
        }
    }
}

/// The edges of one side (client or server) of a workload.
pub(crate) struct Edges {
    local: Vec<Label>,
    /// gRPC's call duration metric of this side (A66).
    call_metric: &'static str,
    edges: RwLock<HashMap<u64, Arc<Edge>>>,
    /// The shared edges of requests beyond [`MAX_EDGES`] (service `unknown`), by what is left
    /// of their inputs: cached too, so that a flood of new authorities costs no label
    /// building per request.
    overflow: RwLock<HashMap<u64, Arc<Edge>>>,
}

/// An edge's inputs, borrowed (looking an edge up allocates nothing).
pub(crate) struct EdgeRef<'a> {
    /// The cluster (client) or the authority's host (server).
    pub(crate) service: &'a str,
    pub(crate) endpoint: Option<SocketAddr>,
    /// The peer's SPIFFE ID, with mTLS.
    pub(crate) peer: Option<&'a str>,
    /// The peer's Istio workload descriptor, when discovery gave one (client side).
    pub(crate) workload: Option<&'a str>,
    pub(crate) grpc: bool,
    /// The gRPC method's path (gRPC calls only).
    pub(crate) method: Option<&'a str>,
    /// The channel's target (client only).
    pub(crate) target: Option<&'a str>,
}

impl EdgeRef<'_> {
    fn hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        h.write(self.service.as_bytes());
        h.write_u8(0xff);
        if let Some(e) = self.endpoint {
            std::hash::Hash::hash(&e, &mut h);
        }
        h.write_u8(0xfe);
        if let Some(p) = self.peer {
            h.write(p.as_bytes());
        }
        h.write_u8(0xfd);
        if let Some(w) = self.workload {
            h.write(w.as_bytes());
        }
        h.write_u8(self.grpc as u8);
        if let Some(m) = self.method {
            h.write(m.as_bytes());
        }
        h.write_u8(0xfc);
        if let Some(t) = self.target {
            h.write(t.as_bytes());
        }
        h.finish()
    }

    fn matches(&self, p: &Parts) -> bool {
        *p.service == *self.service
            && p.endpoint == self.endpoint
            && p.peer.as_deref() == self.peer
            && p.workload.as_deref() == self.workload
            && p.grpc == self.grpc
            && p.method.as_deref() == self.method
            && p.target.as_deref() == self.target
    }

    fn parts(&self) -> Parts {
        Parts {
            service: self.service.into(),
            endpoint: self.endpoint,
            peer: self.peer.map(Into::into),
            workload: self.workload.map(Into::into),
            grpc: self.grpc,
            method: self.method.map(Into::into),
            target: self.target.map(Into::into),
        }
    }
}

impl Edges {
    /// The edges of one side: `local` labels this workload, `call_metric` is gRPC's call
    /// duration on this side.
    pub(crate) fn new(local: Vec<Label>, call_metric: &'static str) -> Self {
        Self {
            local,
            call_metric,
            edges: RwLock::new(HashMap::new()),
            overflow: RwLock::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.edges.read().unwrap().len()
    }

    #[cfg(test)]
    pub(crate) fn overflow_len(&self) -> usize {
        self.overflow.read().unwrap().len()
    }

    /// The edge for `at`, its labels built by `labels` (given the local side's) the first time.
    pub(crate) fn get(
        &self,
        at: &EdgeRef<'_>,
        labels: impl Fn(&[Label], &EdgeRef<'_>) -> Vec<Label>,
    ) -> Arc<Edge> {
        let full = {
            let edges = self.edges.read().unwrap_or_else(|e| e.into_inner());
            if let Some(edge) = lookup(&edges, at) {
                return edge;
            }
            edges.len() >= MAX_EDGES
        };
        if full {
            let shared = EdgeRef {
                service: UNKNOWN,
                endpoint: None,
                peer: at.peer,
                workload: None,
                grpc: at.grpc,
                method: None,
                target: at.target,
            };
            return self.get_or_make(&self.overflow, &shared, labels, usize::MAX);
        }
        self.get_or_make(&self.edges, at, labels, MAX_EDGES)
    }

    /// The edge for `at` in `map`, made (and kept while `map` holds fewer than `cap`) if new.
    fn get_or_make(
        &self,
        map: &RwLock<HashMap<u64, Arc<Edge>>>,
        at: &EdgeRef<'_>,
        labels: impl Fn(&[Label], &EdgeRef<'_>) -> Vec<Label>,
        cap: usize,
    ) -> Arc<Edge> {
        if let Some(edge) = lookup(&map.read().unwrap_or_else(|e| e.into_inner()), at) {
            return edge;
        }
        let mut edges = map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(edge) = lookup(&edges, at) {
            return edge;
        }
        let edge = Arc::new(Edge {
            parts: at.parts(),
            labels: labels(&self.local, at),
            call: at
                .method
                .map(|m| grpc::CallLabels::new(self.call_metric, m, at.target)),
            outcomes: RwLock::new(Vec::new()),
        });
        let hash = at.hash();
        if edges.len() < cap && !edges.contains_key(&hash) {
            edges.insert(hash, edge.clone());
        }
        edge
    }
}

/// The edge `at` names in `edges`, if there (a hash collision is a miss).
fn lookup(edges: &HashMap<u64, Arc<Edge>>, at: &EdgeRef<'_>) -> Option<Arc<Edge>> {
    edges
        .get(&at.hash())
        .filter(|e| at.matches(&e.parts))
        .cloned()
}

/// Envoy's response flags for what the mesh did to a request (a bit set; see
/// [`Flags::as_str`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Flags(u16);

impl Flags {
    pub(crate) const NONE: Flags = Flags(0);
    /// No healthy upstream.
    pub(crate) const UH: Flags = Flags(1);
    /// Upstream connection failure.
    pub(crate) const UF: Flags = Flags(1 << 1);
    /// Upstream overflow (circuit breaking).
    pub(crate) const UO: Flags = Flags(1 << 2);
    /// No route.
    pub(crate) const NR: Flags = Flags(1 << 3);
    /// No cluster.
    pub(crate) const NC: Flags = Flags(1 << 4);
    /// Fault injected (abort).
    pub(crate) const FI: Flags = Flags(1 << 5);
    /// Rate limited.
    pub(crate) const RL: Flags = Flags(1 << 6);
    /// Upstream request timeout.
    pub(crate) const UT: Flags = Flags(1 << 7);
    /// Upstream connection termination.
    pub(crate) const UC: Flags = Flags(1 << 8);
    /// Downstream connection termination (the caller dropped the response).
    pub(crate) const DC: Flags = Flags(1 << 9);

    const NAMES: [&'static str; 10] = ["UH", "UF", "UO", "NR", "NC", "FI", "RL", "UT", "UC", "DC"];

    pub(crate) fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// Envoy's short form: `-` for none, else the flags joined by commas.
    pub(crate) fn as_str(self) -> std::borrow::Cow<'static, str> {
        if self.0 == 0 {
            return "-".into();
        }
        let set: Vec<&str> = Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        match set.as_slice() {
            [one] => (*one).into(),
            _ => set.join(",").into(),
        }
    }

    /// The flag for a request the mesh failed with `kind`.
    pub(crate) fn for_error(kind: crate::error::ErrorKind) -> Flags {
        use crate::error::ErrorKind as K;
        match kind {
            K::NoEndpoint => Flags::UH,
            K::Connect => Flags::UF,
            K::Overflow => Flags::UO,
            K::NoRoute => Flags::NR,
            K::UnknownCluster | K::NoConfig | K::InvalidTarget => Flags::NC,
            K::Timeout | K::PerTryTimeout => Flags::UT,
            K::Upstream => Flags::UC,
        }
    }
}

pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}
