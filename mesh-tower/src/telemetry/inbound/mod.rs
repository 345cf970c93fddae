//! [`InboundMetrics`]: Istio's metrics for the requests a server answers
//! (`reporter="destination"`).
//!
//! Why a middleware of its own: it must sit outside everything that can answer a request
//! (authorization's 403, limits, the handler) so that every request is counted once, and its
//! response body must be watched to the end of the stream for the duration, the size and the
//! gRPC status in the trailers. [`MeshServer::serve`](crate::server::MeshServer::serve) puts it
//! outermost; with tonic, add [`InboundMetricsLayer`] before the RBAC layer
//! (`Server::builder().layer(metrics).layer(rbac)`).

mod body;
mod future;
mod layer;

pub use body::{InboundBody, InboundRequestBody};
pub use future::ResponseFuture;
pub use layer::InboundMetricsLayer;

use super::{InboundCall, Telemetry};
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Records Istio's request metrics for each request `S` answers; see the [module
/// docs](self).
///
/// ```
/// use mesh_tower::telemetry::{InboundMetricsLayer, Telemetry, Workload};
/// use tower_layer::Layer;
/// let telemetry = Telemetry::new(Workload { name: "echo".into(), namespace: "default".into(), ..Workload::default() });
/// let handler = tower::service_fn(|_req: http::Request<mesh_tower::telemetry::InboundRequestBody<http_body_util::Empty<bytes::Bytes>>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
/// });
/// let _svc = InboundMetricsLayer::new(telemetry).layer(handler);
/// ```
#[derive(Clone, Debug)]
pub struct InboundMetrics<S> {
    inner: S,
    telemetry: Option<Telemetry>,
    /// The server chain's own access log, kept current by its config (none: the mesh-wide
    /// log).
    listener_log: Option<ListenerLog>,
}

/// A server chain's access log as its config keeps it.
pub(crate) type ListenerLog = Arc<arc_swap::ArcSwapOption<crate::stats::AccessLog>>;

impl<S> InboundMetrics<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, telemetry: Telemetry) -> Self {
        Self::maybe(inner, Some(telemetry))
    }

    /// Wraps `inner`, recording nothing without `telemetry`.
    pub(crate) fn maybe(inner: S, telemetry: Option<Telemetry>) -> Self {
        Self {
            inner,
            telemetry,
            listener_log: None,
        }
    }

    /// Writing to `log` when it holds one, instead of the mesh-wide log.
    pub(crate) fn with_listener_log(mut self, log: Option<ListenerLog>) -> Self {
        self.listener_log = log;
        self
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for InboundMetrics<S>
where
    S: Service<Request<InboundRequestBody<ReqB>>, Response = Response<ResB>>,
    ResB: http_body::Body,
{
    type Response = Response<InboundBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let call = self.telemetry.as_ref().map(|t| {
            // The metadata exchange headers of an authenticated caller are for the metrics,
            // not the handler (an unauthenticated caller's are not believed nor looked for).
            let authenticated = req
                .extensions()
                .get::<crate::tls::PeerInfo>()
                .is_some_and(|p| p.identity.is_some());
            let metadata = authenticated
                .then(|| {
                    let h = req.headers_mut();
                    h.remove(&crate::stats::PEER_METADATA_ID);
                    h.remove(&crate::stats::PEER_METADATA)
                })
                .flatten();
            let log = self.listener_log.as_ref().map(|l| l.load());
            let log = log.as_ref().and_then(|g| g.as_deref());
            InboundCall::start(t, &mut req, metadata.as_ref(), log)
        });
        let rcvd = call.as_ref().and_then(|c| c.rcvd()).cloned();
        let req = req.map(|b| InboundRequestBody::new(b, rcvd));
        ResponseFuture::new(self.inner.call(req), call)
    }
}
