//! Route configuration: virtual hosts, ordered routes, matchers and actions.
//!
//! Shapes follow Envoy's `envoy.config.route.v3` messages field for field, so a
//! `RouteConfiguration` from a control plane maps onto [`RouteConfig`] one-to-one and a user can
//! paste Envoy YAML into the mesh file. Protobuf `oneof`s are kept as sibling optional fields (as
//! in Envoy's YAML) and validation enforces "exactly one"; accessors such as
//! [`RouteMatch::path_match`] then hand out a typed enum.

use crate::duration;
use crate::error::{Errors, FieldPath};
use crate::policy::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

/// Regexes from untrusted config are compiled with this size limit (bytes of compiled program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Envoy's `RouteConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name referenced by listeners through RDS (may be empty when inline).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Virtual hosts; one is chosen per request by its domains.
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Envoy's `VirtualHost`: a set of domains and the routes that apply to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Name, unique within the route config.
    pub name: String,
    /// Domains: exact (`foo.com`, `foo.com:8080`), suffix wildcard (`*.foo.com`), prefix
    /// wildcard (`foo.*`) or `*`. Matching follows Envoy's precedence (exact, longest suffix,
    /// longest prefix, `*`).
    pub domains: Vec<String>,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Envoy's `Route`: a match and what to do with matching requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Optional name, used in errors and logs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Which requests this route takes.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Forward to a cluster (the only action so far; redirect and direct response come later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteAction>,
}

/// Envoy's `RouteMatch`. Exactly one of `prefix`, `path`, `safe_regex`, `path_separated_prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Path equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path (without query) fully matches this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RegexMatcher>,
    /// Path equals this or starts with it followed by `/`, `?` or `#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_separated_prefix: Option<String>,
    /// Whether prefix/path matching is case sensitive (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub case_sensitive: bool,
    /// All of these must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            prefix: Some("/".into()),
            path: None,
            safe_regex: None,
            path_separated_prefix: None,
            case_sensitive: true,
            headers: Vec::new(),
        }
    }
}

/// The path specifier of a validated [`RouteMatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatch<'a> {
    /// `prefix`
    Prefix(&'a str),
    /// `path`
    Exact(&'a str),
    /// `safe_regex`
    Regex(&'a str),
    /// `path_separated_prefix`
    SeparatedPrefix(&'a str),
}

impl RouteMatch {
    /// The one path specifier that is set, or `None` when zero or several are (invalid).
    pub fn path_match(&self) -> Option<PathMatch<'_>> {
        let mut found = None;
        let mut count = 0;
        if let Some(p) = &self.prefix {
            found = Some(PathMatch::Prefix(p));
            count += 1;
        }
        if let Some(p) = &self.path {
            found = Some(PathMatch::Exact(p));
            count += 1;
        }
        if let Some(r) = &self.safe_regex {
            found = Some(PathMatch::Regex(&r.regex));
            count += 1;
        }
        if let Some(p) = &self.path_separated_prefix {
            found = Some(PathMatch::SeparatedPrefix(p));
            count += 1;
        }
        if count == 1 { found } else { None }
    }
}

/// Envoy's `RegexMatcher` (RE2 syntax; we compile with the `regex` crate, which shares RE2's
/// guarantees: no backreferences, linear time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcher {
    /// The regular expression.
    pub regex: String,
}

/// Envoy's `Int64Range`: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int64Range {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

/// Envoy's `StringMatcher`: exactly one of the match fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    /// Equals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Fully matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RegexMatcher>,
    /// Compare ignoring ASCII case (not for `safe_regex`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_case: bool,
}

/// Envoy's `HeaderMatcher`. At most one match field; none means "present".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    /// Header name (case-insensitive; stored lowercase by validation's rule).
    pub name: String,
    /// Value equals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<String>,
    /// Value starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_match: Option<String>,
    /// Value ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix_match: Option<String>,
    /// Value contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_match: Option<String>,
    /// Value fully matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex_match: Option<RegexMatcher>,
    /// Value parses as an integer in `[start, end)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_match: Option<Int64Range>,
    /// Header present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
    /// The general string matcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_match: Option<StringMatcher>,
    /// Invert the result.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert_match: bool,
}

