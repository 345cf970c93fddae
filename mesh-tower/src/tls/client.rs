//! The client half: a cluster's `UpstreamTlsContext` made into rustls configs and handshakes.
//!
//! A config is built from the providers' material on first use and rebuilt only when that
//! material changes (a generation number), so a handshake normally costs one `ArcSwap` load
//! on top of rustls. Session resumption is off: a resumed session skips verification, so it
//! would keep trusting a peer across a root rotation or a SAN policy change.

use super::provider::CertificateProvider;
use super::san::SanMatchers;
use super::verify::{PeerIdentity, PeerVerifier};
use arc_swap::ArcSwapOption;
use mesh_core::config::tls::UpstreamTls;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// One cluster's TLS (its `transport_socket`), resolved against the mesh's certificate
/// providers; part of a [`ConnectTarget`](crate::connect::ConnectTarget). A custom connector
/// can run the same verified handshake with [`handshake`](Self::handshake).
///
/// ```
/// use mesh_tower::tls::{CertificateProvider, ClientTls};
/// let config = serde_saphyr::from_str(
///     "common_tls_context: { validation_context: { ca_certificate_provider_instance: { instance_name: roots } } }",
/// )
/// .unwrap();
/// let roots = CertificateProvider::new("roots"); // fed by the application
/// let tls = ClientTls::new(&config, |name| (name == "roots").then(|| roots.clone()));
/// # drop(tls);
/// ```
pub struct ClientTls {
    config: Arc<UpstreamTls>,
    identity: Option<CertificateProvider>,
    roots: CertificateProvider,
    matchers: Arc<SanMatchers>,
    server_name: ServerName<'static>,
    /// Why this context cannot work (fails every handshake).
    broken: Option<String>,
    /// Built configs: `[HTTP/1.1 ALPN, h2 ALPN]`, with the material generations they used.
    built: [ArcSwapOption<Built>; 2],
}

struct Built {
    generations: (u64, u64),
    config: Arc<ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &CertificateProvider, b: &CertificateProvider| a.same(b);
        self.config == other.config
            && same(&self.roots, &other.roots)
            && match (&self.identity, &other.identity) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// Resolves `config`'s provider instances with `lookup`. Never fails: what cannot be
    /// resolved (validation prevents it) makes every handshake fail with the reason.
    pub fn new(config: &UpstreamTls, lookup: impl Fn(&str) -> Option<CertificateProvider>) -> Self {
        let ctx = &config.common_tls_context;
        let mut broken = None;
        let mut find = |name: &str| {
            lookup(name).unwrap_or_else(|| {
                broken = Some(
                    match name.strip_prefix(mesh_core::config::tls::SDS_PREFIX) {
                        Some(secret) => format!("SDS secret {secret:?} has not arrived"),
                        None => format!("unknown certificate provider instance {name:?}"),
                    },
                );
                CertificateProvider::new(name)
            })
        };
        let identity = ctx
            .tls_certificate_provider_instance
            .as_ref()
            .map(|i| find(&i.instance_name));
        let v = ctx.validation_context.as_ref();
        let system = v.is_some_and(|v| v.uses_system_roots());
        let roots = match v.and_then(|v| v.ca_certificate_provider_instance.as_ref()) {
            Some(i) => find(&i.instance_name),
            None if system => super::system::system_roots(),
            None => {
                broken = Some("no validation context: the server would not be verified".into());
                CertificateProvider::new("")
            }
        };
        // With the OS roots and no SAN matcher, the certificate must name the server (`sni`):
        // every public CA is trusted, so the chain alone proves nothing about who answers.
        let mut matchers = SanMatchers::new(v);
        if system && !v.is_some_and(|v| v.has_san_matchers()) {
            match &config.sni {
                Some(sni) => matchers = SanMatchers::server_name(sni),
                None => {
                    broken = Some(
                        "system_root_certs without sni or SAN matchers would accept any \
                         publicly trusted certificate"
                            .into(),
                    )
                }
            }
        }
        let server_name = match &config.sni {
            Some(sni) => ServerName::try_from(sni.clone()).unwrap_or_else(|e| {
                broken = Some(format!("sni {sni:?} is not a server name: {e}"));
                ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
            }),
            // No SNI: rustls sends none for an IP address.
            None => ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
        };
        Self {
            config: Arc::new(config.clone()),
            identity,
            roots,
            matchers: Arc::new(matchers),
            server_name,
            broken,
            built: Default::default(),
        }
    }

    /// Whether this TLS presents a client certificate (mutual TLS, the mesh's own).
    pub(crate) fn is_mutual(&self) -> bool {
        self.identity.is_some()
    }

    fn client_config(&self, h2: bool) -> Result<Arc<ClientConfig>, String> {
        let slot = &self.built[usize::from(h2)];
        let id = self.identity.as_ref().map(CertificateProvider::material);
        let roots = self.roots.material();
        let generations = (id.as_ref().map_or(0, |m| m.generation), roots.generation);
        if let Some(b) = &*slot.load()
            && b.generations == generations
        {
            return Ok(b.config.clone());
        }
        let Some(r) = roots.roots.clone() else {
            return Err(format!(
                "certificate provider {:?} has no roots yet{}",
                self.roots.name(),
                self.roots.why()
            ));
        };
        let verifier = Arc::new(PeerVerifier::new(r, self.matchers.clone(), false));
        let builder = ClientConfig::builder_with_provider(Arc::new(super::provider()))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.identity, id) {
            (Some(p), Some(m)) => match &m.identity {
                Some(identity) => {
                    builder.with_client_cert_resolver(Arc::new(super::Fixed(identity.key.clone())))
                }
                None => {
                    return Err(format!(
                        "certificate provider {:?} has no certificate yet{}",
                        p.name(),
                        p.why()
                    ));
                }
            },
            _ => builder.with_no_client_auth(),
        };
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            self.config
                .common_tls_context
                .alpn_protocols
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect()
        };
        let config = Arc::new(config);
        slot.store(Some(Arc::new(Built {
            generations,
            config: config.clone(),
        })));
        Ok(config)
    }

    /// Runs the handshake over `io` to the endpoint at `address`: the peer's verified
    /// identity on success. With `h2`, the server must agree to HTTP/2 by ALPN.
    pub async fn handshake<IO>(
        &self,
        io: IO,
        address: SocketAddr,
        h2: bool,
    ) -> io::Result<(tokio_rustls::client::TlsStream<IO>, PeerIdentity)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(why) = &self.broken {
            return Err(io::Error::other(why.clone()));
        }
        let config = self.client_config(h2).map_err(io::Error::other)?;
        let name = match &self.server_name {
            ServerName::IpAddress(_) => ServerName::IpAddress(address.ip().into()),
            other => other.clone(),
        };
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, io)
            .await
            .map_err(|e| super::explain(e, h2))?;
        let conn = stream.get_ref().1;
        if h2 && conn.alpn_protocol() != Some(b"h2") {
            return Err(io::Error::other(
                "the server did not agree to HTTP/2 (ALPN h2); a gRPC or HTTP/2 cluster needs it",
            ));
        }
        let peer = PeerIdentity::from_chain(conn.peer_certificates())
            .ok_or_else(|| io::Error::other("the server presented no parsable certificate"))?;
        Ok((stream, peer))
    }
}
