//! `transport_socket` with an `UpstreamTlsContext` / `DownstreamTlsContext` → the mesh's TLS
//! contexts, by gRFC A29's rules.
//!
//! Identity and roots come from certificate provider instances of the bootstrap (the current
//! fields, or the deprecated ones istiod still sends; the current win), or, Envoy's way, from
//! SDS secrets delivered on the ADS stream (instance `sds:<secret>`, see `secret.rs`). Whatever
//! would have the mesh do weaker or different TLS than the control plane asked for is
//! NACKed with its field path: SDS from anywhere but the ADS stream, TLS parameters, custom
//! handshakers or validators, SPKI/hash pinning, CRLs, SCTs, and a provider instance the
//! bootstrap does not define. Envoy's static fields (`tls_certificates`, `trusted_ca`: a file
//! or inline PEM) are taken too, beyond gRPC: go-control-plane snapshots written for Envoy use
//! them; inline PEM is parsed here, so bad material is NACKed rather than failing handshakes.

use super::route::string_matcher;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket::ConfigType};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as pb;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::tls::{
    CertificateProviderInstance, CertificateValidationContext, CommonTlsContext, DownstreamTls,
    SDS_PREFIX, SanType, SubjectAltNameMatcher, UpstreamTls,
};
use mesh_core::error::{Errors, FieldPath};
use prost::Message;
use std::collections::BTreeSet;

const UPSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// A cluster's transport socket: TLS, or a NACK.
pub(crate) fn upstream(
    ts: &TransportSocket,
    providers: &BTreeSet<String>,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<UpstreamTls> {
    let any = typed_config(ts, UPSTREAM, path, errors)?;
    let path = path.field("typed_config");
    let m = match pb::UpstreamTlsContext::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(&path, format!("cannot decode UpstreamTlsContext: {e}"));
            return None;
        }
    };
    let Some(ctx) = &m.common_tls_context else {
        errors.push(
            &path.field("common_tls_context"),
            "must be set (a TLS cluster verifies its endpoints)",
        );
        return None;
    };
    let common = common(ctx, providers, &path.field("common_tls_context"), errors);
    if common.validation_context.is_none() {
        errors.push(
            &path.field("common_tls_context").field("validation_context"),
            "must be set: a TLS cluster verifies its endpoints' certificates",
        );
    }
    if m.allow_renegotiation {
        errors.push(&path.field("allow_renegotiation"), "is not supported");
    }
    if m.auto_host_sni || m.auto_sni_san_validation {
        errors.push(
            &path.field("auto_host_sni"),
            "auto SNI is not supported (set sni)",
        );
    }
    Some(UpstreamTls {
        sni: (!m.sni.is_empty()).then(|| m.sni.clone()),
        common_tls_context: common,
    })
}

/// A server's transport socket (A36): TLS, or a NACK.
pub(crate) fn downstream(
    ts: &TransportSocket,
    providers: &BTreeSet<String>,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<DownstreamTls> {
    let any = typed_config(ts, DOWNSTREAM, path, errors)?;
    let path = path.field("typed_config");
    let m = match pb::DownstreamTlsContext::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(&path, format!("cannot decode DownstreamTlsContext: {e}"));
            return None;
        }
    };
    let ctx = m.common_tls_context.clone().unwrap_or_default();
    let common = common(&ctx, providers, &path.field("common_tls_context"), errors);
    if common.tls_certificate_provider_instance.is_none() && common.tls_certificates.is_empty() {
        errors.push(
            &path
                .field("common_tls_context")
                .field("tls_certificate_provider_instance"),
            "must be set (or tls_certificates, or an SDS secret): a server needs its certificate",
        );
    }
    let require = m.require_client_certificate.is_some_and(|v| v.value);
    if require && common.validation_context.is_none() {
        errors.push(
            &path.field("require_client_certificate"),
            "needs a validation context",
        );
    }
    if m.require_sni.is_some_and(|v| v.value) {
        errors.push(&path.field("require_sni"), "is not supported");
    }
    if m.ocsp_staple_policy != pb::downstream_tls_context::OcspStaplePolicy::LenientStapling as i32
    {
        errors.push(
            &path.field("ocsp_staple_policy"),
            "only LENIENT_STAPLING is supported",
        );
    }
    Some(DownstreamTls {
        common_tls_context: common,
        require_client_certificate: require,
    })
}

