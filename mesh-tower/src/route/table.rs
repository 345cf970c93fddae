//! A route config compiled for matching: domains indexed by kind, regexes built once, cluster
//! weights turned into cumulative sums.

use crate::error::{ErrorKind, MeshError};
use crate::policy::RoutePolicy;
use crate::policy::fault::FaultPolicy;
use crate::policy::headers::{HeaderKind, HeaderRule, compile_header, full_regex};
use crate::policy::local::LocalAnswer;
use crate::policy::mirror::MirrorPolicy;
use crate::policy::ratelimit::RateLimiter;
use crate::policy::retry::RetryPolicy;
use crate::policy::rewrite::{Mutations, PathRewrite, Rewrite};
use crate::policy::route::ClusterPick;
use http::{HeaderMap, HeaderName};
use mesh_core::config::listener::HttpFilter;
use mesh_core::config::route::{
    ClusterSpecifier, DEFAULT_BUFFER_LIMIT, HeaderMatcher, PathMatch, QueryParameterMatcher,
    RouteKind,
};
use mesh_core::policy::FractionalPercent;
use mesh_core::{Route, RouteConfig, RouteMatch, VirtualHost};
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;

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
    info: Arc<RoutePolicy>,
    matcher: RequestMatcher,
}

/// Envoy's `RouteMatch` compiled: path, headers, query parameters, gRPC and runtime fraction.
/// Routes use it, and so do other filters that select requests the same way (JWT rules).
#[derive(Debug)]
pub(crate) struct RequestMatcher {
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

mod compile;

pub(crate) use compile::compile_match;
use compile::compile_vhost;

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
    ) -> Result<&Arc<RoutePolicy>, MeshError> {
        let Some(vh) = self.vhost(host) else {
            return Err(MeshError::new(
                ErrorKind::NoRoute,
                format!("no virtual host matches authority {host:?}"),
            ));
        };
        vh.routes
            .iter()
            .find(|r| r.matcher.matches(path, query, headers))
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

impl RequestMatcher {
    /// Path, headers, query parameters, gRPC, then the runtime fraction (drawn last, only for
    /// requests that match everything else).
    pub(crate) fn matches(&self, path: &str, query: Option<&str>, headers: &HeaderMap) -> bool {
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
