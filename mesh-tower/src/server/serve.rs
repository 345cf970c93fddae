//! The accept loop: the filter chain per connection, its TLS (or plaintext) as the config
//! says at accept time,
//! HTTP/1.1 and HTTP/2 per connection, the caller's `PeerInfo`, the filters on every request,
//! and the drain of connections whose settings are gone.

use super::connections::Connections;
use super::frames::Frames;
use super::{MeshServer, ServerStats};
use crate::telemetry::InboundMetrics;
use crate::tls::PeerInfo;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::BoxError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tower_service::Service;

impl MeshServer {
    /// Serves `service` on `listener` until the returned future is dropped (connections
    /// already accepted run on; [`drain`](Self::drain) ends them gracefully). Every request
    /// reaches `service` with the caller's [`PeerInfo`] in its extensions, and only if the
    /// server's filters allow it. Failed handshakes are counted
    /// ([`ServerTls::failed_handshakes`](crate::tls::ServerTls::failed_handshakes)) and never
    /// reach the application. Each connection gets the TLS and limits in force when it is
    /// accepted; when they change, or the server stops serving, older connections drain
    /// (see [`with_drain_grace`](Self::with_drain_grace)).
    pub async fn serve<S, B>(self, listener: TcpListener, service: S) -> std::io::Result<()>
    where
        S: Service<Request<super::Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let telemetry = self.telemetry.clone();
        // Metrics outside the checks (a refusal is a request too), inside the peer's identity
        // (its principal is a label). Rate limit first (before any token or policy work),
        // tokens before RBAC (its principals read the verified claims), faults last (they
        // stand for the service misbehaving, so only requests it would serve meet them).
        // The checks are those of the connection's filter chain.
        let wrap = move |peer: PeerInfo, checks: &super::live::Checks| {
            use tower_layer::Layer;
            let (limit, jwt, rbac, fault) = checks.layers();
            let checked = limit.layer(jwt.layer(rbac.layer(fault.layer(service.clone()))));
            WithPeer {
                peer,
                inner: InboundMetrics::maybe(checked, telemetry.clone())
                    .with_listener_log(Some(checks.access_log.clone())),
            }
        };
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if matches!(*self.serving.borrow(), super::Serving::NotServing(_)) {
                tracing::debug!(peer = %remote, "not serving: connection closed");
                continue;
            }
            // Enlisted before the handshake: a drain during it applies to this connection.
            let settings = self.conns.settings();
            let local = tcp.local_addr().ok();
            // gRFC A36: the connection's chain, chosen once by its addresses.
            let Some(chain) = settings.chain_for(local, remote) else {
                self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %remote, "no filter chain matches: connection closed");
                continue;
            };
            let conn = Conn {
                conns: self.conns.clone(),
                stats: self.stats.clone(),
                enlisted: self.conns.enlist(&settings),
                builder: chain.builder.clone(),
                open: self.open.clone(),
            };
            let tls = chain.tls.clone();
            let checks = chain.checks.clone();
            let handshake_timeout = chain.limits.request_headers_timeout;
            let wrap = wrap.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Some(tls) = tls else {
                    let peer = PeerInfo {
                        remote_addr: Some(remote),
                        local_addr: local,
                        tls: false,
                        identity: None,
                    };
                    let io = Frames::new(tcp, conn.stats.clone());
                    return conn.serve(TokioIo::new(io), wrap(peer, &checks)).await;
                };
                match handshake(&tls, tcp, handshake_timeout).await {
                    Ok(mut accepted) => {
                        accepted.set_addrs(remote, local);
                        let svc = wrap(accepted.peer().clone(), &checks);
                        let io = Frames::new(accepted, conn.stats.clone());
                        conn.serve(TokioIo::new(io), svc).await;
                    }
                    Err(e) => {
                        tls.count_failure();
                        tracing::warn!(peer = %remote, error = %e, "TLS handshake refused");
                    }
                }
            });
        }
    }
}

/// The TLS handshake, within the limit on slow callers (`request_headers_timeout`; `0s`:
/// none).
async fn handshake(
    tls: &crate::tls::ServerTls,
    tcp: tokio::net::TcpStream,
    limit: std::time::Duration,
) -> std::io::Result<crate::tls::TlsConnection<tokio::net::TcpStream>> {
    if limit.is_zero() {
        return tls.accept(tcp).await;
    }
    match tokio::time::timeout(limit, tls.accept(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within request_headers_timeout ({limit:?})"),
        )),
    }
}

/// What one accepted connection is served with.
struct Conn {
    conns: Arc<Connections>,
    stats: Arc<ServerStats>,
    enlisted: super::connections::Enlisted,
    builder: Arc<auto::Builder<TokioExecutor>>,
    open: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Conn {
    /// Serves HTTP on `io` until the connection ends, or, once its generation is drained,
    /// shuts it down gracefully and closes it at the end of the grace period.
    async fn serve<IO, S, B>(mut self, io: IO, svc: WithPeer<S>)
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<Served<B>>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let _open = OpenGuard::new(self.open.clone());
        let peer = svc.peer.remote_addr;
        let conn = self
            .builder
            .serve_connection(io, TowerToHyperService::new(svc));
        tokio::pin!(conn);
        let ended = {
            let drained = self.enlisted.drained();
            tokio::pin!(drained);
            tokio::select! {
                r = conn.as_mut() => Some(r),
                () = drained => None,
            }
        };
        let result = match ended {
            Some(r) => r,
            None => {
                // GOAWAY (HTTP/2) or no keep-alive (HTTP/1.1): requests in flight finish.
                conn.as_mut().graceful_shutdown();
                let grace = self.conns.grace();
                match tokio::time::timeout(grace, conn.as_mut()).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.stats.drain_expired.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(peer = ?peer, ?grace, "drain grace period over: connection closed");
                        return;
                    }
                }
            }
        };
        if let Err(e) = result {
            count_error(&self.stats, peer, &e);
        }
    }
}

/// The response body after the filters' refusal wrappers.
type Served<B> = crate::telemetry::inbound::InboundBody<Refused<Refused<Refused<Refused<B>>>>>;

type Refused<B> = crate::refusal::RefusalBody<B>;

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl OpenGuard {
    fn new(open: Arc<tokio::sync::watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Names the limit that ended a connection, and counts it.
fn count_error(stats: &ServerStats, peer: Option<std::net::SocketAddr>, e: &BoxError) {
    let hyper_err = e.downcast_ref::<hyper::Error>();
    let (counter, what) = if hyper_err.is_some_and(|h| h.is_parse_too_large()) {
        (
            &stats.headers_too_large,
            "request headers over max_request_headers_kb",
        )
    } else if hyper_err.is_some_and(|h| h.is_timeout()) {
        (
            &stats.header_timeouts,
            "headers not received within request_headers_timeout",
        )
    } else if e.downcast_ref::<h2::Error>().is_some()
        || hyper_err
            .and_then(|h| std::error::Error::source(h))
            .is_some_and(|s| s.is::<h2::Error>())
    {
        (
            &stats.http2_errors,
            "HTTP/2 protocol error (rapid reset beyond max_pending_accept_reset_streams, or a malformed frame)",
        )
    } else {
        (&stats.other_errors, "connection error")
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = ?peer, error = %e, "{what}");
}

/// Puts the connection's peer into each request, then calls the RBAC-wrapped service.
#[derive(Clone)]
struct WithPeer<S> {
    peer: PeerInfo,
    inner: S,
}

impl<S, B> Service<Request<B>> for WithPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}