fn typed_config<'a>(
    ts: &'a TransportSocket,
    want: &str,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<&'a Any> {
    match &ts.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url == want => Some(any),
        Some(ConfigType::TypedConfig(any)) => {
            errors.push(
                &path.field("typed_config"),
                format!(
                    "transport socket {:?} ({}) is not supported; only {}",
                    ts.name,
                    any.type_url,
                    want.trim_start_matches("type.googleapis.com/")
                ),
            );
            None
        }
        None => {
            errors.push(&path.field("typed_config"), "must be set (the TLS context)");
            None
        }
    }
}

#[allow(deprecated)]
fn common(
    c: &pb::CommonTlsContext,
    providers: &BTreeSet<String>,
    path: &FieldPath,
    errors: &mut Errors,
) -> CommonTlsContext {
    let mut out = CommonTlsContext {
        alpn_protocols: c.alpn_protocols.clone(),
        ..CommonTlsContext::default()
    };
    for (set, field) in [
        (c.tls_params.is_some(), "tls_params"),
        (c.custom_handshaker.is_some(), "custom_handshaker"),
        (c.key_log.is_some(), "key_log"),
        (
            c.custom_tls_certificate_selector.is_some(),
            "custom_tls_certificate_selector",
        ),
        (
            c.tls_certificate_certificate_provider.is_some(),
            "tls_certificate_certificate_provider",
        ),
    ] {
        if set {
            errors.push(&path.field(field), "is not supported");
        }
    }
    // Identity: the current field, else the deprecated one (istiod sends it).
    out.tls_certificate_provider_instance = match (
        &c.tls_certificate_provider_instance,
        &c.tls_certificate_certificate_provider_instance,
    ) {
        (Some(i), _) => instance(
            &i.instance_name,
            &i.certificate_name,
            providers,
            &path.field("tls_certificate_provider_instance"),
            errors,
        ),
        (None, Some(i)) => instance(
            &i.instance_name,
            &i.certificate_name,
            providers,
            &path.field("tls_certificate_certificate_provider_instance"),
            errors,
        ),
        (None, None) => None,
    };
    if out.tls_certificate_provider_instance.is_none() {
        // Envoy's way: a certificate secret over ADS.
        match c.tls_certificate_sds_secret_configs.as_slice() {
            [] => {}
            [one] => {
                out.tls_certificate_provider_instance = sds(
                    one,
                    &path.field("tls_certificate_sds_secret_configs").index(0),
                    errors,
                )
            }
            _ => errors.push(
                &path.field("tls_certificate_sds_secret_configs"),
                "only one certificate is supported",
            ),
        }
    }
    // Envoy's static way: a file or inline PEM (the store makes a provider of it).
    match c.tls_certificates.as_slice() {
        [] => {}
        [one] if out.tls_certificate_provider_instance.is_none() => {
            let p = path.field("tls_certificates").index(0);
            out.tls_certificates
                .extend(super::secret::tls_certificate_source(one, &p, errors));
        }
        [_] => errors.push(
            &path.field("tls_certificates"),
            "must not be set with a certificate provider instance or SDS secret",
        ),
        _ => errors.push(
            &path.field("tls_certificates"),
            "only one certificate is supported",
        ),
    }
    use pb::common_tls_context::ValidationContextType as V;
    let vpath = path.field("validation_context");
    out.validation_context = match &c.validation_context_type {
        None => None,
        Some(V::ValidationContext(v)) => Some(validation(v, None, providers, &vpath, errors)),
        Some(V::CombinedValidationContext(cv)) => {
            let cpath = path.field("combined_validation_context");
            if cv.validation_context_certificate_provider.is_some() {
                errors.push(
                    &cpath.field("validation_context_certificate_provider"),
                    "is not supported",
                );
            }
            let default = cv.default_validation_context.clone().unwrap_or_default();
            // The roots: the deprecated provider instance istiod sends, or an SDS secret.
            let fallback = match (
                &cv.validation_context_certificate_provider_instance,
                &cv.validation_context_sds_secret_config,
            ) {
                (Some(i), _) => Some(instance(
                    &i.instance_name,
                    &i.certificate_name,
                    providers,
                    &cpath.field("validation_context_certificate_provider_instance"),
                    errors,
                )),
                (None, Some(secret)) => Some(sds(
                    secret,
                    &cpath.field("validation_context_sds_secret_config"),
                    errors,
                )),
                (None, None) => None,
            };
            Some(validation(
                &default,
                fallback,
                providers,
                &cpath.field("default_validation_context"),
                errors,
            ))
        }
        Some(V::ValidationContextCertificateProviderInstance(i)) => {
            let ca = instance(
                &i.instance_name,
                &i.certificate_name,
                providers,
                &path.field("validation_context_certificate_provider_instance"),
                errors,
            );
            Some(CertificateValidationContext {
                ca_certificate_provider_instance: ca,
                ..CertificateValidationContext::default()
            })
        }
        Some(V::ValidationContextSdsSecretConfig(secret)) => {
            let ca = sds(
                secret,
                &path.field("validation_context_sds_secret_config"),
                errors,
            );
            Some(CertificateValidationContext {
                ca_certificate_provider_instance: ca,
                ..CertificateValidationContext::default()
            })
        }
        Some(V::ValidationContextCertificateProvider(_)) => {
            errors.push(
                &path.field("validation_context_certificate_provider"),
                "is not supported",
            );
            None
        }
    };
    out
}

