//! TLS: SAN rules, material checks, and real handshakes (client and server halves of this
//! module) over in-memory pipes, each refusal with the reason it must give.

use super::*;
use mesh_core::Protocol;
use mesh_core::config::tls::{DownstreamTls, UpstreamTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use std::time::{Duration, SystemTime};

/// A test CA that issues leaves with the given SANs.
pub(super) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

pub(super) fn san(s: &str) -> rcgen::SanType {
    if let Some(uri) = s.strip_prefix("uri:") {
        rcgen::SanType::URI(uri.try_into().unwrap())
    } else if let Some(ip) = s.strip_prefix("ip:") {
        rcgen::SanType::IpAddress(ip.parse().unwrap())
    } else {
        rcgen::SanType::DnsName(s.try_into().unwrap())
    }
}

impl TestCa {
    pub(super) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub(super) fn roots(&self) -> Roots {
        Roots::from_pem(self.issuer.pem().as_bytes()).unwrap()
    }

    /// A leaf's PEM chain and key.
    pub(super) fn leaf_pem(&self, sans: &[&str], serial: u64) -> (String, String) {
        self.leaf_with(sans, serial, |_| {})
    }

    pub(super) fn leaf_with(
        &self,
        sans: &[&str],
        serial: u64,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect();
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub(super) fn identity(&self, sans: &[&str], serial: u64) -> Identity {
        let (c, k) = self.leaf_pem(sans, serial);
        Identity::from_pem(c.as_bytes(), k.as_bytes()).unwrap()
    }
}

fn provider(name: &str, id: Option<Identity>, roots: Roots) -> CertificateProvider {
    let p = CertificateProvider::new(name);
    if let Some(id) = id {
        p.set_identity(id);
    }
    p.set_roots(roots);
    p
}

fn upstream(yaml: &str) -> UpstreamTls {
    serde_saphyr::from_str(yaml).unwrap()
}

const MTLS_CLIENT: &str = r#"
common_tls_context:
  tls_certificate_provider_instance: { instance_name: client }
  validation_context:
    ca_certificate_provider_instance: { instance_name: client }
"#;

fn downstream(require: bool) -> DownstreamTls {
    serde_saphyr::from_str(&format!(
        r#"
require_client_certificate: {require}
common_tls_context:
  tls_certificate_provider_instance: {{ instance_name: server }}
  validation_context: {{ ca_certificate_provider_instance: {{ instance_name: server }} }}
"#
    ))
    .unwrap()
}

const ENDPOINT: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8443,
));

/// Both handshakes over an in-memory pipe: the client's result and the server's.
async fn handshake(
    client: &ClientTls,
    server: &ServerTls,
    protocol: Protocol,
) -> (
    std::io::Result<PeerIdentity>,
    std::io::Result<Option<PeerIdentity>>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let h2 = protocol == Protocol::Http2;
    let (c, s) = tokio::join!(client.handshake(a, ENDPOINT, h2), async {
        server.accept(b).await
    });
    (
        c.map(|(_, p)| p),
        s.map(|conn| conn.peer().identity.clone()),
    )
}

struct Pair {
    client: ClientTls,
    server: ServerTls,
}

fn pair(client_cfg: &str, client: CertificateProvider, server: CertificateProvider) -> Pair {
    let client = ClientTls::new(&upstream(client_cfg), |_| Some(client.clone()));
    let server = ServerTls::new(&downstream(true), |_| Some(server.clone())).unwrap();
    Pair { client, server }
}

#[tokio::test]
async fn mutual_tls_shows_each_side_the_others_spiffe_id() {
    let ca = TestCa::new("mesh");
    let client = provider(
        "client",
        Some(ca.identity(&["uri:spiffe://cluster.local/ns/a/sa/caller"], 7)),
        ca.roots(),
    );
    let server = provider(
        "server",
        Some(ca.identity(&["uri:spiffe://cluster.local/ns/b/sa/backend"], 9)),
        ca.roots(),
    );
    let p = pair(MTLS_CLIENT, client, server);
    let (c, s) = handshake(&p.client, &p.server, Protocol::Http2).await;
    let seen_by_client = c.unwrap();
    assert_eq!(
        seen_by_client.spiffe_id(),
        Some("spiffe://cluster.local/ns/b/sa/backend")
    );
    assert_eq!(seen_by_client.serial(), "09");
    let seen_by_server = s.unwrap().unwrap();
    assert_eq!(
        seen_by_server.spiffe_id(),
        Some("spiffe://cluster.local/ns/a/sa/caller")
    );
}

