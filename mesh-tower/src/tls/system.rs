//! The operating system's roots (gRFC A82's `system_root_certs`), for TLS to hosts outside
//! the mesh: a cluster that names no provider for its roots verifies against these.
//!
//! Why read the bundle ourselves: on Linux the "system roots" are one PEM file the
//! distribution maintains (`ca-certificates`), at a handful of well-known paths; `SSL_CERT_FILE`
//! overrides it, as for OpenSSL and Go. Reading it is a few lines; a crate for it would add a
//! dependency for no more behaviour. It is read once, on first use, into a process-wide
//! provider; a missing or unreadable bundle leaves that provider empty with the reason, so
//! every handshake needing it fails closed and says why.

use super::material::{MaterialError, Roots};
use super::provider::CertificateProvider;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where distributions keep the bundle, most common first.
const BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL, CentOS
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // macOS, Alpine, BSDs
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// The process-wide provider holding the system roots (named `system`).
pub(crate) fn system_roots() -> CertificateProvider {
    static SYSTEM: OnceLock<CertificateProvider> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let provider = CertificateProvider::new("system");
            match load(bundle_path()) {
                Ok((roots, path, skipped)) => {
                    tracing::debug!(bundle = %path.display(), skipped, "system roots loaded");
                    provider.set_roots(roots);
                }
                Err(e) => provider.report_error(&e),
            }
            provider
        })
        .clone()
}

/// `SSL_CERT_FILE` if set, else the first bundle that exists.
fn bundle_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    BUNDLES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Reads and parses the bundle at `path`: the roots, the path, how many certificates were
/// not usable roots.
pub(crate) fn load(path: Option<PathBuf>) -> Result<(Roots, PathBuf, usize), MaterialError> {
    let path = path.ok_or_else(|| {
        MaterialError(format!(
            "no system root bundle: set SSL_CERT_FILE or install one at {}",
            BUNDLES.join(", ")
        ))
    })?;
    let pem = std::fs::read(&path)
        .map_err(|e| MaterialError(format!("system root bundle {}: {e}", path.display())))?;
    let (roots, skipped) =
        Roots::from_bundle(&pem).map_err(|e| MaterialError(format!("{}: {e}", path.display())))?;
    Ok((roots, path, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_loads_its_usable_roots_and_a_missing_one_says_where_to_look() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, format!("{}{}", a.cert.pem(), b.cert.pem())).unwrap();
        let (roots, at, skipped) = load(Some(path.clone())).unwrap();
        assert_eq!((at, skipped), (path, 0));
        assert!(matches!(roots, Roots::Ca(r) if r.len() == 2));

        let e = load(None).unwrap_err().to_string();
        assert!(
            e.contains("set SSL_CERT_FILE") && e.contains("/etc/ssl/certs"),
            "{e}"
        );
        let e = load(Some(dir.path().join("nope.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a bundle").unwrap();
        assert!(load(Some(junk)).is_err());
    }
}
