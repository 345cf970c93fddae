//! The live store: the current config as immutable snapshots.
//!
//! Why this shape:
//! - **Readers never block.** The request path reads [`Store::version`] (one atomic load) and,
//!   only when it changed, the snapshot through an `ArcSwap`. Writers (a file watcher, the xDS
//!   client) build a whole new [`Snapshot`] and swap it in; nobody sees a half-applied update.
//! - **Unchanged resources keep their `Arc`.** An edit that re-sends an equal resource keeps the
//!   old allocation, so consumers detect change with `Arc::ptr_eq` and a cluster's balancer and
//!   connections survive an unrelated route change.
//! - **Per-name notification.** [`Store::watch`] gives a `watch::Receiver` that fires when one
//!   listener (target), route config, cluster or endpoint set changes.
//! - **Interest.** Data-plane users register the names they use ([`Store::register_interest`]);
//!   a config source such as the xDS client subscribes to exactly those ([`Store::interest`]).

use crate::config::MeshConfig;
use crate::config::cluster::{Cluster, DiscoveryType};
use crate::config::endpoint::ClusterLoadAssignment;
use crate::config::listener::{Listener, RouteSource};
use crate::config::route::RouteConfig;
use crate::config::server::Server;
use crate::config::tls::{
    CertificateProvider, CertificateProviders, CommonTlsContext, INLINE_PREFIX, InlineMaterial,
    SDS_PREFIX,
};
use crate::error::ConfigError;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// The four resource kinds, in dependency order (a listener names a route config, which names
/// clusters, whose endpoints are an endpoint set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// [`Listener`] (LDS).
    Listener,
    /// [`RouteConfig`] (RDS).
    RouteConfig,
    /// [`Cluster`] (CDS).
    Cluster,
    /// [`ClusterLoadAssignment`] (EDS).
    Endpoints,
    /// A [`Server`] (inbound listener).
    Server,
    /// An SDS secret, held as the `inline` certificate provider instance
    /// [`crate::config::tls::SDS_PREFIX`]`<name>`.
    Secret,
}

type Table<T> = HashMap<String, Arc<T>>;

/// Why a resource that was asked for is not in the snapshot (set by config sources that fetch
/// resources, such as the xDS client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Absence {
    /// Requested; the source is waiting for it.
    Pending,
    /// The source knows it does not exist, and why.
    Missing(String),
}

/// One immutable version of the whole config.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    version: u64,
    listeners: Table<Listener>,
    route_configs: Table<RouteConfig>,
    clusters: Table<Cluster>,
    endpoints: Table<ClusterLoadAssignment>,
    servers: Table<Server>,
    absent: HashMap<(ResourceKind, String), Absence>,
    certificate_providers: Arc<CertificateProviders>,
}

impl Snapshot {
    /// The instances made from data sources.
    fn inline_providers(&self) -> impl Iterator<Item = (&String, &CertificateProvider)> {
        (self.certificate_providers.range(INLINE_PREFIX.to_owned()..))
            .take_while(|(n, _)| n.starts_with(INLINE_PREFIX))
    }

    /// The certificate provider instances, by name.
    pub fn certificate_providers(&self) -> &CertificateProviders {
        &self.certificate_providers
    }

    /// One certificate provider instance.
    pub fn certificate_provider(&self, name: &str) -> Option<&CertificateProvider> {
        self.certificate_providers.get(name)
    }

    /// Why a resource is not here, when its source knows.
    pub fn absence(&self, kind: ResourceKind, name: &str) -> Option<&Absence> {
        self.absent.get(&(kind, name.to_owned()))
    }