#[tokio::test]
async fn tls13_aes_128_gcm_is_negotiated_as_envoy_and_go_would() {
    let ca = TestCa::new("mesh");
    let id = |name: &str| {
        provider(
            name,
            Some(ca.identity(&[&format!("uri:spiffe://cluster.local/ns/a/sa/{name}")], 3)),
            ca.roots(),
        )
    };
    let p = pair(MTLS_CLIENT, id("client"), id("server"));
    // Mesh to mesh: the server follows the client's order.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (c, s) = tokio::join!(p.client.handshake(a, ENDPOINT, true), p.server.accept(b));
    s.unwrap();
    let (stream, _) = c.unwrap();
    let suite = |s: &tokio_rustls::client::TlsStream<_>| {
        s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
    };
    assert_eq!(
        suite(&stream),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    // A stock rustls client (AES-256-GCM first) still gets its own choice from our server.
    let stock = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer))
    .with_no_client_auth();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from("backend").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(stock));
    let server = ServerTls::new(&downstream(false), |_| Some(id("server"))).unwrap();
    let (c, s) = tokio::join!(connector.connect(name, a), server.accept(b));
    s.unwrap();
    assert_eq!(
        suite(&c.unwrap()),
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
}

/// A verifier that takes any server (the test looks at the cipher suite only).
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        super::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client's error text for a handshake that must fail.
async fn client_refusal(p: &Pair, protocol: Protocol) -> String {
    let (c, s) = handshake(&p.client, &p.server, protocol).await;
    assert!(s.is_err(), "the server side must not complete either");
    c.unwrap_err().to_string()
}

#[tokio::test]
async fn wrong_san_names_what_was_presented_and_expected() {
    let ca = TestCa::new("mesh");
    let cfg = r#"
common_tls_context:
  tls_certificate_provider_instance: { instance_name: client }
  validation_context:
    ca_certificate_provider_instance: { instance_name: client }
    match_subject_alt_names: [{ exact: "spiffe://cluster.local/ns/b/sa/reviews" }]
"#;
    let p = pair(
        cfg,
        provider(
            "client",
            Some(ca.identity(&["uri:spiffe://cluster.local/ns/a/sa/x"], 1)),
            ca.roots(),
        ),
        provider(
            "server",
            Some(ca.identity(&["uri:spiffe://cluster.local/ns/b/sa/ratings"], 2)),
            ca.roots(),
        ),
    );
    let e = client_refusal(&p, Protocol::Http1).await;
    assert!(
        e.contains(r#"subject alternative names ["URI:spiffe://cluster.local/ns/b/sa/ratings"] match none of [exact "spiffe://cluster.local/ns/b/sa/reviews"]"#),
        "{e}"
    );
}

#[tokio::test]
async fn a_server_from_another_ca_is_an_unknown_issuer() {
    let (ours, theirs) = (TestCa::new("mesh"), TestCa::new("elsewhere"));
    let p = pair(
        MTLS_CLIENT,
        provider(
            "client",
            Some(ours.identity(&["uri:spiffe://td/a"], 1)),
            ours.roots(),
        ),
        provider(
            "server",
            Some(theirs.identity(&["uri:spiffe://td/b"], 2)),
            theirs.roots(),
        ),
    );
    let e = client_refusal(&p, Protocol::Http1).await;
    assert!(e.contains("not signed by a trusted root"), "{e}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_when_required() {
    let ca = TestCa::new("mesh");
    let no_identity = r#"
common_tls_context:
  validation_context: { ca_certificate_provider_instance: { instance_name: client } }
"#;
    let p = pair(
        no_identity,
        provider("client", None, ca.roots()),
        provider(
            "server",
            Some(ca.identity(&["uri:spiffe://td/b"], 2)),
            ca.roots(),
        ),
    );
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (c, s) = tokio::join!(
        async {
            // TLS 1.3: the client learns of the refusal on its first read.
            let (mut io, _) = p.client.handshake(a, ENDPOINT, false).await?;
            let mut buf = [0u8; 1];
            tokio::io::AsyncReadExt::read(&mut io, &mut buf).await
        },
        p.server.accept(b)
    );
    let s = s.unwrap_err().to_string();
    assert!(s.contains("peer sent no certificates"), "{s}");
    assert!(
        c.is_err() || c.unwrap() == 0,
        "the client sees the connection refused"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_with_its_expiry() {
    let ca = TestCa::new("mesh");
    let (cert, key) = ca.leaf_with(&["uri:spiffe://td/b"], 3, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    // Loading refuses an expired leaf…
    let e = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "leaf certificate (serial 03) expired at 2021-01-01T00:00:00Z"
    );
    // …and a peer that presents one anyway is refused by the verifier.
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let stale = Identity::from_der(
        chain,
        key,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_590_000_000),
    )
    .unwrap();
    let p = pair(
        MTLS_CLIENT,
        provider(
            "client",
            Some(ca.identity(&["uri:spiffe://td/a"], 1)),
            ca.roots(),
        ),
        provider("server", Some(stale), ca.roots()),
    );
    let e = client_refusal(&p, Protocol::Http1).await;
    assert!(e.contains("expired at 2021-01-01T00:00:00Z"), "{e}");
}

#[tokio::test]
async fn an_http2_cluster_insists_on_h2_by_alpn() {
    let ca = TestCa::new("mesh");
    let client = provider(
        "client",
        Some(ca.identity(&["uri:spiffe://td/a"], 1)),
        ca.roots(),
    );
    let server = provider(
        "server",
        Some(ca.identity(&["uri:spiffe://td/b"], 2)),
        ca.roots(),
    );
    let mut only_h1 = downstream(true);
    only_h1.common_tls_context.alpn_protocols = vec!["http/1.1".into()];
    let p = Pair {
        client: ClientTls::new(&upstream(MTLS_CLIENT), |_| Some(client.clone())),
        server: ServerTls::new(&only_h1, |_| Some(server.clone())).unwrap(),
    };
    let (c, _) = handshake(&p.client, &p.server, Protocol::Http2).await;
    let e = c.unwrap_err().to_string();
    assert!(e.contains("did not agree to HTTP/2 (ALPN h2)"), "{e}");
}

fn bundle_map(domains: &[(&str, &TestCa)]) -> Vec<u8> {
    use base64::Engine;
    let mut map = serde_json::Map::new();
    for (d, ca) in domains {
        let der = base64::engine::general_purpose::STANDARD.encode(ca.issuer.der());
        map.insert(
            (*d).to_owned(),
            serde_json::json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [der]}]}),
        );
    }
    serde_json::to_vec(&serde_json::json!({ "trust_domains": map })).unwrap()
}

