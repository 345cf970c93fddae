//! `RouteConfiguration` → [`RouteConfig`].

use super::policy::{filter_override, header_options, hedge, retry, runtime_fraction};
use super::{duration, finish};
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::route::{
    ClusterWeight, DataSource, DirectResponseAction, HashOn, HashPolicy, HeaderMatcher, Int64Range,
    MaxStreamDuration, PerFilterConfig, QueryParameterMatcher, RedirectAction,
    RedirectResponseCode, RegexMatchAndSubstitute, RegexMatcher, RequestMirrorPolicy, RouteAction,
    StringMatcher, WeightedClusters,
};
use mesh_core::error::{Errors, FieldPath};
use mesh_core::policy::Empty;
use mesh_core::{ConfigError, Route, RouteConfig, RouteMatch, VirtualHost};
use std::collections::HashMap;

/// `T` with its four header mutation lists translated from `src` (and defaults elsewhere), as
/// the base of a struct literal.
macro_rules! header_lists {
    ($t:ident, $src:expr, $path:expr, $errors:expr) => {
        $t {
            request_headers_to_add: header_options(
                &$src.request_headers_to_add,
                &$path.field("request_headers_to_add"),
                $errors,
            ),
            request_headers_to_remove: lower(&$src.request_headers_to_remove),
            response_headers_to_add: header_options(
                &$src.response_headers_to_add,
                &$path.field("response_headers_to_add"),
                $errors,
            ),
            response_headers_to_remove: lower(&$src.response_headers_to_remove),
            ..$t::default()
        }
    };
}

/// Translates and validates a route configuration (RDS, or inline in a listener).
pub fn translate_config(rc: &pb::RouteConfiguration) -> Result<RouteConfig, ConfigError> {
    let mut errors = Errors::new();
    let config = config(rc, &FieldPath::root(), &mut errors);
    finish(config, errors)
}

/// Translation without the final validation, for embedding (paths start at `path`).
pub(crate) fn config(
    rc: &pb::RouteConfiguration,
    path: &FieldPath,
    errors: &mut Errors,
) -> RouteConfig {
    let virtual_hosts = rc
        .virtual_hosts
        .iter()
        .enumerate()
        .map(|(i, vh)| virtual_host(vh, &path.field("virtual_hosts").index(i), errors))
        .collect();
    let out = RouteConfig {
        name: rc.name.clone(),
        virtual_hosts,
        ..header_lists!(RouteConfig, rc, path, errors)
    };
    if errors.is_empty() {
        out.validate(path, errors);
    }
    out
}

/// `request_body_buffer_limit` replaces the deprecated `per_request_buffer_limit_bytes`.
fn buffer_limit(new: Option<u64>, old: Option<u32>) -> Option<u32> {
    new.map(|v| u32::try_from(v).unwrap_or(u32::MAX)).or(old)
}

fn lower(names: &[String]) -> Vec<String> {
    names.iter().map(|n| n.to_ascii_lowercase()).collect()
}

fn per_filter(
    map: &HashMap<String, Any>,
    path: &FieldPath,
    errors: &mut Errors,
) -> PerFilterConfig {
    map.iter()
        .filter_map(|(name, any)| {
            let p = path.field("typed_per_filter_config").field(name);
            filter_override(any, &p, errors).map(|f| (name.clone(), f))
        })
        .collect()
}

fn virtual_host(vh: &pb::VirtualHost, path: &FieldPath, errors: &mut Errors) -> VirtualHost {
    if !vh.request_mirror_policies.is_empty() {
        errors.push(
            &path.field("request_mirror_policies"),
            "virtual-host mirrors are not supported yet (set them on routes)",
        );
    }
    if vh.include_request_attempt_count {
        // Accepted: the mesh always sends x-envoy-attempt-count on retried routes.
    }
    VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes: vh
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(r, &path.field("routes").index(i), errors))
            .collect(),
        retry_policy: vh
            .retry_policy
            .as_ref()
            .map(|r| retry(r, &path.field("retry_policy"), errors)),
        hedge_policy: vh
            .hedge_policy
            .as_ref()
            .map(|h| hedge(h, &path.field("hedge_policy"), errors)),
        per_request_buffer_limit_bytes: buffer_limit(
            vh.request_body_buffer_limit.as_ref().map(|v| v.value),
            {
                #[allow(deprecated)]
                vh.per_request_buffer_limit_bytes.as_ref().map(|v| v.value)
            },
        ),
        typed_per_filter_config: per_filter(&vh.typed_per_filter_config, path, errors),
        ..header_lists!(VirtualHost, vh, path, errors)
    }
}

