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
mod inbound;
mod layer;
#[cfg(test)]
mod tests;

pub use self::future::ResponseFuture;
pub use self::inbound::{InboundFault, InboundFaultFuture, InboundFaultLayer};
pub use self::layer::FaultLayer;

use crate::body::MeshBody;
use crate::error::MeshError;
use crate::grpc;
use crate::policy::RouteDecision;
use crate::policy::fault::abort_response;
pub use crate::policy::fault::{FaultInjected, FaultPolicy};
use http::{Request, Response};
use std::task::{Context, Poll};
use tower_service::Service;

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
