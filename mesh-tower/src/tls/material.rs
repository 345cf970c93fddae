//! Certificate material: a workload's identity (chain + key) and the roots it trusts, parsed
//! and checked once when loaded so that handshakes only ever see material that was valid.
//!
//! What loading refuses (and the provider then keeps its last good material): a chain whose
//! leaf is expired or not yet valid, a key that does not belong to the leaf, PEM without a
//! certificate, and a SPIFFE bundle map with any bad entry (one bad entry rejects the whole
//! map, as gRFC A87 says).

use super::san::{San, parse_leaf};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Why material was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaterialError(pub(crate) String);

impl fmt::Display for MaterialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MaterialError {}

fn err(msg: impl Into<String>) -> MaterialError {
    MaterialError(msg.into())
}

/// A workload identity: a certificate chain (leaf first) and its private key, checked to
/// match, with the leaf's names and validity.
#[derive(Clone)]
pub struct Identity {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) leaf: Arc<LeafInfo>,
}

/// What the mesh reads from a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number, hex (`0a:1b:…` without separators, lowercase).
    pub serial: String,
    /// Subject alternative names.
    pub sans: Vec<San>,
    /// The subject's distinguished name, RFC 2253 (`CN=web,O=shop`).
    pub subject: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("leaf", &self.leaf)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Parses a PEM chain and a PEM private key (PKCS#8, PKCS#1 or SEC1) and checks that the
    /// key belongs to the leaf and that the leaf is valid now.
    ///
    /// ```
    /// let ca = rcgen::CertifiedIssuer::self_signed(rcgen::CertificateParams::new(vec![]).unwrap(),
    ///     rcgen::KeyPair::generate().unwrap()).unwrap();
    /// let key = rcgen::KeyPair::generate().unwrap();
    /// let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    /// params.subject_alt_names.push(rcgen::SanType::URI("spiffe://td/ns/a/sa/b".try_into().unwrap()));
    /// let leaf = params.signed_by(&key, &ca).unwrap();
    /// let id = mesh_tower::tls::Identity::from_pem(leaf.pem().as_bytes(), key.serialize_pem().as_bytes())
    ///     .unwrap();
    /// assert_eq!(id.spiffe_id(), Some("spiffe://td/ns/a/sa/b"));
    /// ```
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, MaterialError> {
        let certs = parse_certs(chain, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| err(format!("private key: no usable PEM key ({e})")))?;
        Self::from_der(certs, key, SystemTime::now())
    }

    /// As [`from_pem`](Self::from_pem), with DER values and the time validity is checked at.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        now: SystemTime,
    ) -> Result<Self, MaterialError> {
        let leaf_der = chain
            .first()
            .ok_or_else(|| err("certificate chain: no certificate"))?;
        let leaf = parse_leaf(leaf_der).map_err(|e| err(format!("leaf certificate: {e}")))?;
        if now > leaf.not_after {
            return Err(err(format!(
                "leaf certificate (serial {}) expired at {}",
                leaf.serial,
                rfc3339(leaf.not_after)
            )));
        }
        if now < leaf.not_before {
            return Err(err(format!(
                "leaf certificate (serial {}) is not valid before {}",
                leaf.serial,
                rfc3339(leaf.not_before)
            )));
        }
        let key = CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| {
            err(format!(
                "private key does not fit the leaf certificate: {e}"
            ))
        })?;
        Ok(Self {
            key: Arc::new(key),
            leaf: Arc::new(leaf),
        })
    }

    /// The leaf's names, serial and validity.
    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }

    /// The leaf's SPIFFE ID (its one `spiffe://` URI SAN), if it has exactly one.
    pub fn spiffe_id(&self) -> Option<&str> {
        super::san::spiffe_id(&self.leaf.sans)
    }
}

