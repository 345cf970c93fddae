//! A server's inbound routes compiled (gRFC A36): the virtual host by authority, the first
//! route that matches, and that route's number, which the inbound checks (JWT, RBAC, local
//! rate limit, fault) use to find their per-route configs.

use super::table::index::{MIN_ROUTES, RouteIndex};
use super::table::{Domains, RequestMatcher, compile_match};
use http::Request;
use mesh_core::config::inbound::{FilterOverride, InboundRoutes};
use mesh_core::config::server::Server;
use std::sync::Arc;

/// One virtual host's route matchers, each with its route number.
type VhostRoutes = Vec<(RequestMatcher, usize)>;

/// The compiled routes: route numbers count routes across virtual hosts, in config order.
#[derive(Debug)]
pub(crate) struct InboundTable {
    domains: Domains,
    /// Per virtual host: its routes' matchers and numbers, and (with many routes) the
    /// client tables' index over them, so a request meets only routes that could match.
    vhosts: Vec<(VhostRoutes, Option<RouteIndex>)>,
    /// Per route number: whether it forwards (not servable).
    forwarding: Vec<bool>,
}

/// Why a request is not served: no route, or a route that would forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoute(pub(crate) Arc<str>);

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoRoute {}

impl InboundTable {
    /// Compiles (validated) routes.
    pub(crate) fn compile(routes: &InboundRoutes) -> Result<Self, String> {
        let mut vhosts = Vec::with_capacity(routes.virtual_hosts.len());
        let mut forwarding = Vec::new();
        for vh in &routes.virtual_hosts {
            let mut compiled = Vec::with_capacity(vh.routes.len());
            for r in &vh.routes {
                compiled.push((compile_match(&r.matcher)?, forwarding.len()));
                forwarding.push(r.forwarding);
            }
            let index = (compiled.len() >= MIN_ROUTES)
                .then(|| RouteIndex::new(compiled.iter().map(|(m, _)| m)));
            vhosts.push((compiled, index));
        }
        Ok(Self {
            domains: Domains::new(routes.virtual_hosts.iter().map(|v| v.domains.as_slice())),
            vhosts,
            forwarding,
        })
    }

    /// The number of the route serving `req`.
    pub(crate) fn find<B>(&self, req: &Request<B>) -> Result<usize, NoRoute> {
        let host = authority(req);
        let Some(vh) = self.domains.find(host) else {
            return Err(NoRoute(
                format!("no inbound virtual host matches authority {host:?}").into(),
            ));
        };
        let (path, query, headers) = (req.uri().path(), req.uri().query(), req.headers());
        let (routes, index) = &self.vhosts[vh];
        let found = match index {
            Some(index) => index
                .find(path, headers, |i| {
                    routes[i as usize].0.matches(path, query, headers)
                })
                .map(|i| &routes[i as usize]),
            None => routes.iter().find(|(m, _)| m.matches(path, query, headers)),
        };
        let Some((_, n)) = found else {
            return Err(NoRoute(
                format!("no inbound route matches path {path:?}").into(),
            ));
        };
        if self.forwarding[*n] {
            return Err(NoRoute(
                format!("the inbound route for {path:?} is not a non-forwarding route").into(),
            ));
        }
        Ok(*n)
    }
}

/// One inbound filter's compiled config as a server's requests read it: the filter's own,
/// and, where the server's inbound routes override the filter (`typed_per_filter_config`),
/// each route's. A request pays a route lookup only when some route overrides the filter.
///
/// ```
/// use mesh_tower::server::PerRoute;
/// let off: PerRoute<u32> = PerRoute::uniform(None);
/// let req = http::Request::get("/").body(()).unwrap();
/// assert_eq!(off.get(&req), None);
/// assert_eq!(PerRoute::uniform(Some(7)).get(&req), Some(&7));
/// ```
#[derive(Debug)]
pub struct PerRoute<T> {
    base: Option<Arc<T>>,
    /// The routes and, per route number, its config (`None`: the filter is off there).
    routes: Option<(InboundTable, Vec<Option<Arc<T>>>)>,
}

impl<T> Default for PerRoute<T> {
    fn default() -> Self {
        Self {
            base: None,
            routes: None,
        }
    }
}

impl<T> PerRoute<T> {
    /// The same config (or none) for every request.
    pub fn uniform(base: Option<T>) -> Self {
        Self {
            base: base.map(Arc::new),
            routes: None,
        }
    }