/// A validation context; `fallback` is the combined context's roots (resolved, or `Some(None)`
/// when they were refused).
#[allow(deprecated)] // match_subject_alt_names: gRPC's field, deprecated in Envoy's API
fn validation(
    v: &pb::CertificateValidationContext,
    fallback: Option<Option<CertificateProviderInstance>>,
    providers: &BTreeSet<String>,
    path: &FieldPath,
    errors: &mut Errors,
) -> CertificateValidationContext {
    for (set, field) in [
        (
            !v.verify_certificate_spki.is_empty(),
            "verify_certificate_spki",
        ),
        (
            !v.verify_certificate_hash.is_empty(),
            "verify_certificate_hash",
        ),
        (
            v.require_signed_certificate_timestamp
                .as_ref()
                .is_some_and(|b| b.value),
            "require_signed_certificate_timestamp",
        ),
        (v.crl.is_some(), "crl"),
        (
            v.custom_validator_config.is_some(),
            "custom_validator_config",
        ),
        (v.allow_expired_certificate, "allow_expired_certificate"),
        (v.watched_directory.is_some(), "watched_directory"),
    ] {
        if set {
            errors.push(&path.field(field), "is not supported (gRFC A29)");
        }
    }
    // Envoy's `trusted_ca` (a file or inline PEM), when no provider instance names the roots.
    let trusted_ca = match (
        &v.trusted_ca,
        &v.ca_certificate_provider_instance,
        &fallback,
    ) {
        (Some(ca), None, None) => {
            super::secret::trusted_ca_source(ca, &path.field("trusted_ca"), errors)
        }
        (Some(_), _, _) => {
            errors.push(
                &path.field("trusted_ca"),
                "must not be set with another source of roots (a provider instance or SDS secret)",
            );
            None
        }
        (None, _, _) => None,
    };
    let ca = match (&v.ca_certificate_provider_instance, fallback) {
        _ if v.trusted_ca.is_some() => None,
        (Some(i), _) => instance(
            &i.instance_name,
            &i.certificate_name,
            providers,
            &path.field("ca_certificate_provider_instance"),
            errors,
        ),
        (None, Some(resolved)) => resolved,
        // gRFC A82: the OS roots, when no provider instance is named (servers refuse them
        // in validation, with the path).
        (None, None) if v.system_root_certs.is_some() => None,
        (None, None) => {
            errors.push(
                &path.field("ca_certificate_provider_instance"),
                "must be set (or system_root_certs): certificates are verified against its roots",
            );
            None
        }
    };
    let system_roots = ca.is_none() && trusted_ca.is_none() && v.system_root_certs.is_some();
    let mut out = CertificateValidationContext {
        ca_certificate_provider_instance: ca,
        trusted_ca,
        system_root_certs: system_roots.then_some(mesh_core::policy::Empty {}),
        ..CertificateValidationContext::default()
    };
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let p = path.field("match_subject_alt_names").index(i);
        out.match_subject_alt_names.push(san_matcher(m, &p, errors));
    }
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let p = path.field("match_typed_subject_alt_names").index(i);
        use pb::subject_alt_name_matcher::SanType as T;
        let san_type = match T::try_from(m.san_type) {
            Ok(T::Dns) => SanType::Dns,
            Ok(T::Uri) => SanType::Uri,
            Ok(T::Email) => SanType::Email,
            Ok(T::IpAddress) => SanType::IpAddress,
            _ => {
                errors.push(
                    &p.field("san_type"),
                    "must be DNS, URI, EMAIL or IP_ADDRESS",
                );
                continue;
            }
        };
        let Some(matcher) = &m.matcher else {
            errors.push(&p.field("matcher"), "must be set");
            continue;
        };
        out.match_typed_subject_alt_names
            .push(SubjectAltNameMatcher {
                san_type,
                matcher: san_matcher(matcher, &p.field("matcher"), errors),
            });
    }
    out
}