    /// Increases by one with every applied change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The listener for a target.
    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.listeners.get(name)
    }

    /// A route config published for RDS.
    pub fn route_config(&self, name: &str) -> Option<&Arc<RouteConfig>> {
        self.route_configs.get(name)
    }

    /// A cluster.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// A server (inbound listener).
    pub fn server(&self, name: &str) -> Option<&Arc<Server>> {
        self.servers.get(name)
    }

    /// An endpoint set published for EDS.
    pub fn endpoints(&self, name: &str) -> Option<&Arc<ClusterLoadAssignment>> {
        self.endpoints.get(name)
    }

    /// The route config a listener uses: inline, or looked up by its RDS name.
    pub fn route_config_for<'a>(&'a self, listener: &'a Listener) -> Option<&'a RouteConfig> {
        match listener.route_source()? {
            RouteSource::Inline(rc) => Some(rc),
            RouteSource::Rds(name) => self.route_config(name).map(|rc| &**rc),
        }
    }

    /// The endpoints a cluster uses: inline for `STATIC`, the EDS set for `EDS` (DNS clusters
    /// resolve theirs in the data plane: `None`).
    pub fn endpoints_for<'a>(&'a self, cluster: &'a Cluster) -> Option<&'a ClusterLoadAssignment> {
        match cluster.discovery {
            DiscoveryType::Static => cluster.load_assignment.as_ref(),
            DiscoveryType::Eds => self.endpoints(cluster.endpoints_name()).map(|e| &**e),
            DiscoveryType::StrictDns | DiscoveryType::LogicalDns => None,
        }
    }

    /// Names of every resource of a kind, sorted.
    pub fn names(&self, kind: ResourceKind) -> Vec<&str> {
        let mut names: Vec<&str> = match kind {
            ResourceKind::Listener => self.listeners.keys().map(String::as_str).collect(),
            ResourceKind::RouteConfig => self.route_configs.keys().map(String::as_str).collect(),
            ResourceKind::Cluster => self.clusters.keys().map(String::as_str).collect(),
            ResourceKind::Endpoints => self.endpoints.keys().map(String::as_str).collect(),
            ResourceKind::Server => self.servers.keys().map(String::as_str).collect(),
            ResourceKind::Secret => self
                .certificate_providers
                .keys()
                .filter_map(|n| n.strip_prefix(SDS_PREFIX))
                .collect(),
        };
        names.sort_unstable();
        names
    }

    /// The snapshot as a config document (sorted by name): the config-dump format.
    pub fn to_config(&self) -> MeshConfig {
        fn sorted<T: Clone>(t: &Table<T>) -> Vec<T> {
            let mut v: Vec<(&String, &Arc<T>)> = t.iter().collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v.into_iter().map(|(_, x)| T::clone(x)).collect()
        }
        MeshConfig {
            listeners: sorted(&self.listeners),
            route_configs: sorted(&self.route_configs),
            clusters: sorted(&self.clusters),
            endpoints: sorted(&self.endpoints),
            certificate_providers: CertificateProviders::clone(&self.certificate_providers),
            servers: sorted(&self.servers),
        }
    }
}

/// A change to the store, applied atomically by [`Store::apply`]. Upserting a resource equal
/// to the current one is not a change.
#[derive(Debug)]
pub struct Edit {
    next: Snapshot,
}

fn upsert<T: Eq>(table: &mut Table<T>, name: String, value: T) {
    if table.get(&name).is_some_and(|old| **old == value) {
        return;
    }
    table.insert(name, Arc::new(value));
}

