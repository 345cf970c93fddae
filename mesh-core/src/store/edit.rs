//! [`Edit`]: the one way to change the store.
//!
//! An edit starts from the current snapshot (a handful of `Arc` clones) and copies a kind's
//! table only when it first changes it. It records each name it really changed (an upsert of
//! an equal resource is not a change), so [`Store::apply`](super::Store::apply) notifies
//! exactly those watchers without diffing whole tables: the cost of an update is the size of
//! the tables it touches, never the size of the config.

use super::{Absence, ResourceKind, Snapshot, Table};
use crate::config::MeshConfig;
use crate::config::cluster::Cluster;
use crate::config::endpoint::ClusterLoadAssignment;
use crate::config::listener::Listener;
use crate::config::route::RouteConfig;
use crate::config::server::Server;
use crate::config::tls::{
    CertificateProvider, CertificateProviders, CommonTlsContext, INLINE_PREFIX, InlineMaterial,
    SDS_PREFIX,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// A change to the store, applied atomically by [`Store::apply`](super::Store::apply).
/// Upserting a resource equal to the current one is not a change.
///
/// ```
/// # use mesh_core::{Store, ResourceKind, config::cluster::Cluster};
/// let store = Store::new();
/// let v1 = store.apply(|edit| edit.upsert_cluster(Cluster::new("payments")));
/// // The same cluster again changes nothing: no new version.
/// let v2 = store.apply(|edit| edit.upsert_cluster(Cluster::new("payments")));
/// assert_eq!(v1, v2);
/// let v3 = store.apply(|edit| {
///     edit.remove(ResourceKind::Cluster, "payments");
/// });
/// assert_eq!(v3, v1 + 1);
/// ```
#[derive(Debug)]
pub struct Edit {
    pub(super) next: Snapshot,
    /// Every name this edit changed (added, replaced, removed, absence set or cleared).
    pub(super) changed: Vec<(ResourceKind, String)>,
}

fn remove<T: Clone>(table: &mut Table<T>, name: &str) -> bool {
    table.remove(name).is_some()
}

impl Edit {
    pub(super) fn new(next: Snapshot) -> Self {
        Self {
            next,
            changed: Vec::new(),
        }
    }

    fn changed(&mut self, kind: ResourceKind, name: &str) {
        self.changed.push((kind, name.to_owned()));
    }

    /// Adds or replaces a listener.
    pub fn upsert_listener(&mut self, l: Listener) {
        let name = l.name.clone();
        self.upsert(ResourceKind::Listener, name, l, |s| &mut s.listeners);
    }
    /// Adds or replaces a route config.
    pub fn upsert_route_config(&mut self, rc: RouteConfig) {
        let name = rc.name.clone();
        self.upsert(ResourceKind::RouteConfig, name, rc, |s| {
            &mut s.route_configs
        });
    }
    /// Adds or replaces a cluster (its TLS data sources become provider instances).
    pub fn upsert_cluster(&mut self, mut c: Cluster) {
        if let Some(t) = c.transport_socket.as_mut() {
            self.hoist(&mut t.common_tls_context);
        }
        let name = c.name.clone();
        self.upsert(ResourceKind::Cluster, name, c, |s| &mut s.clusters);
    }
    /// Adds or replaces an endpoint set.
    pub fn upsert_endpoints(&mut self, e: ClusterLoadAssignment) {
        let name = e.cluster_name.clone();
        self.upsert(ResourceKind::Endpoints, name, e, |s| &mut s.endpoints);
    }
    /// Adds or replaces a server (its TLS data sources become provider instances).
    pub fn upsert_server(&mut self, mut s: Server) {
        for t in s.transport_sockets_mut() {
            self.hoist(&mut t.common_tls_context);
        }
        let name = s.name.clone();
        self.upsert(ResourceKind::Server, name, s, |s| &mut s.servers);
    }
    /// Clears `name`'s absence and puts `value` in its table unless an equal one is there.
    fn upsert<T: Eq + Clone>(
        &mut self,
        kind: ResourceKind,
        name: String,
        value: T,
        table: impl FnOnce(&mut Snapshot) -> &mut Table<T>,
    ) {
        self.set_absence(kind, &name, None);
        let table = table(&mut self.next);
        if table.get(name.as_str()).is_some_and(|old| **old == value) {
            return;
        }
        table.insert(Arc::from(name.as_str()), Arc::new(value));
        self.changed.push((kind, name));
    }
    /// Replaces the certificate provider instances (the xDS client sets the bootstrap's).
    /// Instances made from resources' data sources ([`INLINE_PREFIX`]) stay while a resource
    /// names them.
    pub fn set_certificate_providers(&mut self, mut providers: CertificateProviders) {
        for (name, p) in self.next.inline_providers() {
            providers.entry(name.clone()).or_insert_with(|| p.clone());
        }
        if *self.next.certificate_providers != providers {
            self.next.certificate_providers = Arc::new(providers);
        }
    }
    /// Adds or replaces SDS secret `name` (provider instance `sds:<name>`).
    pub fn upsert_secret(&mut self, name: &str, material: InlineMaterial) {
        self.set_absence(ResourceKind::Secret, name, None);
        let key = format!("{SDS_PREFIX}{name}");
        let value = CertificateProvider {
            inline: Some(material),
            ..CertificateProvider::default()
        };
        if self.next.certificate_providers.get(&key) != Some(&value) {
            Arc::make_mut(&mut self.next.certificate_providers).insert(key, value);
        }
    }
    /// Moves `ctx`'s data sources into the providers (see
    /// [`crate::config::tls::CommonTlsContext::hoist_data_sources`]).
    fn hoist(&mut self, ctx: &mut CommonTlsContext) {
        for (name, p) in ctx.hoist_data_sources() {
            if self.next.certificate_providers.get(&name) != Some(&p) {
                Arc::make_mut(&mut self.next.certificate_providers).insert(name, p);
            }
        }
    }

    /// Drops the data-source instances no cluster or server names any more. Only a changed
    /// or removed cluster or server can leave one unused, so other edits skip the walk.
    pub(super) fn drop_unused_inline(&mut self) {
        let touched = (self.changed.iter())
            .any(|(k, _)| matches!(k, ResourceKind::Cluster | ResourceKind::Server));
        if !touched || self.next.inline_providers().next().is_none() {
            return;
        }
        let snap = &self.next;
        let used: BTreeSet<&str> = (snap.clusters.values())
            .filter_map(|c| c.transport_socket.as_ref().map(|t| &t.common_tls_context))
            .chain(
                (snap.servers.values())
                    .flat_map(|s| s.transport_sockets().map(|t| &t.common_tls_context)),
            )
            .flat_map(CommonTlsContext::provider_names)
            .filter(|n| n.starts_with(INLINE_PREFIX))
            .collect();
        let unused: Vec<String> = (snap.inline_providers())
            .map(|(n, _)| n)
            .filter(|n| !used.contains(n.as_str()))
            .cloned()
            .collect();
        if !unused.is_empty() {
            let all = Arc::make_mut(&mut self.next.certificate_providers);
            for n in unused {
                all.remove(&n);
            }
        }
    }

    /// Records why a resource is not here (`None` clears it). Does not remove the resource.
    pub fn set_absence(&mut self, kind: ResourceKind, name: &str, absence: Option<Absence>) {
        let current = self.next.absent.get(&kind).and_then(|m| m.get(name));
        if current == absence.as_ref() {
            return;
        }
        let all = Arc::make_mut(&mut self.next.absent);
        match absence {
            Some(a) => {
                all.entry(kind).or_default().insert(name.to_owned(), a);
            }
            None => {
                if let Some(m) = all.get_mut(&kind) {
                    m.remove(name);
                }
            }
        }
        self.changed(kind, name);
    }
    /// Removes a resource; true if it was there.
    pub fn remove(&mut self, kind: ResourceKind, name: &str) -> bool {
        let removed = match kind {
            ResourceKind::Listener => remove(&mut self.next.listeners, name),
            ResourceKind::RouteConfig => remove(&mut self.next.route_configs, name),
            ResourceKind::Cluster => remove(&mut self.next.clusters, name),
            ResourceKind::Endpoints => remove(&mut self.next.endpoints, name),
            ResourceKind::Server => remove(&mut self.next.servers, name),
            ResourceKind::Secret => {
                let key = format!("{SDS_PREFIX}{name}");
                let there = self.next.certificate_providers.contains_key(&key);
                if there {
                    Arc::make_mut(&mut self.next.certificate_providers).remove(&key);
                }
                // Providers are compared by pointer in `apply`; no name to notify.
                return there;
            }
        };
        if removed {
            self.changed(kind, name);
        }
        removed
    }
    /// Replaces everything with `config` (equal resources keep their identity).
    pub fn replace_all(&mut self, mut config: MeshConfig) {
        self.set_certificate_providers(std::mem::take(&mut config.certificate_providers));
        fn names<T>(t: &Table<T>) -> Vec<String> {
            t.keys().map(|n| n.to_string()).collect()
        }
        let old = [
            (names(&self.next.listeners), ResourceKind::Listener),
            (names(&self.next.route_configs), ResourceKind::RouteConfig),
            (names(&self.next.clusters), ResourceKind::Cluster),
            (names(&self.next.endpoints), ResourceKind::Endpoints),
            (names(&self.next.servers), ResourceKind::Server),
        ];
        let mut wanted: BTreeSet<(ResourceKind, &str)> = BTreeSet::new();
        wanted.extend((config.listeners.iter()).map(|x| (ResourceKind::Listener, x.name.as_str())));
        wanted.extend(
            (config.route_configs.iter()).map(|x| (ResourceKind::RouteConfig, x.name.as_str())),
        );
        wanted.extend((config.clusters.iter()).map(|x| (ResourceKind::Cluster, x.name.as_str())));
        wanted.extend(
            (config.endpoints.iter()).map(|x| (ResourceKind::Endpoints, x.cluster_name.as_str())),
        );
        wanted.extend((config.servers.iter()).map(|x| (ResourceKind::Server, x.name.as_str())));
        let gone: Vec<(ResourceKind, String)> = old
            .into_iter()
            .flat_map(|(names, kind)| names.into_iter().map(move |n| (kind, n)))
            .filter(|(kind, n)| !wanted.contains(&(*kind, n.as_str())))
            .collect();
        for (kind, name) in gone {
            self.remove(kind, &name);
        }
        let MeshConfig {
            listeners,
            route_configs,
            clusters,
            endpoints,
            servers,
            ..
        } = config;
        listeners.into_iter().for_each(|x| self.upsert_listener(x));
        (route_configs.into_iter()).for_each(|x| self.upsert_route_config(x));
        clusters.into_iter().for_each(|x| self.upsert_cluster(x));
        endpoints.into_iter().for_each(|x| self.upsert_endpoints(x));
        servers.into_iter().for_each(|x| self.upsert_server(x));
    }
    /// The snapshot as it will be after this edit.
    pub fn view(&self) -> &Snapshot {
        &self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn assignment(name: &str, overprovisioning: u32) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: name.into(),
            policy: Some(crate::config::endpoint::AssignmentPolicy {
                overprovisioning_factor: Some(overprovisioning),
            }),
            ..Default::default()
        }
    }

    fn big_store() -> Store {
        let store = Store::new();
        store.apply(|edit| {
            for i in 0..100 {
                edit.upsert_cluster(Cluster::new(format!("c{i}")));
                edit.upsert_endpoints(assignment(&format!("c{i}"), 100));
            }
        });
        store
    }

    #[test]
    fn an_endpoint_update_copies_one_table_and_notifies_one_name() {
        let store = big_store();
        let c1 = store.watch(ResourceKind::Endpoints, "c1");
        let c2 = store.watch(ResourceKind::Endpoints, "c2");
        let cluster1 = store.watch(ResourceKind::Cluster, "c1");
        let before = store.load_full_for_test();
        store.apply(|edit| edit.upsert_endpoints(assignment("c1", 150)));
        let after = store.load_full_for_test();
        assert!(Table::ptr_eq(&before.clusters, &after.clusters));
        assert!(Table::ptr_eq(&before.listeners, &after.listeners));
        assert!(Arc::ptr_eq(&before.absent, &after.absent));
        assert!(!Table::ptr_eq(&before.endpoints, &after.endpoints));
        // Of the endpoints table, only the shard holding `c1` was copied.
        assert_eq!(
            Table::shared_shards(&before.endpoints, &after.endpoints),
            63
        );
        // The other assignments are the same allocations in the copied table.
        assert!(Arc::ptr_eq(
            before.endpoints("c2").unwrap(),
            after.endpoints("c2").unwrap()
        ));
        assert!(c1.has_changed().unwrap());
        assert!(!c2.has_changed().unwrap());
        assert!(!cluster1.has_changed().unwrap());
        assert_eq!(after.version(), before.version() + 1);
    }

    #[test]
    fn an_edit_that_changes_nothing_touches_nothing() {
        let store = big_store();
        let before = store.load_full_for_test();
        let v = store.apply(|edit| {
            edit.upsert_endpoints(assignment("c1", 100));
            edit.upsert_cluster(Cluster::new("c2"));
            edit.set_absence(ResourceKind::Cluster, "c3", None);
            edit.remove(ResourceKind::Cluster, "nope");
        });
        assert_eq!(v, before.version());
        assert!(Arc::ptr_eq(&before, &store.load_full_for_test()));
    }

    #[test]
    fn absence_and_removal_notify_their_name() {
        let store = big_store();
        let gone = store.watch(ResourceKind::Cluster, "c5");
        let mut pending = store.watch(ResourceKind::Cluster, "later");
        store.apply(|edit| {
            edit.remove(ResourceKind::Cluster, "c5");
            edit.set_absence(ResourceKind::Cluster, "later", Some(Absence::Pending));
        });
        assert!(gone.has_changed().unwrap() && pending.has_changed().unwrap());
        let snap = store.load_full_for_test();
        assert!(snap.cluster("c5").is_none());
        assert_eq!(
            snap.absence(ResourceKind::Cluster, "later"),
            Some(&Absence::Pending)
        );
        pending.mark_unchanged();
        // The resource arriving clears its absence: a change to that name.
        store.apply(|edit| edit.upsert_cluster(Cluster::new("later")));
        assert!(pending.has_changed().unwrap());
        let snap = store.load_full_for_test();
        assert_eq!(snap.absence(ResourceKind::Cluster, "later"), None);
    }
}
