//! Helpers for the middleware unit tests: a closure service and requests carrying a route
//! decision.

use crate::body::MeshBody;
use crate::cluster::ServedBy;
use crate::error::MeshError;
use crate::route::{RouteDecision, RoutePolicy};
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

pub(crate) type BoxFut =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody>, MeshError>> + Send>>;

/// A cloneable service from a closure.
pub(crate) struct FnService<F: ?Sized>(pub(crate) Arc<F>);

impl<F: ?Sized> Clone for FnService<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F: ?Sized> std::fmt::Debug for FnService<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnService")
    }
}

pub(crate) fn service<B, F>(f: F) -> FnService<F>
where
    F: Fn(Request<B>) -> BoxFut,
{
    FnService(Arc::new(f))
}

impl<B, F> Service<Request<B>> for FnService<F>
where
    F: Fn(Request<B>) -> BoxFut + ?Sized,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> BoxFut {
        (self.0)(req)
    }
}

/// A response with `status`, served by `endpoint`.
pub(crate) fn response(status: u16, endpoint: u16) -> Response<MeshBody> {
    let mut res = Response::new(MeshBody::empty());
    *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
    res.extensions_mut().insert(ServedBy {
        cluster: "c".into(),
        endpoint: ([127, 0, 0, 1], endpoint).into(),
        workload: None,
    });
    res
}

/// A request to `path` routed by `info` to cluster `c`.
pub(crate) fn request<B>(info: &Arc<RoutePolicy>, path: &str, body: B) -> Request<B> {
    let mut req = Request::builder()
        .uri(format!("http://svc{path}"))
        .body(body)
        .unwrap();
    req.extensions_mut().insert(RouteDecision {
        target: "t".into(),
        route: info.clone(),
        cluster: "c".into(),
        cluster_headers: None,
        hash: None,
    });
    req
}