impl Edit {
    /// Adds or replaces a listener.
    pub fn upsert_listener(&mut self, l: Listener) {
        self.set_absence(ResourceKind::Listener, &l.name, None);
        upsert(&mut self.next.listeners, l.name.clone(), l);
    }
    /// Adds or replaces a route config.
    pub fn upsert_route_config(&mut self, rc: RouteConfig) {
        self.set_absence(ResourceKind::RouteConfig, &rc.name, None);
        upsert(&mut self.next.route_configs, rc.name.clone(), rc);
    }
    /// Adds or replaces a cluster (its TLS data sources become provider instances).
    pub fn upsert_cluster(&mut self, mut c: Cluster) {
        if let Some(t) = c.transport_socket.as_mut() {
            self.hoist(&mut t.common_tls_context);
        }
        self.set_absence(ResourceKind::Cluster, &c.name, None);
        upsert(&mut self.next.clusters, c.name.clone(), c);
    }
    /// Adds or replaces an endpoint set.
    pub fn upsert_endpoints(&mut self, e: ClusterLoadAssignment) {
        self.set_absence(ResourceKind::Endpoints, &e.cluster_name, None);
        upsert(&mut self.next.endpoints, e.cluster_name.clone(), e);
    }
    /// Adds or replaces a server (its TLS data sources become provider instances).
    pub fn upsert_server(&mut self, mut s: Server) {
        for t in s.transport_sockets_mut() {
            self.hoist(&mut t.common_tls_context);
        }
        self.set_absence(ResourceKind::Server, &s.name, None);
        upsert(&mut self.next.servers, s.name.clone(), s);
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

    /// Drops the data-source instances no cluster or server names any more.
    fn drop_unused_inline(&mut self) {
        if self.next.inline_providers().next().is_none() {
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
        let key = (kind, name.to_owned());
        match absence {
            Some(a) => {
                self.next.absent.insert(key, a);
            }
            None => {
                self.next.absent.remove(&key);
            }
        }
    }
    /// Removes a resource; true if it was there.
    pub fn remove(&mut self, kind: ResourceKind, name: &str) -> bool {
        match kind {
            ResourceKind::Listener => self.next.listeners.remove(name).is_some(),
            ResourceKind::RouteConfig => self.next.route_configs.remove(name).is_some(),
            ResourceKind::Cluster => self.next.clusters.remove(name).is_some(),
            ResourceKind::Endpoints => self.next.endpoints.remove(name).is_some(),
            ResourceKind::Server => self.next.servers.remove(name).is_some(),
            ResourceKind::Secret => {
                let key = format!("{SDS_PREFIX}{name}");
                let there = self.next.certificate_providers.contains_key(&key);
                if there {
                    Arc::make_mut(&mut self.next.certificate_providers).remove(&key);
                }
                there
            }
        }
    }
    /// Replaces everything with `config` (equal resources keep their identity).
    pub fn replace_all(&mut self, mut config: MeshConfig) {
        self.set_certificate_providers(std::mem::take(&mut config.certificate_providers));
        let keep = |names: Vec<String>, kind| (kind, names);
        let old = [
            keep(
                self.next.listeners.keys().cloned().collect(),
                ResourceKind::Listener,
            ),
            keep(
                self.next.route_configs.keys().cloned().collect(),
                ResourceKind::RouteConfig,
            ),
            keep(
                self.next.clusters.keys().cloned().collect(),
                ResourceKind::Cluster,
            ),
            keep(
                self.next.endpoints.keys().cloned().collect(),
                ResourceKind::Endpoints,
            ),
            keep(
                self.next.servers.keys().cloned().collect(),
                ResourceKind::Server,
            ),
        ];
        let mut wanted: BTreeSet<(ResourceKind, String)> = BTreeSet::new();
        wanted.extend(
            config
                .listeners
                .iter()
                .map(|x| (ResourceKind::Listener, x.name.clone())),
        );
        wanted.extend(
            config
                .route_configs
                .iter()
                .map(|x| (ResourceKind::RouteConfig, x.name.clone())),
        );
        wanted.extend(
            config
                .clusters
                .iter()
                .map(|x| (ResourceKind::Cluster, x.name.clone())),
        );
        wanted.extend(
            config
                .endpoints
                .iter()
                .map(|x| (ResourceKind::Endpoints, x.cluster_name.clone())),
        );
        wanted.extend(
            config
                .servers
                .iter()
                .map(|x| (ResourceKind::Server, x.name.clone())),
        );
        for (kind, names) in old {
            for name in names {
                if !wanted.contains(&(kind, name.clone())) {
                    self.remove(kind, &name);
                }
            }
        }
        config
            .listeners
            .into_iter()
            .for_each(|x| self.upsert_listener(x));
        config
            .route_configs
            .into_iter()
            .for_each(|x| self.upsert_route_config(x));
        config
            .clusters
            .into_iter()
            .for_each(|x| self.upsert_cluster(x));
        config
            .endpoints
            .into_iter()
            .for_each(|x| self.upsert_endpoints(x));
        config
            .servers
            .into_iter()
            .for_each(|x| self.upsert_server(x));
    }
    /// The snapshot as it will be after this edit.
    pub fn view(&self) -> &Snapshot {
        &self.next
    }
}

/// What config sources report about themselves, for operators (and `config_dump`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Where config comes from (a file path, a control-plane address).
    pub source: String,
    /// How many updates were applied.
    pub applied: u64,
    /// How many updates were rejected.
    pub rejected: u64,
    /// When the last update was applied.
    pub last_applied: Option<SystemTime>,
    /// Why the last rejected update was rejected; cleared when a later one applies.
    pub last_error: Option<String>,
    /// The source fetches resources when they are first wanted (an xDS client): a resource
    /// not in the store yet may still arrive, so users wait for it. A source that writes the
    /// whole config at once (a file) leaves this `false`: what is missing is missing.
    pub on_demand: bool,
}

/// The names that data-plane users currently depend on, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    names: BTreeMap<ResourceKind, BTreeSet<String>>,
}

