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
use std::sync::Arc;

/// A compiled route config.
#[derive(Debug)]
pub(crate) struct Table {
    vhosts: Vec<VHost>,
    domains: Domains,
}

#[derive(Debug)]
struct VHost {
    name: Arc<str>,
    routes: Vec<CompiledRoute>,
    /// For virtual hosts with more than a few routes (a scan is as fast below that).
    index: Option<index::RouteIndex>,
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
mod domains;
pub(super) mod index;

pub(crate) use domains::Domains;

pub(crate) use compile::compile_match;
use compile::compile_vhost;

impl Table {
    /// Compiles a (validated) route config.
    pub(crate) fn compile(rc: &RouteConfig, filters: &[HttpFilter]) -> Result<Self, String> {
        let vhosts = rc
            .virtual_hosts
            .iter()
            .map(|vh| compile_vhost(rc, vh, filters))
            .collect::<Result<_, _>>()?;
        Ok(Table {
            vhosts,
            domains: Domains::new(rc.virtual_hosts.iter().map(|vh| vh.domains.as_slice())),
        })
    }

    /// The virtual host for `host`, by Envoy's precedence: exact, longest suffix wildcard,
    /// longest prefix wildcard, `*`.
    fn vhost(&self, host: &str) -> Option<&VHost> {
        self.domains.find(host).map(|i| &self.vhosts[i])
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
        let found = match &vh.index {
            Some(index) => index
                .find(path, headers, |i| {
                    vh.routes[i as usize].matcher.matches(path, query, headers)
                })
                .map(|i| &vh.routes[i as usize]),
            None => vh.scan(path, query, headers),
        };
        found.map(|r| &r.info).ok_or_else(|| {
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

#[cfg(test)]
impl Table {
    /// The route a plain scan picks (the index's reference).
    pub(crate) fn route_by_scan(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Arc<str>> {
        let vh = self.vhost(host)?;
        vh.scan(path, query, headers).map(|r| r.info.name.clone())
    }
}

impl VHost {
    fn new(name: Arc<str>, routes: Vec<CompiledRoute>) -> Self {
        let index = (routes.len() >= index::MIN_ROUTES)
            .then(|| index::RouteIndex::new(routes.iter().map(|r| &r.matcher)));
        Self {
            name,
            routes,
            index,
        }
    }

    /// Envoy's scan: the first route in order whose match holds.
    fn scan(&self, path: &str, query: Option<&str>, headers: &HeaderMap) -> Option<&CompiledRoute> {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(path, query, headers))
    }
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
