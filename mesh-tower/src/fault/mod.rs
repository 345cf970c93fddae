//! Fault injection (Envoy's `envoy.filters.http.fault`): delay and abort a share of requests.
//!
//! Chaos testing in-process: the listener's fault filter config (or a route's or virtual host's
//! `typed_per_filter_config` override) delays requests by a fixed time, or aborts them with an
//! HTTP status or a gRPC status, each for a fraction of requests (`numerator / denominator`,
//! drawn per request). With `header_delay` / `header_abort` the request itself asks for the
//! fault (`x-envoy-fault-delay-request: <ms>`, `x-envoy-fault-abort-request: <status>`,
//! `x-envoy-fault-abort-grpc-request: <code>`), and the `…-percentage` headers can lower the
//! configured share. `headers` restricts faults to matching requests; `max_active_faults` caps
//! faults in progress. As in Envoy, a delay comes first and an abort after it; a delayed
//! request is then routed normally, outside the route timeout (the router has not started).

mod future;
mod layer;
#[cfg(test)]
mod tests;

pub use self::future::ResponseFuture;
pub use self::layer::FaultLayer;

use crate::body::MeshBody;
use crate::breaker::{Guard, acquire};
use crate::error::MeshError;
use crate::grpc;
use crate::route::RouteDecision;
use crate::route::table::{HeaderRule, compile_header};
use http::{HeaderMap, Request, Response};
use mesh_core::policy::{FractionalPercent, HttpFault};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

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
    fn decide(&self, headers: &HeaderMap, rng: &mut crate::draw::Draw) -> Decision {
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
struct Decision {
    delay: Option<Duration>,
    /// HTTP status and, for a gRPC status abort, the gRPC code.
    abort: Option<(u16, Option<u16>)>,
    guard: Option<Guard>,
}

/// The response of an abort.
fn abort_response(is_grpc: bool, status: u16, grpc_code: Option<u16>) -> Response<MeshBody> {
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

/// Injects the route's faults.
#[derive(Clone, Debug)]
pub struct Fault<S> {
    inner: S,
    rng: crate::draw::Draw,
}

impl<S> Fault<S> {
    /// Wraps `inner`; `seed` pins the fault draws of this instance (tests), `None` draws from
    /// the thread's generator.
    pub fn new(inner: S, seed: Option<u64>) -> Self {
        Self {
            inner,
            rng: crate::draw::Draw::new(seed),
        }
    }
}

impl<S, B> Service<Request<B>> for Fault<S>
where
    S: Service<Request<B>, Response = Response<MeshBody>, Error = MeshError> + Clone,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(|d| d.route.fault.clone());
        let Some(policy) = policy else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let d = policy.decide(req.headers(), &mut self.rng);
        let is_grpc = grpc::is_grpc(req.headers());
        match (d.delay, d.abort) {
            (None, None) => ResponseFuture::passthrough(self.inner.call(req)),
            (None, Some((s, g))) => ResponseFuture::aborted(abort_response(is_grpc, s, g)),
            (Some(t), abort) => {
                let abort = abort.map(|(s, g)| abort_response(is_grpc, s, g));
                // Call a clone after the delay; this one stays ready for the next request.
                let svc = self.inner.clone();
                let svc = std::mem::replace(&mut self.inner, svc);
                ResponseFuture::delayed(t, svc, req, abort, d.guard)
            }
        }
    }
}
