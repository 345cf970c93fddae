//! Authorization on the server side: Envoy's RBAC HTTP filter, as gRFC A41 applies it.
//!
//! Why in-process: the sidecar was where a mesh decided who may call whom; without one, the
//! server itself must refuse a caller before the handler runs, with the caller's identity
//! taken from the mTLS handshake it just verified ([`PeerInfo`](crate::tls::PeerInfo) in the
//! request's extensions). The policy language is Envoy's (`envoy.config.rbac.v3`), so the
//! config istiod generates from an `AuthorizationPolicy`, or a hand-written Envoy one, means
//! the same here; `interop/tests/rbac_oracle.rs` holds us to Envoy's decisions.
//!
//! The engine is compiled when the policy changes; a request costs one lock-free load of the
//! current engine and a walk of its matchers (no allocation). A refused request never reaches
//! the handler: HTTP callers get `403 RBAC: access denied`, gRPC callers a trailers-only
//! `PERMISSION_DENIED`, as from Envoy.
//!
//! Where we follow gRPC rather than Envoy (A41): `requested_server_name` is matched against
//! `""`, `metadata` matches only the JWT filter's verified payloads (see [`crate::jwt`]; other
//! filters' metadata does not exist in-process), and `source_ip`/`remote_ip` are the
//! connection's peer (no proxy protocol, no trusted `x-forwarded-for`).

mod audit;
mod body;
mod engine;
mod error;
mod future;
mod layer;

pub use audit::{AuditEvent, AuditSink};
pub use body::RbacBody;
pub use engine::RbacEngine;
pub use error::{Denied, Refused};
pub use future::ResponseFuture;
pub use layer::RbacLayer;

use arc_swap::ArcSwap;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Refuses requests the RBAC filters deny; passes the others to `S`.
///
/// ```
/// use mesh_core::config::rbac::RbacFilter;
/// use mesh_tower::rbac::{RbacEngine, RbacLayer};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let only_get: RbacFilter = serde_saphyr::from_str(r#"
/// rules:
///   action: ALLOW
///   policies:
///     reads: { permissions: [{ header: { name: ":method", exact_match: GET } }], principals: [{ any: true }] }
/// "#).unwrap();
/// let engine = RbacEngine::new([("envoy.filters.http.rbac", &only_get)]).unwrap();
/// let handler = tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// });
/// let svc = RbacLayer::new(engine).layer(handler);
/// let res = svc.clone().oneshot(http::Request::get("/").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 200);
/// let res = svc.oneshot(http::Request::delete("/").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 403);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Rbac<S> {
    inner: S,
    engine: Arc<ArcSwap<RbacEngine>>,
}

impl<S, B, ResBody> Service<Request<B>> for Rbac<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<RbacBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.engine.load().check(&req) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(refused) => {
                tracing::debug!(
                    path = req.uri().path(),
                    peer = ?req.extensions().get::<crate::tls::PeerInfo>().and_then(|p| p.identity.as_ref()).map(|i| i.sans()),
                    %refused,
                    "request refused"
                );
                let grpc = crate::grpc::is_grpc(req.headers());
                ResponseFuture::denied(match &refused {
                    Refused::Denied(_) => {
                        crate::grpc::local_answer(grpc, 403, None, error::ACCESS_DENIED)
                    }
                    // A36: not served; UNAVAILABLE for gRPC, as grpc-go answers.
                    Refused::NoRoute(why) => {
                        crate::grpc::local_answer(grpc, 404, Some(14), &why.to_string())
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
