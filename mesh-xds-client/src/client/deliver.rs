//! From each stream's output back to the store: one atomic edit per response, route configs
//! staged until their clusters are resolved (gRFC A74), and the test for responses quiet
//! enough to skip the cascade.

use super::Shared;
use crate::ads::{Change, Output, Request};
use crate::translate::{ResourceType, Translated};
use mesh_core::{Absence, DiscoveryType, ResourceKind, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Applies server `index`'s output: changes to the store (one atomic edit), requests to its
/// stream.
/// Returns whether what the cascade reads changed: the store (changes applied, a staged
/// route config promoted) or the staged route configs.
pub(super) fn deliver(shared: &Arc<Shared>, index: usize, out: Output) -> bool {
    super::metrics::updates(&shared.streams[index].settings().uri, &out.updates);
    let nack = out.requests.iter().find_map(|r| match r {
        Request::Sotw(r) => r.error_detail.as_ref().map(|e| e.message.clone()),
        Request::Delta(r) => r.error_detail.as_ref().map(|e| e.message.clone()),
    });
    let applied = out.changes.iter().any(|c| matches!(c, Change::Upsert(_)));
    if nack.is_some() || applied {
        shared.store.set_source_status(|s| {
            if applied {
                s.applied += 1;
                s.last_applied = Some(std::time::SystemTime::now());
            }
            if let Some(e) = nack {
                s.rejected += 1;
                s.last_error = Some(e);
            }
        });
    }
    let (targets, servers, tx) = {
        let st = shared.lock();
        let (targets, servers) = if out.changes.is_empty() {
            Default::default()
        } else {
            (st.listener_targets.clone(), st.server_listeners.clone())
        };
        (targets, servers, st.tx[index].clone())
    };
    let mut changed = !out.changes.is_empty();
    let changes = stage_routes(shared, out.changes);
    if !changes.is_empty() {
        shared.store.apply(|edit| {
            for change in changes {
                match change {
                    Change::Upsert(Translated::Listener(mut l)) => {
                        if let Some(t) = targets.get(&l.name) {
                            l.name = t.clone();
                        }
                        edit.upsert_listener(*l)
                    }
                    Change::Upsert(Translated::RouteConfig(rc)) => edit.upsert_route_config(rc),
                    Change::Upsert(Translated::Cluster(c)) => edit.upsert_cluster(*c),
                    Change::Upsert(Translated::Endpoints(e)) => edit.upsert_endpoints(e),
                    Change::Upsert(Translated::Secret(name, m)) => edit.upsert_secret(&name, m),
                    Change::Upsert(Translated::Server(s)) => edit.upsert_server(*s),
                    Change::Remove(ty, name) => {
                        let kind = kind_of(&servers, ty, &name);
                        let name = store_name(&targets, ty, name);
                        edit.remove(kind, &name);
                        edit.set_absence(kind, &name, None);
                    }
                    Change::Missing(ty, name, why) => {
                        let kind = kind_of(&servers, ty, &name);
                        let name = store_name(&targets, ty, name);
                        edit.remove(kind, &name);
                        edit.set_absence(kind, &name, Some(Absence::Missing(why)));
                    }
                }
            }
        });
    }
    changed |= promote(shared);
    let Some(tx) = tx.filter(|_| !out.requests.is_empty()) else {
        return changed;
    };
    match out.delay {
        None => {
            for r in out.requests {
                let _ = tx.send(r);
            }
        }
        Some(delay) => {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for r in out.requests {
                    let _ = tx.send(r);
                }
            });
        }
    }
    changed
}

/// Whether `out` changes nothing or only updates endpoint sets the store already holds, with
/// nothing rejected: then no subscription, absence or staged route can change and the
/// cascade (which walks every subscribed name) is skipped. Endpoint churn and unchanged
/// resends are most of a large mesh's xDS traffic; with the store's edit costing what it
/// changes, this keeps such an update O(changed).
pub(super) fn quiet(shared: &Shared, out: &Output) -> bool {
    let rejected = out.requests.iter().any(|r| match r {
        Request::Sotw(r) => r.error_detail.is_some(),
        Request::Delta(r) => r.error_detail.is_some(),
    });
    if rejected {
        return false;
    }
    let snap = shared.store.load();
    out.changes.iter().all(|c| match c {
        Change::Upsert(Translated::Endpoints(e)) => snap.endpoints(&e.cluster_name).is_some(),
        _ => false,
    })
}

