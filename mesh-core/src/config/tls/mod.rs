//! TLS: where certificates come from (certificate providers) and how a connection uses them
//! (the TLS contexts of clusters and servers).
//!
//! The shapes are Envoy's and gRPC's (gRFC A29): a cluster's `transport_socket` is an
//! `UpstreamTlsContext` whose identity and roots are *certificate provider instances*, named
//! entries of the document's `certificate_providers` (the bootstrap's, under xDS). The names
//! indirect on purpose: the same cluster config works whether the files come from Istio's
//! agent, cert-manager, or the application itself, and a rotation replaces the material
//! without touching any cluster.
//!
//! What validation refuses is what would make TLS weaker than asked: a context that verifies
//! nothing (no validation context or no roots), an unknown provider, an empty SAN matcher
//! (which would match everything), or a certificate without its key.

mod source;

pub use source::{DataSource, INLINE_PREFIX, TlsCertificate};

use super::route::{StringMatcher, check_regex};
use crate::duration;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The certificate providers of a document, by instance name.
pub type CertificateProviders = BTreeMap<String, CertificateProvider>;

/// One certificate provider instance: exactly one plugin.
///
/// ```
/// let yaml = r#"
/// file_watcher:
///   certificate_file: /var/run/secrets/workload-spiffe-credentials/cert-chain.pem
///   private_key_file: /var/run/secrets/workload-spiffe-credentials/key.pem
///   ca_certificate_file: /var/run/secrets/workload-spiffe-credentials/root-cert.pem
///   refresh_interval: 900s
/// "#;
/// let p: mesh_core::config::tls::CertificateProvider = serde_saphyr::from_str(yaml).unwrap();
/// assert_eq!(p.file_watcher.unwrap().refresh_interval.as_secs(), 900);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateProvider {
    /// gRPC's `file_watcher` plugin: PEM files re-read every `refresh_interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_watcher: Option<FileWatcher>,
    /// Material the application supplies at run time (`MeshBuilder::certificate_provider`).
    /// Until it does, handshakes that need it fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
    /// PEM material carried in the config itself: what an SDS `Secret` delivers over ADS
    /// (the xDS client names such instances [`SDS_PREFIX`]`<secret>`), or Envoy's
    /// `inline_string` in a static file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineMaterial>,
}

/// Prefix of the instance names the xDS client gives SDS secrets (`sds:<secret name>`), so an
/// SDS secret and a bootstrap provider can never share a name.
pub const SDS_PREFIX: &str = "sds:";

/// The `inline` plugin: PEM text. Either half may be absent (an SDS validation secret carries
/// only roots; a certificate secret only the identity). Config dumps show the key as
/// `[redacted]`, as Envoy's do.
///
/// ```
/// use mesh_core::config::tls::CertificateProvider;
/// let p: CertificateProvider = serde_saphyr::from_str("inline: { trusted_ca: \"-----BEGIN CERTIFICATE-----\" }").unwrap();
/// assert!(p.inline.unwrap().certificate_chain.is_none());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineMaterial {
    /// PEM certificate chain, leaf first (with `private_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<String>,
    /// PEM private key of the leaf.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub private_key: Option<String>,
    /// PEM trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<String>,
}

fn redacted<S: serde::Serializer>(_: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

impl std::fmt::Debug for InlineMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineMaterial")
            .field(
                "certificate_chain",
                &self.certificate_chain.as_ref().map(String::len),
            )
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "[redacted]"),
            )
            .field("trusted_ca", &self.trusted_ca.as_ref().map(String::len))
            .finish()
    }
}

/// The `file_watcher` plugin's config, as gRPC and Istio's agent write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWatcher {
    /// PEM certificate chain, leaf first (with `private_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    /// PEM private key of the leaf (with `certificate_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    /// PEM trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_file: Option<String>,
    /// SPIFFE trust bundle map (JSON, gRFC A87); when set it replaces `ca_certificate_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_trust_bundle_map_file: Option<String>,
    /// How often the files are re-read (gRPC's default: 10 minutes).
    #[serde(default = "default_refresh", with = "duration")]
    pub refresh_interval: Duration,
}

/// gRPC's default `refresh_interval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