fn route(r: &pb::Route, path: &FieldPath, errors: &mut Errors) -> Route {
    let mp = path.field("match");
    let matcher = match &r.r#match {
        Some(m) => route_match(m, &mp, errors),
        None => {
            errors.push(&mp, "field not present");
            RouteMatch::default()
        }
    };
    let mut out = Route {
        name: r.name.clone(),
        matcher,
        per_request_buffer_limit_bytes: buffer_limit(
            r.request_body_buffer_limit.as_ref().map(|v| v.value),
            {
                #[allow(deprecated)]
                r.per_request_buffer_limit_bytes.as_ref().map(|v| v.value)
            },
        ),
        typed_per_filter_config: per_filter(&r.typed_per_filter_config, path, errors),
        ..header_lists!(Route, r, path, errors)
    };
    match &r.action {
        Some(pb::route::Action::Route(a)) => {
            out.route = Some(action(a, &path.field("route"), errors))
        }
        Some(pb::route::Action::Redirect(a)) => {
            out.redirect = Some(redirect(a, &path.field("redirect"), errors))
        }
        Some(pb::route::Action::DirectResponse(d)) => {
            out.direct_response = Some(direct(d, &path.field("direct_response"), errors))
        }
        Some(_) => errors.push(path, "unsupported route action"),
        None => errors.push(&path.field("action"), "field not present"),
    }
    out
}

fn redirect(a: &pb::RedirectAction, path: &FieldPath, errors: &mut Errors) -> RedirectAction {
    use pb::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
    };
    let mut out = RedirectAction {
        host_redirect: (!a.host_redirect.is_empty()).then(|| a.host_redirect.clone()),
        port_redirect: (a.port_redirect != 0).then_some(a.port_redirect),
        strip_query: a.strip_query,
        response_code: match C::try_from(a.response_code) {
            Ok(C::Found) => RedirectResponseCode::Found,
            Ok(C::SeeOther) => RedirectResponseCode::SeeOther,
            Ok(C::TemporaryRedirect) => RedirectResponseCode::TemporaryRedirect,
            Ok(C::PermanentRedirect) => RedirectResponseCode::PermanentRedirect,
            _ => RedirectResponseCode::MovedPermanently,
        },
        ..RedirectAction::default()
    };
    match &a.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(b)) => out.https_redirect = *b,
        Some(S::SchemeRedirect(s)) => out.scheme_redirect = Some(s.clone()),
        None => {}
    }
    match &a.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => out.path_redirect = Some(p.clone()),
        Some(P::PrefixRewrite(p)) => out.prefix_rewrite = Some(p.clone()),
        Some(P::RegexRewrite(r)) => {
            out.regex_rewrite = regex_rewrite(r, &path.field("regex_rewrite"), errors)
        }
        Some(_) => errors.push(path, "unsupported redirect path rewrite"),
        None => {}
    }
    out
}

fn regex_rewrite(
    r: &matcher::RegexMatchAndSubstitute,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<RegexMatchAndSubstitute> {
    match &r.pattern {
        Some(p) => Some(RegexMatchAndSubstitute {
            pattern: regex(p),
            substitution: r.substitution.clone(),
        }),
        None => {
            errors.push(&path.field("pattern"), "field not present");
            None
        }
    }
}

fn direct(
    d: &pb::DirectResponseAction,
    path: &FieldPath,
    errors: &mut Errors,
) -> DirectResponseAction {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as S;
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => None,
        Some(S::InlineString(s)) => Some(DataSource {
            inline_string: s.clone(),
        }),
        Some(S::InlineBytes(b)) => match String::from_utf8(b.clone()) {
            Ok(s) => Some(DataSource { inline_string: s }),
            Err(_) => {
                errors.push(&path.field("body").field("inline_bytes"), "must be UTF-8");
                None
            }
        },
        Some(_) => {
            errors.push(&path.field("body"), "only inline bodies are supported");
            None
        }
    };
    DirectResponseAction {
        status: d.status,
        body,
    }
}

pub(crate) fn route_match(m: &pb::RouteMatch, path: &FieldPath, errors: &mut Errors) -> RouteMatch {
    use pb::route_match::PathSpecifier as P;
    let mut out = RouteMatch {
        prefix: None,
        path: None,
        safe_regex: None,
        path_separated_prefix: None,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers: Vec::new(),
        query_parameters: Vec::new(),
        runtime_fraction: m.runtime_fraction.as_ref().map(runtime_fraction),
        grpc: m.grpc.as_ref().map(|_| Empty {}),
    };
    match &m.path_specifier {
        Some(P::Prefix(p)) => out.prefix = Some(p.clone()),
        Some(P::Path(p)) => out.path = Some(p.clone()),
        Some(P::SafeRegex(r)) => out.safe_regex = Some(regex(r)),
        Some(P::PathSeparatedPrefix(p)) => out.path_separated_prefix = Some(p.clone()),
        Some(_) => errors.push(path, "unsupported path specifier"),
        None => errors.push(
            path,
            "a path specifier (prefix, path, safe_regex) is required",
        ),
    }
    out.query_parameters = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| query_parameter(q, &path.field("query_parameters").index(i), errors))
        .collect();
    if m.dynamic_metadata.len() + m.filter_state.len() > 0 || m.tls_context.is_some() {
        errors.push(
            path,
            "dynamic_metadata, filter_state and tls_context matchers do not apply to a client",
        );
    }
    out.headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header(h, &path.field("headers").index(i), errors))
        .collect();
    out
}

