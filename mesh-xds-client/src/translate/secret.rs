//! SDS `Secret` resources (Envoy's way of delivering certificates over the same ADS stream) →
//! the `inline` certificate provider material a cluster's TLS context reads as
//! `sds:<secret name>`.
//!
//! gRPC has no SDS (gRFC A29 takes certificates from bootstrap provider plugins only), but
//! go-control-plane-based control planes written for Envoy send them, so we take them as Envoy
//! does: a certificate secret (`tls_certificate`) or a roots secret (`validation_context` with
//! `trusted_ca`). The material is parsed here so that a bad secret (PEM that does not parse, a
//! key that does not fit, an expired leaf) is NACKed with its field path and the last good copy
//! stays in force; a secret is never half-applied. Data must be inline: a `filename` would name
//! a file on our host that nobody watches (use a `file_watcher` provider for files).

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as pb;
use mesh_core::ConfigError;
use mesh_core::config::tls::InlineMaterial;
use mesh_core::error::{Errors, FieldPath};
use mesh_tower::tls::{Identity, Roots};

/// One secret, or the rules it breaks.
pub fn translate(s: &pb::Secret) -> Result<InlineMaterial, ConfigError> {
    let mut errors = Errors::new();
    let mut out = InlineMaterial::default();
    let root = FieldPath::root();
    match &s.r#type {
        Some(pb::secret::Type::TlsCertificate(c)) => {
            let path = root.field("tls_certificate");
            tls_certificate(c, &path, &mut errors, &mut out);
        }
        Some(pb::secret::Type::ValidationContext(v)) => {
            let path = root.field("validation_context");
            validation_context(v, &path, &mut errors, &mut out);
        }
        Some(pb::secret::Type::SessionTicketKeys(_)) => errors.push(
            &root.field("session_ticket_keys"),
            "is not supported (session resumption is off: a resumed session would skip new roots and policy)",
        ),
        Some(pb::secret::Type::GenericSecret(_)) => {
            errors.push(&root.field("generic_secret"), "is not supported")
        }
        None => errors.push(&root, "must hold tls_certificate or validation_context"),
    }
    super::finish(out, errors)
}

fn tls_certificate(
    c: &pb::TlsCertificate,
    path: &FieldPath,
    errors: &mut Errors,
    out: &mut InlineMaterial,
) {
    unsupported_certificate_fields(c, path, errors);
    let chain = inline(
        c.certificate_chain.as_ref(),
        &path.field("certificate_chain"),
        errors,
    );
    let key = inline(c.private_key.as_ref(), &path.field("private_key"), errors);
    let (Some(chain), Some(key)) = (chain, key) else {
        return;
    };
    match Identity::from_pem(chain.as_bytes(), key.as_bytes()) {
        Ok(_) => {
            out.certificate_chain = Some(chain);
            out.private_key = Some(key);
        }
        Err(e) => errors.push(path, e.to_string()),
    }
}

#[allow(deprecated)] // match_subject_alt_names: named so it is refused, not ignored
fn validation_context(
    v: &pb::CertificateValidationContext,
    path: &FieldPath,
    errors: &mut Errors,
    out: &mut InlineMaterial,
) {
    // Only roots: what to match belongs to the cluster (combined_validation_context's
    // default_validation_context), where it is checked with the rest of the TLS context.
    for (set, field) in [
        (
            !v.match_typed_subject_alt_names.is_empty(),
            "match_typed_subject_alt_names",
        ),
        (
            !v.match_subject_alt_names.is_empty(),
            "match_subject_alt_names",
        ),
        (
            !v.verify_certificate_spki.is_empty(),
            "verify_certificate_spki",
        ),
        (
            !v.verify_certificate_hash.is_empty(),
            "verify_certificate_hash",
        ),
        (v.crl.is_some(), "crl"),
        (
            v.custom_validator_config.is_some(),
            "custom_validator_config",
        ),
        (v.allow_expired_certificate, "allow_expired_certificate"),
        (v.watched_directory.is_some(), "watched_directory"),
        (v.system_root_certs.is_some(), "system_root_certs"),
    ] {
        if set {
            errors.push(
                &path.field(field),
                "is not supported in a secret (put SAN matchers in the cluster's default_validation_context)",
            );
        }
    }
    let ca_path = path.field("trusted_ca");
    let Some(pem) = inline(v.trusted_ca.as_ref(), &ca_path, errors) else {
        return;
    };
    match Roots::from_pem(pem.as_bytes()) {
        Ok(_) => out.trusted_ca = Some(pem),
        Err(e) => errors.push(&ca_path, e.to_string()),
    }
}

