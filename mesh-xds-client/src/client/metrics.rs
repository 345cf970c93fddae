//! gRPC's xDS client metrics (gRFC A78) through the `metrics` facade, under gRPC's names, so
//! that dashboards built for gRPC's proxyless clients read the mesh's too.
//!
//! One xDS client serves the whole mesh, so `grpc.target` is `mesh` (gRPC's clients are per
//! channel target); `grpc.xds.server` is the server's URI; `grpc.xds.authority` is `#old` for
//! old-style names, as in gRPC. Recorded on the control path only (responses, stream ends,
//! subscription changes), never per request.

use crate::translate::ResourceType;
use std::borrow::Cow;
use std::collections::BTreeMap;

const TARGET: &str = "mesh";

/// Whether the ADS stream to `server` works (1 once a response arrived on it, 0 when it ends).
pub(super) fn connected(server: &str, up: bool) {
    metrics::gauge!("grpc.xds_client.connected", "grpc.target" => TARGET, "grpc.xds.server" => server.to_owned())
        .set(if up { 1.0 } else { 0.0 });
}

/// The server went from healthy to unhealthy: its stream failed before any response.
pub(super) fn server_failure(server: &str) {
    metrics::counter!("grpc.xds_client.server_failure", "grpc.target" => TARGET, "grpc.xds.server" => server.to_owned())
        .increment(1);
}

/// Resources received valid and invalid, per type.
pub(super) fn updates(server: &str, counts: &[(u64, u64); ResourceType::ALL.len()]) {
    for ty in ResourceType::ALL {
        let (valid, invalid) = counts[ty.index()];
        for (name, n) in [
            ("grpc.xds_client.resource_updates_valid", valid),
            ("grpc.xds_client.resource_updates_invalid", invalid),
        ] {
            if n > 0 {
                metrics::counter!(name, "grpc.target" => TARGET, "grpc.xds.server" => server.to_owned(), "grpc.xds.resource_type" => ty.type_url())
                    .increment(n);
            }
        }
    }
}

/// How many resources are in each cache state, by authority and type (`grpc.xds_client.resources`).
/// Every state of every type seen is set, so a state that empties reads 0.
#[derive(Debug, Default)]
pub(super) struct Resources(BTreeMap<(Cow<'static, str>, ResourceType, &'static str), u64>);

/// gRPC's cache states.
const STATES: [&str; 5] = [
    "requested",
    "does_not_exist",
    "acked",
    "nacked",
    "nacked_but_cached",
];

impl Resources {
    /// Counts one resource.
    pub(super) fn add(&mut self, ty: ResourceType, name: &str, state: &str, has_error: bool) {
        // Called for every resource after every response: no allocation for the usual case.
        let authority = match crate::federation::XdstpName::parse(name) {
            Some(Ok(n)) => Cow::Owned(n.authority.to_owned()),
            Some(Err(_)) | None => Cow::Borrowed("#old"),
        };
        let state = match (state, has_error) {
            ("acked", true) => "nacked_but_cached",
            (s, _) => STATES
                .iter()
                .find(|k| **k == s)
                .copied()
                .unwrap_or("requested"),
        };
        *self.0.entry((authority, ty, state)).or_default() += 1;
    }

    /// Sets the gauges.
    pub(super) fn publish(self) {
        let mut keys: BTreeMap<(Cow<'static, str>, ResourceType), ()> = BTreeMap::new();
        for (a, ty, _) in self.0.keys() {
            keys.insert((a.clone(), *ty), ());
        }
        for (authority, ty) in keys.into_keys() {
            for state in STATES {
                let n = self
                    .0
                    .get(&(authority.clone(), ty, state))
                    .copied()
                    .unwrap_or(0);
                metrics::gauge!("grpc.xds_client.resources", "grpc.target" => TARGET, "grpc.xds.authority" => authority.to_string(), "grpc.xds.cache_state" => state, "grpc.xds.resource_type" => ty.type_url())
                    .set(n as f64);
            }
        }
    }
}
