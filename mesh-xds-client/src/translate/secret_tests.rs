//! SDS: Envoy's secret references on clusters and the `Secret` resources themselves. Good
//! material becomes `inline` provider material; anything the mesh could not use as asked is
//! NACKed with its field path.

use super::{Context, ResourceType, Translated, decode_in};
use crate::build::{any, roots_secret, sds_over_ads as over_ads, tls_secret as cert_secret};
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;

const ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

struct Pki {
    ca_pem: String,
    chain: String,
    key: String,
    expired_chain: String,
    expired_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(p, ca_key);
    let leaf = |expired: bool| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.subject_alt_names
            .push(SanType::URI(ID.try_into().unwrap()));
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let ((chain, key), (expired_chain, expired_key)) = (leaf(false), leaf(true));
    Pki {
        ca_pem: ca.pem(),
        chain,
        key,
        expired_chain,
        expired_key,
    }
}

fn inline(text: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(text.into())),
        ..Default::default()
    }
}

fn secret(s: &pb::Secret) -> Result<mesh_core::config::tls::InlineMaterial, String> {
    let d = decode_in(ResourceType::Secret, &any(s), &Context::default()).unwrap();
    assert_eq!(d.name, s.name);
    d.result.map(|t| match t {
        Translated::Secret(name, m) => {
            assert_eq!(name, s.name);
            m
        }
        other => panic!("not a secret: {other:?}"),
    })
}