/// Route configs are not applied as they arrive: each is staged until every cluster it names
/// is in the store (with its endpoints, for EDS clusters) or known to be missing, as gRPC's
/// xDS dependency manager does (gRFC A74). Applying a route before its clusters would fail
/// requests with "unknown cluster" / "no endpoint" during every traffic shift to a new subset:
/// a proxyless client subscribes to clusters only once a route names them. Meanwhile the last
/// applied route config keeps serving, and the cascade subscribes the staged one's clusters.
/// A removal (or a newer version) replaces what was staged.
fn stage_routes(shared: &Arc<Shared>, changes: Vec<Change>) -> Vec<Change> {
    let mut st = shared.lock();
    let mut rest = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Change::Upsert(Translated::RouteConfig(rc)) => {
                st.staged_routes.insert(rc.name.clone(), rc);
            }
            Change::Remove(ResourceType::RouteConfiguration, ref name)
            | Change::Missing(ResourceType::RouteConfiguration, ref name, _) => {
                st.staged_routes.remove(name);
                rest.push(change);
            }
            other => rest.push(other),
        }
    }
    rest
}

/// Applies the staged route configs whose clusters are all resolved (one edit).
/// Returns whether one was.
fn promote(shared: &Arc<Shared>) -> bool {
    let ready: Vec<mesh_core::config::route::RouteConfig> = {
        let mut st = shared.lock();
        if st.staged_routes.is_empty() {
            return false;
        }
        let snap = shared.store.load();
        let names: Vec<String> = st
            .staged_routes
            .iter()
            .filter(|(_, rc)| route_clusters(rc).all(|c| cluster_resolved(&snap, c)))
            .map(|(n, _)| n.clone())
            .collect();
        names
            .iter()
            .filter_map(|n| st.staged_routes.remove(n))
            .collect()
    };
    if ready.is_empty() {
        return false;
    }
    shared.store.apply(|edit| {
        for rc in ready {
            edit.upsert_route_config(rc);
        }
    });
    true
}

pub(crate) fn route_clusters(
    rc: &mesh_core::config::route::RouteConfig,
) -> impl Iterator<Item = &str> {
    rc.virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter_map(|r| r.route.as_ref())
        .flat_map(|a| a.cluster_names())
}

/// Present with its endpoints (EDS; an aggregate: its clusters), or known not to exist:
/// either way nothing more will come.
fn cluster_resolved(snap: &Snapshot, name: &str) -> bool {
    let missing = |kind, n: &str| matches!(snap.absence(kind, n), Some(Absence::Missing(_)));
    match snap.cluster(name) {
        None => missing(ResourceKind::Cluster, name),
        // An aggregate: every cluster of its flattened graph (gRFC A37). A graph that cannot
        // serve (a cycle, too deep) is as resolved as it will get.
        Some(c) if c.aggregate().is_some() => match snap.aggregate_leaves(&c.name) {
            // A cluster not here yet is a leaf of the list: unresolved until it arrives.
            Some(Ok(leaves)) => leaves.iter().all(|leaf| cluster_resolved(snap, leaf)),
            _ => true,
        },
        Some(c) if c.discovery == DiscoveryType::Eds => {
            let eds = c.endpoints_name();
            snap.endpoints(eds).is_some() || missing(ResourceKind::Endpoints, eds)
        }
        Some(_) => true,
    }
}

/// The store's kind for resource `name` of type `ty`: LDS names serve clients (listeners) or
/// servers (gRFC A36).
pub(super) fn kind_of(servers: &BTreeSet<String>, ty: ResourceType, name: &str) -> ResourceKind {
    if ty == ResourceType::Listener && servers.contains(name) {
        ResourceKind::Server
    } else {
        ty.kind()
    }
}

pub(super) fn store_name(
    targets: &BTreeMap<String, String>,
    ty: ResourceType,
    name: String,
) -> String {
    match ty {
        ResourceType::Listener => targets.get(&name).cloned().unwrap_or(name),
        _ => name,
    }
}
