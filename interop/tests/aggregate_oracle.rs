//! Nested aggregate clusters (gRFC A37) with grpc-go's proxyless client as the oracle.
//!
//! One go-control-plane snapshot for both: route → aggregate `top` = [`mid`, `c3`], where
//! `mid` is itself an aggregate = [`c1`, `c2`]; each `c*` an EDS cluster of one gRPC echo.
//! Flattened depth-first that is [c1, c2, c3]: calls go to the first with a healthy endpoint.
//! As the snapshot marks endpoints unhealthy or healthy again, every call of both clients
//! goes to the same backend. (Envoy does not take nested aggregates, so grpc-go is the
//! oracle here; lb_oracle.rs compares one level with Envoy.)

mod support;

use envoy_types::pb::google::protobuf::Any;
use mesh_examples::greeter::{GreeterClient, HelloRequest};
use mesh_tower::Mesh;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use support::go_oracle::{Outcomes, grpc_echo, grpc_go, reply};
use support::gocp::GoControlPlane;
use support::*;

const TARGET: &str = "xds:///web";

fn snapshot(backends: &[SocketAddr; 3], healthy: [bool; 3]) -> Vec<Any> {
    let mut resources = vec![
        build::any(&build::api_listener_rds("web", "routes")),
        build::any(&build::route_config(
            "routes",
            &["*"],
            vec![build::route("/", "top")],
        )),
        build::any(&aggregate("top", &["mid", "c3"])),
        build::any(&aggregate("mid", &["c1", "c2"])),
    ];
    for (i, (addr, up)) in backends.iter().zip(healthy).enumerate() {
        let name = format!("c{}", i + 1);
        let mut cla = build::assignment(&name, &[]);
        cla.endpoints = vec![build::locality("a", 0, 1, &[*addr], &[up])];
        resources.push(build::any(&build::eds_cluster(&name)));
        resources.push(build::any(&cla));
    }
    resources
}

/// An aggregate cluster as gRPC takes it: Envoy wants `lb_policy: CLUSTER_PROVIDED` on
/// one, which grpc-go NACKs, so the default (round robin) stays.
fn aggregate(
    name: &str,
    clusters: &[&str],
) -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    let mut c = build::aggregate_cluster(name, clusters);
    c.lb_policy = 0;
    c
}

/// `n` SayHello calls through the mesh, by outcome (as grpcpeer reports them).
async fn mesh_calls(mesh: &Mesh, n: usize) -> Outcomes {
    let mut client = GreeterClient::new(mesh.channel(TARGET));
    let mut out = Outcomes::new();
    for _ in 0..n {
        let req = tonic::Request::new(HelloRequest { name: "a".into() });
        let key = match client.say_hello(req).await {
            Ok(r) => format!("reply {}", r.into_inner().message),
            Err(s) => format!("{:?}", s.code()),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_aggregates_fail_over_as_grpc_go_does() {
    let backends = [grpc_echo().await, grpc_echo().await, grpc_echo().await];
    let cp = GoControlPlane::start();
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        serde_json::json!({
            "xds_servers": [{"server_uri": cp.ads.to_string(),
                             "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "grpc-go"},
        })
        .to_string(),
    )
    .unwrap();
    let mesh = Mesh::from_xds(XdsClientBuilder::new(cp.ads.to_string(), "mesh"))
        .await
        .unwrap();
    let steps = [
        // c1 down: [c1, c2, c3] → c2.
        ([false, true, true], 1),
        // c2 down too: the last resort c3, through the outer aggregate.
        ([false, false, true], 2),
        // c1 back: the first of the flattened list again.
        ([true, false, true], 0),
    ];
    for (version, (healthy, to)) in steps.into_iter().enumerate() {
        let resources = snapshot(&backends, healthy);
        let version = (version + 1).to_string();
        for node in ["mesh", "grpc-go"] {
            cp.set(node, &version, &resources).await;
        }
        let want = reply(backends[to], "-");
        // Ours follows the snapshot once it arrives; grpc-go's client starts afresh each batch.
        mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !mesh_calls(&mesh, 1).await.contains_key(&want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "step {version}: the mesh never sent to {}",
                backends[to]
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let ours = mesh_calls(&mesh, 20).await;
        let theirs = grpc_go(&bootstrap, TARGET, 20, &[]).await;
        let expected = Outcomes::from([(want, 20)]);
        assert_eq!(theirs, expected, "step {version}: grpc-go");
        assert_eq!(ours, expected, "step {version}: mesh");
    }
}