/// The roots a peer's chain must lead to: plain CA certificates, or per-trust-domain bundles
/// (SPIFFE, gRFC A87), where a peer's SPIFFE ID picks its domain's roots.
#[derive(Clone, Debug)]
pub enum Roots {
    /// Every peer is verified against these.
    Ca(Arc<[TrustAnchor<'static>]>),
    /// Trust domain → its roots.
    Spiffe(Arc<HashMap<String, Arc<[TrustAnchor<'static>]>>>),
}

impl Roots {
    /// Roots from PEM CA certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, MaterialError> {
        let certs = parse_certs(pem, "CA certificates")?;
        Ok(Roots::Ca(anchors(&certs, "CA certificates")?))
    }

    /// Roots from a PEM bundle of many CAs (an operating system's), keeping every
    /// certificate that is a usable root and counting those that are not (an OS bundle may
    /// hold a few that webpki cannot use; one must not void the rest).
    pub(crate) fn from_bundle(pem: &[u8]) -> Result<(Self, usize), MaterialError> {
        let certs = parse_certs(pem, "root bundle")?;
        let usable: Vec<TrustAnchor<'static>> = certs
            .iter()
            .filter_map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect();
        if usable.is_empty() {
            return Err(err("root bundle: no usable root certificate"));
        }
        let skipped = certs.len() - usable.len();
        Ok((Roots::Ca(usable.into()), skipped))
    }

    /// Roots from a SPIFFE trust bundle map (JSON):
    /// `{"trust_domains": {"example.org": {"keys": [{"use": "x509-svid", "x5c": ["<base64 DER>"]}]}}}`.
    pub fn from_spiffe_bundle_map(json: &[u8]) -> Result<Self, MaterialError> {
        use base64::Engine;
        let map: BundleMap = serde_json::from_slice(json)
            .map_err(|e| err(format!("SPIFFE bundle map: invalid JSON: {e}")))?;
        let mut out = HashMap::new();
        for (domain, bundle) in map.trust_domains {
            if domain.is_empty() || domain.contains(['/', ':']) || domain != domain.to_lowercase() {
                return Err(err(format!(
                    "SPIFFE bundle map: {domain:?} is not a trust domain name"
                )));
            }
            let mut certs = Vec::new();
            for (i, key) in bundle.keys.iter().enumerate() {
                if key.r#use.as_deref() != Some("x509-svid") {
                    continue;
                }
                match key.x5c.as_slice() {
                    [one] => {
                        let der = base64::engine::general_purpose::STANDARD
                            .decode(one)
                            .map_err(|e| {
                                err(format!(
                                    "SPIFFE bundle map: {domain}: keys[{i}].x5c: bad base64: {e}"
                                ))
                            })?;
                        certs.push(CertificateDer::from(der));
                    }
                    _ => {
                        return Err(err(format!(
                            "SPIFFE bundle map: {domain}: keys[{i}].x5c must hold exactly one certificate"
                        )));
                    }
                }
            }
            if certs.is_empty() {
                return Err(err(format!(
                    "SPIFFE bundle map: {domain}: no x509-svid key"
                )));
            }
            let what = format!("SPIFFE bundle map: {domain}");
            out.insert(domain, anchors(&certs, &what)?);
        }
        if out.is_empty() {
            return Err(err("SPIFFE bundle map: no trust domain"));
        }
        Ok(Roots::Spiffe(Arc::new(out)))
    }
}

#[derive(serde::Deserialize)]
struct BundleMap {
    trust_domains: HashMap<String, Bundle>,
}

#[derive(serde::Deserialize)]
struct Bundle {
    #[serde(default)]
    keys: Vec<Jwk>,
}

#[derive(serde::Deserialize)]
struct Jwk {
    #[serde(default)]
    r#use: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(format!("{what}: no PEM certificate")));
    }
    Ok(certs)
}

fn anchors(
    certs: &[CertificateDer<'static>],
    what: &str,
) -> Result<Arc<[TrustAnchor<'static>]>, MaterialError> {
    certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| err(format!("{what}: certificate {i} is not a usable root: {e}")))
        })
        .collect()
}

/// `2026-12-01T12:00:00Z`, for messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let mut text = crate::stats::rfc3339(t);
    // Whole seconds: drop the milliseconds.
    text.replace_range(text.len() - 5..text.len() - 1, "");
    text
}