/// go-control-plane's / Envoy's shape: a certificate secret and a roots secret over ADS, SAN
/// matchers in the combined context's default validation context.
fn envoy_shape() -> pb::UpstreamTlsContext {
    use pb::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    pb::UpstreamTlsContext {
        sni: "backend".into(),
        common_tls_context: Some(pb::CommonTlsContext {
            alpn_protocols: vec!["h2".into()],
            tls_certificate_sds_secret_configs: vec![over_ads("client-cert")],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(pb::CertificateValidationContext {
                        match_typed_subject_alt_names: vec![pb::SubjectAltNameMatcher {
                            san_type: pb::subject_alt_name_matcher::SanType::Uri as i32,
                            matcher: Some(matcher::StringMatcher {
                                match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(
                                    ID.into(),
                                )),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(over_ads("mesh-roots")),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cluster(tls: &pb::UpstreamTlsContext) -> Result<mesh_core::Cluster, String> {
    let c = cds::Cluster {
        name: "backend".into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        transport_socket: Some(core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(tls))),
        }),
        ..Default::default()
    };
    // No bootstrap providers at all: SDS needs none.
    let d = decode_in(ResourceType::Cluster, &any(&c), &Context::default()).unwrap();
    d.result.map(|t| match t {
        Translated::Cluster(c) => *c,
        other => panic!("not a cluster: {other:?}"),
    })
}

#[test]
fn sds_references_become_sds_provider_instances() {
    let c = cluster(&envoy_shape()).unwrap();
    let tls = c.transport_socket.unwrap();
    assert_eq!(
        tls.provider_names().collect::<Vec<_>>(),
        ["sds:client-cert", "sds:mesh-roots"]
    );
    let v = tls.common_tls_context.validation_context.unwrap();
    assert_eq!(
        v.match_typed_subject_alt_names.len(),
        1,
        "SAN matchers kept"
    );

    // The plain validation_context_sds_secret_config form: roots only.
    let mut t = envoy_shape();
    t.common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = Some(
        pb::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(over_ads(
            "mesh-roots",
        )),
    );
    let tls = cluster(&t).unwrap().transport_socket.unwrap();
    assert_eq!(
        tls.provider_names().collect::<Vec<_>>(),
        ["sds:client-cert", "sds:mesh-roots"]
    );
}

#[test]
fn sds_from_elsewhere_than_ads_or_twice_is_nacked_with_paths() {
    let p = "transport_socket.typed_config.common_tls_context";
    // A static secret (no sds_config) and an SDS server of its own (Istio's agent socket).
    let mut t = envoy_shape();
    let ctx = t.common_tls_context.as_mut().unwrap();
    ctx.tls_certificate_sds_secret_configs[0].sds_config = None;
    if let Some(pb::common_tls_context::ValidationContextType::CombinedValidationContext(cv)) =
        &mut ctx.validation_context_type
    {
        cv.validation_context_sds_secret_config
            .as_mut()
            .unwrap()
            .sds_config = Some(core::ConfigSource {
            config_source_specifier: Some(
                core::config_source::ConfigSourceSpecifier::ApiConfigSource(Default::default()),
            ),
            ..Default::default()
        });
    }
    let e = cluster(&t).unwrap_err();
    for want in [
        format!(
            "{p}.tls_certificate_sds_secret_configs[0].sds_config: only secrets over the ADS stream are supported"
        ),
        format!(
            "{p}.combined_validation_context.validation_context_sds_secret_config.sds_config: only secrets over the ADS stream"
        ),
    ] {
        assert!(e.contains(&want), "missing {want:?} in {e}");
    }

    let mut t = envoy_shape();
    let ctx = t.common_tls_context.as_mut().unwrap();
    ctx.tls_certificate_sds_secret_configs
        .push(over_ads("other"));
    let e = cluster(&t).unwrap_err();
    assert!(
        e.contains(&format!(
            "{p}.tls_certificate_sds_secret_configs: only one certificate is supported"
        )),
        "{e}"
    );
}

#[test]
fn good_secrets_translate_to_inline_material() {
    let pki = pki();
    let m = secret(&cert_secret("client-cert", &pki.chain, &pki.key)).unwrap();
    assert_eq!(m.certificate_chain.as_deref(), Some(pki.chain.as_str()));
    assert_eq!(m.private_key.as_deref(), Some(pki.key.as_str()));
    assert_eq!(m.trusted_ca, None);
    assert!(
        !format!("{m:?}").contains("PRIVATE KEY"),
        "Debug never shows the key"
    );

    let m = secret(&roots_secret("mesh-roots", &pki.ca_pem)).unwrap();
    assert_eq!(m.trusted_ca.as_deref(), Some(pki.ca_pem.as_str()));
    assert_eq!(m.certificate_chain, None);
}

#[test]
fn bad_secrets_are_nacked_with_field_paths() {
    let pki = pki();
    let cases: Vec<(pb::Secret, &str)> = vec![
        (
            cert_secret("c", &pki.expired_chain, &pki.expired_key),
            "tls_certificate: leaf certificate (serial",
        ),
        (
            cert_secret("c", &pki.chain, &pki.expired_key),
            "tls_certificate: private key does not fit the leaf certificate",
        ),
        (
            cert_secret("c", "not pem", &pki.key),
            "tls_certificate: certificate chain",
        ),
        (
            roots_secret(
                "r",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            "validation_context.trusted_ca:",
        ),
        (
            pb::Secret {
                name: "f".into(),
                r#type: Some(pb::secret::Type::TlsCertificate(pb::TlsCertificate {
                    certificate_chain: Some(core::DataSource {
                        specifier: Some(core::data_source::Specifier::Filename(
                            "/etc/cert.pem".into(),
                        )),
                        ..Default::default()
                    }),
                    private_key: Some(inline(&pki.key)),
                    ..Default::default()
                })),
            },
            "tls_certificate.certificate_chain.filename: is not supported in an SDS secret",
        ),
        (
            pb::Secret {
                name: "g".into(),
                r#type: Some(pb::secret::Type::GenericSecret(Default::default())),
            },
            "generic_secret: is not supported",
        ),
        (
            pb::Secret {
                name: "v".into(),
                r#type: Some(pb::secret::Type::ValidationContext(
                    pb::CertificateValidationContext {
                        trusted_ca: Some(inline(&pki.ca_pem)),
                        verify_certificate_hash: vec!["ab".into()],
                        ..Default::default()
                    },
                )),
            },
            "validation_context.verify_certificate_hash: is not supported in a secret",
        ),
    ];
    for (s, want) in cases {
        let e = secret(&s).unwrap_err();
        assert!(e.contains(want), "{}: want {want:?} in {e}", s.name);
        assert!(
            !e.contains("PRIVATE KEY"),
            "an error never quotes the key: {e}"
        );
    }
}

/// Envoy's static shape, as go-control-plane snapshots written for Envoy carry it:
/// `tls_certificates` and `trusted_ca` as files or inline PEM (no bootstrap provider, no SDS).
fn static_shape(
    cert: core::DataSource,
    key: core::DataSource,
    ca: core::DataSource,
) -> pb::UpstreamTlsContext {
    use pb::common_tls_context::ValidationContextType;
    let mut t = envoy_shape();
    let ctx = t.common_tls_context.as_mut().unwrap();
    ctx.tls_certificate_sds_secret_configs.clear();
    ctx.tls_certificates = vec![pb::TlsCertificate {
        certificate_chain: Some(cert),
        private_key: Some(key),
        ..Default::default()
    }];
    let Some(ValidationContextType::CombinedValidationContext(cv)) =
        ctx.validation_context_type.take()
    else {
        panic!()
    };
    let mut v = cv.default_validation_context.unwrap();
    v.trusted_ca = Some(ca);
    ctx.validation_context_type = Some(ValidationContextType::ValidationContext(v));
    t
}

fn file(path: &str) -> core::DataSource {
    core::DataSource {
        specifier: Some(core::data_source::Specifier::Filename(path.into())),
        ..Default::default()
    }
}

#[test]
fn envoys_file_and_inline_certificates_translate_and_bad_pem_is_nacked() {
    let pki = pki();
    let c = cluster(&static_shape(
        file("/certs/chain.pem"),
        file("/certs/key.pem"),
        file("/certs/root.pem"),
    ))
    .unwrap();
    let ctx = c.transport_socket.unwrap().common_tls_context;
    assert_eq!(
        ctx.tls_certificates[0].private_key.filename.as_deref(),
        Some("/certs/key.pem")
    );
    let v = ctx.validation_context.unwrap();
    assert_eq!(
        v.trusted_ca.unwrap().filename.as_deref(),
        Some("/certs/root.pem")
    );
    assert_eq!(
        v.match_typed_subject_alt_names.len(),
        1,
        "SAN matchers kept"
    );

    let c = cluster(&static_shape(
        inline(&pki.chain),
        inline(&pki.key),
        inline(&pki.ca_pem),
    ))
    .unwrap();
    let ctx = c.transport_socket.unwrap().common_tls_context;
    assert_eq!(
        ctx.tls_certificates[0]
            .certificate_chain
            .inline_string
            .as_deref(),
        Some(pki.chain.as_str())
    );

    let p = "transport_socket.typed_config.common_tls_context";
    for (t, want) in [
        (
            static_shape(
                inline(&pki.expired_chain),
                inline(&pki.expired_key),
                inline(&pki.ca_pem),
            ),
            format!("{p}.tls_certificates[0]: leaf certificate (serial"),
        ),
        (
            static_shape(
                inline(&pki.chain),
                inline(&pki.expired_key),
                inline(&pki.ca_pem),
            ),
            format!("{p}.tls_certificates[0]: private key does not fit"),
        ),
        (
            static_shape(inline(&pki.chain), inline(&pki.key), inline("not PEM")),
            format!("{p}.validation_context.trusted_ca: "),
        ),
        (
            static_shape(file("/c.pem"), file("/k.pem"), file("")),
            format!("{p}.validation_context.trusted_ca.filename: must not be empty"),
        ),
    ] {
        let e = cluster(&t).unwrap_err();
        assert!(e.contains(&want), "missing {want:?} in {e}");
    }
    // A file and inline text mixed in one certificate: refused by the mesh's own validation.
    let e = cluster(&static_shape(
        file("/c.pem"),
        inline(&pki.key),
        file("/r.pem"),
    ))
    .unwrap_err();
    assert!(e.contains("must both be files or both inline"), "{e}");
    // trusted_ca beside an SDS roots secret: two sources of roots.
    let mut t = envoy_shape();
    let ctx = t.common_tls_context.as_mut().unwrap();
    let Some(pb::common_tls_context::ValidationContextType::CombinedValidationContext(cv)) =
        &mut ctx.validation_context_type
    else {
        panic!()
    };
    cv.default_validation_context.as_mut().unwrap().trusted_ca = Some(file("/r.pem"));
    let e = cluster(&t).unwrap_err();
    assert!(
        e.contains("trusted_ca: must not be set with another source of roots"),
        "{e}"
    );
}
