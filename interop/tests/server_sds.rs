//! A server whose certificate and client roots come as SDS secrets on the ADS stream
//! (Envoy's way, what go-control-plane-based control planes send): go-control-plane serves the
//! server listener (gRFC A36) naming the secrets, then the secrets. The server is not ready
//! until they arrive (as Envoy warms a listener), then serves mTLS with them, and a rotated
//! certificate reaches new handshakes without a restart.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::pki::DevCa;
use mesh_tower::Mesh;
use mesh_tower::tls::PeerIdentity;
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use tower::ServiceExt;

const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/backend";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

/// One GET through `client`: status, body, and the serial of the certificate the server
/// presented.
async fn call(client: &Mesh) -> (u16, String, String) {
    let req = http::Request::get("http://web/sds")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = client
        .channel::<Empty<Bytes>>("xds:///web")
        .oneshot(req)
        .await
        .unwrap();
    let serial = res
        .extensions()
        .get::<PeerIdentity>()
        .map(|p| p.serial().to_owned())
        .unwrap_or_default();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xds_server_waits_for_its_sds_secrets_then_serves_and_rotates_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("sds server root");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = format!("xds.istio.io/grpc/lds/inbound/{addr}");
    let server_listener = build::any(&build::server_listener(
        &name,
        addr,
        Some(build::downstream_mtls_sds("server-cert", "mesh-roots")),
        vec![],
    ));
    let with_leaf = |leaf: &mesh_examples::pki::Issued| {
        vec![
            server_listener.clone(),
            build::any(&build::tls_secret(
                "server-cert",
                &leaf.cert_pem,
                &leaf.key_pem,
            )),
            build::any(&build::roots_secret("mesh-roots", &ca.root_pem())),
        ]
    };
    let cp = support::gocp::GoControlPlane::start();
    cp.set("backend", "1", std::slice::from_ref(&server_listener))
        .await;
    // No certificate provider in the bootstrap: everything TLS comes over ADS.
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": "backend"},
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    });
    let backend = Mesh::from_xds(XdsClientBuilder::from_bootstrap(
        Bootstrap::from_json(&json.to_string()).unwrap(),
    ))
    .await
    .unwrap();
    let waiting = tokio::spawn({
        let backend = backend.clone();
        async move { backend.xds_server(addr, support::PATIENCE).await }
    });
    // The listener arrives and the secrets are asked for; the server is not ready yet.
    cp.wait_for(|e| {
        e.type_url.ends_with("Secret") && e.names.iter().flatten().any(|n| n == "server-cert")
    })
    .await;
    assert!(!waiting.is_finished(), "ready without its secrets");

    let first = ca.issue_spiffe(SERVER_ID);
    cp.set("backend", "2", &with_leaf(&first)).await;
    let server = waiting
        .await
        .unwrap()
        .expect("ready once the secrets arrive");
    assert!(server.tls().is_some());
    let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(server.clone().serve(listener, echo));

    let files = ca
        .write_workload(&dir.path().join("client"), &ca.issue_spiffe(CLIENT_ID))
        .unwrap();
    let client = || async {
        let yaml = mesh_examples::yaml::mtls_web_config(&files, &[addr], SERVER_ID, true);
        Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
            .await
            .unwrap()
    };
    let (status, body, serial) = call(&client().await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!("{addr} /sds {CLIENT_ID}\n"),
        "the server verified us with the SDS roots"
    );
    assert_eq!(
        serial, first.serial,
        "the server presented the SDS certificate"
    );

    // A rotated certificate: new handshakes present it, no restart, no drain needed.
    let second = ca.issue_spiffe(SERVER_ID);
    cp.set("backend", "3", &with_leaf(&second)).await;
    cp.wait_for(|e| e.type_url.ends_with("Secret") && e.version == "3" && e.nack.is_none())
        .await;
    // Acknowledged; the provider takes the new material right after.
    let rotated = tokio::time::timeout(support::PATIENCE, async {
        loop {
            if call(&client().await).await.2 == second.serial {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    assert!(
        rotated.await.is_ok(),
        "the rotated certificate never reached a handshake"
    );
}
