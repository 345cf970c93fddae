//! gRFC A71's server fallback against two go-control-plane servers named in one bootstrap's
//! `xds_servers`: with the primary down and nothing cached, the client takes its config from
//! the fallback, and goes back to the primary once it is up; with everything cached, a primary
//! outage changes nothing until a resource that is not cached is wanted. Traffic runs
//! throughout and no request fails.

mod support;

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::Duration;
use support::gocp::GoControlPlane;
use support::*;

const NODE: &str = "mesh-client";

/// For each (name, backend): listener `name` → route config → `/` → EDS cluster `name` →
/// the backend.
fn snapshot(targets: &[(&str, SocketAddr)]) -> Vec<Any> {
    let mut out = Vec::new();
    for (name, backend) in targets {
        let routes = format!("{name}-routes");
        out.push(build::any(&build::api_listener_rds(name, &routes)));
        out.push(build::any(&build::route_config(
            &routes,
            &["*"],
            vec![build::route("/", name)],
        )));
        out.push(build::any(&build::eds_cluster(name)));
        out.push(build::any(&build::assignment(name, &[*backend])));
    }
    out
}

/// A mesh whose bootstrap names `primary` then `fallback`.
async fn mesh(primary: SocketAddr, fallback: SocketAddr, delta: bool) -> Mesh {
    let server = |addr: SocketAddr| {
        format!(
            r#"{{"server_uri": "{addr}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"]}}"#
        )
    };
    let json = format!(
        r#"{{"xds_servers": [{}, {}], "node": {{"id": "{NODE}"}}}}"#,
        server(primary),
        server(fallback)
    );
    let builder = XdsClientBuilder::from_bootstrap(Bootstrap::from_json(&json).unwrap())
        .delta(delta)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    Mesh::from_xds(builder).await.unwrap()
}

/// A loopback port with nothing listening (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (bounded) until `svc`'s requests reach `backend`.
async fn until_served_by(svc: &MeshService<Empty<Bytes>>, backend: SocketAddr) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok((_, served, _)) = get(svc, "/").await
                && served.endpoint == backend
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("requests never reached {backend}"));
}

async fn falls_back_and_returns(delta: bool) {
    let (on_fallback, on_primary) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let fallback = GoControlPlane::start();
    fallback
        .set(NODE, "f1", &snapshot(&[("web", on_fallback.addr())]))
        .await;
    let port = free_port();
    let mesh = mesh(([127, 0, 0, 1], port).into(), fallback.ads, delta).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    // The primary refuses connections and nothing is cached: the fallback serves.
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    until_served_by(&web, on_fallback.addr()).await;

    let traffic = Traffic::start(web.clone());
    traffic.wait_more(50).await;
    // The primary comes up with its own config: the client goes back to it.
    let primary = GoControlPlane::start_on(port);
    primary
        .set(NODE, "p1", &snapshot(&[("web", on_primary.addr())]))
        .await;
    until_served_by(&web, on_primary.addr()).await;
    traffic.wait_more(50).await;
    assert_eq!(
        traffic.stop().await,
        0,
        "no failed request across the switches"
    );
    let asked = |events: Vec<support::gocp::Event>| {
        events
            .iter()
            .any(|e| e.node == NODE && e.type_url == ResourceType::Listener.type_url())
    };
    assert!(asked(fallback.events().await), "the fallback was asked");
    assert!(asked(primary.events().await), "then the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_falls_back_while_the_primary_is_down_and_returns_to_it() {
    falls_back_and_returns(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_falls_back_while_the_primary_is_down_and_returns_to_it() {
    falls_back_and_returns(true).await;
}

/// With everything cached the primary's outage changes nothing (the cache serves); a new
/// target, not cached, is what sends the client to the fallback, which is then asked for
/// everything wanted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_config_outlives_the_primary_and_only_a_new_target_falls_back() {
    let (b1, b2, b3) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let primary = GoControlPlane::start();
    primary
        .set(NODE, "p1", &snapshot(&[("web", b1.addr())]))
        .await;
    let fallback = GoControlPlane::start();
    fallback
        .set(
            NODE,
            "f1",
            &snapshot(&[("web", b2.addr()), ("api", b3.addr())]),
        )
        .await;
    let mesh = mesh(primary.ads, fallback.ads, false).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    until_served_by(&web, b1.addr()).await;

    let traffic = Traffic::start(web.clone());
    let _ = primary.kill();
    traffic.wait_more(200).await;
    let (_, served, _) = get(&web, "/").await.unwrap();
    assert_eq!(served.endpoint, b1.addr(), "the cached config still serves");

    // A target nobody cached: the client falls back for it.
    let api = mesh.channel::<Empty<Bytes>>("xds:///api");
    mesh.wait_ready("xds:///api", PATIENCE).await.unwrap();
    until_served_by(&api, b3.addr()).await;
    // The fallback's answers replace the primary's: `web` moves to its backend.
    until_served_by(&web, b2.addr()).await;
    assert_eq!(traffic.stop().await, 0, "no failed request");
    // The fallback was first asked only once `api` was wanted: its first listener request
    // names it.
    let first = fallback
        .events()
        .await
        .into_iter()
        .find(|e| e.node == NODE && e.type_url == ResourceType::Listener.type_url())
        .expect("the fallback was asked");
    let names = first.names.unwrap_or_default();
    assert!(names.iter().any(|n| n == "api"), "first request: {names:?}");
}
