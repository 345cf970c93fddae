//! Live cluster state, per cluster name, shared by every channel of a mesh whatever its
//! request body type: one circuit breaker, one outlier detector, one balancer and one set of
//! endpoint stats and HTTP/2 connections per cluster (only HTTP/1.1 pools are per body type,
//! inside each endpoint's [`Connection`]).

pub(crate) use super::state::ClusterState;
use crate::balance::weighted_round_robin::oob;
use crate::balance::{self, EndpointInfo, EndpointStats};
use crate::breaker::Limits;
use crate::connect::{ConnectTarget, Connection, Connector};
use crate::error::MeshError;
use crate::outlier::Detector;
use crate::tls::ClientTls;
use arc_swap::ArcSwap;
use mesh_core::{Cluster, ClusterLoadAssignment, DiscoveryType, Locality, ResourceKind, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Every cluster in use, by name.
pub(crate) struct Registry {
    store: Store,
    connector: Connector,
    providers: Arc<crate::tls::Providers>,
    dns: super::dns::DnsResolver,
    control: crate::control::Control,
    local: Option<super::plan::LocalZone>,
    clusters: ArcSwap<HashMap<Arc<str>, Arc<ClusterHandle>>>,
    insert: Mutex<()>,
    /// Istio's metadata exchange headers, sent on mTLS clusters (with telemetry).
    pub(crate) exchange: Option<(http::HeaderValue, http::HeaderValue)>,
}

impl Registry {
    pub(crate) fn new(
        store: Store,
        connector: Connector,
        dns: super::dns::DnsResolver,
        control: crate::control::Control,
        local: Option<super::plan::LocalZone>,
        providers: Arc<crate::tls::Providers>,
    ) -> Self {
        Self {
            store,
            connector,
            providers,
            dns,
            control,
            local,
            clusters: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            exchange: None,
        }
    }

    /// Sends these metadata exchange headers on mTLS clusters.
    pub(crate) fn with_exchange(
        mut self,
        exchange: Option<(http::HeaderValue, http::HeaderValue)>,
    ) -> Self {
        self.exchange = exchange;
        self
    }

    /// The handle for `name` if requests have used it.
    pub(crate) fn existing(&self, name: &str) -> Option<Arc<ClusterHandle>> {
        self.clusters.load().get(name).cloned()
    }

    /// The handle for `name`, created on first use. Lock-free when it exists.
    pub(crate) fn get(&self, name: &Arc<str>) -> Arc<ClusterHandle> {
        if let Some(h) = self.clusters.load().get(name) {
            return h.clone();
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = self.clusters.load().get(name) {
            return h.clone();
        }
        let handle = Arc::new(ClusterHandle::new(
            name.clone(),
            self.store.clone(),
            self.connector.clone(),
            self.providers.clone(),
            self.dns.clone(),
            self.control.clone(),
            self.local.clone(),
        ));
        let mut next = HashMap::clone(&self.clusters.load());
        next.insert(name.clone(), handle.clone());
        self.clusters.store(Arc::new(next));
        handle
    }

    /// Brings every cluster up to date and forgets clusters that left the config (closing
    /// their idle connections). Run after each config change, so idle clusters let go of
    /// endpoints that were removed.
    /// Every cluster with live state (those requests have used), by name.
    pub(crate) fn handles(&self) -> Vec<Arc<ClusterHandle>> {
        let mut all: Vec<_> = self.clusters.load().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub(crate) fn refresh_all(&self) {
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let snap = self.store.load();
        let current = self.clusters.load();
        let kept: HashMap<_, _> = current
            .iter()
            .filter(|(name, _)| snap.cluster(name).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for handle in kept.values() {
            handle.refresh();
        }
        if kept.len() != current.len() {
            self.clusters.store(Arc::new(kept));
        }
    }
}

/// One cluster's live state.
impl crate::breaker::RetryLimits for Registry {
    fn try_retry(&self, cluster: &str) -> Result<crate::breaker::Guard, MeshError> {
        self.get(&Arc::from(cluster)).limits.try_retry()
    }
}

pub(crate) struct ClusterHandle {
    pub(crate) name: Arc<str>,
    store: Store,
    connector: Connector,
    providers: Arc<crate::tls::Providers>,
    seen: AtomicU64,
    state: ArcSwap<ClusterState>,
    rebuild: Mutex<()>,
    /// Circuit-breaker counters; they outlive config updates.
    pub(crate) limits: Arc<Limits>,
    /// Requests the breaker refused since the last load report (LRS).
    pub(crate) dropped: AtomicU64,
    /// Name resolution of DNS clusters.
    dns: super::dns::DnsState,
    /// The caller's zone, for zone-aware routing.
    local: Option<super::plan::LocalZone>,
    /// The runtime that first used the cluster: out-of-band load report streams run there,
    /// beside the connections they share.
    runtime: Option<tokio::runtime::Handle>,
}

impl ClusterHandle {
    fn new(
        name: Arc<str>,
        store: Store,
        connector: Connector,
        providers: Arc<crate::tls::Providers>,
        dns: super::dns::DnsResolver,
        control: crate::control::Control,
        local: Option<super::plan::LocalZone>,
    ) -> Self {
        let handle = Self {
            providers,
            local,
            runtime: tokio::runtime::Handle::try_current().ok(),
            dns: super::dns::DnsState::new(dns, control),
            limits: Arc::new(Limits::new(name.clone())),
            name,
            store,
            connector,
            seen: AtomicU64::new(u64::MAX),
            dropped: AtomicU64::new(0),
            state: ArcSwap::from_pointee(ClusterState {
                cluster: None,
                eds: None,
                endpoints: Vec::new(),
                conns: Vec::new(),
                tls: None,
                mutual: false,
                plan: super::plan::Plan::empty(),
                total: 0,
                absence: (None, None),
                detector: None,
                ewma_decay: None,
                reports: None,
                oob: Vec::new(),
                resolved: None,
                view: None,
                aggregate: None,
                reports_load: false,
            }),
            rebuild: Mutex::new(()),
        };
        handle.refresh();
        handle
    }

    /// Returns once a DNS cluster's names have been looked up once (at once for any other).
    pub(crate) async fn first_lookup(&self) {
        let is_dns = self
            .current()
            .cluster
            .as_ref()
            .is_some_and(|c| c.discovery.is_dns());
        if is_dns {
            self.dns.first_lookup().await;
        }
    }

    /// The current state, rebuilt first if the config changed.
    pub(crate) fn current(&self) -> impl Deref<Target = Arc<ClusterState>> + use<> {
        if self.seen.load(Ordering::Acquire) != self.store.version() || self.dns.is_dirty() {
            self.refresh();
        }
        self.state.load()
    }

    fn refresh(&self) {
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let snap = self.store.load();
        let dns_changed = self.dns.take_dirty();
        if self.seen.load(Ordering::Acquire) == snap.version() && !dns_changed {
            return;
        }
        let cluster = snap.cluster(&self.name).cloned();
        self.dns.ensure(cluster.as_deref());
        let resolved = self.dns.resolved();
        let absence = snap.absence(ResourceKind::Cluster, &self.name).cloned();
        let eds = cluster
            .as_ref()
            .filter(|c| c.discovery == DiscoveryType::Eds)
            .and_then(|c| snap.endpoints(c.endpoints_name()))
            .cloned();
        let old = self.state.load();
        let eds_absence = cluster
            .as_ref()
            .and_then(|c| snap.absence(ResourceKind::Endpoints, c.endpoints_name()))
            .cloned();
        // Zone-aware clusters also depend on where the callers are (the local cluster).
        let zone_aware = cluster.as_ref().is_some_and(|c| {
            c.common_lb_config
                .as_ref()
                .is_some_and(|cc| cc.zone_aware_lb_config.is_some())
        });
        let view = self
            .local
            .as_ref()
            .filter(|_| zone_aware)
            .map(|l| l.view(&snap));
        // An aggregate's clusters, nested aggregates flattened (gRFC A37): a change anywhere
        // in its graph changes the state.
        let leaves = snap.aggregate_leaves(&self.name);
        let tls = cluster
            .as_ref()
            .and_then(|c| c.transport_socket.as_ref())
            .map(|t| {
                let lookup = self.providers.sync(snap.certificate_providers());
                let tls = ClientTls::new(t, |name| lookup.get(name).cloned());
                // Keep the old one (and its built rustls configs) when nothing changed.
                match &old.tls {
                    Some(o) if **o == tls => o.clone(),
                    _ => Arc::new(tls),
                }
            });
        if !(same(&old.cluster, &cluster)
            && old.tls == tls
            && same(&old.eds, &eds)
            && same(&old.resolved, &resolved)
            && old.view == view
            && old.absence == (absence.clone(), eds_absence.clone())
            && same_leaves(&old.aggregate, &leaves))
        {
            self.limits
                .configure(cluster.as_ref().and_then(|c| c.circuit_breakers.as_ref()));
            let mut state = self.build(cluster, eds, resolved, view.as_ref(), tls, &old);
            state.absence = (absence, eds_absence);
            state.view = view;
            if let Some(Err(e)) = &leaves {
                tracing::warn!(cluster = %self.name, error = %e, "aggregate cluster cannot serve");
            }
            state.aggregate = leaves.map(|l| {
                l.unwrap_or_default()
                    .iter()
                    .map(|n| Arc::from(n.as_str()))
                    .collect()
            });
            self.state.store(Arc::new(state));
        }
        self.seen.store(snap.version(), Ordering::Release);
    }

    fn build(
        &self,
        cluster: Option<Arc<Cluster>>,
        eds: Option<Arc<ClusterLoadAssignment>>,
        resolved: Option<Arc<super::dns::Resolved>>,
        view: Option<&super::plan::LocalView>,
        tls: Option<Arc<ClientTls>>,
        old: &ClusterState,
    ) -> ClusterState {
        let mut reuse: HashMap<SocketAddr, (&Arc<EndpointStats>, &Arc<Connection>)> = old
            .endpoints
            .iter()
            .zip(&old.conns)
            .map(|(e, c)| (e.address, (&e.stats, c)))
            .collect();
        let (mut endpoints, mut conns, mut total) = (Vec::new(), Vec::new(), 0);
        if let Some(c) = &cluster {
            let dns_assignment;
            let assignment = match c.discovery {
                DiscoveryType::Static => c.load_assignment.as_ref(),
                DiscoveryType::Eds => eds.as_deref(),
                DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                    dns_assignment = dns_endpoints(c, resolved.as_deref());
                    Some(&dns_assignment)
                }
            };
            let all: Vec<_> = assignment
                .into_iter()
                .flat_map(|a| a.iter_endpoints())
                .collect();
            total = all.len();
            // Every endpoint, any priority and health: the plan decides who is eligible.
            let mut localities: HashMap<&Locality, Arc<Locality>> = HashMap::new();
            for (priority, loc, ep) in all {
                let target = ConnectTarget {
                    address: ep.address,
                    cluster: self.name.clone(),
                    connect_timeout: c.connect_timeout,
                    protocol: c.protocol,
                    tls: tls.clone(),
                };
                let (stats, conn) = match reuse.remove(&ep.address) {
                    Some((stats, conn)) if conn.target() == &target => {
                        (stats.clone(), conn.clone())
                    }
                    _ => (
                        Arc::new(EndpointStats::default()),
                        Arc::new(Connection::new(
                            target,
                            self.connector.clone(),
                            self.limits.clone(),
                        )),
                    ),
                };
                let locality = localities
                    .entry(&loc.locality)
                    .or_insert_with(|| Arc::new(loc.locality.clone()));
                endpoints.push(EndpointInfo {
                    address: ep.address,
                    weight: ep.load_balancing_weight.unwrap_or(1),
                    health_status: ep.health_status,
                    locality: locality.clone(),
                    locality_weight: loc.load_balancing_weight.unwrap_or(1),
                    priority,
                    stats,
                    workload: ep.metadata.istio_workload().map(Arc::from),
                });
                conns.push(conn);
            }
        }
        let factor = match &cluster {
            Some(c) if c.discovery == DiscoveryType::Static => c.load_assignment.as_ref(),
            _ => eds.as_deref(),
        }
        .map_or(
            mesh_core::config::endpoint::DEFAULT_OVERPROVISIONING_FACTOR,
            ClusterLoadAssignment::overprovisioning_factor,
        );
        let plan = match &cluster {
            Some(c) => super::plan::Plan::new(c, &endpoints, factor, view),
            None => super::plan::Plan::empty(),
        };
        let detector = cluster
            .as_ref()
            .and_then(|c| c.outlier_detection.clone())
            .map(|od| {
                let stats = endpoints.iter().map(|e| e.stats.clone()).collect();
                let d = Arc::new(
                    Detector::new(od, stats, fastrand::u64(..)).for_cluster(self.name.clone()),
                );
                d.spawn_sweeps();
                d
            });
        let ewma_decay = cluster
            .as_ref()
            .filter(|c| c.lb_policy == mesh_core::LbPolicy::PeakEwma)
            .map(|c| {
                c.peak_ewma_lb_config
                    .as_ref()
                    .and_then(|p| p.decay)
                    .unwrap_or(balance::peak_ewma::DEFAULT_DECAY)
            });
        let wrr = cluster
            .as_ref()
            .filter(|c| c.lb_policy == mesh_core::LbPolicy::ClientSideWeightedRoundRobin)
            .map(|c| {
                c.client_side_weighted_round_robin_lb_config
                    .clone()
                    .unwrap_or_default()
            });
        let settings = wrr
            .as_ref()
            .map(|w| Arc::new(balance::weighted_round_robin::ReportSettings::new(w)));
        let reports_load = cluster.as_ref().is_some_and(|c| c.lrs_report);
        let oob_period = wrr.as_ref().and_then(|w| w.oob_period());
        let oob = match (oob_period, &settings, &self.runtime) {
            (Some(period), Some(settings), Some(rt)) => {
                oob::streams(&old.oob, &endpoints, &conns, settings, period, rt)
            }
            (Some(_), _, None) => {
                tracing::warn!(cluster = %self.name, "no runtime for out-of-band load reports");
                Vec::new()
            }
            _ => Vec::new(),
        };
        // Reports on responses: weights unless out of band; named metrics when reporting load.
        let weights = settings.is_some() && oob_period.is_none();
        let reports = (weights || reports_load).then(|| {
            let config = wrr.clone().unwrap_or_default();
            Arc::new(
                balance::weighted_round_robin::ReportSettings::new(&config)
                    .reading(weights, reports_load),
            )
        });
        ClusterState {
            cluster,
            eds,
            endpoints,
            conns,
            mutual: tls.as_ref().is_some_and(|t| t.is_mutual()),
            tls,
            plan,
            total,
            absence: (None, None),
            ewma_decay,
            reports,
            oob,
            detector,
            resolved,
            view: None,
            aggregate: None,
            reports_load,
        }
    }
}

/// Whether the state's aggregate list is the flattened graph's (an error counts as empty).
fn same_leaves(held: &Option<Arc<[Arc<str>]>>, now: &Option<Result<Vec<String>, String>>) -> bool {
    match (held, now) {
        (None, None) => true,
        (Some(h), Some(n)) => {
            let n = n.as_deref().unwrap_or_default();
            h.len() == n.len() && h.iter().zip(n).all(|(a, b)| **a == **b)
        }
        _ => false,
    }
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A DNS cluster's resolution as an assignment: one locality, priority 0, all healthy.
fn dns_endpoints(
    cluster: &Cluster,
    resolved: Option<&super::dns::Resolved>,
) -> ClusterLoadAssignment {
    let lb_endpoints = resolved
        .map(|r| {
            r.addrs
                .iter()
                .map(|(addr, w)| mesh_core::LbEndpoint {
                    address: *addr,
                    health_status: mesh_core::HealthStatus::Healthy,
                    load_balancing_weight: Some(*w),
                    metadata: Default::default(),
                })
                .collect()
        })
        .unwrap_or_default();
    ClusterLoadAssignment {
        cluster_name: cluster.name.clone(),
        endpoints: vec![mesh_core::LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        policy: None,
    }
}
