//! Envoy and the mesh on one go-control-plane snapshot, each with its own access loggers: the
//! setup of the access log oracles (formats, filters).

use super::PATIENCE;
use super::envoy::{Envoy, free_port};
use super::gocp::GoControlPlane;
use bytes::Bytes;
use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::Duration;

/// Both proxies, ready, with a client for each.
pub struct Pair {
    pub envoy: Envoy,
    pub mesh: Mesh,
    /// The mesh's channel to target `web`.
    pub web: MeshService<Full<Bytes>>,
    /// A plain HTTP client, for Envoy's listener.
    pub plain: Client<HttpConnector, Full<Bytes>>,
    /// How many readiness probes (`GET /`) Envoy answered, each a line of its logs before
    /// the test's.
    pub probes: usize,
    pub cp: GoControlPlane,
}

/// A request to `uri` with `headers`, `Host: web` and a 5-byte body.
pub fn request(method: &str, uri: String, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.header("host", "web")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap()
}

/// Envoy's socket listener with `theirs` and the mesh's API listener `web` with `ours`, both
/// routing everything to `backend` through EDS cluster `web`, from one go-control-plane;
/// returns once neither NACKed, the mesh's target is ready and Envoy answers on its
/// listener.
pub async fn start(backend: SocketAddr, theirs: Vec<AccessLog>, ours: Vec<AccessLog>) -> Pair {
    let cp = GoControlPlane::start();
    let envoy_addr = free_port();
    let mut socket = build::socket_listener("ingress", envoy_addr, "routes");
    build::edit_manager(&mut socket, |m| m.access_log = theirs.clone());
    let mut api = build::api_listener_rds("web", "routes");
    build::edit_manager(&mut api, |m| m.access_log = ours.clone());
    for (node, listener) in [("envoy", socket), ("mesh-client", api)] {
        let resources = [
            build::any(&listener),
            build::any(&build::route_config(
                "routes",
                &["*"],
                vec![build::route("/", "web")],
            )),
            build::any(&build::eds_cluster("web")),
            build::any(&build::assignment("web", &[backend])),
        ];
        cp.set(node, "1", &resources).await;
    }
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    let mesh = Mesh::from_xds(XdsClientBuilder::new(cp.ads.to_string(), "mesh-client"))
        .await
        .unwrap();
    let web = mesh.channel::<Full<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    let nack = (cp.events().await.into_iter()).find_map(|e| e.nack.map(|n| (e.node, n)));
    assert_eq!(nack, None, "nobody NACKed");
    let plain = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    // Envoy listens once it has its config from the control plane (it offers no event).
    let probes = tokio::time::timeout(PATIENCE, async {
        let mut answered = 0;
        loop {
            let probe = request("GET", format!("http://{}/", envoy.listener), &[]);
            if let Ok(res) = plain.request(probe).await {
                answered += 1;
                let ok = res.status().is_success();
                res.into_body().collect().await.unwrap();
                if ok {
                    return answered;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("Envoy serves its listener");
    Pair {
        envoy,
        mesh,
        web,
        plain,
        probes,
        cp,
    }
}

/// The lines `read` returns once there are at least `n` (Envoy and the mesh's file logs flush
/// every second, from another process, with no event to wait for); `None` after PATIENCE.
pub async fn at_least(n: usize, read: impl Fn() -> Vec<String>) -> Option<Vec<String>> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let lines = read();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .ok()
}
