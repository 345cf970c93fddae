//! Route actions: forward to a cluster (with rewrites, retries, hedging, mirrors), redirect, or
//! answer directly.

use super::http_token;
use super::matcher::{RegexMatcher, check_regex};
use crate::config::headers::HeaderValueOption;
use crate::config::headers::impl_mutations;
use crate::duration;
use crate::error::{Errors, FieldPath};
use crate::policy::{HedgePolicy, RetryPolicy, RuntimeFractionalPercent};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Envoy's `RouteAction`: where matching requests go. Exactly one of `cluster`,
/// `weighted_clusters`, `cluster_header`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    /// One cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// A weighted split between clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_clusters: Option<WeightedClusters>,
    /// The cluster named by this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_header: Option<String>,
    /// Whole-request timeout, retries included. `None` means Envoy's default of 15 s; `0s`
    /// disables it.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Longest time the stream may see no activity (no response yet, or no response body
    /// frame); `None` or `0s`: no idle timeout.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// Retries; overrides the virtual host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Hedging; overrides the virtual host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_policy: Option<HedgePolicy>,
    /// Stream duration limits and the caller's `grpc-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<MaxStreamDuration>,
    /// Replace the matched prefix (`prefix` / `path_separated_prefix` routes) with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Rewrite the path by regex substitution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    /// Replace the authority sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite_literal: Option<String>,
    /// Fire-and-forget copies to shadow clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    /// How the request's hash is computed for `RING_HASH` and `MAGLEV` clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_policy: Vec<HashPolicy>,
}

/// Envoy's `RouteAction.HashPolicy`: exactly one of `header`, `cookie`, `query_parameter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashPolicy {
    /// Hash this request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HashOn>,
    /// Hash this cookie's value (a missing cookie is not generated, unlike Envoy with `ttl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashOn>,
    /// Hash this query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<HashOn>,
    /// Stop at this policy when it produced a hash.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub terminal: bool,
}

/// The name a [`HashPolicy`] reads (`header_name` for headers, `name` otherwise, as in Envoy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    /// Header name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub header_name: String,
    /// Cookie or query parameter name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Envoy's route timeout default.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Envoy's `RouteAction.MaxStreamDuration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxStreamDuration {
    /// Upper bound on the whole stream; replaces the route `timeout` when set.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub max_stream_duration: Option<Duration>,
    /// When set, the caller's `grpc-timeout` header becomes the timeout, capped at this
    /// (`0s`: uncapped) — gRFC A31's rule.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub grpc_timeout_header_max: Option<Duration>,
    /// Subtracted from the caller's `grpc-timeout` (leaves it room for its own work).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub grpc_timeout_header_offset: Option<Duration>,
}

/// Envoy's `RegexMatchAndSubstitute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatchAndSubstitute {
    /// What to match in the path (every match is replaced).
    pub pattern: RegexMatcher,
    /// The replacement; `\1`…`\9` refer to capture groups.
    #[serde(default)]
    pub substitution: String,
}

/// Envoy's `RequestMirrorPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMirrorPolicy {
    /// The shadow cluster.
    pub cluster: String,
    /// Share of requests mirrored (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
}

impl RouteAction {
    /// The timeout in force: `max_stream_duration` if set, else the configured timeout, else
    /// Envoy's 15 s default; `None` when disabled (`0s`).
    pub fn effective_timeout(&self) -> Option<Duration> {
        let msd = self
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.max_stream_duration);
        match msd.or(self.timeout) {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }

