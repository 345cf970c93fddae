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

mod aggregate;
pub(crate) mod dns;
mod future;
pub mod load;
pub(crate) mod plan;
pub(crate) mod registry;
mod state;
pub(crate) mod warm;

pub use self::dns::DnsResolver;
pub use self::future::ResponseFuture;

use crate::RequestBody;
use crate::balance::PickContext;
use crate::body::MeshBody;
use crate::error::{ErrorKind, MeshError};
use crate::policy::RouteDecision;
use http::{Request, Response};
use registry::Registry;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

pub use crate::endpoint::{AttemptNote, PreviousHosts, ServedBy};

/// The status outlier detection sees: the HTTP status, or for a trailers-only gRPC response
/// its `grpc-status` mapped as Envoy maps it (UNAVAILABLE is a 503, INTERNAL a 500, …).
fn grpc_aware_status<T>(res: &Response<T>) -> u16 {
    let status = res.status().as_u16();
    match res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        Some(code) if status == 200 => match code {
            "4" => 504,
            "8" | "14" => 503,
            "2" | "12" | "13" | "15" => 500,
            _ => 200,
        },
        _ => status,
    }
}

/// Sends each routed request to an endpoint of its cluster.
pub struct Dispatch<B> {
    registry: Arc<Registry>,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for Dispatch<B> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for Dispatch<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl<B> Dispatch<B> {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            _body: PhantomData,
        }
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
        let to = Destination {
            cluster: decision.cluster.clone(),
            hash: decision.hash,
            idle: decision.route.idle_timeout,
        };
        self.dispatch(req, &to)
    }
}

/// What [`Dispatch`] needs of a route decision.
#[derive(Debug)]
pub(crate) struct Destination {
    pub(crate) cluster: Arc<str>,
    pub(crate) hash: Option<u64>,
    pub(crate) idle: Option<std::time::Duration>,
}

impl<B> Dispatch<B>
where
    B: RequestBody,
{
    /// Whether `cluster` has an endpoint to pick now: the error a request would fail with at
    /// once if not (for wait-for-ready calls, which wait instead).
    pub(crate) fn check(
        &self,
        cluster: &Arc<str>,
        headers: &http::HeaderMap,
    ) -> Result<(), MeshError> {
        let (handle, state) = self.resolve(cluster, None)?;
        match state.pick(&PickContext::new(headers)) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.with_cluster(handle.name.clone())),
        }
    }

    /// The cluster a request to `name` goes to: itself, or for an aggregate cluster (gRFC
    /// A37) the one of its clusters their health gives this request (drawn by `hash` when
    /// the route hashes, so a key stays put).
    fn resolve(
        &self,
        name: &Arc<str>,
        hash: Option<u64>,
    ) -> Result<
        (
            Arc<registry::ClusterHandle>,
            impl std::ops::Deref<Target = Arc<registry::ClusterState>> + use<B>,
        ),
        MeshError,
    > {
        let handle = self.registry.get(name);
        // One state load for a plain cluster: the state is handed on with its handle.
        let state = handle.current();
        let Some(children) = state.aggregate.clone() else {
            return Ok((handle, state));
        };
        let threshold = state.panic_threshold();
        drop(state);
        let r = hash.unwrap_or_else(|| fastrand::u64(..));
        let child =
            aggregate::choose(&self.registry, &children, threshold, r).ok_or_else(|| {
                MeshError::new(
                    ErrorKind::NoEndpoint,
                    format!("aggregate cluster: none of {children:?} has an endpoint"),
                )
                .with_cluster(name.clone())
            })?;
        let state = child.current();
        Ok((child, state))
    }

    /// Sends `req` to an endpoint of `to.cluster` (the mesh's lean path calls this directly,
    /// with the decision it holds, instead of through the request's extensions).
    pub(crate) fn dispatch(&self, mut req: Request<B>, to: &Destination) -> ResponseFuture {
        let (cluster, state) = match self.resolve(&to.cluster, to.hash) {
            Ok(c) => c,
            Err(e) => return ResponseFuture::failed(e),
        };
        let admitted = match cluster.limits.try_request() {
            Ok(guard) => guard,
            Err(e) => {
                // Dropped, for a cluster that reports its load (LRS).
                if state.reports_load {
                    cluster
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return ResponseFuture::failed(e);
            }
        };
        let (avoid, attempts, note) = match req.extensions().get::<PreviousHosts>() {
            Some(p) => (p.hosts.as_slice(), p.attempts, p.note.as_deref()),
            None => (&[][..], 0, None),
        };
        let picked = state.pick_avoiding(
            &PickContext {
                headers: req.headers(),
                hash: to.hash,
                attempt: 0,
            },
            avoid,
            attempts,
        );
        let (info, conn) = match picked {
            Ok(p) => p,
            Err(e) => return ResponseFuture::failed(e.with_cluster(cluster.name.clone())),
        };
        if let Some(note) = note {
            note.picked(info.address);
        }
        // A gRPC call with metrics on: this attempt's record (A66), and the counter its
        // request's message bytes go to.
        let attempt = match req.extensions().get::<crate::stats::CallAttempts>() {
            Some(call) => {
                let handles = call.0.clone();
                let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
                req.extensions_mut()
                    .insert(crate::stats::SentMessages(sent.clone()));
                Some(Box::new(crate::stats::AttemptRecord::start(handles, sent)))
            }
            None => None,
        };
        if state.reports_load {
            info.stats.load.issued();
        }
        let after = future::After {
            report_load: state.reports_load,
            attempt,
            in_flight: info.stats.start(),
            admitted,
            stats: info.stats.clone(),
            detector: state.detector.clone(),
            idle: to.idle,
            ewma: state.ewma_decay.map(|d| (d, std::time::Instant::now())),
            reports: state.reports.clone(),
            served: ServedBy {
                cluster: cluster.name.clone(),
                endpoint: info.address,
                workload: info.workload.clone(),
            },
            // A traced call: this attempt's context goes out in the headers.
            span: match req.extensions().get::<crate::trace::CallTrace>() {
                Some(call) => call.clone().attempt(&mut req, &cluster.name, info.address),
                None => None,
            },
        };
        // Istio's metadata exchange, to the mesh's own (mTLS) clusters only.
        if state.mutual
            && let Some((metadata, id)) = &self.registry.exchange
        {
            let h = req.headers_mut();
            h.insert(crate::stats::PEER_METADATA.clone(), metadata.clone());
            h.insert(crate::stats::PEER_METADATA_ID.clone(), id.clone());
        }
        ResponseFuture::sending(conn.send(req), after)
    }
}
