//! The accept loop: TLS (or plaintext) per connection, HTTP/1.1 and HTTP/2 per connection,
//! the caller's `PeerInfo`, the token check and the RBAC check on every request.

use super::{MeshServer, ServerStats};
use crate::telemetry::InboundMetrics;
use crate::tls::PeerInfo;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::BoxError;
use mesh_core::config::server::Limits;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tower_service::Service;

impl MeshServer {
    /// Serves `service` on `listener` until the returned future is dropped or accepting
    /// fails for good. Every request reaches `service` with the caller's [`PeerInfo`] in its
    /// extensions, and only if the RBAC filters allow it. Failed handshakes are counted
    /// ([`ServerTls::failed_handshakes`](crate::tls::ServerTls::failed_handshakes)) and never
    /// reach the application.
    pub async fn serve<S, B>(self, listener: TcpListener, service: S) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let layer = self.rbac_layer();
        let jwt = self.jwt_layer();
        let limit = self.ratelimit_layer();
        let builder = Arc::new(builder(&self.limits));
        let stats = self.stats.clone();
        let serving = self.serving.clone();
        let refuse = move |peer: Option<std::net::SocketAddr>| {
            let not = matches!(*serving.borrow(), super::Serving::NotServing(_));
            if not {
                tracing::debug!(peer = ?peer, "not serving: connection closed");
            }
            not
        };
        let telemetry = self.telemetry.clone();
        // Metrics outside the token and RBAC checks (a refusal is a request too), inside
        // the peer's identity (its principal is a label). Tokens before RBAC: its principals
        // read the verified claims.
        let wrap = move |peer: PeerInfo| WithPeer {
            peer,
            inner: InboundMetrics::maybe(
                tower_layer::Layer::layer(
                    &limit,
                    tower_layer::Layer::layer(
                        &jwt,
                        tower_layer::Layer::layer(&layer, service.clone()),
                    ),
                ),
                telemetry.clone(),
            ),
        };
        match &self.tls {
            Some(tls) => {
                let mut incoming = Box::pin(tls.incoming(listener));
                while let Some(conn) = incoming.next().await {
                    let conn = conn?;
                    if refuse(conn.peer().remote_addr) {
                        continue;
                    }
                    let svc = wrap(conn.peer().clone());
                    let (b, st) = (builder.clone(), stats.clone());
                    tokio::spawn(serve_connection(b, st, TokioIo::new(conn), svc));
                }
                Ok(())
            }
            None => loop {
                let (tcp, remote) = listener.accept().await?;
                if refuse(Some(remote)) {
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr()?;
                let svc = wrap(PeerInfo::plaintext(remote, local));
                let (b, st) = (builder.clone(), stats.clone());
                tokio::spawn(serve_connection(b, st, TokioIo::new(tcp), svc));
            },
        }
    }
}

/// hyper's HTTP/1.1 + HTTP/2 server with `limits` applied.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    let header_bytes = limits.max_request_headers_kb as usize * 1024;
    let timeout = Some(limits.request_headers_timeout).filter(|t| !t.is_zero());
    b.http1()
        .timer(TokioTimer::new())
        .max_buf_size(header_bytes.max(8192))
        .header_read_timeout(timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams as usize);
    b
}

async fn serve_connection<IO, S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stats: Arc<ServerStats>,
    io: IO,
    svc: WithPeer<S>,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<
            Request<Incoming>,
            Response = Response<
                crate::telemetry::inbound::InboundBody<
                    crate::refusal::RefusalBody<
                        crate::refusal::RefusalBody<crate::refusal::RefusalBody<B>>,
                    >,
                >,
            >,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let peer = svc.peer.remote_addr;
    let Err(e) = builder
        .serve_connection(io, TowerToHyperService::new(svc))
        .await
    else {
        return;
    };
    // Name the limit that ended the connection, and count it.
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