    /// The one cluster specifier that is set, or `None` when zero or several are.
    pub fn cluster_specifier(&self) -> Option<ClusterSpecifier<'_>> {
        match (&self.cluster, &self.weighted_clusters, &self.cluster_header) {
            (Some(c), None, None) => Some(ClusterSpecifier::Cluster(c)),
            (None, Some(w), None) => Some(ClusterSpecifier::Weighted(w)),
            (None, None, Some(h)) => Some(ClusterSpecifier::Header(h)),
            _ => None,
        }
    }

    /// Every cluster name this action can send to, mirrors included (not `cluster_header`
    /// choices).
    pub fn cluster_names(&self) -> impl Iterator<Item = &str> {
        let single = self.cluster.as_deref();
        let weighted = self
            .weighted_clusters
            .iter()
            .flat_map(|w| w.clusters.iter().map(|c| c.name.as_str()));
        let mirrors = self
            .request_mirror_policies
            .iter()
            .map(|m| m.cluster.as_str());
        single.into_iter().chain(weighted).chain(mirrors)
    }
}

/// The cluster specifier of a validated [`RouteAction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterSpecifier<'a> {
    /// `cluster`
    Cluster(&'a str),
    /// `weighted_clusters`
    Weighted(&'a WeightedClusters),
    /// `cluster_header`
    Header(&'a str),
}

/// Envoy's `WeightedCluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusters {
    /// The clusters and their weights.
    pub clusters: Vec<ClusterWeight>,
    /// Deprecated in Envoy; when set it must equal the sum of the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_weight: Option<u32>,
}

/// One cluster of a weighted split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWeight {
    /// Cluster name.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Headers added to requests sent to this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from requests sent to this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers added to this cluster's responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from this cluster's responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

impl_mutations!(ClusterWeight);

/// Envoy's `RedirectAction`: answer with a 3xx and a `location` built from the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectAction {
    /// Use `https`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Use this scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme_redirect: Option<String>,
    /// Use this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_redirect: Option<String>,
    /// Use this port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_redirect: Option<u32>,
    /// Replace the whole path (and query, if given one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_redirect: Option<String>,
    /// Replace the matched prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Rewrite the path by regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    /// The status (default `MOVED_PERMANENTLY`).
    pub response_code: RedirectResponseCode,
    /// Drop the query string.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strip_query: bool,
}

/// Envoy's `RedirectAction.RedirectResponseCode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectResponseCode {
    /// 301.
    #[default]
    MovedPermanently,
    /// 302.
    Found,
    /// 303.
    SeeOther,
    /// 307.
    TemporaryRedirect,
    /// 308.
    PermanentRedirect,
}

impl RedirectResponseCode {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::MovedPermanently => 301,
            Self::Found => 302,
            Self::SeeOther => 303,
            Self::TemporaryRedirect => 307,
            Self::PermanentRedirect => 308,
        }
    }
}

/// Envoy's `DirectResponseAction`: answer locally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseAction {
    /// The status.
    pub status: u32,
    /// The body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<DataSource>,
}

/// Envoy's `DataSource`, inline only (a config must not make the client read files).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// The content.
    #[serde(default)]
    pub inline_string: String,
}

/// Envoy's limit on a direct response body.
pub const MAX_DIRECT_RESPONSE_BODY: usize = 4096;