fn default_refresh() -> Duration {
    DEFAULT_REFRESH_INTERVAL
}

impl Default for FileWatcher {
    fn default() -> Self {
        FileWatcher {
            certificate_file: None,
            private_key_file: None,
            ca_certificate_file: None,
            spiffe_trust_bundle_map_file: None,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// The `external` plugin: no config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {}

impl CertificateProvider {
    /// Checks the provider; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        match (&self.file_watcher, &self.external, &self.inline) {
            (Some(fw), None, None) => fw.validate(&path.field("file_watcher"), errors),
            (None, Some(_), None) => {}
            (None, None, Some(m)) => errors.check(
                m.certificate_chain.is_some() == m.private_key.is_some(),
                &path.field("inline"),
                "certificate_chain and private_key must be given together",
            ),
            _ => errors.push(
                path,
                "exactly one of file_watcher, external and inline must be set",
            ),
        }
    }
}

impl FileWatcher {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let nonempty = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        for (field, v) in [
            ("certificate_file", &self.certificate_file),
            ("private_key_file", &self.private_key_file),
            ("ca_certificate_file", &self.ca_certificate_file),
            (
                "spiffe_trust_bundle_map_file",
                &self.spiffe_trust_bundle_map_file,
            ),
        ] {
            errors.check(
                v.is_none() || nonempty(v),
                &path.field(field),
                "must not be empty",
            );
        }
        errors.check(
            self.certificate_file.is_some() == self.private_key_file.is_some(),
            path,
            "certificate_file and private_key_file must be given together",
        );
        errors.check(
            self.certificate_file.is_some()
                || self.ca_certificate_file.is_some()
                || self.spiffe_trust_bundle_map_file.is_some(),
            path,
            "names no file (a certificate, roots or a SPIFFE bundle map is needed)",
        );
        errors.check(
            !self.refresh_interval.is_zero(),
            &path.field("refresh_interval"),
            "must be greater than 0",
        );
    }
}

/// Envoy's `UpstreamTlsContext`: TLS from a client to a cluster's endpoints.
///
/// ```
/// let yaml = r#"
/// sni: reviews.default.svc.cluster.local
/// common_tls_context:
///   tls_certificate_provider_instance: { instance_name: default }
///   validation_context:
///     ca_certificate_provider_instance: { instance_name: default }
///     match_subject_alt_names:
///       - exact: spiffe://cluster.local/ns/default/sa/reviews
/// "#;
/// let tls: mesh_core::config::tls::UpstreamTls = serde_saphyr::from_str(yaml).unwrap();
/// assert_eq!(tls.provider_names().collect::<Vec<_>>(), ["default", "default"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name to send (SNI); none is sent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Identity, roots, verification and ALPN.
    pub common_tls_context: CommonTlsContext,
}

/// Envoy's `DownstreamTlsContext`: TLS for connections a server accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTls {
    /// Identity, roots for client certificates, verification and ALPN.
    pub common_tls_context: CommonTlsContext,
    /// Refuse clients without a valid certificate (mTLS; Istio STRICT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_client_certificate: bool,
}

/// Envoy's `CommonTlsContext`: certificate provider instances, or Envoy's data sources
/// (`tls_certificates`, `trusted_ca`), which the store turns into provider instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonTlsContext {
    /// This side's certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate_provider_instance: Option<CertificateProviderInstance>,
    /// This side's certificate and key as Envoy names them (at most one; instead of
    /// `tls_certificate_provider_instance`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
    /// How the peer's certificate is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_context: Option<CertificateValidationContext>,
    /// ALPN protocols to offer (clients) or accept (servers); HTTP/2 clusters offer `h2`
    /// whatever this says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_protocols: Vec<String>,
}

/// A named certificate provider instance, and which certificate of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateProviderInstance {
    /// The key in `certificate_providers`.
    pub instance_name: String,
    /// Which certificate of the instance (the `file_watcher` plugin has one; ignored).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_name: String,
}

