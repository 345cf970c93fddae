//! Connections to endpoints: the pluggable connector and the per-endpoint HTTP connection.
//!
//! The connector is a trait object because it runs once per *connection*, not per request, and
//! because it is where TLS slots in later (a TLS connector wraps the TCP one and sees the cluster
//! and address it connects for) without changing any type in the request path.
//!
//! Per endpoint the mesh keeps one `Connection`:
//! - HTTP/2: one multiplexed connection on the `h2` crate (not hyper's client: see `http2.rs`),
//!   opened on first use; when it dies or stops taking new streams, the next request reopens
//!   it. Concurrent first requests share one connect attempt (single flight).
//! - HTTP/1.1: a pool of connections; a request takes an idle one or opens a new one, and hands
//!   it back once the response head arrived (it becomes reusable when its body is consumed).
//!
//! A request that hits a connection which turned out to be dead *before the request was
//! written* (HTTP/1.1: hyper hands the request back; HTTP/2: the connection is found closed or
//! unable to open a stream before the request is given to it) goes on a fresh connection;
//! anything else is an error for retries to decide on.

mod http1;
mod http2;
mod pump;
mod upstream;

pub(crate) use http2::StreamSlot;
pub(crate) use upstream::Upstream;

use crate::RequestBody;
use crate::breaker::{Guard, Limits};
use crate::error::{ErrorKind, MeshError};
use crate::tls::PeerIdentity;
use arc_swap::ArcSwap;
use http::{Request, Response, Uri, header, uri};
use hyper_util::rt::TokioIo;
use mesh_core::Protocol;
use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to an endpoint (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// A boxed connect future.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>>;

/// What a connector is asked to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTarget {
    /// The endpoint address.
    pub address: SocketAddr,
    /// The cluster the endpoint belongs to.
    pub cluster: Arc<str>,
    /// The cluster's connect timeout.
    pub connect_timeout: Duration,
    /// The HTTP version that will be spoken.
    pub protocol: Protocol,
    /// The cluster's TLS: when set, the mesh runs the handshake over the connector's stream
    /// (a connector never sees it and cannot skip it).
    pub tls: Option<Arc<crate::tls::ClientTls>>,
}

/// Opens byte streams to endpoints. Implement it to add TLS, proxies or test doubles.
///
/// ```
/// use mesh_tower::connect::{Connect, ConnectFuture, ConnectTarget, TcpConnector};
/// /// Counts connects, then delegates to TCP.
/// struct Counting(std::sync::atomic::AtomicUsize, TcpConnector);
/// impl Connect for Counting {
///     fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.1.connect(target)
///     }
/// }
/// ```
pub trait Connect: Send + Sync + 'static {
    /// Opens a stream to `target.address` within `target.connect_timeout`.
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture;
}

/// A shared connector.
#[derive(Clone)]
pub struct Connector(Arc<dyn Connect>);

impl Connector {
    /// Wraps a connector.
    pub fn new(connect: impl Connect) -> Self {
        Self(Arc::new(connect))
    }

    pub(crate) fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
        self.0.connect(target)
    }
}

impl Default for Connector {
    fn default() -> Self {
        Self::new(TcpConnector::default())
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

/// Plain TCP with `TCP_NODELAY`, bounded by the cluster's connect timeout.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector {
    _private: (),
}

impl Connect for TcpConnector {
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
        let (addr, limit) = (target.address, target.connect_timeout);
        Box::pin(async move {
            let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                Ok(res) => res?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timeout of {limit:?} elapsed"),
                    ));
                }
            };
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}

/// An answer on its way from a connection: h2's own response future on a live HTTP/2
/// connection (nothing allocated), else a boxed wait (HTTP/1.1, or no connection or stream
/// slot yet).
pub(crate) struct Sending {
    state: SendState,
}

enum SendState {
    H2(
        h2::client::ResponseFuture,
        Option<http2::StreamSlot>,
        Option<PeerIdentity>,
    ),
    Boxed(Pin<Box<dyn Future<Output = Result<Response<Upstream>, MeshError>> + Send>>),
    Failed(Option<MeshError>),
}

impl Sending {
    fn h2(
        answer: h2::client::ResponseFuture,
        slot: http2::StreamSlot,
        peer: Option<PeerIdentity>,
    ) -> Self {
        Self {
            state: SendState::H2(answer, Some(slot), peer),
        }
    }