/// A `TlsCertificate`'s fields the mesh cannot honour (key providers, PKCS#12, passwords,
/// watched directories, OCSP stapling).
fn unsupported_certificate_fields(c: &pb::TlsCertificate, path: &FieldPath, errors: &mut Errors) {
    for (set, field) in [
        (c.pkcs12.is_some(), "pkcs12"),
        (c.private_key_provider.is_some(), "private_key_provider"),
        (c.password.is_some(), "password"),
        (c.watched_directory.is_some(), "watched_directory"),
        (c.ocsp_staple.is_some(), "ocsp_staple"),
    ] {
        if set {
            errors.push(&path.field(field), "is not supported");
        }
    }
}

/// A data source's text: inline only.
fn inline(d: Option<&DataSource>, path: &FieldPath, errors: &mut Errors) -> Option<String> {
    let text = match d.and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineString(s)) => s.clone(),
        Some(Specifier::InlineBytes(b)) => match String::from_utf8(b.clone()) {
            Ok(s) => s,
            Err(_) => {
                errors.push(&path.field("inline_bytes"), "must be PEM text");
                return None;
            }
        },
        Some(Specifier::Filename(_)) => {
            errors.push(
                &path.field("filename"),
                "is not supported in an SDS secret (use a file_watcher certificate provider for files)",
            );
            return None;
        }
        Some(Specifier::EnvironmentVariable(_)) => {
            errors.push(&path.field("environment_variable"), "is not supported");
            return None;
        }
        None => {
            errors.push(path, "must be set (inline_bytes or inline_string)");
            return None;
        }
    };
    Some(text)
}

/// A TLS context's data source (Envoy's `trusted_ca`, `tls_certificates`): a file, or PEM
/// inline. Inline text must be PEM; files are read by the provider the store makes of them.
pub(super) fn data_source(
    d: Option<&DataSource>,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<mesh_core::config::tls::DataSource> {
    use mesh_core::config::tls::DataSource as Out;
    match d.and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::Filename(f)) if f.is_empty() => {
            errors.push(&path.field("filename"), "must not be empty");
            None
        }
        Some(Specifier::Filename(f)) => Some(Out::file(f.clone())),
        _ => inline(d, path, errors).map(Out::inline),
    }
}

/// Envoy's `tls_certificates` entry → the mesh's; inline material is parsed now (a bad key
/// or an expired leaf is NACKed here, not at the first handshake).
pub(super) fn tls_certificate_source(
    c: &pb::TlsCertificate,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<mesh_core::config::tls::TlsCertificate> {
    let before = errors.len();
    unsupported_certificate_fields(c, path, errors);
    let chain = data_source(
        c.certificate_chain.as_ref(),
        &path.field("certificate_chain"),
        errors,
    );
    let key = data_source(c.private_key.as_ref(), &path.field("private_key"), errors);
    let (Some(chain), Some(key)) = (chain, key) else {
        return None;
    };
    if let (Some(chain), Some(key)) = (&chain.inline_string, &key.inline_string)
        && let Err(e) = Identity::from_pem(chain.as_bytes(), key.as_bytes())
    {
        errors.push(path, e.to_string());
    }
    (errors.len() == before).then_some(mesh_core::config::tls::TlsCertificate {
        certificate_chain: chain,
        private_key: key,
    })
}

/// Envoy's `trusted_ca` → the mesh's; inline roots are parsed now.
pub(super) fn trusted_ca_source(
    d: &DataSource,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<mesh_core::config::tls::DataSource> {
    let out = data_source(Some(d), path, errors)?;
    if let Some(pem) = &out.inline_string
        && let Err(e) = Roots::from_pem(pem.as_bytes())
    {
        errors.push(path, e.to_string());
        return None;
    }
    Some(out)
}
