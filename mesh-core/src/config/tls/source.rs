//! Envoy's own way of naming certificates in a TLS context: `tls_certificates` and
//! `trusted_ca` as data sources (a file, or PEM inline), the shape go-control-plane snapshots
//! and Envoy static files are written in.
//!
//! Why they are *hoisted* into provider instances: the runtime knows one kind of material,
//! the certificate provider (rotation, status, the config dump's redaction all live there).
//! When a cluster or server enters the store, each data source becomes a provider instance
//! named [`INLINE_PREFIX`]`<hash of its content>` — a `file_watcher` for files, `inline` for
//! PEM — and the context names that instance instead. Equal material gives the same name, so
//! an unchanged resource sent again stays equal and keeps its connections; the store drops
//! such instances when nothing names them any more.
//!
//! Where this differs from Envoy on purpose: Envoy reads a `filename` once (or when a
//! `watched_directory` moves); here the file is re-read every
//! [`DEFAULT_REFRESH_INTERVAL`](super::DEFAULT_REFRESH_INTERVAL) like gRPC's `file_watcher`,
//! so a rotated file is picked up without a config push.

use super::{CertificateProvider, CertificateProviderInstance, FileWatcher, InlineMaterial};
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Prefix of the provider instances made from data sources (`inline:<hash>`).
pub const INLINE_PREFIX: &str = "inline:";

/// Envoy's `DataSource`: a file, or the text itself. Exactly one is set.
///
/// ```
/// let d: mesh_core::config::tls::DataSource =
///     serde_saphyr::from_str("filename: /etc/certs/root-cert.pem").unwrap();
/// assert!(d.inline_string.is_none());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// A PEM file, re-read like a `file_watcher` provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// PEM text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSource")
            .field("filename", &self.filename)
            .field(
                "inline_string",
                &self.inline_string.as_ref().map(String::len),
            )
            .finish()
    }
}

impl DataSource {
    /// A file.
    pub fn file(path: impl Into<String>) -> Self {
        DataSource {
            filename: Some(path.into()),
            inline_string: None,
        }
    }

    /// PEM text.
    pub fn inline(pem: impl Into<String>) -> Self {
        DataSource {
            filename: None,
            inline_string: Some(pem.into()),
        }
    }

    pub(super) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        match (&self.filename, &self.inline_string) {
            (Some(f), None) => {
                errors.check(!f.is_empty(), &path.field("filename"), "must not be empty")
            }
            (None, Some(s)) => errors.check(
                !s.is_empty(),
                &path.field("inline_string"),
                "must not be empty",
            ),
            _ => errors.push(
                path,
                "exactly one of filename and inline_string must be set",
            ),
        }
    }
}

/// Envoy's `TlsCertificate`: this side's chain and key.
///
/// ```
/// let yaml = r#"
/// certificate_chain: { filename: /etc/certs/cert-chain.pem }
/// private_key: { filename: /etc/certs/key.pem }
/// "#;
/// let c: mesh_core::config::tls::TlsCertificate = serde_saphyr::from_str(yaml).unwrap();
/// assert!(c.private_key.filename.is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM chain, leaf first.
    pub certificate_chain: DataSource,
    /// PEM private key of the leaf (inline text is shown as `[redacted]` in dumps).
    #[serde(serialize_with = "redacted_key")]
    pub private_key: DataSource,
}

fn redacted_key<S: serde::Serializer>(key: &DataSource, s: S) -> Result<S::Ok, S::Error> {
    match key.inline_string {
        Some(_) => DataSource::inline("[redacted]").serialize(s),
        None => key.serialize(s),
    }
}

impl TlsCertificate {
    pub(super) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        self.certificate_chain
            .validate(&path.field("certificate_chain"), errors);
        self.private_key
            .validate(&path.field("private_key"), errors);
        errors.check(
            self.certificate_chain.filename.is_some() == self.private_key.filename.is_some(),
            path,
            "certificate_chain and private_key must both be files or both inline",
        );
    }

    fn provider(&self) -> CertificateProvider {
        match (&self.certificate_chain.filename, &self.private_key.filename) {
            (Some(cert), Some(key)) => files(FileWatcher {
                certificate_file: Some(cert.clone()),
                private_key_file: Some(key.clone()),
                ..FileWatcher::default()
            }),
            _ => inline(InlineMaterial {
                certificate_chain: self.certificate_chain.inline_string.clone(),
                private_key: self.private_key.inline_string.clone(),
                trusted_ca: None,
            }),
        }
    }
}

/// The provider a `trusted_ca` data source stands for.
fn roots_provider(ca: &DataSource) -> CertificateProvider {
    match &ca.filename {
        Some(f) => files(FileWatcher {
            ca_certificate_file: Some(f.clone()),
            ..FileWatcher::default()
        }),
        None => inline(InlineMaterial {
            trusted_ca: ca.inline_string.clone(),
            ..InlineMaterial::default()
        }),
    }
}