    fn boxed(
        wait: impl Future<Output = Result<Response<Upstream>, MeshError>> + Send + 'static,
    ) -> Self {
        Self {
            state: SendState::Boxed(Box::pin(wait)),
        }
    }

    fn failed(error: MeshError) -> Self {
        Self {
            state: SendState::Failed(Some(error)),
        }
    }
}

impl Future for Sending {
    type Output = Result<Response<Upstream>, MeshError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.get_mut().state {
            // The error names no cluster or endpoint here; the dispatch adds both.
            SendState::H2(answer, slot, peer) => Pin::new(answer).poll(cx).map(|res| match res {
                Ok(mut res) => {
                    let mut slot = slot.take();
                    if let Some(s) = &mut slot {
                        s.answered();
                    }
                    if let Some(peer) = peer.take() {
                        res.extensions_mut().insert(peer);
                    }
                    Ok(res.map(|recv| Upstream::h2(recv, slot)))
                }
                Err(e) => Err(
                    MeshError::new(ErrorKind::Upstream, "request to endpoint failed")
                        .with_source(e),
                ),
            }),
            SendState::Boxed(wait) => wait.as_mut().poll(cx),
            SendState::Failed(e) => std::task::Poll::Ready(Err(e.take().unwrap_or_else(|| {
                MeshError::new(ErrorKind::Upstream, "polled after completion")
            }))),
        }
    }
}

/// The HTTP connection(s) to one endpoint, shared by every request body type.
///
/// HTTP/2 streams take `Bytes`, so one HTTP/2 connection serves every body type. hyper's
/// HTTP/1.1 connections are typed by the request body, so an HTTP/1.1 cluster keeps one pool
/// per body type in use (all under the same `max_connections`); the lookup is a lock-free
/// scan of the one or two types a process uses.
pub(crate) struct Connection {
    target: ConnectTarget,
    connector: Connector,
    limits: Arc<Limits>,
    /// The HTTP/2 connection: an HTTP/2 cluster's, or the one an HTTP/1.1 cluster's gRPC
    /// requests take (gRPC is HTTP/2 whatever the cluster's protocol options say, as in gRPC's
    /// own xDS clients; control planes such as istiod may not set them). Opened on first use.
    h2: OnceLock<http2::Shared>,
    /// HTTP/1.1 pools by request body type.
    h1: ArcSwap<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
    h1_insert: Mutex<()>,
    /// The `host` header for the authority HTTP/1.1 requests to this endpoint carry (one,
    /// in practice): cloned per request, a reference count instead of a copy.
    host: OnceLock<(uri::Authority, http::HeaderValue)>,
}

impl Connection {
    /// The connection(s) to `target`, within the cluster's `limits` (connections, and
    /// requests waiting for one).
    pub(crate) fn new(target: ConnectTarget, connector: Connector, limits: Arc<Limits>) -> Self {
        Self {
            target,
            connector,
            limits,
            h2: OnceLock::new(),
            h1: ArcSwap::from_pointee(Vec::new()),
            h1_insert: Mutex::new(()),
            host: OnceLock::new(),
        }
    }

    /// What this connection connects to.
    pub(crate) fn target(&self) -> &ConnectTarget {
        &self.target
    }

    fn h2(&self) -> &http2::Shared {
        self.h2.get_or_init(|| {
            let target = ConnectTarget {
                protocol: Protocol::Http2,
                ..self.target.clone()
            };
            http2::Shared::new(target, self.connector.clone(), self.limits.clone())
        })
    }

    /// The HTTP/1.1 pool for body type `B`, made on first use.
    fn h1<B: RequestBody>(&self) -> Arc<http1::Pool<B>> {
        let find = |pools: &[(TypeId, Arc<dyn Any + Send + Sync>)]| {
            pools
                .iter()
                .find(|(t, _)| *t == TypeId::of::<B>())
                .and_then(|(_, p)| p.clone().downcast::<http1::Pool<B>>().ok())
        };
        if let Some(pool) = find(&self.h1.load()) {
            return pool;
        }
        let _guard = self.h1_insert.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = find(&self.h1.load()) {
            return pool;
        }
        let pool = Arc::new(http1::Pool::<B>::new(
            self.target.clone(),
            self.connector.clone(),
            self.limits.clone(),
        ));
        let mut next = Vec::clone(&self.h1.load());
        next.push((
            TypeId::of::<B>(),
            pool.clone() as Arc<dyn Any + Send + Sync>,
        ));
        self.h1.store(Arc::new(next));
        pool
    }

