//! The server half: accepting mesh mTLS in front of a tonic or hyper server.
//!
//! The acceptor is config-only ([`ServerTls`]); each accepted connection becomes a
//! [`TlsConnection`] that carries the verified peer identity, so the application sees who
//! called in every request's extensions ([`PeerInfo`]). Handshakes run concurrently and a
//! failed one never reaches the application: it is logged with the peer's address and the
//! reason, and counted. The server's certificate is resolved per handshake from the provider,
//! so a rotation needs no restart and leaves open connections alone.

use super::provider::CertificateProvider;
use super::san::SanMatchers;
use super::verify::{PeerIdentity, PeerVerifier};
use arc_swap::ArcSwapOption;
use mesh_core::config::tls::DownstreamTls;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts TLS (or mTLS) for a server, from a `DownstreamTlsContext` and the mesh's
/// certificate providers. Cheap to clone.
///
/// ```no_run
/// # async fn demo(mesh: mesh_tower::Mesh) -> Result<(), Box<dyn std::error::Error>> {
/// let config: mesh_core::config::tls::DownstreamTls = serde_saphyr::from_str(r#"
/// require_client_certificate: true
/// common_tls_context:
///   tls_certificate_provider_instance: { instance_name: default }
///   validation_context: { ca_certificate_provider_instance: { instance_name: default } }
/// "#)?;
/// let tls = mesh.server_tls(&config)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let incoming = tls.incoming(listener); // for tonic's `serve_with_incoming`
/// # drop(incoming); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    config: DownstreamTls,
    identity: CertificateProvider,
    roots: Option<CertificateProvider>,
    matchers: Arc<SanMatchers>,
    built: ArcSwapOption<(u64, Arc<ServerConfig>)>,
    failed: AtomicU64,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Resolves the server certificate from the provider at each handshake.
#[derive(Debug)]
struct FromProvider(CertificateProvider);

impl ResolvesServerCert for FromProvider {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.material().identity.as_ref().map(|i| i.key.clone())
    }
}

impl ServerTls {
    /// Resolves `config`'s provider instances with `lookup`.
    pub fn new(
        config: &DownstreamTls,
        lookup: impl Fn(&str) -> Option<CertificateProvider>,
    ) -> Result<Self, String> {
        let mut errors = mesh_core::error::Errors::new();
        config.validate(&mesh_core::FieldPath::root(), &mut errors);
        errors.into_result().map_err(|e| e.to_string())?;
        let ctx = &config.common_tls_context;
        let find = |name: &str| {
            lookup(name).ok_or_else(|| format!("unknown certificate provider instance {name:?}"))
        };
        let identity = find(
            &ctx.tls_certificate_provider_instance
                .as_ref()
                .ok_or("no tls_certificate_provider_instance")?
                .instance_name,
        )?;
        let v = ctx.validation_context.as_ref();
        let roots = match v.and_then(|v| v.ca_certificate_provider_instance.as_ref()) {
            Some(i) => Some(find(&i.instance_name)?),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                identity,
                roots,
                matchers: Arc::new(SanMatchers::new(v)),
                built: ArcSwapOption::empty(),
                failed: AtomicU64::new(0),
            }),
        })
    }

    /// Handshakes that failed so far.
    pub fn failed_handshakes(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Counts a handshake that failed (or timed out) in an accept loop of the crate's own.
    pub(crate) fn count_failure(&self) {
        self.inner.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn server_config(&self) -> io::Result<Arc<ServerConfig>> {
        let inner = &self.inner;
        let roots = inner.roots.as_ref().map(CertificateProvider::material);
        let generation = roots.as_ref().map_or(0, |m| m.generation);
        if let Some(b) = &*inner.built.load()
            && b.0 == generation
        {
            return Ok(b.1.clone());
        }
        let builder = ServerConfig::builder_with_provider(Arc::new(super::provider()))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(io::Error::other)?;
        let builder = match (&inner.roots, roots) {
            (Some(p), Some(m)) => {
                let Some(r) = m.roots.clone() else {
                    return Err(io::Error::other(format!(
                        "certificate provider {:?} has no roots yet{}",
                        p.name(),
                        p.why()
                    )));
                };
                let mandatory = inner.config.require_client_certificate;
                builder.with_client_cert_verifier(Arc::new(PeerVerifier::new(
                    r,
                    inner.matchers.clone(),
                    mandatory,
                )))
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(FromProvider(inner.identity.clone())));
        // No resumption: every connection is verified against the current roots.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.alpn_protocols = match &inner.config.common_tls_context.alpn_protocols {
            p if p.is_empty() => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            p => p.iter().map(|p| p.as_bytes().to_vec()).collect(),
        };
        let config = Arc::new(config);
        inner
            .built
            .store(Some(Arc::new((generation, config.clone()))));
        Ok(config)
    }

    /// Runs the server handshake on an accepted connection.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<TlsConnection<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if self.inner.identity.material().identity.is_none() {
            return Err(io::Error::other(format!(
                "certificate provider {:?} has no certificate yet{}",
                self.inner.identity.name(),
                self.inner.identity.why()
            )));
        }
        let config = self.server_config()?;
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(io)
            .await
            .map_err(|e| super::explain(e, false))?;
        let identity = PeerIdentity::from_chain(stream.get_ref().1.peer_certificates());
        Ok(TlsConnection {
            stream,
            info: PeerInfo {
                remote_addr: None,
                local_addr: None,
                tls: true,
                identity,
            },
        })
    }

    /// Accepts connections from `listener` and yields those whose handshake succeeded
    /// (handshakes run concurrently; failures are logged and counted, never yielded), for
    /// `tonic::transport::Server::serve_with_incoming` or a hyper accept loop. The accept
    /// loop stops when the stream is dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl futures_util::Stream<Item = io::Result<TlsConnection<TcpStream>>> + Send + 'static
    {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed");
                            continue;
                        }
                    },
                    () = tx.closed() => break,
                };
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().ok();
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tls.accept(tcp).await {
                        Ok(mut conn) => {
                            conn.info.remote_addr = Some(remote);
                            conn.info.local_addr = local;
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Err(e) => {
                            tls.inner.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(peer = %remote, error = %e, "TLS handshake refused");
                        }
                    }
                });
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}

/// Who is on the other end of an accepted connection: in each request's extensions (tonic
/// puts it there through `Connected`; a hyper server inserts [`TlsConnection::peer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// Our own address of the connection.
    pub local_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate's identity (`None`: the client sent none, which only
    /// a server without `require_client_certificate` accepts).
    pub identity: Option<PeerIdentity>,
}

impl PeerInfo {
    /// A plaintext connection's peer: addresses only.
    pub fn plaintext(remote_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        Self {
            remote_addr: Some(remote_addr),
            local_addr: Some(local_addr),
            tls: false,
            identity: None,
        }
    }
}

/// An accepted TLS connection and its peer.
pub struct TlsConnection<IO> {
    stream: tokio_rustls::server::TlsStream<IO>,
    info: PeerInfo,
}

impl<IO> fmt::Debug for TlsConnection<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.info)
            .finish_non_exhaustive()
    }
}

impl<IO> TlsConnection<IO> {
    /// Records the connection's addresses (the handshake does not know them).
    pub(crate) fn set_addrs(&mut self, remote: SocketAddr, local: Option<SocketAddr>) {
        self.info.remote_addr = Some(remote);
        self.info.local_addr = local;
    }

    /// The peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.info
    }

    /// The negotiated ALPN protocol.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConnection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConnection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(feature = "tonic")]
impl<IO> tonic::transport::server::Connected for TlsConnection<IO> {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}
