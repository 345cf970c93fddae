//! A route config compiled for matching: domains indexed by kind, regexes built once, cluster
//! weights turned into cumulative sums.

use crate::direct::LocalAnswer;
use crate::error::{ErrorKind, MeshError};
use crate::fault::FaultPolicy;
use crate::mirror::MirrorPolicy;
use crate::ratelimit::RateLimiter;
use crate::retry::RetryPolicy;
use crate::rewrite::{Mutations, PathRewrite, Rewrite};
use http::{HeaderMap, HeaderName};
use mesh_core::config::listener::HttpFilter;
use mesh_core::config::route::{
    ClusterSpecifier, DEFAULT_BUFFER_LIMIT, HeaderMatch, HeaderMatcher, PathMatch,
    QueryParameterMatcher, REGEX_SIZE_LIMIT, RouteKind,
};
use mesh_core::policy::FractionalPercent;
use mesh_core::{Route, RouteConfig, VirtualHost};
use regex::Regex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the route layer decided, for the layers behind it.
#[derive(Debug)]
pub struct RouteInfo {
    /// Route name (`"<virtual host>/<index>"` when the route has none).
    pub name: Arc<str>,
    /// The virtual host that matched.
    pub virtual_host: Arc<str>,
    /// Route timeout in force (`None`: disabled).
    pub timeout: Option<Duration>,
    /// Stream idle timeout (no response, or no response body frame, for this long).
    pub idle_timeout: Option<Duration>,
    /// Honour the caller's `grpc-timeout` (gRFC A31): cap (`None`: uncapped) and offset.
    pub grpc_timeout: Option<(Option<Duration>, Duration)>,
    /// The limit on gRPC requests besides the caller's own deadline (gRFC A31):
    /// `grpc_timeout_header_max` if set, else `max_stream_duration`; `None`: unlimited. The
    /// HTTP route timeout (and its 15 s default) does not apply to gRPC.
    pub grpc_limit: Option<Duration>,
    /// Retry policy (route's, else the virtual host's).
    pub retry: Option<Arc<RetryPolicy>>,
    /// Request body bytes kept for replay.
    pub buffer_limit: usize,
    /// Fault injection in force.
    pub fault: Option<Arc<FaultPolicy>>,
    /// Local rate limit in force.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Path/host rewrite and header mutations.
    pub rewrite: Option<Arc<Rewrite>>,
    /// Shadow clusters.
    pub mirrors: Vec<MirrorPolicy>,
    /// A redirect or direct response answered locally.
    pub local: Option<Arc<LocalAnswer>>,
    /// The request hash for consistent-hashing clusters.
    pub hash_policy: super::hash::HashPolicy,
    pub(crate) clusters: ClusterPick,
}

impl RouteInfo {
    /// Whether the route forwards with no policy-layer work: no local answer, rate limit,
    /// fault, rewrite or header mutation, mirror, or retry policy that can retry. Such routes
    /// skip the policy layers in a [`Mesh`](crate::Mesh) service (the timeout still applies).
    pub fn is_plain(&self) -> bool {
        self.local.is_none()
            && self.rate_limit.is_none()
            && self.fault.is_none()
            && self.rewrite.is_none()
            && self.mirrors.is_empty()
            && self.retry.as_ref().is_none_or(|p| !p.is_active())
    }

