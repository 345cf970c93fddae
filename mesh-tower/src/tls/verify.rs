//! Verifying a peer's certificate: chain to the configured roots, then the SAN checks.
//!
//! Why not rustls' `WebPkiServerVerifier`: it checks the server's *DNS name*, while a mesh
//! names workloads by SPIFFE ID (a URI SAN) and by the matchers a control plane sends; and
//! with a SPIFFE bundle map the roots depend on the peer's own trust domain. So one verifier
//! does both directions: webpki builds and checks the chain (server or client usage), then the
//! gRFC A29/A87 rules decide. Every refusal says what was presented and what was expected.

use super::material::{LeafInfo, Roots};
use super::san::{SanMatchers, parse_leaf, spiffe_id, trust_domain};
use mesh_core::config::tls::SanType;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use std::fmt;
use std::sync::Arc;

/// Checks peers' certificates against one set of roots and SAN matchers.
pub(crate) struct PeerVerifier {
    roots: Roots,
    matchers: Arc<SanMatchers>,
    algs: WebPkiSupportedAlgorithms,
    /// Server side: a client without a certificate is refused.
    mandatory: bool,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("matchers", &self.matchers)
            .finish_non_exhaustive()
    }
}

/// A refusal, shown by rustls as "invalid peer certificate: …".
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(msg: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(msg)))))
}

impl PeerVerifier {
    pub(crate) fn new(roots: Roots, matchers: Arc<SanMatchers>, mandatory: bool) -> Self {
        Self {
            roots,
            matchers,
            algs: super::provider().signature_verification_algorithms,
            mandatory,
        }
    }

    /// Chain, SPIFFE and SAN checks for `usage`; the leaf's parsed names on success.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<LeafInfo, Error> {
        let leaf = parse_leaf(end_entity).map_err(|e| refuse(format!("leaf: {e}")))?;
        let anchors: &[TrustAnchor<'static>] = match &self.roots {
            Roots::Ca(a) => a,
            Roots::Spiffe(map) => {
                let uris: Vec<&str> = leaf
                    .sans
                    .iter()
                    .filter(|s| s.kind == SanType::Uri)
                    .map(|s| s.value.as_str())
                    .collect();
                let id = match uris.as_slice() {
                    [one] => *one,
                    [] => return Err(refuse("no URI SAN: a SPIFFE certificate has one".into())),
                    many => {
                        return Err(refuse(format!(
                            "{} URI SANs {many:?}: a SPIFFE certificate has exactly one",
                            many.len()
                        )));
                    }
                };
                let Some(domain) = trust_domain(id) else {
                    return Err(refuse(format!("URI SAN {id:?} is not a SPIFFE ID")));
                };
                match map.get(domain) {
                    Some(a) => a,
                    None => {
                        let mut known: Vec<&str> = map.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        return Err(refuse(format!(
                            "trust domain {domain:?} of {id:?} is not in the SPIFFE bundle map \
                             (known: {known:?})"
                        )));
                    }
                }
            }
        };
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| refuse(format!("leaf: {e}")))?;
        cert.verify_for_usage(
            self.algs.all,
            anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| chain_error(e, &leaf))?;
        if !self.matchers.accept(&leaf.sans) {
            let presented: Vec<String> = leaf.sans.iter().map(ToString::to_string).collect();
            return Err(refuse(format!(
                "subject alternative names {presented:?} match none of [{}]",
                self.matchers.describe()
            )));
        }
        Ok(leaf)
    }
}

/// webpki's verdict, in words a reader of the error can act on.
fn chain_error(e: webpki::Error, leaf: &LeafInfo) -> Error {
    use super::material::rfc3339;
    match e {
        webpki::Error::CertExpired { .. } => refuse(format!(
            "certificate (serial {}) expired at {}",
            leaf.serial,
            rfc3339(leaf.not_after)
        )),
        webpki::Error::CertNotValidYet { .. } => refuse(format!(
            "certificate (serial {}) is not valid before {}",
            leaf.serial,
            rfc3339(leaf.not_before)
        )),
        webpki::Error::UnknownIssuer => {
            refuse("certificate is not signed by a trusted root (unknown issuer: wrong CA?)".into())
        }
        webpki::Error::InvalidSignatureForPublicKey => {
            refuse("a signature in the certificate chain does not verify".into())
        }
        other => refuse(format!("certificate chain rejected: {other}")),
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.verify(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The identity a verified peer presented; on every response of a TLS cluster (next to
/// [`ServedBy`](crate::ServedBy)) and on every request a mesh TLS server accepts.
///
/// ```
/// # fn handle(res: http::Response<()>) {
/// if let Some(peer) = res.extensions().get::<mesh_tower::tls::PeerIdentity>() {
///     println!("answered by {:?} (certificate serial {})", peer.spiffe_id(), peer.serial());
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub(crate) Arc<LeafInfo>);

impl PeerIdentity {
    /// The peer's SPIFFE ID, if its certificate has exactly one `spiffe://` URI SAN.
    pub fn spiffe_id(&self) -> Option<&str> {
        spiffe_id(&self.0.sans)
    }

    /// All of the peer certificate's subject alternative names.
    pub fn sans(&self) -> &[super::San] {
        &self.0.sans
    }

    /// The peer certificate's subject, RFC 2253 (`CN=web,O=shop`).
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The peer certificate's serial number (lowercase hex).
    pub fn serial(&self) -> &str {
        &self.0.serial
    }

    /// The peer certificate's expiry.
    pub fn not_after(&self) -> std::time::SystemTime {
        self.0.not_after
    }

    /// From a DER certificate (for tests and benches of code that reads peers, and for
    /// identities verified elsewhere). The certificate is parsed, not verified.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        parse_leaf(&CertificateDer::from(der)).map(|l| Self(Arc::new(l)))
    }

    /// From the certificate a finished handshake saw (rustls keeps the peer's chain).
    pub(crate) fn from_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<Self> {
        let leaf = chain?.first()?;
        parse_leaf(leaf).ok().map(|l| Self(Arc::new(l)))
    }
}