/// Envoy's `CertificateValidationContext`: roots and subject alternative name checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateValidationContext {
    /// The trusted roots (or SPIFFE trust bundles) of this provider instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_provider_instance: Option<CertificateProviderInstance>,
    /// The trusted roots as Envoy names them: a PEM file or inline PEM (instead of
    /// `ca_certificate_provider_instance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<DataSource>,
    /// Any SAN of any type matching any of these passes (none: any verified certificate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_subject_alt_names: Vec<StringMatcher>,
    /// A SAN of the given type matching the matcher passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_typed_subject_alt_names: Vec<SubjectAltNameMatcher>,
    /// Verify against the operating system's roots (gRFC A82), for TLS to hosts outside the
    /// mesh; only on clusters, and only without `ca_certificate_provider_instance` (which
    /// wins when both are set). Without SAN matchers the server's name must then be `sni`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_root_certs: Option<crate::policy::Empty>,
}

impl CertificateValidationContext {
    /// Whether the OS roots verify the peer (A82: set, and no provider instance).
    pub fn uses_system_roots(&self) -> bool {
        self.ca_certificate_provider_instance.is_none()
            && self.trusted_ca.is_none()
            && self.system_root_certs.is_some()
    }

    /// Whether roots of the mesh's own (a provider instance or `trusted_ca`) are named.
    pub fn has_roots(&self) -> bool {
        self.ca_certificate_provider_instance.is_some() || self.trusted_ca.is_some()
    }

    /// Whether any SAN matcher is configured.
    pub fn has_san_matchers(&self) -> bool {
        !self.match_subject_alt_names.is_empty() || !self.match_typed_subject_alt_names.is_empty()
    }
}

/// Envoy's `SubjectAltNameMatcher`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAltNameMatcher {
    /// Which SANs are compared.
    pub san_type: SanType,
    /// How.
    pub matcher: StringMatcher,
}

/// The kind of a subject alternative name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SanType {
    /// `dNSName`.
    Dns,
    /// `uniformResourceIdentifier` (SPIFFE IDs).
    Uri,
    /// `rfc822Name`.
    Email,
    /// `iPAddress`, compared in RFC 5952 text form.
    IpAddress,
}

impl UpstreamTls {
    /// The provider instances this context names (identity first, then roots).
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.common_tls_context.provider_names()
    }

    /// Checks the context; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(sni) = &self.sni {
            errors.check(
                !sni.is_empty() && sni.len() <= 253 && !sni.contains(['/', ' ', ':']),
                &path.field("sni"),
                "must be a server name",
            );
        }
        let ctx = path.field("common_tls_context");
        // A29: a client must verify the server.
        self.common_tls_context.validate(&ctx, true, errors);
        // The OS roots trust every public CA: with no SAN matcher, only the server name
        // (`sni`) keeps any publicly trusted certificate from passing.
        if let Some(v) = &self.common_tls_context.validation_context
            && v.uses_system_roots()
        {
            errors.check(
                self.sni.is_some() || v.has_san_matchers(),
                &path.field("sni"),
                "system_root_certs needs sni or SAN matchers (otherwise any publicly \
                 trusted certificate would pass)",
            );
        }
    }
}

impl DownstreamTls {
    /// The provider instances this context names.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.common_tls_context.provider_names()
    }

    /// Checks the context; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let ctx = path.field("common_tls_context");
        let ours = &self.common_tls_context;
        errors.check(
            ours.tls_certificate_provider_instance.is_some() || !ours.tls_certificates.is_empty(),
            &ctx.field("tls_certificate_provider_instance"),
            "a server needs its certificate (a provider instance or tls_certificates)",
        );
        errors.check(
            !self.require_client_certificate
                || self.common_tls_context.validation_context.is_some(),
            &ctx.field("validation_context"),
            "require_client_certificate needs a validation context",
        );
        if let Some(v) = &self.common_tls_context.validation_context {
            errors.check(
                v.system_root_certs.is_none() || v.has_roots(),
                &ctx.field("validation_context").field("system_root_certs"),
                "is not supported on servers (gRFC A82): client certificates are verified \
                 against a provider's roots",
            );
        }
        self.common_tls_context.validate(&ctx, false, errors);
    }
}

impl CommonTlsContext {
    /// The SDS secrets named (provider instances `sds:<secret>`), by secret name: what a
    /// config source must fetch before the context can be used.
    pub fn sds_secrets(&self) -> impl Iterator<Item = &str> {
        self.provider_names()
            .filter_map(|p| p.strip_prefix(SDS_PREFIX))
    }

