//! Load reports (Envoy's LRS, `envoy.service.load_stats.v3`): what the mesh sent to each
//! locality of a cluster since the last report.
//!
//! Why counters here and not in telemetry: a control plane that balances across clients
//! (Traffic Director, a go-control-plane server doing global load balancing) asks for
//! per-locality counts of requests issued, succeeded and failed and in progress, whether or
//! not the application exports metrics. The counters live with each endpoint's stats (so
//! they survive config updates) and are only touched for clusters whose config asks for
//! reports (`lrs_report`): three relaxed atomic adds per request there, nothing elsewhere. A
//! report takes them (swap to zero), so each report covers the time since the previous one.

use super::registry::Registry;
use std::sync::Weak;
use std::sync::atomic::Ordering;

/// One cluster's load since the previous report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterLoad {
    /// The cluster.
    pub cluster: String,
    /// Its EDS service name, when it has one.
    pub service_name: Option<String>,
    /// Per locality of its endpoints.
    pub localities: Vec<LocalityLoad>,
    /// Requests refused by the cluster's circuit breaker (`max_requests`) before any endpoint.
    pub dropped: u64,
}

/// One locality's load since the previous report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalityLoad {
    /// The locality (region, zone, sub-zone).
    pub locality: mesh_core::config::endpoint::Locality,
    /// Requests sent to its endpoints.
    pub issued: u64,
    /// Of those, answered without an error (a status below 500 and, for gRPC, `OK` or a
    /// status in the trailers; a stream's final status is not waited for).
    pub succeeded: u64,
    /// Of those, failed: no answer, a 5xx, or a gRPC error status in the answer's head.
    pub errored: u64,
    /// Requests in flight at the time of the report.
    pub in_progress: u64,
}

/// Reads the load of a mesh's clusters for a load-reporting client (see
/// [`Mesh::load_reporter`](crate::Mesh::load_reporter)). It does not keep the mesh alive.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = mesh_tower::Mesh::from_config(mesh_core::MeshConfig::from_yaml("clusters: []")?).await?;
/// let reporter = mesh.load_reporter();
/// assert!(reporter.take("web").is_none(), "no such cluster in use");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct LoadReporter {
    pub(crate) registry: Weak<Registry>,
}

impl LoadReporter {
    /// `cluster`'s load since the last call (its counters restart at zero), or `None` when the
    /// cluster carries no traffic yet, or the mesh is gone.
    pub fn take(&self, cluster: &str) -> Option<ClusterLoad> {
        let registry = self.registry.upgrade()?;
        let handle = registry.existing(cluster)?;
        let state = handle.current();
        let mut localities: Vec<LocalityLoad> = Vec::new();
        for e in state.endpoints() {
            let (issued, succeeded, errored) = e.stats.load.take();
            let in_progress = e.stats.in_flight();
            let at = match localities.iter().position(|l| l.locality == *e.locality) {
                Some(i) => i,
                None => {
                    localities.push(LocalityLoad {
                        locality: (*e.locality).clone(),
                        ..LocalityLoad::default()
                    });
                    localities.len() - 1
                }
            };
            let l = &mut localities[at];
            l.issued += issued;
            l.succeeded += succeeded;
            l.errored += errored;
            l.in_progress += in_progress;
        }
        Some(ClusterLoad {
            cluster: cluster.to_owned(),
            service_name: state.eds_service_name(),
            localities,
            dropped: handle.dropped.swap(0, Ordering::Relaxed),
        })
    }
}
