//! The cascade: from the store's interest to the names each server's stream subscribes to
//! (the way back, from each stream's output to the store, is `deliver.rs`).

use super::Shared;
use super::deliver::{deliver, kind_of, route_clusters, store_name};
use crate::translate::ResourceType;
use mesh_core::config::listener::RouteSource;
use mesh_core::config::tls::SDS_PREFIX;
use mesh_core::{Absence, DiscoveryType, ResourceKind, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::time::Instant;

/// How many resource types there are.
const N: usize = ResourceType::ALL.len();

/// Runs the cascade whenever the store's interest changes (targets come and go), whether or
/// not a stream is up: subscriptions recorded while disconnected go out when one connects.
pub(super) async fn coordinate(shared: Arc<Shared>) {
    let mut interest = shared.store.interest();
    loop {
        cascade(&shared);
        // A lingering target is unsubscribed when its delay ends.
        let next = {
            let st = shared.lock();
            st.lingering
                .values()
                .chain(st.lingering_clusters.values())
                .min()
                .copied()
        };
        let expired = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = interest.changed() => if changed.is_err() {
                return;
            },
            () = expired => {}
            // A cascade on a stream's response started a linger: sleep until it ends.
            () = shared.linger_started.notified() => {}
        }
    }
}

/// The targets to subscribe: those users hold now, and those released less than the
/// unsubscribe delay ago (see [`XdsClientBuilder::unsubscribe_delay`]). Updates the
/// lingering set: targets held again leave it, targets just released join it, expired ones
/// are dropped.
///
/// [`XdsClientBuilder::unsubscribe_delay`]: super::XdsClientBuilder::unsubscribe_delay
fn targets_with_lingering(shared: &Shared, held: &BTreeSet<String>) -> BTreeSet<String> {
    let mut st = shared.lock();
    let st = &mut *st;
    let before: Vec<String> = st.listener_targets.values().cloned().collect();
    linger(shared, before, held, &mut st.lingering);
    held.iter().chain(st.lingering.keys()).cloned().collect()
}

/// Updates a linger set: names in `before` missing from `now` start lingering for the
/// unsubscribe delay (and the coordinator is told, to wake when it ends); names back in
/// `now`, or whose delay ended, leave it.
fn linger(
    shared: &Shared,
    before: impl IntoIterator<Item = String>,
    now_named: &BTreeSet<String>,
    set: &mut BTreeMap<String, Instant>,
) {
    let now = Instant::now();
    let mut started = false;
    for name in before {
        if !now_named.contains(&name) && !set.contains_key(&name) {
            set.insert(name, now + shared.linger);
            started = true;
        }
    }
    if started {
        shared.linger_started.notify_one();
    }
    set.retain(|n, until| !now_named.contains(n) && *until > now);
}

/// Server `index`'s timers fired: report what did not arrive in time.
pub(super) fn tick(shared: &Arc<Shared>, index: usize) {
    let out = shared.lock().ads[index].on_tick(Instant::now().into_std());
    deliver(shared, index, out);
    cascade(shared);
}

