//! The compiled policy of the [`fault`](crate::fault) layer, built once per route when the
//! route table compiles and read by the layer per request.

use super::headers::{HeaderRule, compile_header};
use crate::body::MeshBody;
use crate::breaker::{Guard, acquire};
use crate::grpc;
use http::{HeaderMap, Response};
use mesh_core::policy::{FractionalPercent, HttpFault};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// A compiled fault config. Shared by every request it governs (`max_active_faults` counts
/// across them).
#[derive(Debug)]
pub struct FaultPolicy {
    delay: Option<(DelayKind, FractionalPercent)>,
    abort: Option<(AbortKind, FractionalPercent)>,
    headers: Vec<HeaderRule>,
    max_active: Option<u32>,
    active: Arc<AtomicU32>,
}

#[derive(Debug)]
enum DelayKind {
    Fixed(Duration),
    Header,
}

#[derive(Debug)]
enum AbortKind {
    Http(u16),
    Grpc(u16),
    Header,
}

const ALL: FractionalPercent = FractionalPercent {
    numerator: 100,
    denominator: mesh_core::policy::DenominatorType::Hundred,
};

impl FaultPolicy {
    /// Compiles a (validated) fault config.
    pub fn new(f: &HttpFault) -> Result<Self, String> {
        let delay = f.delay.as_ref().map(|d| {
            let kind = match d.fixed_delay {
                Some(t) => DelayKind::Fixed(t),
                None => DelayKind::Header,
            };
            (kind, d.percentage.unwrap_or(ALL))
        });
        let abort = f.abort.as_ref().map(|a| {
            let kind = match (a.http_status, a.grpc_status) {
                (Some(s), _) => AbortKind::Http(s as u16),
                (None, Some(g)) => AbortKind::Grpc(g as u16),
                _ => AbortKind::Header,
            };
            (kind, a.percentage.unwrap_or(ALL))
        });
        Ok(Self {
            delay,
            abort,
            headers: f
                .headers
                .iter()
                .map(compile_header)
                .collect::<Result<_, _>>()?,
            max_active: f.max_active_faults,
            active: Arc::default(),
        })
    }

    /// Faults in progress.
    pub fn active(&self) -> u32 {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Decides the faults for one request.
    pub(crate) fn decide(&self, headers: &HeaderMap, rng: &mut crate::draw::Draw) -> Decision {
        let mut d = Decision::default();
        if !self.headers.iter().all(|h| h.matches(headers)) {
            return d;
        }
        if let Some((kind, pct)) = &self.delay {
            let pct = header_percentage(headers, "x-envoy-fault-delay-request-percentage", pct);
            let delay = match kind {
                DelayKind::Fixed(t) => Some(*t),
                DelayKind::Header => {
                    header_u64(headers, "x-envoy-fault-delay-request").map(Duration::from_millis)
                }
            };
            if let Some(t) = delay
                && pct.hits(rng.u64())
            {
                d.delay = Some(t);
            }
        }
        if let Some((kind, pct)) = &self.abort {
            let pct = header_percentage(headers, "x-envoy-fault-abort-request-percentage", pct);
            let abort = match kind {
                AbortKind::Http(s) => Some((*s, None)),
                AbortKind::Grpc(g) => Some((200, Some(*g))),
                AbortKind::Header => header_u64(headers, "x-envoy-fault-abort-grpc-request")
                    .filter(|g| *g <= 16)
                    .map(|g| (200, Some(g as u16)))
                    .or_else(|| {
                        header_u64(headers, "x-envoy-fault-abort-request")
                            .filter(|s| (200..600).contains(s))
                            .map(|s| (s as u16, None))
                    }),
            };
            if let Some(a) = abort
                && pct.hits(rng.u64())
            {
                d.abort = Some(a);
            }
        }
        if d.delay.is_some() || d.abort.is_some() {
            d.guard = match self.max_active {
                Some(max) => match acquire(&self.active, max) {
                    Some(g) => Some(g),
                    None => return Decision::default(),
                },
                None => acquire(&self.active, u32::MAX),
            };
        }
        d
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The configured share, lowered (never raised) by the request's percentage header.
fn header_percentage(
    headers: &HeaderMap,
    name: &str,
    pct: &FractionalPercent,
) -> FractionalPercent {
    match header_u64(headers, name) {
        Some(n) => FractionalPercent {
            numerator: (n.min(u64::from(u32::MAX)) as u32).min(pct.numerator),
            denominator: pct.denominator,
        },
        None => *pct,
    }
}

#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub(crate) delay: Option<Duration>,
    /// HTTP status and, for a gRPC status abort, the gRPC code.
    pub(crate) abort: Option<(u16, Option<u16>)>,
    pub(crate) guard: Option<Guard>,
}

/// The response of an abort.
pub(crate) fn abort_response(
    is_grpc: bool,
    status: u16,
    grpc_code: Option<u16>,
) -> Response<MeshBody> {
    let mut res = grpc::local_answer(
        is_grpc || grpc_code.is_some(),
        status,
        grpc_code,
        "fault filter abort",
    );
    res.extensions_mut().insert(FaultInjected);
    res
}

/// In the extensions of a response the fault filter produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInjected;
