//! Which route a request takes, without sending it.
//!
//! Why: route configs are code, and users test them the way Envoy users run
//! `router_check_tool`: given a request, assert the route (and so its cluster, timeout,
//! retries). [`RouteTable`] is the route layer's own compiled table (the same domain
//! precedence, index and first-match-wins order), so what it answers is what the layer does.
//! It also lets the matcher be measured alone (`benches/route.rs`, `route_match`).

use super::request_authority;
use super::table::Table;
use crate::error::{ErrorKind, MeshError};
use crate::policy::RoutePolicy;
use http::Request;
use mesh_core::RouteConfig;

/// A route config compiled as the route layer compiles it.
///
/// ```
/// let rc: mesh_core::RouteConfig = serde_saphyr::from_str(r#"
/// name: web
/// virtual_hosts:
///   - name: shop
///     domains: ["shop.example"]
///     routes:
///       - { name: api, match: { prefix: /api }, route: { cluster: api } }
///       - { name: rest, match: { prefix: / }, route: { cluster: web } }
/// "#).unwrap();
/// let table = mesh_tower::route::RouteTable::compile(&rc).unwrap();
/// let req = http::Request::get("http://shop.example/api/items").body(()).unwrap();
/// assert_eq!(&*table.route(&req).unwrap().name, "api");
/// let other = http::Request::get("http://elsewhere/").body(()).unwrap();
/// assert!(table.route(&other).is_err());
/// ```
#[derive(Debug)]
pub struct RouteTable {
    table: Table,
}

impl RouteTable {
    /// Compiles `rc` (validate it first: [`mesh_core::MeshConfig::validate`]). Listener
    /// filters are not known here, so per-route filter overrides compile against none.
    pub fn compile(rc: &RouteConfig) -> Result<Self, MeshError> {
        Table::compile(rc, &[])
            .map(|table| Self { table })
            .map_err(|e| MeshError::new(ErrorKind::NoConfig, e))
    }

    /// The route `req` takes (virtual host by its authority or `Host`), or why none does.
    pub fn route<B>(&self, req: &Request<B>) -> Result<&RoutePolicy, MeshError> {
        let host = request_authority(req).unwrap_or_default();
        self.table
            .route(host, req.uri().path(), req.uri().query(), req.headers())
            .map(|p| &**p)
    }
}
