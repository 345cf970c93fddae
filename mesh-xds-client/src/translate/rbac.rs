//! `envoy.extensions.filters.http.rbac.v3.RBAC` (and `RBACPerRoute`) → the mesh's
//! [`RbacFilter`], by gRFC A41's rules.
//!
//! NACKed with the field path: CEL `condition`/`checked_condition`, the `matcher` and shadow
//! forms (a different policy language), header matchers on `grpc-*` or `:scheme`, custom
//! matchers and principals, URI templates, filter state, audit loggers other
//! than A59's `StdoutAuditLog` (unless marked optional), `double_match` values. `metadata`
//! permissions are kept as never-matching (A41); `metadata` principals match the JWT filter's
//! verified payloads (other filters': never). `action: LOG` translates and is ignored.

use super::route::{header, string_matcher};
use envoy_types::pb::envoy::config::core::v3::CidrRange as PbCidr;
use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as filter;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher as PbMetadata, ValueMatcher as PbValue,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::metadata::{
    ListMatcher, MetadataMatcher, OrMatcher, PathSegment, ValueMatcher,
};
use mesh_core::config::rbac::{
    AuditCondition, AuditLogger, AuditLoggingOptions, Authenticated, CidrRange, PathMatcher,
    Permission, PermissionSet, Policy, PortRange, Principal, PrincipalSet, Rbac, RbacAction,
    RbacFilter,
};
use mesh_core::error::{Errors, FieldPath};
use prost::Message;

/// The filter's type URL.
pub const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
/// gRPC's built-in audit logger (A59).
pub const STDOUT_AUDIT_LOG: &str =
    "type.googleapis.com/envoy.extensions.rbac.audit_loggers.stream.v3.StdoutAuditLog";
/// The per-route override's type URL.
pub const RBAC_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

/// An RBAC filter's typed config.
pub fn filter(any: &Any, path: &FieldPath, errors: &mut Errors) -> Option<RbacFilter> {
    let m = match filter::Rbac::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(path, format!("cannot decode RBAC: {e}"));
            return None;
        }
    };
    Some(rbac_filter(&m, path, errors))
}

/// An `RBACPerRoute` override: its `rbac`, or (absent) the filter off for the route.
pub fn per_route(any: &Any, path: &FieldPath, errors: &mut Errors) -> Option<RbacFilter> {
    let m = match filter::RbacPerRoute::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(path, format!("cannot decode RBACPerRoute: {e}"));
            return None;
        }
    };
    Some(match &m.rbac {
        Some(r) => rbac_filter(r, &path.field("rbac"), errors),
        None => RbacFilter::default(),
    })
}

fn rbac_filter(m: &filter::Rbac, path: &FieldPath, errors: &mut Errors) -> RbacFilter {
    for (set, field) in [
        (m.matcher.is_some(), "matcher"),
        (m.shadow_matcher.is_some(), "shadow_matcher"),
    ] {
        if set {
            errors.push(&path.field(field), "is not supported (use rules)");
        }
    }
    // Shadow rules only produce stats in Envoy; they never change a decision.
    let out = RbacFilter {
        rules: m
            .rules
            .as_ref()
            .map(|r| rbac(r, &path.field("rules"), errors)),
    };
    out.validate(path, errors);
    out
}

fn rbac(r: &pb::Rbac, path: &FieldPath, errors: &mut Errors) -> Rbac {
    use pb::rbac::Action;
    let action = match Action::try_from(r.action) {
        Ok(Action::Allow) => RbacAction::Allow,
        Ok(Action::Deny) => RbacAction::Deny,
        Ok(Action::Log) => RbacAction::Log,
        Err(_) => {
            errors.push(&path.field("action"), "unknown action");
            RbacAction::Allow
        }
    };
    let audit_logging_options = r.audit_logging_options.as_ref().map(|audit| {
        use pb::rbac::audit_logging_options::AuditCondition as C;
        let p = path.field("audit_logging_options");
        let audit_condition = match C::try_from(audit.audit_condition) {
            Ok(C::None) => AuditCondition::None,
            Ok(C::OnDeny) => AuditCondition::OnDeny,
            Ok(C::OnAllow) => AuditCondition::OnAllow,
            Ok(C::OnDenyAndAllow) => AuditCondition::OnDenyAndAllow,
            Err(_) => {
                errors.push(&p.field("audit_condition"), "unknown condition");
                AuditCondition::None
            }
        };
        let mut logger_configs = Vec::new();
        for (i, l) in audit.logger_configs.iter().enumerate() {
            let url = l
                .audit_logger
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
                .map_or("", |a| a.type_url.as_str());
            if url == STDOUT_AUDIT_LOG {
                logger_configs.push(AuditLogger {
                    stdout: Some(Default::default()),
                });
            } else if !l.is_optional {
                errors.push(
                    &p.field("logger_configs").index(i),
                    format!("unknown audit logger {url:?} (A59: only StdoutAuditLog; mark it is_optional to run without it)"),
                );
            }
        }
        AuditLoggingOptions {
            audit_condition,
            logger_configs,
        }
    });
    let mut policies = std::collections::BTreeMap::new();
    for (name, p) in &r.policies {
        let pp = path.field("policies").field(name);
        if p.condition.is_some() || p.checked_condition.is_some() {
            errors.push(
                &pp.field("condition"),
                "CEL conditions are not supported (gRFC A41)",
            );
        }
        policies.insert(
            name.clone(),
            Policy {
                permissions: p
                    .permissions
                    .iter()
                    .enumerate()
                    .map(|(i, x)| permission(x, &pp.field("permissions").index(i), errors))
                    .collect(),
                principals: p
                    .principals
                    .iter()
                    .enumerate()
                    .map(|(i, x)| principal(x, &pp.field("principals").index(i), errors))
                    .collect(),
            },
        );
    }
    Rbac {
        action,
        policies,
        audit_logging_options,
    }
}

