//! mTLS in-process: workload identities, certificate providers, verified handshakes.
//!
//! Why it is built this way:
//! - **Identity is a SPIFFE ID** (a URI SAN), as in Istio and gRPC, so verification is the
//!   mesh's own ([`verify`](self) module): chain to the roots, then gRFC A29's SAN matchers
//!   and A87's SPIFFE rules. rustls (with `ring` only) does the protocol.
//! - **Certificates come from named providers** ([`CertificateProvider`]): gRPC's
//!   `file_watcher` (what Istio's agent writes), or material the application supplies. A
//!   cluster's TLS context names provider instances, so rotation never touches cluster
//!   config, and only new handshakes see new material.
//! - **TLS is part of connecting, not a connector option**: a cluster with a
//!   `transport_socket` always handshakes after the connector's byte stream is open, whatever
//!   connector is installed, so TLS can't be lost by swapping connectors: TLS asked, TLS or
//!   an error naming the cluster, the endpoint and the reason (counted by outlier detection
//!   as a connect failure). The peer's identity rides on every response
//!   ([`PeerIdentity`], next to [`ServedBy`](crate::ServedBy)).
//! - **Servers accept mesh mTLS** with [`ServerTls`]: an incoming stream for tonic's
//!   `serve_with_incoming` or a hyper loop, the caller's identity in request extensions.

mod client;
mod material;
mod provider;
mod san;
mod server;
mod system;
mod verify;

pub use client::ClientTls;
pub use material::{Identity, LeafInfo, MaterialError, Roots};
pub use provider::{CertificateProvider, Material, ProviderStatus};
pub use san::San;
pub use server::{PeerInfo, ServerTls, TlsConnection};
pub use verify::PeerIdentity;

use crate::control::Control;
use mesh_core::config::tls::CertificateProviders;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The one crypto provider: ring (never aws-lc; see the workspace manifest), offering TLS
/// 1.3's AES-128-GCM first.
///
/// Why that order: rustls lists AES-256-GCM first; BoringSSL (Envoy, so Istio's sidecars)
/// and Go (grpc-go) prefer AES-128-GCM on CPUs with AES instructions, and it is TLS 1.3's
/// mandatory suite. Ten AES rounds instead of fourteen is a tenth less CPU per byte on
/// large bodies (docs/benchmarks.md); both are 128-bit-secure or better.
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    let first = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    p.cipher_suites.sort_by_key(|s| s.suite() != first);
    p
}

/// A client certificate that is whatever the config was built with.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls' error, in words: its `Display` shows our refusals through `Debug`, and an ALPN
/// refusal only by the alert's name.
pub(crate) fn explain(e: std::io::Error, h2: bool) -> std::io::Error {
    use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return e;
    };
    let text = match tls {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!("invalid peer certificate: {}", other.0)
        }
        Error::AlertReceived(AlertDescription::NoApplicationProtocol) if h2 => {
            "the server did not agree to HTTP/2 (ALPN h2); a gRPC or HTTP/2 cluster needs it".into()
        }
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate and none was configured".into()
        }
        Error::AlertReceived(a) => format!("the peer refused the handshake ({a:?})"),
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "the peer did not answer with TLS (is it a plaintext port?)".into()
        }
        _ => return e,
    };
    std::io::Error::new(e.kind(), text)
}

impl CertificateProvider {
    /// `": <last error>"` when the provider has one, for "has no certificate yet" messages.
    pub(crate) fn why(&self) -> String {
        match self.status().error {
            Some(e) => format!(": {e}"),
            None => String::new(),
        }
    }
}

/// A mesh's certificate provider instances: the config's (file watchers started and stopped
/// as the config changes) and the application's own (`external`).
pub(crate) struct Providers {
    control: Control,
    external: HashMap<String, CertificateProvider>,
    live: Mutex<(CertificateProviders, HashMap<String, CertificateProvider>)>,
}

impl Providers {
    pub(crate) fn new(control: Control, external: HashMap<String, CertificateProvider>) -> Self {
        Self {
            control,
            external,
            live: Mutex::new(Default::default()),
        }
    }

    /// Brings the instances in line with `config` (unchanged entries keep their provider)
    /// and returns the lookup.
    pub(crate) fn sync(
        &self,
        config: &CertificateProviders,
    ) -> HashMap<String, CertificateProvider> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.0 != *config {
            let mut next = HashMap::new();
            for (name, c) in config {
                let keep = live.0.get(name) == Some(c);
                let was_inline = live.0.get(name).is_some_and(|o| o.inline.is_some());
                let provider = match (keep, live.1.get(name)) {
                    (true, Some(p)) => p.clone(),
                    // New inline material (an SDS secret rotated): the same provider, so
                    // clusters keep their handle and new handshakes see the new material.
                    (false, Some(p)) if was_inline && c.inline.is_some() => {
                        p.set_inline(c.inline.as_ref().expect("checked"));
                        p.clone()
                    }
                    _ if c.inline.is_some() => {
                        let p = CertificateProvider::new(name);
                        p.set_inline(c.inline.as_ref().expect("checked"));
                        p
                    }
                    _ => match &c.file_watcher {
                        Some(fw) => CertificateProvider::file_watcher(name, fw, &self.control),
                        None => self
                            .external
                            .get(name)
                            .cloned()
                            .unwrap_or_else(|| CertificateProvider::new(name)),
                    },
                };
                next.insert(name.clone(), provider);
            }
            *live = (config.clone(), next);
        }
        live.1.clone()
    }

    /// One instance, as of the last sync (else the application's own).
    pub(crate) fn get(&self, name: &str) -> Option<CertificateProvider> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.1
            .get(name)
            .or_else(|| self.external.get(name))
            .cloned()
    }
}

#[cfg(test)]
mod tests;
