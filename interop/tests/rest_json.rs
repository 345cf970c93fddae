//! REST-JSON polling (Envoy's `api_type: REST`) against sovereign, a real REST control plane
//! from PyPI.
//!
//! sovereign serves an API listener, a route config, an EDS cluster and its endpoints as
//! `POST /v3/discovery:<type>` JSON. The mesh polls it (every 100 ms here), routes to the
//! first backend, follows a change of endpoints, NACKs an invalid cluster (sovereign's access
//! log shows the error detail the next poll carried) while keeping the last good config, and
//! recovers when the config is fixed.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_interop::sovereign::Sovereign;
use mesh_tower::Mesh;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use support::fake::{served_by, until_served_by};
use support::*;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn resources(endpoint: SocketAddr, lb_policy: &str) -> Value {
    json!({
        "listeners": [{
            "name": "web",
            "api_listener": {"api_listener": {
                "@type": HCM,
                "stat_prefix": "web",
                "rds": {"route_config_name": "routes", "config_source": {"ads": {}}},
                "http_filters": [{"name": "router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }}
        }],
        "routes": [{
            "name": "routes",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "one"}}]}]
        }],
        "clusters": [{
            "name": "one",
            "type": "EDS",
            "lb_policy": lb_policy,
            "eds_cluster_config": {"eds_config": {"ads": {}}}
        }],
        "endpoints": [{
            "cluster_name": "one",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": endpoint.port()}}}}]}]
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_polls_sovereign_and_follows_nacks_and_changes() {
    let (a, b) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let cp = Sovereign::start(&resources(a.addr(), "ROUND_ROBIN")).await;
    let mesh = Mesh::from_xds(
        XdsClientBuilder::new(format!("http://{}", cp.addr), "mesh-rest")
            .rest_json()
            .refresh_delay(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    if let Err(e) = mesh.wait_ready("xds:///web", PATIENCE).await {
        let log: Vec<String> = cp.lines.try_iter().collect();
        panic!("{e}; sovereign said:\n{}", log.join("\n"));
    }
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    assert_eq!(served_by(&web).await.unwrap(), a.addr());

    // New endpoints: picked up by the next poll.
    cp.set(&resources(b.addr(), "ROUND_ROBIN"));
    until_served_by(&web, b.addr()).await;

    // A cluster the mesh cannot use: NACKed on the next poll, the last good one kept.
    cp.set(&resources(b.addr(), "CLUSTER_PROVIDED"));
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let nacked = tokio::task::block_in_place(|| {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match cp.lines.recv_timeout(left) {
                Ok(line) if line.contains("discovery:clusters") && line.contains("lb_policy") => {
                    return line;
                }
                Ok(line) => seen.push(line),
                Err(e) => panic!(
                    "no NACK reached sovereign ({e}); it said:\n{}",
                    seen.join("\n")
                ),
            }
        }
    });
    // The NACK names the cluster and keeps the version accepted before (SotW's rule).
    let line: Value = serde_json::from_str(&nacked).unwrap();
    assert!(
        line["error_detail"].as_str().unwrap().contains("\"one\""),
        "{nacked}"
    );
    let (client, server) = line["resource_version"]
        .as_str()
        .unwrap()
        .split_once(" -> ")
        .unwrap();
    assert!(!client.is_empty() && client != server, "{nacked}");
    assert_eq!(served_by(&web).await.unwrap(), b.addr());
    let status = mesh.store().source_status().borrow().clone();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("lb_policy")),
        "{status:?}"
    );

    // Fixed: applied again (the endpoints changed meanwhile too).
    cp.set(&resources(a.addr(), "ROUND_ROBIN"));
    until_served_by(&web, a.addr()).await;
}