fn query_parameter(
    q: &pb::QueryParameterMatcher,
    path: &FieldPath,
    errors: &mut Errors,
) -> QueryParameterMatcher {
    use pb::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    let mut out = QueryParameterMatcher {
        name: q.name.clone(),
        ..QueryParameterMatcher::default()
    };
    match &q.query_parameter_match_specifier {
        Some(Q::StringMatch(s)) => {
            out.string_match = Some(string_matcher(s, &path.field("string_match"), errors))
        }
        Some(Q::PresentMatch(p)) => out.present_match = Some(*p),
        None => out.present_match = Some(true),
    }
    out
}

fn regex(r: &matcher::RegexMatcher) -> RegexMatcher {
    RegexMatcher {
        regex: r.regex.clone(),
    }
}

// The per-kind matchers are deprecated in favour of `string_match`, but control planes still send them.
#[allow(deprecated)]
pub(crate) fn header(
    h: &pb::HeaderMatcher,
    path: &FieldPath,
    errors: &mut Errors,
) -> HeaderMatcher {
    use pb::header_matcher::HeaderMatchSpecifier as H;
    let mut out = HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        invert_match: h.invert_match,
        ..HeaderMatcher::default()
    };
    match &h.header_match_specifier {
        None => {}
        Some(H::ExactMatch(v)) => out.exact_match = Some(v.clone()),
        Some(H::PrefixMatch(v)) => out.prefix_match = Some(v.clone()),
        Some(H::SuffixMatch(v)) => out.suffix_match = Some(v.clone()),
        Some(H::ContainsMatch(v)) => out.contains_match = Some(v.clone()),
        Some(H::SafeRegexMatch(r)) => out.safe_regex_match = Some(regex(r)),
        Some(H::RangeMatch(r)) => {
            out.range_match = Some(Int64Range {
                start: r.start,
                end: r.end,
            })
        }
        Some(H::PresentMatch(p)) => out.present_match = Some(*p),
        Some(H::StringMatch(s)) => {
            out.string_match = Some(string_matcher(s, &path.field("string_match"), errors))
        }
    }
    if h.treat_missing_header_as_empty {
        errors.push(
            &path.field("treat_missing_header_as_empty"),
            "is not supported yet",
        );
    }
    out
}

pub(crate) fn string_matcher(
    s: &matcher::StringMatcher,
    path: &FieldPath,
    errors: &mut Errors,
) -> StringMatcher {
    use matcher::string_matcher::MatchPattern as M;
    let mut out = StringMatcher {
        ignore_case: s.ignore_case,
        ..StringMatcher::default()
    };
    match &s.match_pattern {
        Some(M::Exact(v)) => out.exact = Some(v.clone()),
        Some(M::Prefix(v)) => out.prefix = Some(v.clone()),
        Some(M::Suffix(v)) => out.suffix = Some(v.clone()),
        Some(M::Contains(v)) => out.contains = Some(v.clone()),
        Some(M::SafeRegex(r)) => out.safe_regex = Some(regex(r)),
        Some(_) => errors.push(path, "unsupported string match pattern"),
        None => errors.push(path, "a match pattern is required"),
    }
    out
}

