//! Load reporting (LRS, `envoy.service.load_stats.v3`): per-locality request counts of the
//! clusters whose config says `lrs_server: { self: {} }`, sent to the control plane they came
//! from, as often as it asks.
//!
//! Why a task per control plane, started by the mesh: the counts live in the mesh's data
//! plane ([`LoadReporter`]), which exists only once the client has fed it; the task holds a
//! weak reference to them, so it keeps neither the mesh nor the client alive. It runs while a
//! cluster of its server asks for reports: it opens the stream (the node, with the
//! `envoy.lrs.supports_send_all_clusters` feature), learns from the server which clusters
//! and how often, and reports each interval what the mesh counted since the last report.
//! When no cluster asks any more it closes the stream; a broken stream is reopened with the
//! ADS stream's backoff.

use super::{Shared, stream};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterStats, EndpointLoadMetricStats, UpstreamLocalityStats,
};
use envoy_types::pb::envoy::service::load_stats::v3::load_reporting_service_client::LoadReportingServiceClient;
use envoy_types::pb::envoy::service::load_stats::v3::{LoadStatsRequest, LoadStatsResponse};
use mesh_tower::cluster::load::{ClusterLoad, LoadReporter};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The feature that tells an LRS server the client takes `send_all_clusters`.
const SEND_ALL_CLUSTERS: &str = "envoy.lrs.supports_send_all_clusters";

/// Stream `index`'s load reporting: runs until the client is dropped.
pub(super) async fn run(shared: Arc<Shared>, index: usize, reporter: LoadReporter) {
    let slot = &shared.streams[index];
    let (initial, max) = slot.servers[0].backoff;
    let mut changed = shared.store.changed();
    let mut failures: u32 = 0;
    loop {
        // Until a cluster of this server asks for reports.
        while reporting(&shared, index).is_empty() {
            if changed.changed().await.is_err() {
                return;
            }
        }
        match report(&shared, index, &reporter).await {
            Ok(()) => failures = 0,
            Err(e) => {
                tracing::warn!(uri = %slot.settings().uri, error = %e, "LRS stream failed");
                failures += 1;
                let cap = initial.saturating_mul(1u32 << failures.min(16)).min(max);
                tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
            }
        }
    }
}

/// The clusters in the store that this server serves and that ask for load reports.
fn reporting(shared: &Shared, index: usize) -> Vec<(String, Option<String>)> {
    let snap = shared.store.load();
    snap.names(mesh_core::ResourceKind::Cluster)
        .into_iter()
        .filter_map(|name| snap.cluster(name).map(|c| (name.to_owned(), c)))
        .filter(|(name, c)| {
            c.lrs_report
                && shared
                    .routing
                    .server_for(crate::translate::ResourceType::Cluster, name)
                    == Ok(index)
        })
        .map(|(name, c)| (name, c.eds_service_name.clone()))
        .collect()
}

/// One LRS stream: returns when no cluster asks for reports any more, or fails.
async fn report(
    shared: &Arc<Shared>,
    index: usize,
    reporter: &LoadReporter,
) -> Result<(), BoxError> {
    let settings = shared.streams[index].settings();
    let channel = stream::connect(&settings.uri, settings.tls.as_ref()).await?;
    let mut client = LoadReportingServiceClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut node = super::node_proto(&shared.bootstrap.node);
    node.client_features.push(SEND_ALL_CLUSTERS.into());
    tx.send(LoadStatsRequest {
        node: Some(node),
        cluster_stats: Vec::new(),
    })?;
    let token = match &settings.token {
        Some(path) => Some(tokio::fs::read_to_string(path).await?.trim().to_owned()),
        None => None,
    };
    let call = stream::with_token(UnboundedReceiverStream::new(rx), &token)?;
    let mut inbound = client.stream_load_stats(call).await?.into_inner();
    // What the server asked for: all clusters or these, how often.
    let mut asked: Option<LoadStatsResponse> = None;
    let mut last = Instant::now();
    let mut changed = shared.store.changed();
    loop {
        let interval = asked
            .as_ref()
            .and_then(|a| a.load_reporting_interval.as_ref())
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .filter(|d| !d.is_zero());
        let next = async {
            match interval {
                Some(d) => tokio::time::sleep_until(last + d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbound.message() => match msg? {
                Some(resp) => {
                    // The first answer starts the first interval; a later one changes them.
                    if asked.is_none() {
                        last = Instant::now();
                    }
                    asked = Some(resp);
                }
                None => return Err("the server ended the LRS stream".into()),
            },
            () = next => {
                let now = Instant::now();
                let elapsed = now - last;
                last = now;
                let wanted = reporting(shared, index);
                if wanted.is_empty() {
                    return Ok(());
                }
                let stats = cluster_stats(asked.as_ref(), &wanted, reporter, elapsed);
                tx.send(LoadStatsRequest { node: None, cluster_stats: stats })?;
            }
            r = changed.changed() => {
                r?;
                if reporting(shared, index).is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// The report of each asked-for cluster that asks for reports.
fn cluster_stats(
    asked: Option<&LoadStatsResponse>,
    wanted: &[(String, Option<String>)],
    reporter: &LoadReporter,
    interval: Duration,
) -> Vec<ClusterStats> {
    let all = asked.is_some_and(|a| a.send_all_clusters);
    wanted
        .iter()
        .filter(|(name, _)| all || asked.is_some_and(|a| a.clusters.contains(name)))
        .filter_map(|(name, _)| reporter.take(name))
        .map(|load| stats_of(load, interval))
        .collect()
}

fn stats_of(load: ClusterLoad, interval: Duration) -> ClusterStats {
    ClusterStats {
        cluster_name: load.cluster,
        cluster_service_name: load.service_name.unwrap_or_default(),
        upstream_locality_stats: load
            .localities
            .into_iter()
            .map(|l| UpstreamLocalityStats {
                locality: Some(core::Locality {
                    region: l.locality.region,
                    zone: l.locality.zone,
                    sub_zone: l.locality.sub_zone,
                }),
                total_successful_requests: l.succeeded,
                total_requests_in_progress: l.in_progress,
                total_error_requests: l.errored,
                total_issued_requests: l.issued,
                // gRFC A64: named metrics from per-response ORCA reports.
                load_metric_stats: l
                    .metrics
                    .into_iter()
                    .map(|m| EndpointLoadMetricStats {
                        metric_name: m.name,
                        num_requests_finished_with_metric: m.requests,
                        total_metric_value: m.total,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        total_dropped_requests: load.dropped,
        load_report_interval: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: interval.as_secs() as i64,
            nanos: interval.subsec_nanos() as i32,
        }),
        ..Default::default()
    }
}
