//! gRPC's xDS client metrics (gRFC A78) as the mesh's xDS client records them, read back from
//! the Prometheus exporter: valid and invalid resource updates per type, resources per cache
//! state, the stream's connected gauge and server failures. (Its own process: the exporter is
//! the process's recorder.)

mod support;

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use mesh_examples::backend::Backend;
use mesh_tower::telemetry::prometheus::PrometheusHandle;
use mesh_xds_client::build;
use mesh_xds_client::translate::ResourceType;
use support::ads::FakeAds;
use support::fake::*;
use support::*;

/// The value of the series `name` whose labels include all of `labels` (Prometheus names:
/// dots become underscores).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let name = name.replace('.', "_");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{}=\"{v}\"", k.replace('.', "_"))))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

/// Waits (bounded) until `f` holds of the rendered metrics: they are side effects of the
/// client's control work, with no event to await.
async fn until(handle: &PrometheusHandle, what: &str, f: impl Fn(&str) -> bool) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let text = handle.render();
            if f(&text) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}:\n{}", handle.render()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xds_client_reports_a78_metrics() {
    let handle = mesh_tower::telemetry::prometheus::install().unwrap();
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    // The server as the client dials it.
    let server = format!("http://{}", ads.addr);
    let (_mesh, _web) = ready_mesh(&ads, false, b1.addr()).await;
    let cds = ResourceType::Cluster.type_url();
    let text = until(&handle, "connected, four types valid", |t| {
        value(
            t,
            "grpc.xds_client.connected",
            &[("grpc.xds.server", &server)],
        ) == Some(1.0)
            && ResourceType::ALL[..4].iter().all(|ty| {
                value(
                    t,
                    "grpc.xds_client.resource_updates_valid",
                    &[("grpc.xds.resource_type", ty.type_url())],
                )
                .is_some_and(|v| v >= 1.0)
            })
    })
    .await;
    assert_eq!(
        value(
            &text,
            "grpc.xds_client.resources",
            &[
                ("grpc.xds.resource_type", cds),
                ("grpc.xds.cache_state", "acked"),
                ("grpc.xds.authority", "#old"),
                ("grpc.target", "mesh")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "grpc.xds_client.resource_updates_invalid", &[]),
        None
    );

    // An invalid cluster: counted invalid; the cached copy serves (nacked_but_cached).
    let mut bad = build::eds_cluster("web");
    bad.lb_policy = LbPolicy::ClusterProvided as i32;
    ads.set(snapshot_with(&[b2.addr()], bad));
    let text = until(&handle, "the invalid cluster counted", |t| {
        value(
            t,
            "grpc.xds_client.resource_updates_invalid",
            &[("grpc.xds.resource_type", cds)],
        ) == Some(1.0)
    })
    .await;
    let state = |s| {
        value(
            &text,
            "grpc.xds_client.resources",
            &[("grpc.xds.resource_type", cds), ("grpc.xds.cache_state", s)],
        )
    };
    assert_eq!(
        (state("nacked_but_cached"), state("acked")),
        (Some(1.0), Some(0.0)),
        "{text}"
    );

    // The control plane dies: the stream is down, and each failed reconnect is a server failure.
    ads.kill();
    until(&handle, "disconnected and failing", |t| {
        value(
            t,
            "grpc.xds_client.connected",
            &[("grpc.xds.server", &server)],
        ) == Some(0.0)
            && value(
                t,
                "grpc.xds_client.server_failure",
                &[("grpc.xds.server", &server)],
            )
            .is_some_and(|v| v >= 1.0)
    })
    .await;
}