// `total_weight` is deprecated but still sent; when present it must equal the sum of weights.
#[allow(deprecated)]
fn action(a: &pb::RouteAction, path: &FieldPath, errors: &mut Errors) -> RouteAction {
    use pb::route_action::ClusterSpecifier as C;
    let mut out = RouteAction::default();
    match &a.cluster_specifier {
        Some(C::Cluster(c)) => out.cluster = Some(c.clone()),
        Some(C::ClusterHeader(h)) => out.cluster_header = Some(h.to_ascii_lowercase()),
        Some(C::WeightedClusters(w)) => {
            let wp = path.field("weighted_clusters");
            out.weighted_clusters = Some(WeightedClusters {
                clusters: w
                    .clusters
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let cp = wp.field("clusters").index(i);
                        if !c.typed_per_filter_config.is_empty() {
                            errors.push(
                                &cp.field("typed_per_filter_config"),
                                "per-cluster filter overrides are not supported",
                            );
                        }
                        ClusterWeight {
                            name: c.name.clone(),
                            weight: c.weight.as_ref().map_or(0, |w| w.value),
                            ..header_lists!(ClusterWeight, c, cp, errors)
                        }
                    })
                    .collect(),
                total_weight: w.total_weight.as_ref().map(|t| t.value),
            });
            if w.clusters.iter().any(|c| c.weight.is_none()) {
                errors.push(&wp.field("clusters"), "every cluster needs a weight");
            }
        }
        Some(_) => errors.push(
            path,
            "unsupported cluster specifier (cluster_specifier_plugin)",
        ),
        None => errors.push(path, "a cluster specifier is required"),
    }
    if let Some(t) = &a.timeout {
        out.timeout = duration(t, &path.field("timeout"), errors);
    }
    if let Some(t) = &a.idle_timeout {
        out.idle_timeout = duration(t, &path.field("idle_timeout"), errors);
    }
    if !a.prefix_rewrite.is_empty() {
        out.prefix_rewrite = Some(a.prefix_rewrite.clone());
    }
    if let Some(r) = &a.regex_rewrite {
        out.regex_rewrite = regex_rewrite(r, &path.field("regex_rewrite"), errors);
    }
    use pb::route_action::HostRewriteSpecifier as H;
    match &a.host_rewrite_specifier {
        None => {}
        Some(H::HostRewriteLiteral(h)) => out.host_rewrite_literal = Some(h.clone()),
        Some(H::AutoHostRewrite(b)) if !b.value => {}
        Some(_) => errors.push(
            path,
            "only host_rewrite_literal is supported among host rewrites",
        ),
    }
    out.request_mirror_policies = a
        .request_mirror_policies
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let mp = path.field("request_mirror_policies").index(i);
            if m.cluster.is_empty() {
                errors.push(
                    &mp.field("cluster"),
                    "is required (cluster_header is not supported)",
                );
                return None;
            }
            Some(RequestMirrorPolicy {
                cluster: m.cluster.clone(),
                runtime_fraction: m.runtime_fraction.as_ref().map(runtime_fraction),
            })
        })
        .collect();
    out.retry_policy = a
        .retry_policy
        .as_ref()
        .map(|r| retry(r, &path.field("retry_policy"), errors));
    out.hedge_policy = a
        .hedge_policy
        .as_ref()
        .map(|h| hedge(h, &path.field("hedge_policy"), errors));
    if let Some(m) = &a.max_stream_duration {
        let mp = path.field("max_stream_duration");
        let mut d = |v: &Option<envoy_types::pb::google::protobuf::Duration>, f: &str| {
            v.as_ref().and_then(|v| duration(v, &mp.field(f), errors))
        };
        out.max_stream_duration = Some(MaxStreamDuration {
            max_stream_duration: d(&m.max_stream_duration, "max_stream_duration"),
            grpc_timeout_header_max: d(&m.grpc_timeout_header_max, "grpc_timeout_header_max"),
            grpc_timeout_header_offset: d(
                &m.grpc_timeout_header_offset,
                "grpc_timeout_header_offset",
            ),
        });
    }
    out.hash_policy = a
        .hash_policy
        .iter()
        .enumerate()
        .filter_map(|(i, h)| hash_policy(h, &path.field("hash_policy").index(i), errors))
        .collect();
    out
}

fn hash_policy(
    h: &pb::route_action::HashPolicy,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<HashPolicy> {
    use pb::route_action::hash_policy::PolicySpecifier as P;
    let mut out = HashPolicy {
        terminal: h.terminal,
        ..HashPolicy::default()
    };
    match &h.policy_specifier {
        Some(P::Header(hd)) => {
            if hd.regex_rewrite.is_some() {
                errors.push(
                    &path.field("header").field("regex_rewrite"),
                    "is not supported yet",
                );
            }
            out.header = Some(HashOn {
                header_name: hd.header_name.to_ascii_lowercase(),
                name: String::new(),
            });
        }
        // A cookie with a `ttl` is generated by Envoy when missing; here the policy then simply
        // produces no hash (documented in the traffic-policy guide).
        Some(P::Cookie(c)) => {
            out.cookie = Some(HashOn {
                header_name: String::new(),
                name: c.name.clone(),
            })
        }
        Some(P::QueryParameter(q)) => {
            out.query_parameter = Some(HashOn {
                header_name: String::new(),
                name: q.name.clone(),
            })
        }
        Some(P::ConnectionProperties(_)) | Some(P::FilterState(_)) => {
            errors.push(
                path,
                "connection_properties and filter_state hashing have no meaning for an in-process client",
            );
            return None;
        }
        None => {
            errors.push(path, "a policy specifier is required");
            return None;
        }
    }
    Some(out)
}