    /// A forwarding route to `cluster` with no policy (for tests and standalone layers).
    pub fn to_cluster(name: &str, cluster: &str, timeout: Option<Duration>) -> Self {
        Self {
            name: name.into(),
            virtual_host: "".into(),
            timeout,
            idle_timeout: None,
            grpc_timeout: None,
            grpc_limit: timeout,
            retry: None,
            buffer_limit: DEFAULT_BUFFER_LIMIT as usize,
            fault: None,
            rate_limit: None,
            rewrite: None,
            mirrors: Vec::new(),
            local: None,
            hash_policy: super::hash::HashPolicy::default(),
            clusters: ClusterPick::One(cluster.into()),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ClusterPick {
    One(Arc<str>),
    /// Cumulative weights: pick `r` in `[0, total)`, first entry whose bound exceeds `r`; each
    /// with its weighted-cluster header mutations.
    Weighted(Vec<(u64, Arc<str>, Option<Arc<Mutations>>)>),
    Header(HeaderName),
    /// Local answers have no cluster.
    None,
}

impl RouteInfo {
    /// The cluster for one request; `r` is a uniform random number (seedable in tests).
    pub(crate) fn pick_cluster(
        &self,
        headers: &HeaderMap,
        r: u64,
    ) -> Result<(Arc<str>, Option<Arc<Mutations>>), MeshError> {
        match &self.clusters {
            ClusterPick::One(c) => Ok((c.clone(), None)),
            ClusterPick::None => Ok((Arc::from(""), None)),
            ClusterPick::Weighted(cum) => {
                let total = cum.last().map_or(0, |x| x.0);
                let point = r % total.max(1);
                let i = cum.partition_point(|(bound, _, _)| *bound <= point);
                let (_, c, m) = &cum[i.min(cum.len() - 1)];
                Ok((c.clone(), m.clone()))
            }
            ClusterPick::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(|v| (Arc::from(v), None))
                .ok_or_else(|| {
                    MeshError::new(
                        ErrorKind::UnknownCluster,
                        format!(
                            "cluster_header {:?} is missing from the request",
                            name.as_str()
                        ),
                    )
                }),
        }
    }
}

/// A compiled route config.
#[derive(Debug)]
pub(crate) struct Table {
    vhosts: Vec<VHost>,
    exact: HashMap<String, usize>,
    /// `*.foo.com` style, longest first.
    suffix: Vec<(String, usize)>,
    /// `foo.*` style, longest first.
    prefix: Vec<(String, usize)>,
    any: Option<usize>,
}

#[derive(Debug)]
struct VHost {
    name: Arc<str>,
    routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
struct CompiledRoute {
    info: Arc<RouteInfo>,
    path: PathMatcher,
    headers: Vec<HeaderRule>,
    query: Vec<QueryRule>,
    fraction: Option<FractionalPercent>,
    grpc: bool,
}

#[derive(Debug)]
struct QueryRule {
    name: String,
    /// `None`: presence only.
    kind: Option<HeaderKind>,
    present: bool,
}

#[derive(Debug)]
enum PathMatcher {
    Prefix(String, bool),
    Exact(String, bool),
    Regex(Regex),
    Separated(String, bool),
}

#[derive(Debug)]
pub(crate) struct HeaderRule {
    name: HeaderName,
    kind: HeaderKind,
    invert: bool,
}

#[derive(Debug)]
enum HeaderKind {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
    Range(i64, i64),
    Present(bool),
}

mod compile;

use compile::compile_vhost;

fn full_regex(re: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {re:?}: {e}"))
}

impl Table {
    /// Compiles a (validated) route config.
    pub(crate) fn compile(rc: &RouteConfig, filters: &[HttpFilter]) -> Result<Self, String> {
        let mut table = Table {
            vhosts: Vec::with_capacity(rc.virtual_hosts.len()),
            exact: HashMap::new(),
            suffix: Vec::new(),
            prefix: Vec::new(),
            any: None,
        };
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    table.any.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    table.suffix.push((s.to_owned(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    table.prefix.push((p.to_owned(), i));
                } else {
                    table.exact.entry(d).or_insert(i);
                }
            }
            table.vhosts.push(compile_vhost(rc, vh, filters)?);
        }
        // Longest wildcard first; stable sort keeps config order among equals.
        table
            .suffix
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table
            .prefix
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Ok(table)
    }

    /// The virtual host for `host`, by Envoy's precedence: exact, longest suffix wildcard,
    /// longest prefix wildcard, `*`. A host with a port that matches nothing is retried without
    /// the port.
    fn vhost(&self, host: &str) -> Option<&VHost> {
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        self.domain_index(host)
            .or_else(|| strip_port(host).and_then(|h| self.domain_index(h)))
            .map(|i| &self.vhosts[i])
    }

    fn domain_index(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        // A wildcard never matches the empty string: `*.foo.com` does not match `.foo.com`.
        let suffix = self
            .suffix
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()));
        if let Some((_, i)) = suffix {
            return Some(*i);
        }
        let prefix = self
            .prefix
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()));
        prefix.map(|(_, i)| *i).or(self.any)
    }