impl RouteAction {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        match self.cluster_specifier() {
            None => errors.push(
                path,
                "exactly one of cluster, weighted_clusters, cluster_header must be set",
            ),
            Some(ClusterSpecifier::Cluster(c)) => {
                errors.check(!c.is_empty(), &path.field("cluster"), "must not be empty")
            }
            Some(ClusterSpecifier::Header(h)) => errors.check(
                http_token(h) && !h.is_empty(),
                &path.field("cluster_header"),
                "must be a valid header name",
            ),
            Some(ClusterSpecifier::Weighted(w)) => {
                w.validate(&path.field("weighted_clusters"), errors)
            }
        }
        if let Some(retry) = &self.retry_policy {
            retry.validate(&path.field("retry_policy"), errors);
        }
        if self.prefix_rewrite.is_some() && self.regex_rewrite.is_some() {
            errors.push(
                path,
                "at most one of prefix_rewrite and regex_rewrite may be set",
            );
        }
        if let Some(r) = &self.regex_rewrite {
            check_regex(
                &r.pattern.regex,
                &path.field("regex_rewrite").field("pattern").field("regex"),
                errors,
            );
        }
        if let Some(h) = &self.host_rewrite_literal {
            errors.check(
                http::uri::Authority::try_from(h.as_str()).is_ok(),
                &path.field("host_rewrite_literal"),
                format!("{h:?} is not a valid authority"),
            );
        }
        for (i, h) in self.hash_policy.iter().enumerate() {
            let hp = path.field("hash_policy").index(i);
            let set = [&h.header, &h.cookie, &h.query_parameter]
                .iter()
                .filter(|x| x.is_some())
                .count();
            errors.check(
                set == 1,
                &hp,
                "exactly one of header, cookie, query_parameter must be set",
            );
            if let Some(on) = &h.header {
                errors.check(
                    http_token(&on.header_name) && !on.header_name.is_empty(),
                    &hp.field("header").field("header_name"),
                    "must be a valid header name",
                );
            }
            for (f, on) in [
                ("cookie", &h.cookie),
                ("query_parameter", &h.query_parameter),
            ] {
                if let Some(on) = on {
                    errors.check(
                        !on.name.is_empty(),
                        &hp.field(f).field("name"),
                        "must not be empty",
                    );
                }
            }
        }
        for (i, m) in self.request_mirror_policies.iter().enumerate() {
            errors.check(
                !m.cluster.is_empty(),
                &path
                    .field("request_mirror_policies")
                    .index(i)
                    .field("cluster"),
                "must not be empty",
            );
        }
    }
}

impl WeightedClusters {
    fn validate(&self, wp: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.clusters.is_empty(),
            &wp.field("clusters"),
            "must not be empty",
        );
        let mut sum: u64 = 0;
        for (i, c) in self.clusters.iter().enumerate() {
            let cp = wp.field("clusters").index(i);
            errors.check(!c.name.is_empty(), &cp.field("name"), "must not be empty");
            c.mutations().validate(&cp, errors);
            sum += u64::from(c.weight);
        }
        if !self.clusters.is_empty() && sum == 0 {
            errors.push(
                &wp.field("clusters"),
                "the sum of weights must be greater than 0",
            );
        }
        if sum > u64::from(u32::MAX) {
            errors.push(
                &wp.field("clusters"),
                "the sum of weights must fit in 32 bits",
            );
        }
        if let Some(total) = self.total_weight
            && u64::from(total) != sum
        {
            errors.push(
                &wp.field("total_weight"),
                format!("is {total} but the weights add up to {sum}"),
            );
        }
    }
}

impl RedirectAction {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let paths = usize::from(self.path_redirect.is_some())
            + usize::from(self.prefix_rewrite.is_some())
            + usize::from(self.regex_rewrite.is_some());
        errors.check(
            paths <= 1,
            path,
            "at most one of path_redirect, prefix_rewrite and regex_rewrite may be set",
        );
        errors.check(
            !(self.https_redirect && self.scheme_redirect.is_some()),
            path,
            "at most one of https_redirect and scheme_redirect may be set",
        );
        if let Some(p) = self.port_redirect {
            errors.check(p <= 65535, &path.field("port_redirect"), "must be a port");
        }
        if let Some(r) = &self.regex_rewrite {
            check_regex(
                &r.pattern.regex,
                &path.field("regex_rewrite").field("pattern").field("regex"),
                errors,
            );
        }
    }
}

impl DirectResponseAction {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            (200..600).contains(&self.status),
            &path.field("status"),
            "must be in [200, 600)",
        );
        if let Some(b) = &self.body {
            errors.check(
                b.inline_string.len() <= MAX_DIRECT_RESPONSE_BODY,
                &path.field("body"),
                format!("must be at most {MAX_DIRECT_RESPONSE_BODY} bytes"),
            );
        }
    }
}
