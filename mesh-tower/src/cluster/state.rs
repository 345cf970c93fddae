//! A cluster's state as one immutable value: what a request reads (lock-free, through the
//! handle's `ArcSwap`) to pick an endpoint and its connection. The registry builds a new one
//! whenever the config, the DNS resolution or the callers' zones change.

use super::plan::Plan;
use crate::balance::weighted_round_robin::oob::OobStream;
use crate::balance::{self, EndpointInfo, PickContext};
use crate::connect::Connection;
use crate::error::{ErrorKind, MeshError};
use crate::outlier::Detector;
use crate::tls::ClientTls;
use mesh_core::{Absence, Cluster, ClusterLoadAssignment, DiscoveryType};
use std::net::SocketAddr;
use std::sync::Arc;

/// An immutable view of a cluster: config, usable endpoints, their connections, the picker.
pub(crate) struct ClusterState {
    pub(super) cluster: Option<Arc<Cluster>>,
    pub(super) eds: Option<Arc<ClusterLoadAssignment>>,
    pub(super) endpoints: Vec<EndpointInfo>,
    pub(super) conns: Vec<Arc<Connection>>,
    /// The cluster's TLS, resolved against the certificate providers.
    pub(super) tls: Option<Arc<ClientTls>>,
    /// Whether that TLS is mutual (the mesh's own: metadata exchange headers go there).
    pub(crate) mutual: bool,
    pub(super) plan: Plan,
    /// Endpoints in the assignment, usable or not (for error messages).
    pub(super) total: usize,
    /// Why the cluster, or its endpoint set, is absent (from the config source).
    pub(super) absence: (Option<Absence>, Option<Absence>),
    pub(crate) detector: Option<Arc<Detector>>,
    /// For `PEAK_EWMA` clusters: the decay of the latency average responses feed.
    pub(crate) ewma_decay: Option<std::time::Duration>,
    /// For client-side weighted round robin: how responses' load reports become weights
    /// (`None` with out-of-band reports, which responses' reports do not override).
    pub(crate) reports: Option<Arc<balance::weighted_round_robin::ReportSettings>>,
    /// With out-of-band load reports: each endpoint's report stream.
    pub(super) oob: Vec<Arc<OobStream>>,
    /// For DNS clusters: the resolution this state was built from.
    pub(super) resolved: Option<Arc<super::dns::Resolved>>,
    /// For zone-aware clusters: the callers' zones this state was built for.
    pub(super) view: Option<super::plan::LocalView>,
    /// For an aggregate cluster (gRFC A37): the clusters its traffic goes to, in priority
    /// order (nested aggregates flattened; empty when its graph cannot serve).
    pub(crate) aggregate: Option<Arc<[Arc<str>]>>,
    /// Whether the cluster reports its load (LRS): requests are counted per endpoint.
    pub(crate) reports_load: bool,
}

impl ClusterState {
    /// The cluster's EDS service name, when it has one.
    pub(crate) fn eds_service_name(&self) -> Option<String> {
        self.cluster
            .as_ref()
            .and_then(|c| c.eds_service_name.clone())
    }

    /// (healthy, total) endpoints per priority level, and the overprovisioning factor.
    pub(crate) fn level_counts(&self) -> (&[(usize, usize)], u32) {
        self.plan.level_counts()
    }

    /// The panic threshold of its `common_lb_config` (percent; Envoy's default 50).
    pub(crate) fn panic_threshold(&self) -> f64 {
        self.cluster
            .as_ref()
            .and_then(|c| c.common_lb_config.as_ref())
            .and_then(|c| c.healthy_panic_threshold)
            .map_or(50.0, |p| p.value)
    }

    /// Its usable endpoints.
    pub(crate) fn endpoints(&self) -> &[EndpointInfo] {
        &self.endpoints
    }

    /// Picks an endpoint and its connection.
    /// Picks an endpoint that is not ejected and not in `avoid` (previous attempts' hosts),
    /// trying up to `attempts` extra picks for `avoid` (Envoy's
    /// `host_selection_retry_max_attempts`) and skipping ejected endpoints while any other is
    /// left (when all are ejected the pick stands: an ejected endpoint beats none, as in
    /// Envoy's panic mode).
    pub(crate) fn pick_avoiding(
        &self,
        ctx: &PickContext<'_>,
        avoid: &[SocketAddr],
        attempts: u32,
    ) -> Result<(&EndpointInfo, Arc<Connection>), MeshError> {
        let (mut first, mut tries) = (None, 0u32);
        let limit = self.endpoints.len().max(1) + attempts as usize;
        let mut ctx = *ctx;
        for _ in 0..limit {
            let picked = self.pick(&ctx)?;
            ctx.attempt += 1;
            let ejected = picked.0.stats.outlier.is_ejected();
            let avoided = avoid.contains(&picked.0.address);
            if !ejected && (!avoided || tries >= attempts) {
                return Ok(picked);
            }
            if avoided && !ejected {
                tries += 1;
            }
            first.get_or_insert(picked);
        }
        Ok(first.expect("at least one pick"))
    }

    pub(crate) fn pick(
        &self,
        ctx: &PickContext<'_>,
    ) -> Result<(&EndpointInfo, Arc<Connection>), MeshError> {
        let Some(cluster) = &self.cluster else {
            let why = match &self.absence.0 {
                Some(Absence::Pending) => {
                    "waiting for the cluster from the control plane".to_owned()
                }
                Some(Absence::Missing(why)) => format!("cluster does not exist: {why}"),
                None => "cluster is not in the config".to_owned(),
            };
            return Err(MeshError::new(ErrorKind::UnknownCluster, why));
        };
        match self.plan.pick(ctx) {
            Some(i) if i < self.endpoints.len() => Ok((&self.endpoints[i], self.conns[i].clone())),
            _ if self.total == 0 && cluster.discovery.is_dns() => {
                let names: Vec<&str> = cluster
                    .dns_endpoints
                    .iter()
                    .map(|d| d.hostname.as_str())
                    .collect();
                let why = match self.resolved.as_ref().and_then(|r| r.error.as_deref()) {
                    Some(e) => format!("no address for {names:?}: {e}"),
                    None => format!("no address for {names:?} resolved yet"),
                };
                Err(MeshError::new(ErrorKind::NoEndpoint, why))
            }
            _ if self.total == 0
                && cluster.discovery == DiscoveryType::Eds
                && self.eds.is_none() =>
            {
                let name = cluster.endpoints_name();
                let why = match &self.absence.1 {
                    Some(Absence::Pending) => {
                        format!("waiting for endpoints {name:?} from the control plane")
                    }
                    Some(Absence::Missing(why)) => {
                        format!("endpoints {name:?} do not exist: {why}")
                    }
                    None => format!("no endpoints: no endpoint set named {name:?} in the config"),
                };
                Err(MeshError::new(ErrorKind::NoEndpoint, why))
            }
            _ => Err(MeshError::new(
                ErrorKind::NoEndpoint,
                format!(
                    "no usable endpoint ({} of {} usable)",
                    self.endpoints
                        .iter()
                        .filter(|e| e.health_status.is_usable())
                        .count(),
                    self.total
                ),
            )),
        }
    }
}
