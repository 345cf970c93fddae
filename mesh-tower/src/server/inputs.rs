//! What a server's live config is built from: its resource and the route configs it names,
//! compared by identity so a store change that does not touch them costs nothing.

use std::sync::Arc;

/// What a server's resolved config is made of, by identity: the store keeps a resource's
/// `Arc` while it does not change, so equal pointers mean nothing to do.
#[derive(Clone)]
pub(super) struct Inputs {
    pub(super) server: Arc<mesh_core::config::server::Server>,
    pub(super) routes: Vec<Option<Arc<mesh_core::RouteConfig>>>,
}

impl Inputs {
    pub(super) fn of(
        snap: &mesh_core::Snapshot,
        server: &Arc<mesh_core::config::server::Server>,
    ) -> Self {
        Self {
            server: server.clone(),
            routes: server
                .rds_names()
                .map(|n| snap.route_config(n).cloned())
                .collect(),
        }
    }
}

impl PartialEq for Inputs {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
            && self.routes.len() == other.routes.len()
            && (self.routes.iter().zip(&other.routes)).all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            })
    }
}

/// `server` with the routes its `rds` names in place (none yet: it serves no request).
pub(super) fn resolved(
    snap: &mesh_core::Snapshot,
    server: &mesh_core::config::server::Server,
) -> mesh_core::config::server::Server {
    server.resolved(|n| inbound(snap, n))
}

/// The server routes of route config `name`.
pub(super) fn inbound<'a>(
    snap: &'a mesh_core::Snapshot,
    name: &str,
) -> Option<&'a mesh_core::config::inbound::InboundRoutes> {
    snap.route_config(name).and_then(|rc| rc.inbound.as_ref())
}