/// The match kind of a validated [`HeaderMatcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMatch<'a> {
    /// Equals.
    Exact(&'a str, bool),
    /// Starts with (`bool`: ignore case).
    Prefix(&'a str, bool),
    /// Ends with.
    Suffix(&'a str, bool),
    /// Contains.
    Contains(&'a str, bool),
    /// Fully matches the regex.
    Regex(&'a str),
    /// Integer in range.
    Range(Int64Range),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

impl HeaderMatcher {
    /// The one match kind that is set (`Present(true)` when none is), or `None` when several are.
    pub fn header_match(&self) -> Option<HeaderMatch<'_>> {
        let mut found = Vec::with_capacity(1);
        if let Some(v) = &self.exact_match {
            found.push(HeaderMatch::Exact(v, false));
        }
        if let Some(v) = &self.prefix_match {
            found.push(HeaderMatch::Prefix(v, false));
        }
        if let Some(v) = &self.suffix_match {
            found.push(HeaderMatch::Suffix(v, false));
        }
        if let Some(v) = &self.contains_match {
            found.push(HeaderMatch::Contains(v, false));
        }
        if let Some(v) = &self.safe_regex_match {
            found.push(HeaderMatch::Regex(&v.regex));
        }
        if let Some(r) = self.range_match {
            found.push(HeaderMatch::Range(r));
        }
        if let Some(p) = self.present_match {
            found.push(HeaderMatch::Present(p));
        }
        if let Some(s) = &self.string_match {
            found.push(s.as_header_match()?);
        }
        match found.len() {
            0 => Some(HeaderMatch::Present(true)),
            1 => found.pop(),
            _ => None,
        }
    }
}

impl StringMatcher {
    fn as_header_match(&self) -> Option<HeaderMatch<'_>> {
        let ic = self.ignore_case;
        let set = [
            self.exact.as_deref().map(|v| HeaderMatch::Exact(v, ic)),
            self.prefix.as_deref().map(|v| HeaderMatch::Prefix(v, ic)),
            self.suffix.as_deref().map(|v| HeaderMatch::Suffix(v, ic)),
            self.contains
                .as_deref()
                .map(|v| HeaderMatch::Contains(v, ic)),
            self.safe_regex
                .as_ref()
                .map(|r| HeaderMatch::Regex(&r.regex)),
        ];
        let mut it = set.into_iter().flatten();
        let first = it.next()?;
        if it.next().is_some() {
            None
        } else {
            Some(first)
        }
    }
}

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
    /// Retries (reserved; enforced by the retry middleware once it lands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
}

/// Envoy's route timeout default.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

impl RouteAction {
    /// The timeout in force: the configured one, Envoy's 15 s default, or `None` when disabled.
    pub fn effective_timeout(&self) -> Option<Duration> {
        match self.timeout {
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
}

// ===== validation =====

impl RouteConfig {
    /// Checks this route config; `path` locates it in the enclosing document.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let mut names = HashSet::new();
        let mut domains = HashSet::new();
        for (i, vh) in self.virtual_hosts.iter().enumerate() {
            let p = path.field("virtual_hosts").index(i);
            errors.check(!vh.name.is_empty(), &p.field("name"), "must not be empty");
            if !names.insert(vh.name.as_str()) {
                errors.push(
                    &p.field("name"),
                    format!("duplicate virtual host {:?}", vh.name),
                );
            }
            errors.check(
                !vh.domains.is_empty(),
                &p.field("domains"),
                "must not be empty",
            );
            for (j, d) in vh.domains.iter().enumerate() {
                let dp = p.field("domains").index(j);
                if let Err(msg) = check_domain(d) {
                    errors.push(&dp, msg);
                } else if !domains.insert(d.to_ascii_lowercase()) {
                    errors.push(
                        &dp,
                        format!("domain {d:?} is used by more than one virtual host"),
                    );
                }
            }
            for (j, route) in vh.routes.iter().enumerate() {
                route.validate(&p.field("routes").index(j), errors);
            }
        }
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("domain must not be empty".into());
    }
    let stars = d.matches('*').count();
    let ok = stars == 0 || (stars == 1 && (d.starts_with('*') || d.ends_with('*')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "domain {d:?}: only one wildcard, at the start or the end, is allowed"
        ))
    }
}

impl Route {
    /// Checks this route; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let mp = path.field("match");
        let m = &self.matcher;
        match m.path_match() {
            None => errors.push(
                &mp,
                "exactly one of prefix, path, safe_regex, path_separated_prefix must be set",
            ),
            Some(PathMatch::Exact(p)) => {
                errors.check(p.starts_with('/'), &mp.field("path"), "must start with '/'")
            }
            Some(PathMatch::SeparatedPrefix(p)) => {
                let f = mp.field("path_separated_prefix");
                errors.check(p.starts_with('/'), &f, "must start with '/'");
                errors.check(
                    !p.ends_with('/') && !p.contains(['?', '#']),
                    &f,
                    "must not end with '/' or contain '?' or '#'",
                );
            }
            Some(PathMatch::Regex(r)) => {
                check_regex(r, &mp.field("safe_regex").field("regex"), errors)
            }
            Some(PathMatch::Prefix(_)) => {}
        }
        for (i, h) in m.headers.iter().enumerate() {
            h.validate(&mp.field("headers").index(i), errors);
        }
        match &self.route {
            None => errors.push(&path.field("route"), "a route action is required"),
            Some(action) => action.validate(&path.field("route"), errors),
        }
    }
}

impl HeaderMatcher {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let name_ok = !self.name.is_empty() && http_token(&self.name);
        errors.check(
            name_ok,
            &path.field("name"),
            "must be a valid, non-empty header name",
        );
        match self.header_match() {
            None => errors.push(path, "at most one match specifier may be set"),
            Some(HeaderMatch::Regex(r)) => {
                let field = if self.safe_regex_match.is_some() {
                    path.field("safe_regex_match").field("regex")
                } else {
                    path.field("string_match")
                        .field("safe_regex")
                        .field("regex")
                };
                check_regex(r, &field, errors);
            }
            Some(HeaderMatch::Range(r)) => errors.check(
                r.start < r.end,
                &path.field("range_match"),
                "start must be less than end",
            ),
            Some(_) => {}
        }
    }
}