impl Interest {
    /// The names of one kind that are in use.
    pub fn names(&self, kind: ResourceKind) -> impl Iterator<Item = &str> {
        self.names
            .get(&kind)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Whether a name is in use.
    pub fn contains(&self, kind: ResourceKind, name: &str) -> bool {
        self.names.get(&kind).is_some_and(|s| s.contains(name))
    }
}

/// The live config store. Cheap to clone; all clones share one state.
///
/// ```
/// # use mesh_core::{Store, ResourceKind, config::cluster::Cluster};
/// let store = Store::new();
/// let mut changes = store.watch(ResourceKind::Cluster, "payments");
/// store.apply(|edit| edit.upsert_cluster(Cluster::new("payments")));
/// assert!(changes.has_changed().unwrap());
/// assert!(store.load().cluster("payments").is_some());
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    version: AtomicU64,
    changed: watch::Sender<u64>,
    writer: Mutex<HashMap<(ResourceKind, String), watch::Sender<u64>>>,
    interest: Mutex<HashMap<(ResourceKind, String), usize>>,
    interest_tx: watch::Sender<Arc<Interest>>,
    status: watch::Sender<SourceStatus>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("version", &self.version())
            .finish()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store (version 0).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(Snapshot::default()),
                version: AtomicU64::new(0),
                changed: watch::Sender::new(0),
                writer: Mutex::new(HashMap::new()),
                interest: Mutex::new(HashMap::new()),
                interest_tx: watch::Sender::new(Arc::default()),
                status: watch::Sender::new(SourceStatus::default()),
            }),
        }
    }

    /// The current version: one atomic load, for cheap "did anything change" checks.
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// The current snapshot, lock-free.
    pub fn load(&self) -> impl Deref<Target = Arc<Snapshot>> + use<> {
        self.inner.current.load()
    }

    /// Validates `config` and, if valid, makes it the whole current config. On error nothing
    /// changes.
    pub fn replace(&self, config: MeshConfig) -> Result<u64, ConfigError> {
        config.validate()?;
        Ok(self.apply(|edit| edit.replace_all(config)))
    }

    /// Applies an edit atomically and notifies watchers of what changed; returns the new
    /// version (unchanged when the edit changed nothing).
    pub fn apply(&self, f: impl FnOnce(&mut Edit)) -> u64 {
        let mut watchers = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.inner.current.load_full();
        let mut edit = Edit {
            next: Snapshot::clone(&old),
        };
        f(&mut edit);
        edit.drop_unused_inline();
        let mut changed = Vec::new();
        diff(
            &old.listeners,
            &edit.next.listeners,
            ResourceKind::Listener,
            &mut changed,
        );
        diff(
            &old.route_configs,
            &edit.next.route_configs,
            ResourceKind::RouteConfig,
            &mut changed,
        );
        diff(
            &old.clusters,
            &edit.next.clusters,
            ResourceKind::Cluster,
            &mut changed,
        );
        diff(
            &old.endpoints,
            &edit.next.endpoints,
            ResourceKind::Endpoints,
            &mut changed,
        );
        diff(
            &old.servers,
            &edit.next.servers,
            ResourceKind::Server,
            &mut changed,
        );
        for (key, a) in &edit.next.absent {
            if old.absent.get(key) != Some(a) {
                changed.push(key.clone());
            }
        }
        for key in old.absent.keys() {
            if !edit.next.absent.contains_key(key) {
                changed.push(key.clone());
            }
        }
        let providers_changed =
            !Arc::ptr_eq(&old.certificate_providers, &edit.next.certificate_providers);
        if changed.is_empty() && !providers_changed {
            return old.version;
        }
        let version = old.version + 1;
        edit.next.version = version;
        self.inner.current.store(Arc::new(edit.next));
        self.inner.version.store(version, Ordering::Release);
        watchers.retain(|_, tx| tx.receiver_count() > 0);
        for key in changed {
            if let Some(tx) = watchers.get(&key) {
                tx.send_replace(version);
            }
        }
        self.inner.changed.send_replace(version);
        version
    }

    /// Fires whenever any change is applied (the value is the new version).
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Fires when the named resource is added, changed or removed.
    pub fn watch(&self, kind: ResourceKind, name: &str) -> watch::Receiver<u64> {
        let mut watchers = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        watchers
            .entry((kind, name.to_owned()))
            .or_insert_with(|| watch::Sender::new(self.version()))
            .subscribe()
    }

    /// Declares that a data-plane user depends on a resource, until the guard is dropped.
    pub fn register_interest(&self, kind: ResourceKind, name: &str) -> InterestGuard {
        let mut counts = self
            .inner
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = counts.entry((kind, name.to_owned())).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.publish_interest(&counts);
        }
        InterestGuard {
            store: self.clone(),
            key: (kind, name.to_owned()),
        }
    }

    /// The current interest; fires when a name gains its first user or loses its last.
    pub fn interest(&self) -> watch::Receiver<Arc<Interest>> {
        self.inner.interest_tx.subscribe()
    }

    fn publish_interest(&self, counts: &HashMap<(ResourceKind, String), usize>) {
        let mut interest = Interest::default();
        for (kind, name) in counts.keys() {
            interest
                .names
                .entry(*kind)
                .or_default()
                .insert(name.clone());
        }
        self.inner.interest_tx.send_replace(Arc::new(interest));
    }

    /// Sets the config source's status (see [`SourceStatus`]).
    pub fn set_source_status(&self, f: impl FnOnce(&mut SourceStatus)) {
        self.inner.status.send_modify(f);
    }

    /// The config source's status; fires on every report.
    pub fn source_status(&self) -> watch::Receiver<SourceStatus> {
        self.inner.status.subscribe()
    }
}

fn diff<T>(
    old: &Table<T>,
    new: &Table<T>,
    kind: ResourceKind,
    out: &mut Vec<(ResourceKind, String)>,
) {
    for (name, value) in new {
        if old.get(name).is_none_or(|o| !Arc::ptr_eq(o, value)) {
            out.push((kind, name.clone()));
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push((kind, name.clone()));
        }
    }
}

/// Keeps a name in the store's [`Interest`] while alive.
#[derive(Debug)]
pub struct InterestGuard {
    store: Store,
    key: (ResourceKind, String),
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        let mut counts = self
            .store
            .inner
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
                self.store.publish_interest(&counts);
            }
        }
    }
}