    /// The config of `server`'s filter `name` (`base`: its own config compiled; `None` with
    /// no such filter), with each route's override compiled by `own` (`disabled` turns the
    /// filter off on that route).
    pub(crate) fn for_server(
        server: &Server,
        name: Option<&str>,
        base: Option<T>,
        own: impl Fn(&FilterOverride) -> Result<Option<T>, String>,
    ) -> Result<Self, String> {
        let (Some(routes), Some(name)) = (&server.route_config, name) else {
            return Ok(Self::uniform(base));
        };
        let by_route = overrides(routes, name);
        if by_route.iter().all(Option::is_none) {
            return Ok(Self::uniform(base));
        }
        let base = base.map(Arc::new);
        let mut per = Vec::with_capacity(by_route.len());
        for o in by_route {
            per.push(match o {
                None => base.clone(),
                Some(o) if o.disabled => None,
                Some(o) => own(o)?.map(Arc::new),
            });
        }
        Ok(Self {
            base,
            routes: Some((InboundTable::compile(routes)?, per)),
        })
    }

    /// The config for `req`: its route's, else the filter's (a request no route serves is
    /// refused by the RBAC layer; here it meets the filter's own config).
    pub fn get<B>(&self, req: &Request<B>) -> Option<&T> {
        match &self.routes {
            None => self.base.as_deref(),
            Some((table, per)) => match table.find(req) {
                Ok(n) => per[n].as_deref(),
                Err(_) => self.base.as_deref(),
            },
        }
    }
}

/// Each route's override of filter `name`, by route number: the route's own, else its
/// virtual host's, else none.
pub(crate) fn overrides<'a>(
    routes: &'a InboundRoutes,
    name: &str,
) -> Vec<Option<&'a FilterOverride>> {
    let mut out = Vec::new();
    for vh in &routes.virtual_hosts {
        let vh_level = vh.typed_per_filter_config.get(name);
        for r in &vh.routes {
            out.push(r.typed_per_filter_config.get(name).or(vh_level));
        }
    }
    out
}

/// A request's authority: `:authority`, else `Host` (A41: one authority per request).
pub(crate) fn authority<B>(req: &Request<B>) -> &str {
    crate::request::authority(req).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes of every kind the index treats differently, in an order where earlier routes
    /// shadow later ones.
    const ROUTES: &str = r#"
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { path: /exact }
      - match: { prefix: /api/v1/, headers: [{ name: x-tier, exact_match: gold }] }
      - match: { prefix: /api/v1/users }
      - match: { safe_regex: { regex: "/api/v[0-9]+/items/[0-9]+" } }
      - match: { prefix: /API/, case_sensitive: false }
      - match: { path_separated_prefix: /docs }
      - match: { prefix: /api/, headers: [{ name: x-tier, exact_match: silver }] }
      - match: { safe_regex: { regex: ".*\\.png" } }
      - match: { prefix: /static/ }
      - match: { prefix: /api/v2/ }
      - match: { path: /health }
      - match: { prefix: /api/ }
      - match: { safe_regex: { regex: "/x+" } }
      - match: { prefix: /, headers: [{ name: x-tier, exact_match: gold }] }
"#;

    #[test]
    fn the_indexed_table_finds_what_a_scan_finds() {
        let routes: InboundRoutes = serde_saphyr::from_str(ROUTES).unwrap();
        let table = InboundTable::compile(&routes).unwrap();
        assert!(table.vhosts[0].1.is_some(), "enough routes to be indexed");
        let scan = |req: &Request<()>| {
            let (path, query) = (req.uri().path(), req.uri().query());
            (table.vhosts[0].0.iter())
                .find(|(m, _)| m.matches(path, query, req.headers()))
                .map(|(_, n)| *n)
        };
        let paths = [
            "/exact",
            "/exact/",
            "/api/v1/users/7",
            "/api/v1/items/12",
            "/api/v3/items/9",
            "/api/v2/x",
            "/api/other",
            "/Api/Thing",
            "/docs",
            "/docs/a",
            "/docsx",
            "/a.png",
            "/static/a.png",
            "/static/b",
            "/health",
            "/xxx",
            "/",
            "/nothing",
        ];
        let mut compared = 0;
        for path in paths {
            for tier in [None, Some("gold"), Some("silver")] {
                let mut req = Request::get(path).header("host", "svc");
                if let Some(t) = tier {
                    req = req.header("x-tier", t);
                }
                let req = req.body(()).unwrap();
                assert_eq!(table.find(&req).ok(), scan(&req), "{path} {tier:?}");
                compared += 1;
            }
        }
        assert_eq!(compared, paths.len() * 3);
        // And the answers are the first-match ones: a gold caller's /api/v1/users goes to
        // route 1 (the header route before it), a plain one to route 2.
        let get = |path: &str, tier: Option<&str>| {
            let mut req = Request::get(path).header("host", "svc");
            if let Some(t) = tier {
                req = req.header("x-tier", t);
            }
            table.find(&req.body(()).unwrap()).ok()
        };
        assert_eq!(get("/api/v1/users", Some("gold")), Some(1));
        assert_eq!(get("/api/v1/users", None), Some(2));
        assert_eq!(get("/nothing", None), None);
    }
}