/// Recomputes what each server's stream subscribes to from the store's interest and content,
/// until stable. A name no server can serve (an authority the bootstrap lacks) is marked
/// missing with the reason, so requests that need it fail saying why.
pub(super) fn cascade(shared: &Arc<Shared>) {
    for _ in 0..5 {
        let interest = shared.store.interest().borrow().clone();
        let snap = shared.store.load();
        let mut unservable = Vec::new();
        // Targets → listener resource names (by the bootstrap's templates).
        let mut targets = BTreeMap::new();
        let held: BTreeSet<String> = interest
            .names(ResourceKind::Listener)
            .map(str::to_owned)
            .collect();
        for target in &targets_with_lingering(shared, &held) {
            match shared.bootstrap.listener_name(target) {
                Ok(resource) => {
                    targets.insert(resource, target.to_owned());
                }
                Err(why) => unservable.push((ResourceType::Listener, target.to_owned(), why)),
            }
        }
        let staged: BTreeMap<String, Vec<String>> = shared
            .lock()
            .staged_routes
            .iter()
            .map(|(n, rc)| (n.clone(), route_clusters(rc).map(str::to_owned).collect()))
            .collect();
        let mut wanted = wanted(&snap, &targets, &staged, |named| {
            clusters_with_lingering(shared, named)
        });
        // Server listeners (A36) are asked for by their resource names.
        let server_listeners: BTreeSet<String> = interest
            .names(ResourceKind::Server)
            .map(str::to_owned)
            .collect();
        wanted[ResourceType::Listener.index()].extend(server_listeners.iter().cloned());
        // SDS: the secrets their TLS names, as for clusters; RDS: their route configs.
        let mut inbound_routes = BTreeSet::new();
        for server in server_listeners.iter().filter_map(|n| snap.server(n)) {
            let secrets = server.transport_sockets();
            let secrets = secrets.flat_map(|t| t.common_tls_context.sds_secrets());
            wanted[ResourceType::Secret.index()].extend(secrets.map(str::to_owned));
            inbound_routes.extend(server.rds_names().map(str::to_owned));
        }
        wanted[ResourceType::RouteConfiguration.index()].extend(inbound_routes.iter().cloned());
        // Route configs are few; the staged ones are checked against them below.
        let rds = wanted[ResourceType::RouteConfiguration.index()].clone();
        let servers = shared.streams.len();
        let mut per_server: Vec<[BTreeSet<String>; N]> = vec![Default::default(); servers];
        for ty in ResourceType::ALL {
            let mut names = std::mem::take(&mut wanted[ty.index()]);
            // Which server each name goes to; when it is one server for all (no federation:
            // the usual case), the set moves there whole instead of name by name (at 10k
            // clusters, cloning and re-sorting the names was a tenth of a cascade).
            let (mut only, mut mixed, mut refused) = (None, false, false);
            for name in &names {
                match shared.routing.server_for(ty, name) {
                    Ok(i) => {
                        mixed |= only.is_some_and(|o| o != i);
                        only = Some(i);
                    }
                    Err(why) => {
                        refused = true;
                        let name = match ty {
                            ResourceType::Listener => targets[name].clone(),
                            _ => name.clone(),
                        };
                        unservable.push((ty, name, why));
                    }
                }
            }
            match (only, mixed) {
                (None, _) => {}
                (Some(i), false) => {
                    if refused {
                        names.retain(|n| shared.routing.server_for(ty, n).is_ok());
                    }
                    per_server[i][ty.index()] = names;
                }
                (Some(_), true) => {
                    for name in names {
                        if let Ok(i) = shared.routing.server_for(ty, &name) {
                            per_server[i][ty.index()].insert(name);
                        }
                    }
                }
            }
        }
        let mut st = shared.lock();
        // A staged route config no listener wants any more is dropped.
        st.staged_routes.retain(|name, _| rds.contains(name));
        st.listener_targets = targets;
        st.server_listeners = server_listeners;
        let now = Instant::now().into_std();
        let mut outputs = Vec::new();
        let mut start = Vec::new();
        // Streams whose subscriptions changed: a stream waiting out a backoff looks again
        // (gRFC A71: a new uncached resource may make its fallback worth a switch).
        let mut changed = Vec::new();
        for (i, names) in per_server.into_iter().enumerate() {
            st.ads[i].set_inbound_route_configs(&inbound_routes);
            let needed = names.iter().any(|n| !n.is_empty());
            if ResourceType::ALL
                .into_iter()
                .zip(&names)
                .any(|(ty, names)| st.ads[i].wanted(ty) != names)
            {
                changed.push(i);
            }
            for (ty, names) in ResourceType::ALL.into_iter().zip(names) {
                let out = st.ads[i].set_wanted(ty, names, now);
                if !out.requests.is_empty() || !out.changes.is_empty() {
                    outputs.push((i, out));
                }
            }
            if needed {
                start.push(i);
            }
        }
        // Wanted but not here yet: pending, so the data plane can say so.
        let mut pending = Vec::new();
        let mut resources = super::metrics::Resources::default();
        for ads in &st.ads {
            ads.for_each_status(|ty, name, status| {
                resources.add(ty, name, status.state, status.last_error.is_some());
                if status.state == "requested" {
                    let kind = kind_of(&st.server_listeners, ty, name);
                    pending.push((kind, store_name(&st.listener_targets, ty, name.to_owned())));
                }
            });
        }
        drop(st);
        resources.publish();
        // Another pass only when delivering changed what this one read: requests alone (a
        // new subscription, an unsubscription) leave the store, the interest and the staged
        // routes as they were, and a pass over 10k clusters costs ~25 ms.
        let mut stable = true;
        for (i, out) in outputs {
            stable &= !deliver(shared, i, out);
            shared.streams[i].wake.notify_one();
        }
        for i in changed {
            shared.streams[i].wake.notify_one();
        }
        for i in start {
            shared.ensure_stream(i);
        }
        let snap = shared.store.load();
        let to_mark: Vec<(ResourceKind, String, Absence)> = pending
            .into_iter()
            .filter(|(kind, n)| snap.absence(*kind, n).is_none() && !present(&snap, *kind, n))
            .map(|(kind, n)| (kind, n, Absence::Pending))
            .chain(
                unservable
                    .into_iter()
                    .map(|(ty, n, why)| (ty.kind(), n, Absence::Missing(why)))
                    .filter(|(kind, n, a)| snap.absence(*kind, n) != Some(a)),
            )
            .collect();
        if !to_mark.is_empty() {
            shared.store.apply(|edit| {
                for (kind, n, absence) in to_mark {
                    edit.set_absence(kind, &n, Some(absence));
                }
            });
        }
        if stable {
            return;
        }
    }
}

