//! The mesh's router: a request whose route has no policy skips the policy layers.
//!
//! Why: the full stack is seven layers deep (direct answers, rate limit, fault, rewrite,
//! timeout, retry, mirror), and the layers learn the route decision from the request's
//! extensions. On a route that uses none of them each layer still looks the decision up, finds
//! nothing to do, and wraps the inner future in its own; and recording the decision costs an
//! allocation of http's extension map. Skipping both saved about a quarter of what the mesh
//! added per request in the side-by-side profile (the figures are in `docs/benchmarks.md`).
//!
//! [`Router`] routes once and, for a plain route (see [`RoutePolicy::is_plain`]), applies the
//! route timeout and dispatches itself, with the decision in hand: nothing is recorded in the
//! request. Other routes get the decision recorded and go through the whole stack. Both paths
//! end in the same dispatch, so connections, balancer state and circuit breakers are shared,
//! and the answer carries [`ServedBy`](crate::ServedBy) either way.
//!
//! [`RoutePolicy::is_plain`]: crate::route::RoutePolicy::is_plain

use crate::body::MeshBody;
use crate::cluster::{Destination, Dispatch};
use crate::error::MeshError;
use crate::retry::ReplayBody;
use crate::route::Targets;
use crate::{RequestBody, timeout};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

/// Routes each request, then sends it down `full` or, when its route has no policy, straight
/// to the dispatch under the route timeout.
#[derive(Debug)]
pub(crate) struct Router<F, B> {
    targets: Targets,
    full: F,
    lean: Dispatch<ReplayBody<B>>,
}

impl<F, B> Router<F, B> {
    pub(crate) fn new(targets: Targets, full: F, lean: Dispatch<ReplayBody<B>>) -> Self {
        Self {
            targets,
            full,
            lean,
        }
    }
}

type LeanFuture = timeout::future::ResponseFuture<crate::cluster::ResponseFuture>;

/// What [`Router::route`] returns.
pub(crate) type RouterFuture<F, B> =
    crate::route::future::ResponseFuture<Branch<<F as Service<Request<B>>>::Future, LeanFuture>>;

impl<F, B> Router<F, B>
where
    F: Service<Request<B>, Response = Response<MeshBody>, Error = MeshError> + Clone,
    B: RequestBody,
{
    /// Whether `req` could be sent now: routed, to a cluster with an endpoint to pick. The
    /// error is what the call would fail with at once. (Wait-for-ready calls check first.)
    /// The access log of the listener `req` goes through, when it has its own.
    pub(crate) fn listener_log(&self, req: &Request<B>) -> Option<crate::stats::AccessLog> {
        self.targets.listener_log(req)
    }

    pub(crate) fn check(&self, req: &mut Request<B>) -> Result<(), MeshError> {
        let decision = self.targets.decide(req)?;
        self.lean
            .check(&decision.cluster, req.headers())
            .map_err(|e| {
                e.with_target(decision.target.clone())
                    .with_route(decision.route.name.clone())
            })
    }

    /// Routes and sends `req`. Takes `&self`, so a [`MeshService`](super::MeshService) can share
    /// one router between all its clones (cloning it is one reference count): every service
    /// below is always ready, and the policy stack, which `call` needs mutably, is cloned
    /// only for the requests that take it.
    pub(crate) fn route(&self, req: Request<B>) -> RouterFuture<F, B> {
        self.try_route(req)
            .unwrap_or_else(|(_, e)| crate::route::future::ResponseFuture::failed(e))
    }

    /// [`route`](Self::route), giving the request back when no route decision can be made
    /// (the caller may wait for the config and try again).
    #[allow(clippy::result_large_err)] // the request itself, handed back
    pub(crate) fn try_route(
        &self,
        mut req: Request<B>,
    ) -> Result<RouterFuture<F, B>, (Request<B>, MeshError)> {
        use crate::route::future::ResponseFuture;
        let decision = match self.targets.decide(&mut req) {
            Ok(d) => d,
            Err(e) => return Err((req, e)),
        };
        let (target, route) = (decision.target.clone(), decision.route.name.clone());
        if decision.cluster_headers.is_none() && decision.route.is_plain() {
            let limit = timeout::limit(&decision.route, req.headers());
            let to = Destination {
                cluster: decision.cluster,
                hash: decision.hash,
                idle: decision.route.idle_timeout,
            };
            let sent = self.lean.dispatch(req.map(ReplayBody::direct), &to);
            let inner = Branch::Lean {
                inner: timeout::future::ResponseFuture::new(sent, limit),
            };
            return Ok(ResponseFuture::routed(inner, target, route));
        }
        req.extensions_mut().insert(decision);
        let inner = Branch::Full {
            inner: Box::pin(self.full.clone().call(req)),
        };
        Ok(ResponseFuture::routed(inner, target, route))
    }
}

pin_project! {
    /// Which path a request took.
    #[project = Proj]
    #[derive(Debug)]
    pub(crate) enum Branch<F, L> {
        /// Through the policy layers. Boxed: the policy stack's future is twice the size of
        /// the lean one, and unboxed every lean request would be built and moved at that size.
        Full { inner: Pin<Box<F>> },
        /// Timeout and dispatch only.
        Lean { #[pin] inner: L },
    }
}

impl<F, L> Future for Branch<F, L>
where
    F: Future<Output = Result<Response<MeshBody>, MeshError>>,
    L: Future<Output = Result<Response<MeshBody>, MeshError>>,
{
    type Output = Result<Response<MeshBody>, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Full { inner } => inner.as_mut().poll(cx),
            Proj::Lean { inner } => inner.poll(cx),
        }
    }
}
