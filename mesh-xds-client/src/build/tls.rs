//! TLS builders: the transport sockets of mesh mTLS in the three shapes control planes write
//! (gRPC's provider instances, Envoy's SDS secrets, Envoy's static files or inline PEM) and
//! the SDS secrets themselves.

use super::any;
use envoy_types::pb::envoy::config::core::v3 as core;

/// A cluster `transport_socket` for mesh mTLS as gRPC and Istio write it: the identity and the
/// roots both from certificate provider `instance`, and the peer's SAN a URI equal to one of
/// `spiffe_ids` (gRFC A29's `match_typed_subject_alt_names`).
///
/// ```
/// use mesh_xds_client::build;
/// let mut web = build::eds_cluster("web");
/// web.transport_socket = Some(build::mesh_tls("default", &["spiffe://cluster.local/ns/shop/sa/web"]));
/// ```
pub fn mesh_tls(instance: &str, spiffe_ids: &[&str]) -> core::TransportSocket {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let provider = tls::CertificateProviderPluginInstance {
        instance_name: instance.into(),
        certificate_name: String::new(),
    };
    tls_socket(tls::CommonTlsContext {
        tls_certificate_provider_instance: Some(provider.clone()),
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::ValidationContext(
                tls::CertificateValidationContext {
                    ca_certificate_provider_instance: Some(provider),
                    match_typed_subject_alt_names: uri_sans(spiffe_ids),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    })
}

/// A cluster `transport_socket` for mesh mTLS as Envoy's control planes write it: the identity
/// from SDS secret `cert_secret` and the roots from SDS secret `roots_secret`, both on the ADS
/// stream, and the peer's URI SAN one of `spiffe_ids` (a combined validation context).
///
/// ```
/// use mesh_xds_client::build;
/// let mut web = build::eds_cluster("web");
/// web.transport_socket = Some(build::sds_tls("default", "ROOTCA", &["spiffe://cluster.local/ns/shop/sa/web"]));
/// ```
pub fn sds_tls(
    cert_secret: &str,
    roots_secret: &str,
    spiffe_ids: &[&str],
) -> core::TransportSocket {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    tls_socket(tls::CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds_over_ads(cert_secret)],
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                tls::common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(tls::CertificateValidationContext {
                        match_typed_subject_alt_names: uri_sans(spiffe_ids),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds_over_ads(roots_secret)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    })
}

/// A reference to SDS secret `name`, fetched on the ADS stream (`sds_config: { ads: {} }`).
pub fn sds_over_ads(
    name: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
        name: name.into(),
        sds_config: Some(core::ConfigSource {
            config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                core::AggregatedConfigSource {},
            )),
            resource_api_version: core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// An SDS certificate secret: PEM chain and key, inline.
pub fn tls_secret(
    name: &str,
    chain_pem: &str,
    key_pem: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    tls::Secret {
        name: name.into(),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: Some(inline_data(chain_pem)),
            private_key: Some(inline_data(key_pem)),
            ..Default::default()
        })),
    }
}

/// An SDS roots secret: PEM trusted CAs, inline.
pub fn roots_secret(
    name: &str,
    ca_pem: &str,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    tls::Secret {
        name: name.into(),
        r#type: Some(tls::secret::Type::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: Some(inline_data(ca_pem)),
                ..Default::default()
            },
        )),
    }
}

fn inline_data(text: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(text.into())),
        ..Default::default()
    }
}

fn uri_sans(
    spiffe_ids: &[&str],
) -> Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher> {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
    spiffe_ids
        .iter()
        .map(|id| tls::SubjectAltNameMatcher {
            san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(matcher::StringMatcher {
                match_pattern: Some(matcher::string_matcher::MatchPattern::Exact((*id).into())),
                ..Default::default()
            }),
            oid: String::new(),
        })
        .collect()
}

fn tls_socket(
    common: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext,
) -> core::TransportSocket {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    let context = tls::UpstreamTlsContext {
        common_tls_context: Some(common),
        ..Default::default()
    };
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            &context,
        ))),
    }
}

/// A data source naming a file (Envoy's `filename`).
pub fn data_file(path: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.into())),
        ..Default::default()
    }
}

/// A data source holding text (Envoy's `inline_string`).
pub fn data_inline(text: &str) -> core::DataSource {
    inline_data(text)
}

/// A cluster `transport_socket` for mTLS as Envoy's static files and go-control-plane
/// snapshots written for Envoy carry it: `tls_certificates` (chain and key) and `trusted_ca`
/// as data sources (files or inline PEM), the peer's URI SAN one of `spiffe_ids`.
///
/// ```
/// use mesh_xds_client::build;
/// let mut web = build::eds_cluster("web");
/// web.transport_socket = Some(build::static_tls(
///     build::data_file("/etc/certs/cert-chain.pem"),
///     build::data_file("/etc/certs/key.pem"),
///     build::data_file("/etc/certs/root-cert.pem"),
///     &["spiffe://cluster.local/ns/shop/sa/web"],
/// ));
/// ```
pub fn static_tls(
    chain: core::DataSource,
    key: core::DataSource,
    trusted_ca: core::DataSource,
    spiffe_ids: &[&str],
) -> core::TransportSocket {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    tls_socket(tls::CommonTlsContext {
        tls_certificates: vec![tls::TlsCertificate {
            certificate_chain: Some(chain),
            private_key: Some(key),
            ..Default::default()
        }],
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::ValidationContext(
                tls::CertificateValidationContext {
                    trusted_ca: Some(trusted_ca),
                    match_typed_subject_alt_names: uri_sans(spiffe_ids),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    })
}
