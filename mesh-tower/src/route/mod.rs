//! Routing: which route, and so which cluster, takes a request.
//!
//! [`Route`] resolves the request's target to its listener's route config (kept compiled and
//! current, see `target.rs`), picks the virtual host by domain and the first matching route
//! (Envoy's order), draws the cluster (weighted split or header), and records the outcome as a
//! [`RouteDecision`] in the request's extensions. Everything behind it — the timeout, and later
//! retries, faults and mirrors — reads its per-route policy from that decision, so each of those
//! layers stays a plain tower middleware usable on its own.
//!
//! Which authority selects the virtual host: for a channel (`xds:///name`) it is the target name,
//! as in gRPC (gRFC A27); for the HTTP client it is each request's authority.
//!
//! ```
//! # use mesh_core::{MeshConfig, Store};
//! # use mesh_tower::route::{RouteDecision, RouteLayer};
//! # use tower_layer::Layer;
//! # use tower_service::Service;
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let store = Store::new();
//! store.replace(MeshConfig::from_yaml(r#"
//! clusters: [{ name: api }]
//! listeners:
//!   - name: web
//!     route_config:
//!       virtual_hosts: [{ name: web, domains: ["*"], routes: [
//!         { match: { prefix: /api }, route: { cluster: api } } ] }]
//! "#).unwrap()).unwrap();
//! // Any inner service sees the decision.
//! let inner = tower_service_fn(|req: http::Request<()>| {
//!     req.extensions().get::<RouteDecision>().unwrap().cluster.to_string()
//! });
//! let mut svc = RouteLayer::for_target(store, "xds:///web").layer(inner);
//! let cluster = svc.call(http::Request::get("/api/x").body(()).unwrap()).await.unwrap();
//! assert_eq!(cluster, "api");
//! # });
//! # fn tower_service_fn<F: FnMut(http::Request<()>) -> String>(f: F) -> impl Service<http::Request<()>, Response = String, Error = std::convert::Infallible, Future = std::future::Ready<Result<String, std::convert::Infallible>>> {
//! #     struct S<F>(F);
//! #     impl<F: FnMut(http::Request<()>) -> String> Service<http::Request<()>> for S<F> {
//! #         type Response = String; type Error = std::convert::Infallible;
//! #         type Future = std::future::Ready<Result<String, std::convert::Infallible>>;
//! #         fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
//! #         fn call(&mut self, r: http::Request<()>) -> Self::Future { std::future::ready(Ok((self.0)(r))) }
//! #     }
//! #     S(f)
//! # }
//! ```

mod check;
pub mod future;
pub use crate::policy::hash;
pub(crate) mod inbound;
mod layer;
pub(crate) mod table;
pub(crate) mod target;
#[cfg(test)]
mod tests;

pub use self::check::RouteTable;
pub use self::inbound::NoRoute;
pub use self::layer::RouteLayer;
pub(crate) use crate::policy::headers::query_param;
pub use crate::policy::{RouteDecision, RoutePolicy};

use self::future::ResponseFuture;
use self::target::{ByAuthority, TargetState};
use crate::error::{ErrorKind, MeshError};
use http::uri::{Authority, Scheme};
use http::{Request, Uri, header};
use mesh_core::BoxError;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Which targets a [`Route`] serves.
#[derive(Clone, Debug)]
pub(crate) enum Targets {
    One(Arc<TargetState>),
    ByAuthority(Arc<ByAuthority>),
    Invalid(Arc<str>, Arc<str>),
}

/// Routes each request and records a [`RouteDecision`] for the inner service.
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    targets: Targets,
}

// ===== impl Route =====

impl<S> Route<S> {
    pub(crate) fn new(inner: S, targets: Targets) -> Self {
        Self { inner, targets }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the router, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = MeshError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(MeshError::from_inner)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.targets.decide(&mut req) {
            Ok(decision) => {
                let (target, route) = (decision.target.clone(), decision.route.name.clone());
                req.extensions_mut().insert(decision);
                ResponseFuture::routed(self.inner.call(req), target, route)
            }
            Err(e) => ResponseFuture::failed(e),
        }
    }
}

impl Targets {
    /// The access log of the listener `req` goes through, when it has its own: the compiled
    /// state routing reads next (lock-free; a version check and a load when nothing changed).
    pub(crate) fn listener_log<B>(&self, req: &Request<B>) -> Option<crate::stats::AccessLog> {
        match self {
            Targets::One(state) => state.current().access_log.clone(),
            Targets::ByAuthority(map) => {
                let authority = request_authority(req)?;
                map.get(authority).current().access_log.clone()
            }
            Targets::Invalid(..) => None,
        }
    }

    /// Routes `req` (and completes its URI) without recording the decision in it.
    pub(crate) fn decide<B>(&self, req: &mut Request<B>) -> Result<RouteDecision, MeshError> {
        match self {
            Targets::One(state) => decide(state, Some(&state.name), req),
            Targets::ByAuthority(map) => match request_authority(req) {
                Some(authority) => {
                    let state = map.get(authority);
                    decide(&state, None, req)
                }
                None => Err(MeshError::new(
                    ErrorKind::NoRoute,
                    "request has no authority or Host header",
                )),
            },
            Targets::Invalid(target, why) => {
                Err(MeshError::new(ErrorKind::InvalidTarget, why.to_string())
                    .with_target(target.clone()))
            }
        }
    }
}

/// Routes `req` for `state`. Virtual hosts match `host`, or the request's own authority when
/// `None` (borrowed, not copied: routing only reads the request until `complete_uri`).
fn decide<B>(
    state: &TargetState,
    host: Option<&str>,
    req: &mut Request<B>,
) -> Result<RouteDecision, MeshError> {
    let compiled = state.current();
    let fail = |e: MeshError| e.with_target(state.name.clone());
    let table = match &compiled.table {
        Ok(t) => t,
        Err(why) => return Err(fail(MeshError::new(ErrorKind::NoConfig, why.clone()))),
    };
    let host = host.or_else(|| request_authority(req)).unwrap_or_default();
    let route = table
        .route(host, req.uri().path(), req.uri().query(), req.headers())
        .map_err(fail)?;
    let (cluster, cluster_headers) = route
        .pick_cluster(req.headers(), fastrand::u64(..))
        .map_err(|e| fail(e.with_route(route.name.clone())))?;
    let route = route.clone();
    let hash = route.hash_policy.hash(req.headers(), req.uri().query());
    complete_uri(req, state.authority.as_ref());
    Ok(RouteDecision {
        target: state.name.clone(),
        route,
        cluster,
        cluster_headers,
        hash,
    })
}

/// The request's authority, borrowed: from its URI, else from `Host`.
use crate::request::authority as request_authority;

/// Gives a path-only URI (as tonic sends) a scheme and the target's authority.
fn complete_uri<B>(req: &mut Request<B>, target_authority: Option<&Authority>) {
    let uri = req.uri();
    if uri.scheme().is_some() && uri.authority().is_some() {
        return;
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if parts.authority.is_none() {
        parts.authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| target_authority.cloned());
    }
    if parts.authority.is_some() {
        parts.scheme.get_or_insert(Scheme::HTTP);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
    }
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
}