    /// The first route of the matching virtual host that matches the request.
    pub(crate) fn route(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<&Arc<RouteInfo>, MeshError> {
        let Some(vh) = self.vhost(host) else {
            return Err(MeshError::new(
                ErrorKind::NoRoute,
                format!("no virtual host matches authority {host:?}"),
            ));
        };
        vh.routes
            .iter()
            .find(|r| r.matches(path, query, headers))
            .map(|r| &r.info)
            .ok_or_else(|| {
                MeshError::new(
                    ErrorKind::NoRoute,
                    format!(
                        "no route in virtual host {:?} matches path {path:?}",
                        vh.name
                    ),
                )
            })
    }
}

fn strip_port(host: &str) -> Option<&str> {
    let (h, port) = host.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')).then_some(h)
}

pub(crate) fn compile_header(h: &HeaderMatcher) -> Result<HeaderRule, String> {
    let name = HeaderName::try_from(h.name.as_str()).map_err(|e| e.to_string())?;
    let fold = |s: &str, ic: bool| {
        if ic {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    let kind = match h.header_match().ok_or("several header match specifiers")? {
        HeaderMatch::Exact(v, ic) => HeaderKind::Exact(fold(v, ic), ic),
        HeaderMatch::Prefix(v, ic) => HeaderKind::Prefix(fold(v, ic), ic),
        HeaderMatch::Suffix(v, ic) => HeaderKind::Suffix(fold(v, ic), ic),
        HeaderMatch::Contains(v, ic) => HeaderKind::Contains(fold(v, ic), ic),
        HeaderMatch::Regex(re) => HeaderKind::Regex(full_regex(re)?),
        HeaderMatch::Range(r) => HeaderKind::Range(r.start, r.end),
        HeaderMatch::Present(p) => HeaderKind::Present(p),
    };
    Ok(HeaderRule {
        name,
        kind,
        invert: h.invert_match,
    })
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Prefix(p, true) => path.starts_with(p.as_str()),
            PathMatcher::Prefix(p, false) => {
                path.len() >= p.len()
                    && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            PathMatcher::Exact(p, true) => path == p,
            PathMatcher::Exact(p, false) => path.eq_ignore_ascii_case(p),
            PathMatcher::Regex(re) => re.is_match(path),
            PathMatcher::Separated(p, cs) => {
                let head = path.as_bytes().get(..p.len());
                let same = head.is_some_and(|h| {
                    if *cs {
                        h == p.as_bytes()
                    } else {
                        h.eq_ignore_ascii_case(p.as_bytes())
                    }
                });
                same && matches!(
                    path.as_bytes().get(p.len()),
                    None | Some(b'/' | b'?' | b'#')
                )
            }
        }
    }
}

impl HeaderRule {
    /// Envoy's semantics: several values are joined with `,`; a missing header matches only
    /// `present_match: false` (or, inverted, `present_match: true`).
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return match self.kind {
                HeaderKind::Present(p) => p == self.invert,
                _ => false,
            };
        };
        let joined;
        let value: &[u8] = match values.next() {
            None => first.as_bytes(),
            Some(second) => {
                let mut all = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    all.push(b',');
                    all.extend_from_slice(v.as_bytes());
                }
                joined = all;
                &joined
            }
        };
        let value = String::from_utf8_lossy(value);
        self.kind.matches(&value) != self.invert
    }
}

impl HeaderKind {
    fn matches(&self, value: &str) -> bool {
        let eq = |a: &str, b: &str, ic: bool| {
            if ic {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        fn lower(v: &str, ic: bool) -> Cow<'_, str> {
            if ic {
                Cow::Owned(v.to_ascii_lowercase())
            } else {
                Cow::Borrowed(v)
            }
        }
        match self {
            HeaderKind::Exact(x, ic) => eq(value, x, *ic),
            HeaderKind::Prefix(x, ic) => lower(value, *ic).starts_with(x.as_str()),
            HeaderKind::Suffix(x, ic) => lower(value, *ic).ends_with(x.as_str()),
            HeaderKind::Contains(x, ic) => lower(value, *ic).contains(x.as_str()),
            HeaderKind::Regex(re) => re.is_match(value),
            HeaderKind::Range(start, end) => {
                value.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
            }
            HeaderKind::Present(p) => *p,
        }
    }
}

impl CompiledRoute {
    /// Path, headers, query parameters, gRPC, then the runtime fraction (drawn last, only for
    /// requests that match everything else).
    fn matches(&self, path: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
        self.path.matches(path)
            && self.headers.iter().all(|h| h.matches(headers))
            && self.query.iter().all(|q| q.matches(query))
            && (!self.grpc || crate::grpc::is_grpc(headers))
            && self.fraction.is_none_or(|f| f.hits(fastrand::u64(..)))
    }
}

impl QueryRule {
    fn matches(&self, query: Option<&str>) -> bool {
        match (&self.kind, super::query_param(query, &self.name)) {
            (None, v) => v.is_some() == self.present,
            (Some(kind), Some(v)) => kind.matches(v),
            (Some(_), None) => false,
        }
    }
}