/// A SAN matcher: an empty prefix, suffix or substring would accept any name (A29 NACKs it).
fn san_matcher(
    m: &envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher,
    path: &FieldPath,
    errors: &mut Errors,
) -> mesh_core::config::route::StringMatcher {
    let out = string_matcher(m, path, errors);
    if [&out.prefix, &out.suffix, &out.contains]
        .into_iter()
        .any(|v| v.as_deref() == Some(""))
    {
        errors.push(
            path,
            "an empty prefix, suffix or contains would match any name",
        );
    }
    out
}

/// An SDS secret reference: a secret delivered over ADS, as provider instance `sds:<name>`.
fn sds(
    c: &pb::SdsSecretConfig,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<CertificateProviderInstance> {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier as S;
    let source = c
        .sds_config
        .as_ref()
        .and_then(|s| s.config_source_specifier.as_ref());
    if !matches!(source, Some(S::Ads(_) | S::Self_(_))) {
        errors.push(
            &path.field("sds_config"),
            "only secrets over the ADS stream are supported (sds_config: { ads: {} })",
        );
        return None;
    }
    if c.name.is_empty() {
        errors.push(&path.field("name"), "must not be empty");
        return None;
    }
    Some(CertificateProviderInstance {
        instance_name: format!("{SDS_PREFIX}{}", c.name),
        certificate_name: String::new(),
    })
}

fn instance(
    name: &str,
    certificate_name: &str,
    providers: &BTreeSet<String>,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<CertificateProviderInstance> {
    if !providers.contains(name) {
        errors.push(
            &path.field("instance_name"),
            format!("certificate provider instance {name:?} is not in the bootstrap (has: {providers:?})"),
        );
        return None;
    }
    Some(CertificateProviderInstance {
        instance_name: name.to_owned(),
        certificate_name: certificate_name.to_owned(),
    })
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
