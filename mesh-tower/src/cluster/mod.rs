//! The cluster stage: from the route's chosen cluster to an endpoint's connection.
//!
//! [`Dispatch`] is the leaf of the mesh stack. It reads the cluster from the
//! [`RouteDecision`], finds that cluster's live state in the registry (lock-free), asks the
//! cluster's balancer for an endpoint, and sends the request on that endpoint's connection.
//! The response carries [`ServedBy`] in its extensions.
//!
//! A cluster's state is rebuilt only when the cluster or its endpoint set changes. Endpoints
//! that stay keep their connections and counters; endpoints that leave are dropped from the
//! picker at once, and their connections close when the last in-flight request on them ends.

mod future;
pub(crate) mod registry;

pub use self::future::ResponseFuture;

use crate::RequestBody;
use crate::balance::PickContext;
use crate::body::MeshBody;
use crate::error::{ErrorKind, MeshError};
use crate::route::RouteDecision;
use http::{Request, Response};
use registry::Registry;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Which cluster and endpoint served a response (in the response's extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedBy {
    /// The cluster.
    pub cluster: Arc<str>,
    /// The endpoint's address.
    pub endpoint: SocketAddr,
}

/// Sends each routed request to an endpoint of its cluster.
pub struct Dispatch<B> {
    registry: Arc<Registry<B>>,
}

impl<B> Clone for Dispatch<B> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl<B> fmt::Debug for Dispatch<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl<B> Dispatch<B> {
    pub(crate) fn new(registry: Arc<Registry<B>>) -> Self {
        Self { registry }
    }
}

impl<B> Service<Request<B>> for Dispatch<B>
where
    B: RequestBody,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Connections queue internally; readiness is decided per request after the pick.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(decision) = req.extensions().get::<RouteDecision>() else {
            return ResponseFuture::failed(MeshError::new(
                ErrorKind::NoRoute,
                "request carries no route decision (put the route layer in front of Dispatch)",
            ));
        };
        let cluster = self.registry.get(&decision.cluster);
        let state = cluster.current();
        let picked = state.pick(&PickContext {
            headers: req.headers(),
        });
        let (info, conn) = match picked {
            Ok(p) => p,
            Err(e) => return ResponseFuture::failed(e.with_cluster(cluster.name.clone())),
        };
        let in_flight = info.stats.start();
        let served = ServedBy {
            cluster: cluster.name.clone(),
            endpoint: info.address,
        };
        ResponseFuture::sending(Box::pin(async move {
            let res = conn.send(req).await;
            drop(in_flight);
            let mut res = res?.map(MeshBody::upstream);
            res.extensions_mut().insert(served);
            Ok(res)
        }))
    }
}
