//! The JWT filter from xDS reads as the same config written in YAML; what the mesh cannot do
//! faithfully is NACKed with its field path.

use super::filter;
use crate::build::any;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as pb;
use mesh_core::config::jwt::JwtAuthn;
use mesh_core::error::{Errors, FieldPath};

const JWKS: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;

fn provider_name(n: &str) -> pb::JwtRequirement {
    pb::JwtRequirement {
        requires_type: Some(pb::jwt_requirement::RequiresType::ProviderName(n.into())),
    }
}

/// What istiod writes for one `RequestAuthentication` rule (keys inlined).
fn istio() -> pb::JwtAuthentication {
    let provider = pb::JwtProvider {
        issuer: "https://issuer.example".into(),
        audiences: vec!["orders".into()],
        forward: true,
        payload_in_metadata: "payload".into(),
        normalize_payload_in_metadata: Some(pb::jwt_provider::NormalizePayload {
            space_delimited_claims: vec!["scope".into(), "permission".into()],
        }),
        from_headers: vec![pb::JwtHeader {
            name: "x-jwt".into(),
            value_prefix: "Bearer ".into(),
        }],
        jwks_source_specifier: Some(pb::jwt_provider::JwksSourceSpecifier::LocalJwks(
            DataSource {
                specifier: Some(data_source::Specifier::InlineString(JWKS.into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let any_of = pb::JwtRequirement {
        requires_type: Some(pb::jwt_requirement::RequiresType::RequiresAny(
            pb::JwtRequirementOrList {
                requirements: vec![
                    provider_name("origins-0"),
                    pb::JwtRequirement {
                        requires_type: Some(pb::jwt_requirement::RequiresType::AllowMissing(
                            Default::default(),
                        )),
                    },
                ],
            },
        )),
    };
    pb::JwtAuthentication {
        providers: [("origins-0".to_owned(), provider)].into(),
        rules: vec![pb::RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(pb::requirement_rule::RequirementType::Requires(any_of)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    }
}

fn translated(m: &pb::JwtAuthentication) -> Result<JwtAuthn, String> {
    let mut errors = Errors::new();
    let out = filter(&any(m), &FieldPath::root(), &mut errors);
    errors.into_result().map_err(|e| e.to_string())?;
    Ok(out.unwrap())
}

#[test]
fn istio_request_authentication_reads_as_the_same_yaml() {
    let yaml = format!(
        r#"
providers:
  origins-0:
    issuer: https://issuer.example
    audiences: [orders]
    forward: true
    payload_in_metadata: payload
    normalize_payload_in_metadata: {{ space_delimited_claims: [scope, permission] }}
    from_headers: [{{ name: x-jwt, value_prefix: "Bearer " }}]
    local_jwks: {{ inline_string: '{JWKS}' }}
rules:
  - match: {{ prefix: / }}
    requires: {{ requires_any: {{ requirements: [{{ provider_name: origins-0 }}, {{ allow_missing: {{}} }}] }} }}
bypass_cors_preflight: true
"#
    );
    let want: JwtAuthn = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(translated(&istio()).unwrap(), want);
}

#[test]
fn what_cannot_be_honoured_is_nacked_with_field_paths() {
    let mut m = istio();
    let p = m.providers.get_mut("origins-0").unwrap();
    p.jwks_source_specifier = Some(pb::jwt_provider::JwksSourceSpecifier::RemoteJwks(
        Default::default(),
    ));
    p.max_lifetime = Some(Default::default());
    m.requirement_map
        .insert("r".into(), provider_name("origins-0"));
    m.rules.push(pb::RequirementRule {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path("/x".into())),
            ..Default::default()
        }),
        requirement_type: Some(pb::requirement_rule::RequirementType::RequirementName(
            "r".into(),
        )),
    });
    let e = translated(&m).unwrap_err();
    for want in [
        "providers.origins-0.remote_jwks: is not supported",
        "providers.origins-0.max_lifetime: is not supported",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
}

#[test]
fn named_requirements_translate() {
    let mut m = istio();
    m.requirement_map
        .insert("strict".into(), provider_name("origins-0"));
    m.rules.push(pb::RequirementRule {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path("/x".into())),
            ..Default::default()
        }),
        requirement_type: Some(pb::requirement_rule::RequirementType::RequirementName(
            "strict".into(),
        )),
    });
    let f = translated(&m).unwrap();
    assert_eq!(f.rules[1].requirement_name.as_deref(), Some("strict"));
    assert_eq!(
        f.requirement_map["strict"].provider_name.as_deref(),
        Some("origins-0")
    );
}

#[test]
fn a_translated_filter_still_validates() {
    // Unknown provider names pass translation and are caught by validation, with the path.
    let mut m = istio();
    m.rules[0].requirement_type = Some(pb::requirement_rule::RequirementType::Requires(
        provider_name("nobody"),
    ));
    let f = translated(&m).unwrap();
    let mut errors = Errors::new();
    f.validate(&FieldPath::root().field("jwt_authn"), &mut errors);
    let e = errors.into_result().unwrap_err().to_string();
    assert!(
        e.contains("jwt_authn.rules[0].requires.provider_name: unknown provider \"nobody\""),
        "{e}"
    );
}
