//! The RBAC filter from xDS reads as the same policy written in YAML (the shape Envoy and our
//! static config share); what A41 forbids is NACKed with its field path.

use super::{RBAC, filter, per_route};
use crate::build::any;
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as f;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_core::config::rbac::RbacFilter;
use mesh_core::error::{Errors, FieldPath};

fn exact(v: &str) -> m::StringMatcher {
    m::StringMatcher {
        match_pattern: Some(m::string_matcher::MatchPattern::Exact(v.into())),
        ..Default::default()
    }
}

fn perm(rule: pb::permission::Rule) -> pb::Permission {
    pb::Permission { rule: Some(rule) }
}

fn id(i: pb::principal::Identifier) -> pb::Principal {
    pb::Principal {
        identifier: Some(i),
    }
}

fn method(v: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: ":method".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(v))),
        ..Default::default()
    }
}

/// What istiod's grpcgen writes for an ALLOW policy: GETs from namespace shop, not /admin.
fn istio_allow() -> f::Rbac {
    use pb::permission::Rule as R;
    use pb::principal::Identifier as I;
    let policy = pb::Policy {
        permissions: vec![perm(R::AndRules(pb::permission::Set {
            rules: vec![
                perm(R::Header(method("GET"))),
                perm(R::NotRule(Box::new(perm(R::UrlPath(m::PathMatcher {
                    rule: Some(m::path_matcher::Rule::Path(m::StringMatcher {
                        match_pattern: Some(m::string_matcher::MatchPattern::Prefix(
                            "/admin".into(),
                        )),
                        ..Default::default()
                    })),
                }))))),
            ],
        }))],
        principals: vec![id(I::OrIds(pb::principal::Set {
            ids: vec![
                id(I::Authenticated(pb::principal::Authenticated {
                    principal_name: Some(m::StringMatcher {
                        match_pattern: Some(m::string_matcher::MatchPattern::SafeRegex(
                            m::RegexMatcher {
                                regex: ".*/ns/shop/.*".into(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }),
                })),
                id(I::DirectRemoteIp(CidrRange {
                    address_prefix: "10.0.0.0".into(),
                    prefix_len: Some(UInt32Value { value: 8 }),
                })),
            ],
        }))],
        ..Default::default()
    };
    f::Rbac {
        rules: Some(pb::Rbac {
            action: pb::rbac::Action::Allow as i32,
            policies: [("ns[shop]-policy[reads]-rule[0]".to_owned(), policy)].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn translated(m: &f::Rbac) -> Result<RbacFilter, String> {
    let mut errors = Errors::new();
    let out = filter(&any(m), &FieldPath::root(), &mut errors);
    errors.into_result().map_err(|e| e.to_string())?;
    Ok(out.unwrap())
}

#[test]
fn istio_policy_reads_as_the_same_yaml() {
    assert_eq!(any(&f::Rbac::default()).type_url, RBAC);
    let yaml: RbacFilter = serde_saphyr::from_str(
        r#"
rules:
  action: ALLOW
  policies:
    ns[shop]-policy[reads]-rule[0]:
      permissions:
        - and_rules:
            rules:
              - header: { name: ":method", string_match: { exact: GET } }
              - not_rule: { url_path: { path: { prefix: /admin } } }
      principals:
        - or_ids:
            ids:
              - authenticated: { principal_name: { safe_regex: { regex: ".*/ns/shop/.*" } } }
              - direct_remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 }
"#,
    )
    .unwrap();
    assert_eq!(translated(&istio_allow()).unwrap(), yaml);
}

#[test]
fn per_route_without_rbac_turns_the_filter_off() {
    let mut errors = Errors::new();
    let off = per_route(
        &any(&f::RbacPerRoute { rbac: None }),
        &FieldPath::root(),
        &mut errors,
    );
    assert_eq!(off, Some(RbacFilter::default()));
    let on = per_route(
        &any(&f::RbacPerRoute {
            rbac: Some(istio_allow()),
        }),
        &FieldPath::root(),
        &mut errors,
    );
    assert!(on.unwrap().rules.is_some());
    assert!(errors.into_result().is_ok());
}

#[test]
fn what_a41_forbids_is_nacked_with_field_paths() {
    use pb::permission::Rule as R;
    let mut m = istio_allow();
    let rules = m.rules.as_mut().unwrap();
    let policy = rules.policies.values_mut().next().unwrap();
    policy.condition = Some(Default::default());
    policy.permissions.push(perm(R::Header(HeaderMatcher {
        name: "grpc-timeout".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    })));
    policy.permissions.push(perm(R::Header(HeaderMatcher {
        name: ":scheme".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    })));
    policy.permissions.push(perm(R::DestinationIp(CidrRange {
        address_prefix: "10.0.0.300".into(),
        prefix_len: None,
    })));
    policy
        .permissions
        .push(perm(R::UriTemplate(Default::default())));
    rules.audit_logging_options = Some(pb::rbac::AuditLoggingOptions {
        logger_configs: vec![pb::rbac::audit_logging_options::AuditLoggerConfig {
            is_optional: false,
            ..Default::default()
        }],
        ..Default::default()
    });
    m.matcher = Some(Default::default());
    let e = translated(&m).unwrap_err();
    let p = "rules.policies.ns[shop]-policy[reads]-rule[0]";
    for want in [
        format!("{p}.condition: CEL conditions are not supported"),
        format!("{p}.permissions[1].header.name: \"grpc-timeout\" cannot be matched (gRFC A41)"),
        format!("{p}.permissions[2].header.name: \":scheme\" cannot be matched"),
        format!("{p}.permissions[3].destination_ip: 10.0.0.300/0 is not an IP range"),
        format!("{p}.permissions[4].uri_template: is not supported"),
        "rules.audit_logging_options.logger_configs[0]: unknown audit logger \"\" (A59".into(),
        "matcher: is not supported (use rules)".into(),
    ] {
        assert!(e.contains(&want), "missing {want:?} in {e}");
    }
}

#[test]
fn the_stdout_audit_logger_translates_and_optional_unknown_ones_are_skipped() {
    use pb::rbac::audit_logging_options::{AuditCondition, AuditLoggerConfig};
    let logger = |url: &str, is_optional: bool| AuditLoggerConfig {
        audit_logger: Some(
            envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig {
                name: "logger".into(),
                typed_config: Some(envoy_types::pb::google::protobuf::Any {
                    type_url: url.into(),
                    value: vec![],
                }),
            },
        ),
        is_optional,
    };
    let mut m = istio_allow();
    m.rules.as_mut().unwrap().audit_logging_options = Some(pb::rbac::AuditLoggingOptions {
        audit_condition: AuditCondition::OnDeny as i32,
        logger_configs: vec![
            logger(super::STDOUT_AUDIT_LOG, false),
            logger("type.googleapis.com/example.Custom", true),
        ],
    });
    let f = translated(&m).unwrap();
    let audit = f.rules.unwrap().audit_logging_options.unwrap();
    assert_eq!(
        audit.audit_condition,
        mesh_core::config::rbac::AuditCondition::OnDeny
    );
    assert_eq!(
        audit.logger_configs.len(),
        1,
        "the optional unknown one is skipped"
    );
    assert!(audit.logger_configs[0].stdout.is_some());
}

#[test]
#[allow(deprecated)] // `metadata`: deprecated for `sourced_metadata`, still what istiod sends
fn request_principals_read_as_metadata_matchers() {
    use m::metadata_matcher::{PathSegment, path_segment::Segment};
    use m::value_matcher::MatchPattern as V;
    let key = |k: &str| PathSegment {
        segment: Some(Segment::Key(k.into())),
    };
    // What istiod writes for `request.auth.claims[groups]: [admins]`.
    let claims = m::MetadataMatcher {
        filter: "envoy.filters.http.jwt_authn".into(),
        path: vec![key("payload"), key("groups")],
        value: Some(m::ValueMatcher {
            match_pattern: Some(V::OrMatch(m::OrMatcher {
                value_matchers: vec![
                    m::ValueMatcher {
                        match_pattern: Some(V::ListMatch(Box::new(m::ListMatcher {
                            match_pattern: Some(m::list_matcher::MatchPattern::OneOf(Box::new(
                                m::ValueMatcher {
                                    match_pattern: Some(V::StringMatch(exact("admins"))),
                                },
                            ))),
                        }))),
                    },
                    m::ValueMatcher {
                        match_pattern: Some(V::StringMatch(exact("admins"))),
                    },
                ],
            })),
        }),
        invert: false,
    };
    let mut f = istio_allow();
    let policy = f
        .rules
        .as_mut()
        .unwrap()
        .policies
        .values_mut()
        .next()
        .unwrap();
    policy.principals = vec![id(pb::principal::Identifier::Metadata(claims))];
    let got = translated(&f).unwrap();
    let want: RbacFilter = serde_saphyr::from_str(
        r#"
rules:
  policies:
    ns[shop]-policy[reads]-rule[0]:
      permissions: []
      principals:
        - metadata:
            filter: envoy.filters.http.jwt_authn
            path: [{ key: payload }, { key: groups }]
            value: { or_match: { value_matchers: [{ list_match: { one_of: { string_match: { exact: admins } } } }, { string_match: { exact: admins } }] } }
"#,
    )
    .unwrap();
    let principals = |f: &RbacFilter| {
        f.rules
            .as_ref()
            .unwrap()
            .policies
            .values()
            .next()
            .unwrap()
            .principals
            .clone()
    };
    assert_eq!(principals(&got), principals(&want));

    // A double_match cannot be evaluated: NACKed with its path.
    let policy = f
        .rules
        .as_mut()
        .unwrap()
        .policies
        .values_mut()
        .next()
        .unwrap();
    policy.principals = vec![id(pb::principal::Identifier::Metadata(
        m::MetadataMatcher {
            filter: "envoy.filters.http.jwt_authn".into(),
            path: vec![key("payload"), key("exp")],
            value: Some(m::ValueMatcher {
                match_pattern: Some(V::DoubleMatch(Default::default())),
            }),
            invert: false,
        },
    ))];
    let e = translated(&f).unwrap_err();
    assert!(
        e.contains("principals[0].metadata.value.double_match: is not supported"),
        "{e}"
    );
}
