//! A throwaway certificate authority for examples and tests: it issues SPIFFE workload
//! certificates and writes them where a `file_watcher` certificate provider reads them, with
//! the file names Istio's agent uses (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
//!
//! Never use it for anything real: its keys live in memory and in temporary files.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A development CA.
#[derive(Debug)]
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    serial: AtomicU64,
}

/// An issued certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (leaf only; the CA is the root).
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// Its serial number as the mesh shows it (lowercase hex, minimal).
    pub serial: String,
}

/// A calendar date: year, month, day.
pub type Ymd = (i32, u8, u8);

/// What a leaf says about itself.
#[derive(Clone, Debug)]
pub struct LeafSpec<'a> {
    /// URI SANs (SPIFFE IDs).
    pub uris: &'a [&'a str],
    /// DNS SANs.
    pub dns: &'a [&'a str],
    /// Validity window as `(year, month, day)` dates, from–to; `None`: long-lived.
    pub validity: Option<(Ymd, Ymd)>,
}

impl DevCa {
    /// A new self-signed root named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(vec![]).expect("empty SAN list");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key generation");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed root"),
            serial: AtomicU64::new(1),
        }
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A workload certificate for one SPIFFE ID.
    pub fn issue_spiffe(&self, spiffe_id: &str) -> Issued {
        self.issue(&LeafSpec {
            uris: &[spiffe_id],
            dns: &[],
            validity: None,
        })
    }

    /// A certificate as `spec` says.
    pub fn issue(&self, spec: &LeafSpec<'_>) -> Issued {
        let key = KeyPair::generate().expect("key generation");
        let mut params = CertificateParams::new(vec![]).expect("empty SAN list");
        for uri in spec.uris {
            let uri = (*uri).try_into().expect("URI SAN is ASCII");
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for dns in spec.dns {
            let dns = (*dns).try_into().expect("DNS SAN is ASCII");
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        if let Some(((y0, m0, d0), (y1, m1, d1))) = spec.validity {
            params.not_before = rcgen::date_time_ymd(y0, m0, d0);
            params.not_after = rcgen::date_time_ymd(y1, m1, d1);
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: minimal_hex(serial),
        }
    }

    /// Writes `issued` and this root into `dir` under Istio's names; returns the paths
    /// (`cert-chain.pem`, `key.pem`, `root-cert.pem`). The key is written first, then the
    /// certificate, each by rename, so a watcher never reads a half-written file.
    pub fn write_workload(&self, dir: &Path, issued: &Issued) -> io::Result<WorkloadFiles> {
        std::fs::create_dir_all(dir)?;
        let files = WorkloadFiles {
            cert: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            roots: dir.join("root-cert.pem"),
        };
        self.write_workload_cert(&files, issued)?;
        write_atomic(&files.roots, &self.root_pem())?;
        Ok(files)
    }

    /// Replaces a workload's certificate and key (not its roots): a leaf rotation.
    pub fn write_workload_cert(&self, files: &WorkloadFiles, issued: &Issued) -> io::Result<()> {
        write_atomic(&files.key, &issued.key_pem)?;
        write_atomic(&files.cert, &issued.cert_pem)
    }
}

/// A SPIFFE trust bundle map (the JSON a `file_watcher`'s `spiffe_trust_bundle_map_file`
/// holds): each trust domain's roots are the given CA's.
pub fn spiffe_bundle_map(domains: &[(&str, &DevCa)]) -> String {
    use base64::Engine;
    let mut map = serde_json::Map::new();
    for (domain, ca) in domains {
        let der = base64::engine::general_purpose::STANDARD.encode(ca.root_der());
        let key = serde_json::json!({"use": "x509-svid", "kty": "EC", "x5c": [der]});
        map.insert((*domain).to_owned(), serde_json::json!({ "keys": [key] }));
    }
    serde_json::json!({ "trust_domains": map }).to_string()
}

/// Where [`DevCa::write_workload`] put a workload's files.
#[derive(Clone, Debug)]
pub struct WorkloadFiles {
    /// `cert-chain.pem`.
    pub cert: PathBuf,
    /// `key.pem`.
    pub key: PathBuf,
    /// `root-cert.pem`.
    pub roots: PathBuf,
}

impl WorkloadFiles {
    /// A `certificate_providers` entry (YAML flow mapping) that watches these files.
    pub fn file_watcher_yaml(&self, refresh: &str) -> String {
        format!(
            "{{ file_watcher: {{ certificate_file: {:?}, private_key_file: {:?}, ca_certificate_file: {:?}, refresh_interval: {refresh} }} }}",
            self.cert.display().to_string(),
            self.key.display().to_string(),
            self.roots.display().to_string(),
        )
    }
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

fn minimal_hex(n: u64) -> String {
    let bytes = n.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}
