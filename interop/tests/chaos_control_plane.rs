//! The control plane killed and restarted ten times under load (issue "reliability"), over SotW
//! and over Delta: go-control-plane is a real process, SIGKILLed (streams break, nothing is
//! said) and started again on the same port with the next snapshot, while 32 callers keep
//! sending. The exact count of failed requests is zero: the last good config keeps serving
//! while the control plane is gone, and each new snapshot is applied after the restart.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::Mesh;
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::Duration;
use support::gocp::GoControlPlane;
use support::load::Load;
use support::*;

const NODE: &str = "mesh-client";
const RESTARTS: usize = 10;

async fn restarts(delta: bool) {
    let backends = [
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    ];
    let mut addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    addrs.sort();
    // Each restart serves the other of two endpoint sets; the one endpoint only in the new
    // set proves the new snapshot is in force.
    let sets = [vec![addrs[0], addrs[1]], vec![addrs[1], addrs[2]]];
    let mut cp = GoControlPlane::start();
    cp.set(
        NODE,
        "1",
        &web_resources(build::eds_cluster("web"), &sets[0]),
    )
    .await;
    let builder = XdsClientBuilder::new(cp.ads.to_string(), NODE)
        .delta(delta)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let mesh = Mesh::from_xds(builder).await.unwrap();
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    let load = Load::start(mesh.channel::<Empty<Bytes>>("xds:///web"), 32);
    load.wait_more(500).await;

    for i in 1..=RESTARTS {
        let port = cp.kill();
        // Gone: the last good config serves.
        load.wait_more(500).await;
        cp = GoControlPlane::start_on(port);
        // Resubscribed before the snapshot exists, so the order is fixed (see gocp.rs).
        cp.wait_for(|e| e.type_url == ResourceType::Listener.type_url())
            .await;
        let (old, new) = (&sets[(i - 1) % 2], &sets[i % 2]);
        cp.set(
            NODE,
            &(i + 1).to_string(),
            &web_resources(build::eds_cluster("web"), new),
        )
        .await;
        until_config(&mesh, |s| endpoints_of(s, "web") == *new).await;
        let joined = *new.iter().find(|a| !old.contains(a)).unwrap();
        load.wait_served(joined, 100).await;
    }
    let report = load.stop().await;
    eprintln!(
        "control plane SIGKILLed and restarted {RESTARTS} times ({}): {} requests, {} failed, \
         p50 {:?}, p99 {:?}, max {:?}",
        if delta { "Delta" } else { "SotW" },
        report.sent,
        report.failures.len(),
        report.quantile(0.5),
        report.quantile(0.99),
        report.quantile(1.0),
    );
    report.assert_none_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_control_plane_killed_ten_times_under_load_fails_no_request() {
    restarts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_control_plane_killed_ten_times_under_load_fails_no_request() {
    restarts(true).await;
}