#[tokio::test]
async fn spiffe_bundles_pick_roots_by_trust_domain() {
    let (a, b) = (TestCa::new("a"), TestCa::new("b"));
    let roots =
        Roots::from_spiffe_bundle_map(&bundle_map(&[("a.org", &a), ("b.org", &b)])).unwrap();
    let client = provider(
        "client",
        Some(a.identity(&["uri:spiffe://a.org/caller"], 1)),
        roots.clone(),
    );
    // A server of domain b.org, signed by b's CA: accepted.
    let server = provider(
        "server",
        Some(b.identity(&["uri:spiffe://b.org/backend"], 2)),
        roots.clone(),
    );
    let p = pair(MTLS_CLIENT, client.clone(), server);
    let (c, s) = handshake(&p.client, &p.server, Protocol::Http1).await;
    assert_eq!(c.unwrap().spiffe_id(), Some("spiffe://b.org/backend"));
    assert!(s.is_ok());

    // Claiming b.org with a certificate from a's CA: the domain's roots don't sign it.
    let liar = provider(
        "server",
        Some(a.identity(&["uri:spiffe://b.org/backend"], 3)),
        roots.clone(),
    );
    let e = client_refusal(&pair(MTLS_CLIENT, client.clone(), liar), Protocol::Http1).await;
    assert!(e.contains("not signed by a trusted root"), "{e}");

    // A domain not in the map, and two URI SANs.
    let c = TestCa::new("c");
    let stranger = provider(
        "server",
        Some(c.identity(&["uri:spiffe://c.org/x"], 4)),
        roots.clone(),
    );
    let e = client_refusal(
        &pair(MTLS_CLIENT, client.clone(), stranger),
        Protocol::Http1,
    )
    .await;
    assert!(e.contains(r#"trust domain "c.org" of "spiffe://c.org/x" is not in the SPIFFE bundle map (known: ["a.org", "b.org"])"#), "{e}");
    let two = provider(
        "server",
        Some(b.identity(&["uri:spiffe://b.org/x", "uri:spiffe://b.org/y"], 5)),
        roots,
    );
    let e = client_refusal(&pair(MTLS_CLIENT, client, two), Protocol::Http1).await;
    assert!(e.contains("2 URI SANs"), "{e}");
}

#[test]
fn one_bad_bundle_entry_rejects_the_whole_map() {
    let a = TestCa::new("a");
    let good = bundle_map(&[("a.org", &a)]);
    assert!(Roots::from_spiffe_bundle_map(&good).is_ok());
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["trust_domains"]["b.org"] =
        serde_json::json!({"keys": [{"use": "x509-svid", "x5c": ["not base64!"]}]});
    let e = Roots::from_spiffe_bundle_map(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(
        e.to_string().contains("b.org: keys[0].x5c: bad base64"),
        "{e}"
    );
}

#[test]
fn a_key_that_is_not_the_leafs_is_refused() {
    let ca = TestCa::new("mesh");
    let (cert, _) = ca.leaf_pem(&["a.example"], 1);
    let (_, other_key) = ca.leaf_pem(&["a.example"], 2);
    let e = Identity::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("private key does not fit the leaf certificate"),
        "{e}"
    );
    let e =
        Identity::from_pem(b"-----BEGIN CERTIFICATE-----\nMII", other_key.as_bytes()).unwrap_err();
    assert!(e.to_string().starts_with("certificate chain:"), "{e}");
}

#[test]
fn san_matching_follows_a29() {
    use super::san::SanMatchers;
    use mesh_core::config::tls::CertificateValidationContext;
    let ctx =
        |yaml: &str| -> CertificateValidationContext { serde_saphyr::from_str(yaml).unwrap() };
    let sans = |list: &[&str]| -> Vec<San> {
        let ca = TestCa::new("x");
        ca.identity(list, 1).leaf().sans.clone()
    };
    let m = SanMatchers::new(Some(&ctx(
        "match_subject_alt_names: [{ exact: api.example.com }]",
    )));
    assert!(
        m.accept(&sans(&["*.example.com"])),
        "exact meets a one-label wildcard"
    );
    assert!(!m.accept(&sans(&["*.com"])) && !m.accept(&sans(&["*.api.example.com"])));
    let m = SanMatchers::new(Some(&ctx(
        "match_subject_alt_names: [{ exact: \"0:0:0:0:0:0:0:1\" }]",
    )));
    assert!(m.accept(&sans(&["ip:::1"])), "IP SANs compare as addresses");
    let m = SanMatchers::new(Some(&ctx(
        "match_subject_alt_names: [{ prefix: \"SPIFFE://TD/ns/\", ignore_case: true }]",
    )));
    assert!(m.accept(&sans(&["uri:spiffe://td/ns/a/sa/b"])));
    let m = SanMatchers::new(Some(&ctx(
        "match_subject_alt_names: [{ safe_regex: { regex: \"spiffe://td/ns/[a-z]+\" } }]",
    )));
    assert!(
        !m.accept(&sans(&["uri:spiffe://td/ns/a/sa/b"])),
        "regexes match whole values"
    );
    assert!(m.accept(&sans(&["uri:spiffe://td/ns/a"])));
    let m = SanMatchers::new(Some(&ctx(
        "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: \"spiffe://td/a\" } }]",
    )));
    assert!(
        !m.accept(&sans(&["uri:spiffe://td/a"])),
        "typed matchers look at their type only"
    );
    assert!(
        SanMatchers::new(None).accept(&[]),
        "no matchers: any verified certificate"
    );
    let m = SanMatchers::new(Some(&ctx("match_subject_alt_names: [{ contains: x }]")));
    assert!(!m.accept(&[]), "no SANs match no matcher");
}

#[tokio::test(start_paused = true)]
async fn file_watcher_rotates_and_keeps_the_last_good_material() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("mesh");
    let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let write = |f: &str, text: &str| std::fs::write(dir.path().join(f), text).unwrap();
    let (c, k) = ca.leaf_pem(&["uri:spiffe://td/a"], 1);
    write("cert.pem", &c);
    write("key.pem", &k);
    write("ca.pem", &ca.issuer.pem());
    let config: mesh_core::config::tls::FileWatcher = serde_saphyr::from_str(&format!(
        "{{ certificate_file: {}, private_key_file: {}, ca_certificate_file: {}, refresh_interval: 10s }}",
        path("cert.pem"), path("key.pem"), path("ca.pem")
    ))
    .unwrap();
    let control = crate::control::Control::runtime(tokio::runtime::Handle::current());
    let p = CertificateProvider::file_watcher("default", &config, &control);
    assert_eq!(p.status().serial.as_deref(), Some("01"));
    let first = p.material();

    // A half-written certificate: the last good material stays, the problem is reported.
    write("cert.pem", &c[..c.len() / 2]);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let status = p.status();
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cert.pem")),
        "{status:?}"
    );
    assert_eq!(status.failures, 1);
    assert_eq!(p.material().generation, first.generation);

    // A new leaf (and its key) is picked up on the next refresh.
    let (c2, k2) = ca.leaf_pem(&["uri:spiffe://td/a"], 2);
    write("key.pem", &k2);
    write("cert.pem", &c2);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = p.status();
    assert_eq!(status.serial.as_deref(), Some("02"));
    assert_eq!(status.error, None);
    assert!(p.material().generation > first.generation);
}

#[test]
fn the_subject_reads_as_rfc_2253() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "shop, inc");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "web");
    let cert = params.self_signed(&key).unwrap();
    let leaf = super::san::parse_leaf(cert.der()).unwrap();
    // Last RDN first, comma-separated, the comma in the value escaped.
    assert_eq!(leaf.subject, "CN=web,O=shop\\, inc");
}