    /// HTTP/1.1 sends the path in the request line and the authority in `Host`.
    fn to_origin_form<B>(&self, req: &mut Request<B>) {
        if let Some(authority) = req.uri().authority()
            && !req.headers().contains_key(header::HOST)
        {
            let value = match self.host.get() {
                Some((a, v)) if a == authority => Some(v.clone()),
                _ => http::HeaderValue::from_str(authority.as_str())
                    .ok()
                    .map(|v| {
                        // The first authority seen is the one cached.
                        let (a, cached) = self.host.get_or_init(|| (authority.clone(), v.clone()));
                        if a == authority { cached.clone() } else { v }
                    }),
            };
            if let Some(v) = value {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        if req.uri().scheme().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }
    }

    /// Sends `req`, whose URI is absolute (scheme and authority set by the route layer).
    pub(crate) fn send<B: RequestBody>(&self, mut req: Request<B>) -> Sending {
        if self.target.protocol == Protocol::Http2 || is_grpc(req.headers()) {
            return self.h2().send(req);
        }
        self.to_origin_form(&mut req);
        let pool = self.h1::<B>();
        Sending::boxed(async move { pool.send(req).await.map(|r| r.map(Upstream::Http1)) })
    }
}

/// True for `content-type: application/grpc` and its `+proto`/`+json` variants: a gRPC
/// request, which always goes over HTTP/2.
pub(crate) use crate::request::is_grpc;

/// Opens the byte stream for `target`, ready for an HTTP handshake: TCP (the connector's),
/// then TLS if the cluster has it, both within the connect timeout. With TLS, the peer's
/// verified identity comes along.
async fn dial(
    target: &ConnectTarget,
    connector: &Connector,
) -> Result<(TokioIo<BoxIo>, Option<PeerIdentity>), MeshError> {
    let started = tokio::time::Instant::now();
    let io = connector
        .connect(target)
        .await
        .map_err(|e| connect_error(target, e))?;
    let Some(tls) = &target.tls else {
        return Ok((TokioIo::new(io), None));
    };
    let left = target.connect_timeout.saturating_sub(started.elapsed());
    let h2 = target.protocol == Protocol::Http2;
    match tokio::time::timeout(left, tls.handshake(io, target.address, h2)).await {
        Ok(Ok((io, peer))) => Ok((TokioIo::new(Box::new(io)), Some(peer))),
        Ok(Err(e)) => Err(tls_error(target, e)),
        Err(_) => Err(tls_error(
            target,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timeout of {:?} elapsed", target.connect_timeout),
            ),
        )),
    }
}

fn tls_error(target: &ConnectTarget, err: io::Error) -> MeshError {
    MeshError::new(
        ErrorKind::Connect,
        format!("TLS handshake with {} failed", target.address),
    )
    .with_source(err)
    .with_cluster(target.cluster.clone())
    .with_endpoint(target.address)
}

/// Drives a client connection until it ends; its end is only worth a debug line (requests on
/// it have already seen the error).
fn spawn_connection<F, E>(target: &ConnectTarget, conn: F, slot: Guard)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display,
{
    let (address, protocol) = (target.address, target.protocol);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%address, ?protocol, error = %e, "connection ended");
        }
        // The connection's slot under max_connections ends with it.
        drop(slot);
    });
}

pub(crate) fn connect_error(target: &ConnectTarget, err: io::Error) -> MeshError {
    MeshError::new(
        ErrorKind::Connect,
        format!("connect to {} failed", target.address),
    )
    .with_source(err)
    .with_cluster(target.cluster.clone())
    .with_endpoint(target.address)
}

pub(crate) fn upstream_error(
    target: &ConnectTarget,
    err: impl Into<mesh_core::BoxError>,
) -> MeshError {
    MeshError::new(ErrorKind::Upstream, "request to endpoint failed")
        .with_source(err)
        .with_cluster(target.cluster.clone())
        .with_endpoint(target.address)
}

pub(crate) fn handshake_error(
    target: &ConnectTarget,
    err: impl Into<mesh_core::BoxError>,
) -> MeshError {
    MeshError::new(
        ErrorKind::Connect,
        format!("HTTP handshake with {} failed", target.address),
    )
    .with_source(err)
    .with_cluster(target.cluster.clone())
    .with_endpoint(target.address)
}

#[cfg(test)]
mod tests;