fn present(snap: &Snapshot, kind: ResourceKind, name: &str) -> bool {
    match kind {
        ResourceKind::Listener => snap.listener(name).is_some(),
        ResourceKind::RouteConfig => snap.route_config(name).is_some(),
        ResourceKind::Cluster => snap.cluster(name).is_some(),
        ResourceKind::Endpoints => snap.endpoints(name).is_some(),
        ResourceKind::Server => snap.server(name).is_some(),
        ResourceKind::Secret => snap
            .certificate_provider(&format!("{SDS_PREFIX}{name}"))
            .is_some(),
    }
}

/// Clusters routes named before and no longer do, kept for the unsubscribe delay (see
/// `State::lingering_clusters`); updates that set from `named`, what routes name now.
fn clusters_with_lingering(shared: &Shared, named: &BTreeSet<String>) -> BTreeSet<String> {
    let mut st = shared.lock();
    let st = &mut *st;
    let before = std::mem::replace(&mut st.route_clusters, named.clone());
    linger(shared, before, named, &mut st.lingering_clusters);
    st.lingering_clusters.keys().cloned().collect()
}

/// The names each type needs, given the listener targets and what the store holds; `keep`
/// is told the clusters routes name and returns others to keep subscribed.
fn wanted(
    snap: &Snapshot,
    targets: &BTreeMap<String, String>,
    staged: &BTreeMap<String, Vec<String>>,
    keep: impl FnOnce(&BTreeSet<String>) -> BTreeSet<String>,
) -> [BTreeSet<String>; N] {
    let mut out: [BTreeSet<String>; N] = Default::default();
    let mut clusters = BTreeSet::new();
    for (resource, target) in targets {
        out[ResourceType::Listener.index()].insert(resource.clone());
        let Some(listener) = snap.listener(target) else {
            continue;
        };
        let rc = match listener.route_source() {
            Some(RouteSource::Rds(name)) => {
                out[ResourceType::RouteConfiguration.index()].insert(name.to_owned());
                // A staged version's clusters are wanted too, so it can be applied.
                if let Some(next) = staged.get(name) {
                    clusters.extend(next.iter().cloned());
                }
                snap.route_config(name).map(|rc| &**rc)
            }
            Some(RouteSource::Inline(rc)) => Some(rc),
            None => None,
        };
        for vh in rc.iter().flat_map(|rc| &rc.virtual_hosts) {
            for route in &vh.routes {
                if let Some(action) = &route.route {
                    clusters.extend(action.cluster_names().map(str::to_owned));
                }
            }
        }
    }
    let kept = keep(&clusters);
    clusters.extend(kept);
    // An aggregate's clusters are wanted with it, and theirs if they are aggregates too
    // (gRFC A37), up to gRPC's depth limit.
    // The first level is found by a walk of the set (no copy of its names: at 10k clusters
    // that was 10k allocations per cascade for the few aggregates there are).
    let aggregates = (clusters.iter())
        .filter_map(|name| snap.cluster(name))
        .flat_map(|c| c.aggregate().unwrap_or_default());
    let mut frontier: Vec<String> = aggregates
        .filter(|child| !clusters.contains(*child))
        .cloned()
        .collect();
    clusters.extend(frontier.iter().cloned());
    for _ in 1..mesh_core::config::cluster::MAX_AGGREGATE_DEPTH {
        let children: Vec<String> = frontier
            .iter()
            .filter_map(|name| snap.cluster(name))
            .flat_map(|c| c.aggregate().unwrap_or_default())
            .filter(|child| !clusters.contains(*child))
            .cloned()
            .collect();
        if children.is_empty() {
            break;
        }
        clusters.extend(children.iter().cloned());
        frontier = children;
    }
    for c in clusters.iter().filter_map(|name| snap.cluster(name)) {
        if c.discovery == DiscoveryType::Eds && c.aggregate().is_none() {
            out[ResourceType::ClusterLoadAssignment.index()].insert(c.endpoints_name().to_owned());
        }
        // SDS: the secrets its TLS context names.
        let secrets = c.transport_socket.iter();
        let secrets = secrets.flat_map(|t| t.common_tls_context.sds_secrets());
        out[ResourceType::Secret.index()].extend(secrets.map(str::to_owned));
    }
    out[ResourceType::Cluster.index()] = clusters;
    out
}