    /// The provider instances named (identity first, then roots).
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        let roots = self
            .validation_context
            .as_ref()
            .and_then(|v| v.ca_certificate_provider_instance.as_ref());
        self.tls_certificate_provider_instance
            .iter()
            .chain(roots)
            .map(|i| i.instance_name.as_str())
    }

    fn validate(&self, path: &FieldPath, verify_required: bool, errors: &mut Errors) {
        if let Some(i) = &self.tls_certificate_provider_instance {
            i.validate(&path.field("tls_certificate_provider_instance"), errors);
        }
        let certs = path.field("tls_certificates");
        match self.tls_certificates.as_slice() {
            [] => {}
            [c] => {
                c.validate(&certs.index(0), errors);
                errors.check(
                    self.tls_certificate_provider_instance.is_none(),
                    &certs,
                    "must not be set with tls_certificate_provider_instance",
                );
            }
            _ => errors.push(&certs, "only one certificate is supported"),
        }
        for (k, p) in self.alpn_protocols.iter().enumerate() {
            errors.check(
                !p.is_empty() && p.len() < 256,
                &path.field("alpn_protocols").index(k),
                "must be 1 to 255 bytes",
            );
        }
        let vpath = path.field("validation_context");
        match &self.validation_context {
            None if verify_required => errors.push(
                &vpath,
                "must be set: a TLS cluster verifies its endpoints' certificates",
            ),
            None => {}
            Some(v) => v.validate(&vpath, errors),
        }
    }
}

impl CertificateProviderInstance {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.instance_name.is_empty(),
            &path.field("instance_name"),
            "must not be empty",
        );
    }
}

impl CertificateValidationContext {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        match (&self.ca_certificate_provider_instance, &self.trusted_ca) {
            (Some(i), None) => i.validate(&path.field("ca_certificate_provider_instance"), errors),
            (None, Some(ca)) => ca.validate(&path.field("trusted_ca"), errors),
            (Some(_), Some(_)) => errors.push(
                &path.field("trusted_ca"),
                "must not be set with ca_certificate_provider_instance",
            ),
            // Servers refuse system roots themselves (DownstreamTls::validate).
            (None, None) if self.system_root_certs.is_some() => {}
            (None, None) => errors.push(
                &path.field("ca_certificate_provider_instance"),
                "must be set (or trusted_ca, or system_root_certs on a cluster): certificates \
                 are verified against its roots",
            ),
        }
        for (k, m) in self.match_subject_alt_names.iter().enumerate() {
            check_san_matcher(m, &path.field("match_subject_alt_names").index(k), errors);
        }
        for (k, m) in self.match_typed_subject_alt_names.iter().enumerate() {
            let p = path.field("match_typed_subject_alt_names").index(k);
            check_san_matcher(&m.matcher, &p.field("matcher"), errors);
        }
    }
}

/// One match kind, and no empty pattern: an empty prefix, suffix or substring would accept
/// every certificate (gRPC NACKs them).
fn check_san_matcher(m: &StringMatcher, path: &FieldPath, errors: &mut Errors) {
    use super::route::HeaderMatch as M;
    match m.as_header_match() {
        None => errors.push(
            path,
            "exactly one of exact, prefix, suffix, contains and safe_regex must be set",
        ),
        Some(M::Prefix(v, _) | M::Suffix(v, _) | M::Contains(v, _)) if v.is_empty() => {
            errors.push(path, "prefix, suffix and contains must not be empty")
        }
        Some(M::Regex(r)) => check_regex(r, &path.field("safe_regex").field("regex"), errors),
        Some(_) => {}
    }
}

/// Checks that every instance `names` mentions is a configured provider.
pub(crate) fn check_instances<'a>(
    names: impl Iterator<Item = &'a str>,
    providers: &CertificateProviders,
    path: &FieldPath,
    errors: &mut Errors,
) {
    for name in names {
        if !name.is_empty() && !providers.contains_key(name) {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            errors.push(
                path,
                format!("unknown certificate provider instance {name:?} (configured: {known:?})"),
            );
        }
    }
}