fn files(fw: FileWatcher) -> CertificateProvider {
    CertificateProvider {
        file_watcher: Some(fw),
        ..CertificateProvider::default()
    }
}

fn inline(m: InlineMaterial) -> CertificateProvider {
    CertificateProvider {
        inline: Some(m),
        ..CertificateProvider::default()
    }
}

/// `inline:` and a hash of everything the provider reads (stable within a process: equal
/// material, equal name).
fn name_of(p: &CertificateProvider) -> String {
    let mut h = DefaultHasher::new();
    if let Some(fw) = &p.file_watcher {
        ("file", &fw.certificate_file, &fw.private_key_file).hash(&mut h);
        (&fw.ca_certificate_file, &fw.spiffe_trust_bundle_map_file).hash(&mut h);
    }
    if let Some(m) = &p.inline {
        ("pem", &m.certificate_chain, &m.private_key, &m.trusted_ca).hash(&mut h);
    }
    format!("{INLINE_PREFIX}{:016x}", h.finish())
}

impl super::CommonTlsContext {
    /// Replaces this context's data sources (`tls_certificates`, `trusted_ca`) with provider
    /// instances and returns those instances, to be added to the document's providers. A
    /// context without data sources is left as it is.
    pub fn hoist_data_sources(&mut self) -> Vec<(String, CertificateProvider)> {
        let mut out = Vec::new();
        let mut named = |p: CertificateProvider| {
            let name = name_of(&p);
            out.push((name.clone(), p));
            Some(CertificateProviderInstance {
                instance_name: name,
                certificate_name: String::new(),
            })
        };
        if let Some(c) = self.tls_certificates.pop() {
            self.tls_certificate_provider_instance = named(c.provider());
        }
        if let Some(v) = self.validation_context.as_mut()
            && let Some(ca) = v.trusted_ca.take()
        {
            v.ca_certificate_provider_instance = named(roots_provider(&ca));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CertificateValidationContext, CommonTlsContext, UpstreamTls};
    use super::*;

    fn envoy_style(ca: DataSource) -> CommonTlsContext {
        CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: DataSource::file("/certs/chain.pem"),
                private_key: DataSource::file("/certs/key.pem"),
            }],
            validation_context: Some(CertificateValidationContext {
                trusted_ca: Some(ca),
                ..CertificateValidationContext::default()
            }),
            ..CommonTlsContext::default()
        }
    }

    #[test]
    fn data_sources_become_named_providers() {
        let mut ctx = envoy_style(DataSource::inline("-----BEGIN CERTIFICATE-----"));
        let added = ctx.hoist_data_sources();
        assert!(ctx.tls_certificates.is_empty());
        let v = ctx.validation_context.as_ref().unwrap();
        assert!(v.trusted_ca.is_none());
        let names: Vec<&str> = ctx.provider_names().collect();
        assert_eq!(names, [added[0].0.as_str(), added[1].0.as_str()]);
        assert!(names.iter().all(|n| n.starts_with(INLINE_PREFIX)));
        let fw = added[0].1.file_watcher.as_ref().unwrap();
        assert_eq!(fw.private_key_file.as_deref(), Some("/certs/key.pem"));
        let pem = added[1].1.inline.as_ref().unwrap();
        assert_eq!(
            pem.trusted_ca.as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn equal_material_gives_equal_names_and_other_material_others() {
        let (mut a, mut b) = (
            envoy_style(DataSource::file("/certs/root.pem")),
            envoy_style(DataSource::file("/certs/root.pem")),
        );
        let mut c = envoy_style(DataSource::file("/certs/other-root.pem"));
        let (na, nb, nc) = (
            a.hoist_data_sources(),
            b.hoist_data_sources(),
            c.hoist_data_sources(),
        );
        assert_eq!(na, nb);
        assert_eq!(a, b);
        assert_eq!(na[0].0, nc[0].0, "same certificate files");
        assert_ne!(na[1].0, nc[1].0, "other roots");
    }

    #[test]
    fn validation_names_the_broken_source() {
        let mut tls = UpstreamTls {
            sni: None,
            common_tls_context: envoy_style(DataSource::default()),
        };
        tls.common_tls_context.tls_certificates[0].private_key = DataSource::inline("KEY");
        let mut errors = Errors::new();
        tls.validate(&FieldPath::root(), &mut errors);
        let text = errors.into_result().unwrap_err().to_string();
        assert!(
            text.contains("common_tls_context.validation_context.trusted_ca: exactly one of filename and inline_string"),
            "{text}"
        );
        assert!(
            text.contains("tls_certificates[0]: certificate_chain and private_key must both be files or both inline"),
            "{text}"
        );
    }

    #[test]
    fn an_inline_key_is_redacted_in_dumps() {
        let c = TlsCertificate {
            certificate_chain: DataSource::inline("CHAIN"),
            private_key: DataSource::inline("SECRET KEY"),
        };
        let yaml = serde_saphyr::to_string(&c).unwrap();
        assert!(
            !yaml.contains("SECRET") && yaml.contains("[redacted]"),
            "{yaml}"
        );
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
