//! xDS federation (gRFC A47) against two real go-control-plane servers: the bootstrap's
//! top-level server serves old-style names, authority `team-b` is a second server serving
//! `xdstp://team-b/…` names, and authority `alias-a` has no servers of its own (the top-level
//! one serves it). A route from the first control plane names a cluster of the second; a
//! target `xds://team-b/api` starts at the second. Each in SotW and Delta.

mod support;

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::build;
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::net::SocketAddr;
use std::time::Duration;
use support::gocp::{Event, GoControlPlane};
use support::*;

const NODE: &str = "fed-client";
const B_LISTENER: &str = "xdstp://team-b/envoy.config.listener.v3.Listener/api";
const B_ROUTES: &str = "xdstp://team-b/envoy.config.route.v3.RouteConfiguration/api";
const B_CLUSTER: &str = "xdstp://team-b/envoy.config.cluster.v3.Cluster/api";
const B_EDS: &str = "xdstp://team-b/envoy.config.endpoint.v3.ClusterLoadAssignment/api";
const ALIAS_CLUSTER: &str = "xdstp://alias-a/envoy.config.cluster.v3.Cluster/alias?env=prod";
const ALIAS_EDS: &str = "xdstp://alias-a/envoy.config.endpoint.v3.ClusterLoadAssignment/alias";

/// An EDS cluster whose endpoints resource is named explicitly (required for xdstp: names).
fn cluster(name: &str, eds: &str) -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    let mut c = build::eds_cluster(name);
    c.eds_cluster_config.as_mut().unwrap().service_name = eds.into();
    c
}

/// Top-level server: listener `web` → `/local` to `local` (its own), `/alias` to an
/// `alias-a` cluster (its own too), everything else to team-b's cluster.
fn snapshot_a(local: SocketAddr, alias: SocketAddr) -> Vec<Any> {
    vec![
        build::any(&build::api_listener_rds("web", "web-routes")),
        build::any(&build::route_config(
            "web-routes",
            &["*"],
            vec![
                build::route("/local", "local"),
                build::route("/alias", ALIAS_CLUSTER),
                build::route("/", B_CLUSTER),
            ],
        )),
        build::any(&build::eds_cluster("local")),
        build::any(&build::assignment("local", &[local])),
        build::any(&cluster(ALIAS_CLUSTER, ALIAS_EDS)),
        build::any(&build::assignment(ALIAS_EDS, &[alias])),
    ]
}

/// Authority team-b's server: its own listener and routes, and the cluster both use.
fn snapshot_b(api: SocketAddr) -> Vec<Any> {
    vec![
        build::any(&build::api_listener_rds(B_LISTENER, B_ROUTES)),
        build::any(&build::route_config(
            B_ROUTES,
            &["*"],
            vec![build::route("/", B_CLUSTER)],
        )),
        build::any(&cluster(B_CLUSTER, B_EDS)),
        build::any(&build::assignment(B_EDS, &[api])),
    ]
}

fn bootstrap(a: &GoControlPlane, b: &GoControlPlane) -> Bootstrap {
    let server = |addr: SocketAddr| {
        serde_json::json!([{"server_uri": addr.to_string(),
                            "channel_creds": [{"type": "insecure"}]}])
    };
    let json = serde_json::json!({
        "xds_servers": server(a.ads),
        "node": {"id": NODE},
        "authorities": {
            "team-b": {"xds_servers": server(b.ads)},
            "alias-a": {},
        },
    });
    Bootstrap::from_json(&json.to_string()).unwrap()
}

async fn served(svc: &MeshService<Empty<Bytes>>, path: &str) -> (String, SocketAddr) {
    let (_, s, _) = get(svc, path)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (s.cluster.to_string(), s.endpoint)
}

async fn until(svc: &MeshService<Empty<Bytes>>, path: &str, want: (&str, SocketAddr)) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok((_, s, _)) = get(svc, path).await
                && s.cluster.as_ref() == want.0
                && s.endpoint == want.1
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{path} never reached {want:?}"));
}

fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| e.names.clone().unwrap_or_default())
        .collect()
}

async fn federation(delta: bool) {
    let (local, alias, api, api2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let (cp_a, cp_b) = (GoControlPlane::start(), GoControlPlane::start());
    cp_a.set(NODE, "1", &snapshot_a(local.addr(), alias.addr()))
        .await;
    cp_b.set(NODE, "1", &snapshot_b(api.addr())).await;
    let builder = XdsClientBuilder::from_bootstrap(bootstrap(&cp_a, &cp_b))
        .delta(delta)
        .resource_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let mesh = Mesh::from_xds(builder).await.unwrap();
    let client = mesh.xds_client().unwrap();
    let uris: Vec<String> = client
        .servers()
        .iter()
        .map(|s| s.server_uri.clone())
        .collect();
    assert_eq!(
        uris,
        [cp_a.ads.to_string(), cp_b.ads.to_string()],
        "alias-a shares the top-level stream"
    );

    // A route from the top-level control plane to a cluster of team-b's.
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    assert_eq!(served(&web, "/").await, (B_CLUSTER.into(), api.addr()));
    assert_eq!(served(&web, "/local").await, ("local".into(), local.addr()));
    assert_eq!(
        served(&web, "/alias").await,
        (ALIAS_CLUSTER.into(), alias.addr())
    );

    // A target with an authority starts at that authority's server.
    let team_b = mesh.channel::<Empty<Bytes>>("xds://team-b/api");
    mesh.wait_ready("xds://team-b/api", PATIENCE).await.unwrap();
    assert_eq!(served(&team_b, "/").await, (B_CLUSTER.into(), api.addr()));

    // An authority the bootstrap lacks: a clear error at once, no waiting for a timeout.
    let nowhere = mesh.channel::<Empty<Bytes>>("xds://nowhere/api");
    let err = tokio::time::timeout(Duration::from_secs(2), get(&nowhere, "/"))
        .await
        .expect("fails without waiting for the resource timeout")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("authority \"nowhere\" is not in the bootstrap's authorities"),
        "{err}"
    );

    // Each server was asked only for its own names.
    let (a_names, b_names) = (names(&cp_a.events().await), names(&cp_b.events().await));
    assert!(
        a_names.iter().all(|n| !n.starts_with("xdstp://team-b/")),
        "{a_names:?}"
    );
    assert!(a_names.iter().any(|n| n == ALIAS_EDS), "{a_names:?}");
    assert!(
        b_names.iter().all(|n| n.starts_with("xdstp://team-b/")),
        "{b_names:?}"
    );
    for want in [B_LISTENER, B_ROUTES, B_CLUSTER, B_EDS] {
        assert!(b_names.iter().any(|n| n == want), "{want}: {b_names:?}");
    }
    assert!(
        cp_a.events()
            .await
            .iter()
            .chain(&cp_b.events().await)
            .all(|e| e.nack.is_none() && e.delta == delta),
        "no NACKs, one protocol"
    );

    // team-b's control plane changes its endpoints: both paths follow.
    cp_b.set(NODE, "2", &snapshot_b(api2.addr())).await;
    until(&web, "/", (B_CLUSTER, api2.addr())).await;
    until(&team_b, "/", (B_CLUSTER, api2.addr())).await;
    let status = client.resource_status();
    assert_eq!(
        status[&ResourceType::ClusterLoadAssignment][B_EDS].state,
        "acked"
    );

    // team-b's control plane dies: its cached config keeps serving, and so does the other's.
    drop(cp_b);
    for _ in 0..5 {
        assert_eq!(served(&web, "/").await, (B_CLUSTER.into(), api2.addr()));
        assert_eq!(served(&team_b, "/").await, (B_CLUSTER.into(), api2.addr()));
        assert_eq!(served(&web, "/local").await, ("local".into(), local.addr()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_federation_across_two_control_planes() {
    federation(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_federation_across_two_control_planes() {
    federation(true).await;
}