fn cidr(c: &PbCidr) -> CidrRange {
    CidrRange {
        address_prefix: c.address_prefix.clone(),
        prefix_len: c.prefix_len.as_ref().map_or(0, |v| v.value),
    }
}

fn url_path(
    m: &envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<PathMatcher> {
    use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule;
    match &m.rule {
        Some(Rule::Path(s)) => Some(PathMatcher {
            path: string_matcher(s, &path.field("path"), errors),
        }),
        None => {
            errors.push(path, "a path matcher is required");
            None
        }
    }
}

#[allow(deprecated)] // metadata: deprecated for sourced_metadata, still sent
fn permission(p: &pb::Permission, path: &FieldPath, errors: &mut Errors) -> Permission {
    use pb::permission::Rule as R;
    let mut out = Permission::default();
    let set = |s: &pb::permission::Set, field: &str, errors: &mut Errors| PermissionSet {
        rules: s
            .rules
            .iter()
            .enumerate()
            .map(|(i, x)| permission(x, &path.field(field).field("rules").index(i), errors))
            .collect(),
    };
    match &p.rule {
        Some(R::Any(v)) => out.any = Some(*v),
        Some(R::AndRules(s)) => out.and_rules = Some(set(s, "and_rules", errors)),
        Some(R::OrRules(s)) => out.or_rules = Some(set(s, "or_rules", errors)),
        Some(R::NotRule(n)) => {
            out.not_rule = Some(Box::new(permission(n, &path.field("not_rule"), errors)))
        }
        Some(R::Header(h)) => out.header = Some(header(h, &path.field("header"), errors)),
        Some(R::UrlPath(m)) => out.url_path = url_path(m, &path.field("url_path"), errors),
        Some(R::DestinationIp(c)) => out.destination_ip = Some(cidr(c)),
        Some(R::DestinationPort(port)) => out.destination_port = Some(*port),
        Some(R::DestinationPortRange(r)) => {
            out.destination_port_range = Some(PortRange {
                start: u32::try_from(r.start).unwrap_or(u32::MAX),
                end: u32::try_from(r.end).unwrap_or(0),
            })
        }
        Some(R::RequestedServerName(m)) => {
            out.requested_server_name = Some(string_matcher(
                m,
                &path.field("requested_server_name"),
                errors,
            ))
        }
        Some(R::Metadata(_)) | Some(R::SourcedMetadata(_)) => out.metadata = true,
        Some(R::Matcher(_)) => errors.push(&path.field("matcher"), "is not supported"),
        Some(R::UriTemplate(_)) => errors.push(&path.field("uri_template"), "is not supported"),
        None => errors.push(path, "a rule must be set"),
    }
    out
}

#[allow(deprecated)] // source_ip: deprecated in Envoy's API, still sent
fn principal(p: &pb::Principal, path: &FieldPath, errors: &mut Errors) -> Principal {
    use pb::principal::Identifier as I;
    let mut out = Principal::default();
    let set = |s: &pb::principal::Set, field: &str, errors: &mut Errors| PrincipalSet {
        ids: s
            .ids
            .iter()
            .enumerate()
            .map(|(i, x)| principal(x, &path.field(field).field("ids").index(i), errors))
            .collect(),
    };
    match &p.identifier {
        Some(I::Any(v)) => out.any = Some(*v),
        Some(I::AndIds(s)) => out.and_ids = Some(set(s, "and_ids", errors)),
        Some(I::OrIds(s)) => out.or_ids = Some(set(s, "or_ids", errors)),
        Some(I::NotId(n)) => {
            out.not_id = Some(Box::new(principal(n, &path.field("not_id"), errors)))
        }
        Some(I::Authenticated(a)) => {
            out.authenticated = Some(Authenticated {
                principal_name: a.principal_name.as_ref().map(|m| {
                    string_matcher(
                        m,
                        &path.field("authenticated").field("principal_name"),
                        errors,
                    )
                }),
            })
        }
        Some(I::SourceIp(c)) => out.source_ip = Some(cidr(c)),
        Some(I::DirectRemoteIp(c)) => out.direct_remote_ip = Some(cidr(c)),
        Some(I::RemoteIp(c)) => out.remote_ip = Some(cidr(c)),
        Some(I::Header(h)) => out.header = Some(header(h, &path.field("header"), errors)),
        Some(I::UrlPath(m)) => out.url_path = url_path(m, &path.field("url_path"), errors),
        Some(I::Metadata(m)) => out.metadata = Some(metadata(m, &path.field("metadata"), errors)),
        Some(I::SourcedMetadata(s)) => {
            let mp = path.field("sourced_metadata").field("metadata_matcher");
            out.metadata = Some(match &s.metadata_matcher {
                Some(m) => metadata(m, &mp, errors),
                None => {
                    errors.push(&mp, "is required");
                    MetadataMatcher::default()
                }
            })
        }
        Some(I::FilterState(_)) => errors.push(&path.field("filter_state"), "is not supported"),
        Some(I::Custom(_)) => errors.push(&path.field("custom"), "is not supported"),
        None => errors.push(path, "an identifier must be set"),
    }
    out
}

/// A metadata matcher. Only the JWT filter's payloads exist in-process; a matcher naming
/// another filter translates and never matches (A41).
pub(super) fn metadata(m: &PbMetadata, path: &FieldPath, errors: &mut Errors) -> MetadataMatcher {
    use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::path_segment::Segment;
    let value = match &m.value {
        Some(v) => value_matcher(v, &path.field("value"), errors, 0),
        None => {
            errors.push(&path.field("value"), "is required");
            ValueMatcher::default()
        }
    };
    MetadataMatcher {
        filter: m.filter.clone(),
        path: m
            .path
            .iter()
            .map(|s| match &s.segment {
                Some(Segment::Key(k)) => PathSegment { key: k.clone() },
                None => PathSegment::default(),
            })
            .collect(),
        value,
        invert: m.invert,
    }
}

fn value_matcher(v: &PbValue, path: &FieldPath, errors: &mut Errors, depth: usize) -> ValueMatcher {
    use envoy_types::pb::envoy::r#type::matcher::v3::list_matcher::MatchPattern as L;
    use envoy_types::pb::envoy::r#type::matcher::v3::value_matcher::MatchPattern as V;
    let mut out = ValueMatcher::default();
    if depth > mesh_core::config::metadata::MAX_VALUE_DEPTH {
        errors.push(path, "nested too deep");
        return out;
    }
    match &v.match_pattern {
        Some(V::StringMatch(s)) => {
            out.string_match = Some(string_matcher(s, &path.field("string_match"), errors))
        }
        Some(V::ListMatch(l)) => {
            let lp = path.field("list_match").field("one_of");
            out.list_match = Some(ListMatcher {
                one_of: Box::new(match &l.match_pattern {
                    Some(L::OneOf(one)) => value_matcher(one, &lp, errors, depth + 1),
                    None => {
                        errors.push(&lp, "is required");
                        ValueMatcher::default()
                    }
                }),
            })
        }
        Some(V::OrMatch(o)) => {
            let op = path.field("or_match").field("value_matchers");
            out.or_match = Some(OrMatcher {
                value_matchers: o
                    .value_matchers
                    .iter()
                    .enumerate()
                    .map(|(i, m)| value_matcher(m, &op.index(i), errors, depth + 1))
                    .collect(),
            })
        }
        Some(V::PresentMatch(b)) => out.present_match = Some(*b),
        Some(V::BoolMatch(b)) => out.bool_match = Some(*b),
        Some(V::NullMatch(_)) => out.null_match = Some(mesh_core::policy::Empty {}),
        Some(V::DoubleMatch(_)) => errors.push(&path.field("double_match"), "is not supported"),
        None => errors.push(path, "a match pattern is required"),
    }
    out
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
