//! gRPC's per-call metrics (gRFC A66) beside Istio's: `grpc.client.call.duration` and
//! `grpc.server.call.duration`, histograms in seconds labelled with the method, the channel
//! target (client) and the status name, recorded from the same record at the same end of
//! stream, with handles cached on the same edges and outcomes.

use metrics::Label;

/// `grpc.client.call.duration`: from the call to the end of its answer, seconds.
pub const CLIENT_CALL_DURATION: &str = "grpc.client.call.duration";
/// `grpc.server.call.duration`: from the request to the end of the answer, seconds.
pub const SERVER_CALL_DURATION: &str = "grpc.server.call.duration";
/// `grpc.server.call.started`: calls a server received (counted as they arrive).
pub const SERVER_CALL_STARTED: &str = "grpc.server.call.started";
/// `grpc.server.call.sent_total_compressed_message_size`: response message bytes per call.
pub const SERVER_CALL_SENT: &str = "grpc.server.call.sent_total_compressed_message_size";
/// `grpc.server.call.rcvd_total_compressed_message_size`: request message bytes per call
/// (what had arrived when the call ended).
pub const SERVER_CALL_RCVD: &str = "grpc.server.call.rcvd_total_compressed_message_size";

/// A66's latency buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 41] = [
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// What a gRPC edge's call metric is named and labelled with (but the status).
#[derive(Debug)]
pub(crate) struct CallLabels {
    pub(crate) name: &'static str,
    pub(crate) labels: Vec<Label>,
    /// `grpc.server.call.started` (servers only), counted when a call arrives.
    pub(crate) started: Option<metrics::Counter>,
}

impl CallLabels {
    /// The labels of calls to `path` (`/pkg.Service/Method`), on a channel to `target`
    /// (clients only).
    pub(crate) fn new(name: &'static str, path: &str, target: Option<&str>) -> Self {
        let mut labels = vec![Label::new(
            "grpc.method",
            path.strip_prefix('/').unwrap_or(path).to_owned(),
        )];
        if name == CLIENT_CALL_DURATION {
            labels.push(Label::new("grpc.target", target.unwrap_or("").to_owned()));
        }
        let started = (name == SERVER_CALL_DURATION).then(|| {
            let key = metrics::Key::from_parts(SERVER_CALL_STARTED, labels.clone());
            metrics::with_recorder(|r| r.register_counter(&key, &super::META))
        });
        Self {
            name,
            labels,
            started,
        }
    }
}

/// gRPC's name for status `code` (`UNKNOWN` for codes it does not define).
pub(crate) fn status_name(code: Option<u16>) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    code.and_then(|c| NAMES.get(usize::from(c)))
        .copied()
        .unwrap_or("UNKNOWN")
}
