//! The cost of one mutual-TLS handshake, both ends in memory (a tokio duplex pipe, no
//! sockets): stock rustls configs against the mesh's `ClientTls` and `ServerTls`, which add the
//! SPIFFE/SAN verification, provider lookups and per-generation config caching. Session
//! resumption is off on both, so each iteration is a full TLS 1.3 handshake with client
//! certificates (ECDSA P-256, ring).
//!
//! `cargo bench -p mesh-benches --bench tls`

#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_examples::pki::{DevCa, Issued, LeafSpec};
use mesh_tower::tls::{CertificateProvider, ClientTls, Identity, Roots, ServerTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;

const SERVER_ID: &str = "spiffe://cluster.local/ns/bench/sa/echo";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/load";
const SERVER_NAME: &str = "echo.bench.svc";

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(i: &Issued) -> Vec<CertificateDer<'static>> {
    vec![CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap()]
}

fn key(i: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).unwrap()
}

struct Bare {
    client: tokio_rustls::TlsConnector,
    server: tokio_rustls::TlsAcceptor,
}

fn bare(ca: &DevCa, server: &Issued, client: &Issued) -> Bare {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.root_der())).unwrap();
    let roots = Arc::new(roots);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), ring())
            .build()
            .unwrap();
    let mut s = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(server), key(server))
        .unwrap();
    s.alpn_protocols = vec![b"h2".to_vec()];
    s.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    s.send_tls13_tickets = 0;
    let mut c = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain(client), key(client))
        .unwrap();
    c.alpn_protocols = vec![b"h2".to_vec()];
    c.resumption = rustls::client::Resumption::disabled();
    Bare {
        client: Arc::new(c).into(),
        server: Arc::new(s).into(),
    }
}

fn provider(name: &str, ca: &DevCa, me: &Issued) -> CertificateProvider {
    let p = CertificateProvider::new(name);
    p.set_identity(Identity::from_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes()).unwrap());
    p.set_roots(Roots::from_pem(ca.root_pem().as_bytes()).unwrap());
    p
}

fn mesh(ca: &DevCa, server: &Issued, client: &Issued) -> (ClientTls, ServerTls) {
    let (cp, sp) = (
        provider("client", ca, client),
        provider("server", ca, server),
    );
    let upstream = serde_saphyr::from_str(&format!(
        "common_tls_context:\n  tls_certificate_provider_instance: {{ instance_name: client }}\n  \
         validation_context:\n    ca_certificate_provider_instance: {{ instance_name: client }}\n    \
         match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: \"{SERVER_ID}\" }} }}]\n"
    ))
    .unwrap();
    let downstream = serde_saphyr::from_str(
        "require_client_certificate: true\ncommon_tls_context:\n  \
         tls_certificate_provider_instance: { instance_name: server }\n  \
         validation_context: { ca_certificate_provider_instance: { instance_name: server } }\n",
    )
    .unwrap();
    (
        ClientTls::new(&upstream, move |_| Some(cp.clone())),
        ServerTls::new(&downstream, move |_| Some(sp.clone())).unwrap(),
    )
}

fn handshakes(c: &mut Criterion) {
    let ca = DevCa::new("bench root");
    let server = ca.issue(&LeafSpec {
        uris: &[SERVER_ID],
        dns: &[SERVER_NAME],
        validity: None,
    });
    let client = ca.issue_spiffe(CLIENT_ID);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let mut g = c.benchmark_group("mtls_handshake");

    let b = bare(&ca, &server, &client);
    g.bench_function("rustls-bare", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let (a, z) = tokio::io::duplex(64 * 1024);
                let name = ServerName::try_from(SERVER_NAME).unwrap();
                let (c, s) = tokio::join!(b.client.connect(name, a), b.server.accept(z));
                (c.unwrap(), s.unwrap())
            })
        })
    });

    let (client_tls, server_tls) = mesh(&ca, &server, &client);
    g.bench_function("mesh", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let (a, z) = tokio::io::duplex(64 * 1024);
                let (c, s) =
                    tokio::join!(client_tls.handshake(a, addr, true), server_tls.accept(z));
                let (stream, peer) = c.unwrap();
                assert_eq!(peer.spiffe_id(), Some(SERVER_ID));
                (stream, s.unwrap())
            })
        })
    });
    g.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
