//! The accept loop: TLS (or plaintext) per connection, HTTP/1.1 and HTTP/2 per connection,
//! the caller's `PeerInfo` and the RBAC check on every request.

use super::MeshServer;
use crate::tls::PeerInfo;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::BoxError;
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
        let wrap = move |peer: PeerInfo| WithPeer {
            peer,
            inner: tower_layer::Layer::layer(&layer, service.clone()),
        };
        match &self.tls {
            Some(tls) => {
                let mut incoming = Box::pin(tls.incoming(listener));
                while let Some(conn) = incoming.next().await {
                    let conn = conn?;
                    let svc = wrap(conn.peer().clone());
                    tokio::spawn(serve_connection(TokioIo::new(conn), svc));
                }
                Ok(())
            }
            None => loop {
                let (tcp, remote) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr()?;
                let svc = wrap(PeerInfo::plaintext(remote, local));
                tokio::spawn(serve_connection(TokioIo::new(tcp), svc));
            },
        }
    }
}

async fn serve_connection<IO, S, B>(io: IO, svc: WithPeer<S>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<crate::rbac::RbacBody<B>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection(io, TowerToHyperService::new(svc))
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
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
