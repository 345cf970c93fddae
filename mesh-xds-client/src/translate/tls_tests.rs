//! TLS contexts from xDS: Istio's and Envoy's shapes translate; what gRFC A29 forbids is
//! NACKed with its field path.

use super::super::{Context, ResourceType, Translated, decode_in, downstream_tls};
use crate::build::any;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::BoolValue;
use mesh_core::config::tls::SanType;

fn ctx() -> Context {
    Context {
        certificate_providers: ["default".to_owned()].into(),
        ..Context::default()
    }
}

fn socket<M: prost::Name>(m: &M) -> core::TransportSocket {
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(m))),
    }
}

fn cluster(tls: pb::UpstreamTlsContext) -> cds::Cluster {
    cds::Cluster {
        name: "reviews".into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        transport_socket: Some(socket(&tls)),
        ..Default::default()
    }
}

fn exact(v: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(v.into())),
        ..Default::default()
    }
}

/// Istio's proxyless generator: deprecated provider fields, a combined validation context.
#[allow(deprecated)]
fn istio_shape() -> pb::UpstreamTlsContext {
    use pb::common_tls_context::{
        CertificateProviderInstance, CombinedCertificateValidationContext,
        ValidationContextType as V,
    };
    let instance = CertificateProviderInstance {
        instance_name: "default".into(),
        certificate_name: "default".into(),
    };
    pb::UpstreamTlsContext {
        sni: "outbound_.9080_._.reviews.default.svc.cluster.local".into(),
        common_tls_context: Some(pb::CommonTlsContext {
            tls_certificate_certificate_provider_instance: Some(instance.clone()),
            alpn_protocols: vec!["h2".into()],
            validation_context_type: Some(V::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(pb::CertificateValidationContext {
                        match_subject_alt_names: vec![exact(
                            "spiffe://cluster.local/ns/default/sa/reviews",
                        )],
                        ..Default::default()
                    }),
                    validation_context_certificate_provider_instance: Some(instance),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn translated(c: &cds::Cluster) -> Result<mesh_core::Cluster, String> {
    match decode_in(ResourceType::Cluster, &any(c), &ctx())
        .unwrap()
        .result
    {
        Ok(Translated::Cluster(c)) => Ok(*c),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

#[test]
fn istios_deprecated_provider_fields_translate() {
    let out = translated(&cluster(istio_shape())).unwrap();
    let tls = out.transport_socket.unwrap();
    assert_eq!(
        tls.sni.as_deref(),
        Some("outbound_.9080_._.reviews.default.svc.cluster.local")
    );
    let c = &tls.common_tls_context;
    assert_eq!(
        c.tls_certificate_provider_instance
            .as_ref()
            .unwrap()
            .instance_name,
        "default"
    );
    let v = c.validation_context.as_ref().unwrap();
    assert_eq!(
        v.ca_certificate_provider_instance
            .as_ref()
            .unwrap()
            .instance_name,
        "default"
    );
    assert_eq!(
        v.match_subject_alt_names[0].exact.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/reviews")
    );
    assert_eq!(c.alpn_protocols, ["h2"]);
}

#[test]
fn current_fields_and_typed_san_matchers_translate() {
    let instance = pb::CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: String::new(),
    };
    let tls = pb::UpstreamTlsContext {
        common_tls_context: Some(pb::CommonTlsContext {
            tls_certificate_provider_instance: Some(instance.clone()),
            validation_context_type: Some(
                pb::common_tls_context::ValidationContextType::ValidationContext(
                    pb::CertificateValidationContext {
                        ca_certificate_provider_instance: Some(instance),
                        match_typed_subject_alt_names: vec![pb::SubjectAltNameMatcher {
                            san_type: pb::subject_alt_name_matcher::SanType::Uri as i32,
                            matcher: Some(exact("spiffe://td/x")),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = translated(&cluster(tls)).unwrap();
    let v = out
        .transport_socket
        .unwrap()
        .common_tls_context
        .validation_context
        .unwrap();
    assert_eq!(v.match_typed_subject_alt_names[0].san_type, SanType::Uri);
}

#[test]
#[allow(deprecated)]
fn what_a29_forbids_is_nacked_with_field_paths() {
    use pb::common_tls_context::ValidationContextType as V;
    let mut t = istio_shape();
    let ctx = t.common_tls_context.as_mut().unwrap();
    ctx.tls_certificate_certificate_provider_instance
        .as_mut()
        .unwrap()
        .instance_name = "spire".into();
    ctx.tls_params = Some(Default::default());
    let Some(V::CombinedValidationContext(cv)) = &mut ctx.validation_context_type else {
        panic!()
    };
    let dv = cv.default_validation_context.as_mut().unwrap();
    dv.verify_certificate_spki = vec!["pin".into()];
    dv.match_subject_alt_names.push(matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Prefix(String::new())),
        ..Default::default()
    });
    let e = translated(&cluster(t)).unwrap_err();
    let p = "transport_socket.typed_config.common_tls_context";
    for want in [
        format!("{p}.tls_params: is not supported"),
        format!(
            "{p}.tls_certificate_certificate_provider_instance.instance_name: certificate provider instance \"spire\" is not in the bootstrap (has: {{\"default\"}})"
        ),
        format!(
            "{p}.combined_validation_context.default_validation_context.verify_certificate_spki: is not supported (gRFC A29)"
        ),
        format!(
            "{p}.combined_validation_context.default_validation_context.match_subject_alt_names[1]: an empty prefix, suffix or contains would match any name"
        ),
    ] {
        assert!(e.contains(&want), "missing {want:?} in {e}");
    }

    // No validation context: the server would go unverified.
    let mut t = istio_shape();
    t.common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = None;
    let e = translated(&cluster(t)).unwrap_err();
    assert!(e.contains("validation_context: must be set"), "{e}");

    // Envoy's inline certificates *and* a provider instance: two identities.
    let mut t = istio_shape();
    let ctx = t.common_tls_context.as_mut().unwrap();
    ctx.tls_certificates = vec![Default::default()];
    let e = translated(&cluster(t)).unwrap_err();
    assert!(
        e.contains("tls_certificates: must not be set with a certificate provider instance"),
        "{e}"
    );

    // Another transport socket altogether.
    let mut c = cluster(istio_shape());
    c.transport_socket = Some(socket(&pb::DownstreamTlsContext::default()));
    let e = translated(&c).unwrap_err();
    assert!(
        e.contains("only envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
        "{e}"
    );
}

#[test]
#[allow(deprecated)]
fn istio_strict_server_context_and_its_refusals() {
    let instance = pb::common_tls_context::CertificateProviderInstance {
        instance_name: "default".into(),
        certificate_name: "default".into(),
    };
    let strict = pb::DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(pb::CommonTlsContext {
            tls_certificate_certificate_provider_instance: Some(instance.clone()),
            validation_context_type: Some(
                pb::common_tls_context::ValidationContextType::ValidationContextCertificateProviderInstance(instance),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = downstream_tls(&socket(&strict), &ctx()).unwrap();
    assert!(out.require_client_certificate);
    assert!(out.common_tls_context.validation_context.is_some());

    let mut bad = strict;
    bad.require_sni = Some(BoolValue { value: true });
    bad.common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = None;
    let e = downstream_tls(&socket(&bad), &ctx())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("typed_config.require_sni: is not supported"),
        "{e}"
    );
    assert!(
        e.contains("typed_config.require_client_certificate: needs a validation context"),
        "{e}"
    );
}

#[test]
fn system_root_certs_verify_clusters_and_are_refused_on_servers() {
    use pb::common_tls_context::ValidationContextType as V;
    let simple = pb::UpstreamTlsContext {
        sni: "api.example.com".into(),
        common_tls_context: Some(pb::CommonTlsContext {
            validation_context_type: Some(V::ValidationContext(pb::CertificateValidationContext {
                system_root_certs: Some(Default::default()),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = translated(&cluster(simple.clone())).unwrap();
    let tls = c.transport_socket.unwrap();
    assert_eq!(tls.sni.as_deref(), Some("api.example.com"));
    let v = tls.common_tls_context.validation_context.unwrap();
    assert!(v.uses_system_roots(), "{v:?}");
    assert!(
        tls.common_tls_context
            .tls_certificate_provider_instance
            .is_none()
    );

    // A82: a provider instance wins over system roots when both are set.
    let mut both = istio_shape();
    let Some(V::CombinedValidationContext(cv)) = &mut both
        .common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type
    else {
        panic!()
    };
    cv.default_validation_context
        .as_mut()
        .unwrap()
        .system_root_certs = Some(Default::default());
    let v = translated(&cluster(both))
        .unwrap()
        .transport_socket
        .unwrap()
        .common_tls_context
        .validation_context
        .unwrap();
    assert!(!v.uses_system_roots());
    assert!(v.ca_certificate_provider_instance.is_some());

    // Without a server name, any public certificate would pass: NACKed.
    let mut anyone = simple.clone();
    anyone.sni.clear();
    let e = translated(&cluster(anyone)).unwrap_err();
    assert!(
        e.contains("sni: system_root_certs needs sni or SAN matchers"),
        "{e}"
    );

    // Servers verify clients against a provider's roots only.
    let server = pb::DownstreamTlsContext {
        common_tls_context: Some(pb::CommonTlsContext {
            tls_certificate_provider_instance: Some(pb::CertificateProviderPluginInstance {
                instance_name: "default".into(),
                certificate_name: String::new(),
            }),
            ..simple.common_tls_context.unwrap()
        }),
        ..Default::default()
    };
    let e = downstream_tls(&socket(&server), &ctx())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("system_root_certs: is not supported on servers (gRFC A82)"),
        "{e}"
    );
}
