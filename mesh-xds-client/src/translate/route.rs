//! `RouteConfiguration` → [`RouteConfig`].

use super::{duration, finish};
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use mesh_core::config::route::{
    ClusterWeight, HeaderMatcher, Int64Range, RegexMatcher, RouteAction, StringMatcher,
    WeightedClusters,
};
use mesh_core::error::{Errors, FieldPath};
use mesh_core::{ConfigError, Route, RouteConfig, RouteMatch, VirtualHost};

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
    };
    if errors.is_empty() {
        out.validate(path, errors);
    }
    out
}

fn virtual_host(vh: &pb::VirtualHost, path: &FieldPath, errors: &mut Errors) -> VirtualHost {
    VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes: vh
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(r, &path.field("routes").index(i), errors))
            .collect(),
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
    let route = match &r.action {
        Some(pb::route::Action::Route(a)) => Some(action(a, &path.field("route"), errors)),
        Some(pb::route::Action::Redirect(_)) => {
            errors.push(
                &path.field("redirect"),
                "redirect actions are not supported yet",
            );
            None
        }
        Some(pb::route::Action::DirectResponse(_)) => {
            errors.push(
                &path.field("direct_response"),
                "direct_response actions are not supported yet",
            );
            None
        }
        Some(_) => {
            errors.push(path, "unsupported route action");
            None
        }
        None => {
            errors.push(&path.field("action"), "field not present");
            None
        }
    };
    Route {
        name: r.name.clone(),
        matcher,
        route,
    }
}

fn route_match(m: &pb::RouteMatch, path: &FieldPath, errors: &mut Errors) -> RouteMatch {
    use pb::route_match::PathSpecifier as P;
    let mut out = RouteMatch {
        prefix: None,
        path: None,
        safe_regex: None,
        path_separated_prefix: None,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers: Vec::new(),
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
    if !m.query_parameters.is_empty() {
        errors.push(
            &path.field("query_parameters"),
            "query parameter matching is not supported yet",
        );
    }
    if m.runtime_fraction.is_some() {
        errors.push(
            &path.field("runtime_fraction"),
            "runtime_fraction matching is not supported yet",
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

fn regex(r: &matcher::RegexMatcher) -> RegexMatcher {
    RegexMatcher {
        regex: r.regex.clone(),
    }
}

// The per-kind matchers are deprecated in favour of `string_match`, but control planes still send them.
#[allow(deprecated)]
fn header(h: &pb::HeaderMatcher, path: &FieldPath, errors: &mut Errors) -> HeaderMatcher {
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

fn string_matcher(
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
                    .map(|c| ClusterWeight {
                        name: c.name.clone(),
                        weight: c.weight.as_ref().map_or(0, |w| w.value),
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
    if a.prefix_rewrite.len() + a.regex_rewrite.as_ref().map_or(0, |_| 1) > 0 {
        errors.push(path, "path rewrites are not supported yet");
    }
    if !a.request_mirror_policies.is_empty() {
        errors.push(
            &path.field("request_mirror_policies"),
            "mirroring is not supported yet",
        );
    }
    // retry_policy and hash_policy are accepted and not applied yet (see the module doc).
    out
}