fn http_token(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;\\\"/[]?={}".contains(&b))
}

fn check_regex(regex: &str, path: &FieldPath, errors: &mut Errors) {
    if let Err(e) = regex::RegexBuilder::new(regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        let first_line = e.to_string().lines().last().unwrap_or("").trim().to_owned();
        errors.push(path, format!("invalid regex {regex:?}: {first_line}"));
    }
}

impl RouteAction {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
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
                let wp = path.field("weighted_clusters");
                errors.check(
                    !w.clusters.is_empty(),
                    &wp.field("clusters"),
                    "must not be empty",
                );
                let mut sum: u64 = 0;
                for (i, c) in w.clusters.iter().enumerate() {
                    let cp = wp.field("clusters").index(i);
                    errors.check(!c.name.is_empty(), &cp.field("name"), "must not be empty");
                    sum += u64::from(c.weight);
                }
                if !w.clusters.is_empty() && sum == 0 {
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
                if let Some(total) = w.total_weight
                    && u64::from(total) != sum
                {
                    errors.push(
                        &wp.field("total_weight"),
                        format!("is {total} but the weights add up to {sum}"),
                    );
                }
            }
        }
        if let Some(retry) = &self.retry_policy {
            retry.validate(&path.field("retry_policy"), errors);
        }
    }

    /// Every cluster name this action can send to (not including `cluster_header` choices).
    pub fn cluster_names(&self) -> impl Iterator<Item = &str> {
        let single = self.cluster.as_deref();
        let weighted = self
            .weighted_clusters
            .iter()
            .flat_map(|w| w.clusters.iter().map(|c| c.name.as_str()));
        single.into_iter().chain(weighted)
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}
