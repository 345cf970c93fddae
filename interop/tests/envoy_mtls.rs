//! mTLS against Envoy, the peer every mesh sidecar is: our client, configured over ADS by
//! go-control-plane (bootstrap `certificate_providers`, A29 `UpstreamTlsContext` on an EDS
//! cluster), calls an Envoy listener that requires a client certificate and matches the
//! caller's SPIFFE ID; and Envoy, as an mTLS client, calls our server. Each side judges the
//! other with its own TLS stack (BoringSSL against rustls), so a certificate, SAN or ALPN
//! that only we accept fails here.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::pki::WorkloadFiles;
use mesh_interop::envoy::{Envoy, free_port};
use mesh_tower::tls::PeerIdentity;
use mesh_tower::{ErrorKind, Mesh};
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use support::envoy_tls::*;
use support::gocp::GoControlPlane;

/// API listener `name` → route config → EDS cluster `name` (HTTP/2, mesh mTLS expecting
/// `expect`) → `endpoint`.
fn mtls_resources(
    name: &str,
    expect: &str,
    endpoint: SocketAddr,
) -> Vec<envoy_types::pb::google::protobuf::Any> {
    tls_resources(name, build::mesh_tls("default", &[expect]), endpoint)
}

/// A mesh on `cp` whose bootstrap names provider `default` watching `files`, as Istio's agent
/// writes it for proxyless gRPC.
async fn xds_mesh(cp: &GoControlPlane, node: &str, files: &WorkloadFiles) -> Mesh {
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": node},
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": files.cert,
            "private_key_file": files.key,
            "ca_certificate_file": files.roots,
            "refresh_interval": "600s",
        }}},
    });
    let bootstrap = Bootstrap::from_json(&json.to_string()).unwrap();
    Mesh::from_xds(XdsClientBuilder::from_bootstrap(bootstrap))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_xds_configured_client_calls_an_envoy_mtls_listener() {
    let pki = Pki::new();
    let (client, intruder, envoy_files) = (
        pki.workload("client", CLIENT_ID),
        pki.workload("intruder", INTRUDER_ID),
        pki.workload("envoy", ENVOY_ID),
    );
    let (listener, admin_addr) = (free_port(), free_port());
    let envoy = Envoy::start_static(
        &envoy_server_config(listener, admin_addr, &envoy_files),
        listener,
    );
    envoy.wait_listening(listener, ENVOY_START).await;

    let cp = GoControlPlane::start();
    let mut resources = mtls_resources("web", ENVOY_ID, listener);
    // The same Envoy, expected under another identity: our verifier must refuse it.
    resources.extend(mtls_resources(
        "strict",
        "spiffe://cluster.local/ns/edge/sa/not-envoy",
        listener,
    ));
    cp.set(NODE, "1", &resources).await;
    cp.set("intruder", "1", &resources).await;

    let mesh = xds_mesh(&cp, NODE, &client).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", support::PATIENCE)
        .await
        .unwrap();
    let res = call(&web).await.expect("mTLS through Envoy");
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().as_ref(), b"envoy");
    assert_eq!(
        res.headers()["x-peer"],
        CLIENT_ID,
        "Envoy saw our SPIFFE ID"
    );
    let peer = res
        .extensions()
        .get::<PeerIdentity>()
        .expect("peer identity");
    assert_eq!(peer.spiffe_id(), Some(ENVOY_ID), "we saw Envoy's");

    // Envoy presents ENVOY_ID where NOT-ENVOY is required: refused, naming what it presented.
    let strict = mesh.channel::<Empty<Bytes>>("xds:///strict");
    mesh.wait_ready("xds:///strict", support::PATIENCE)
        .await
        .unwrap();
    let e = call(&strict).await.expect_err("wrong identity refused");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    let text = e.to_string();
    assert!(text.contains("strict") && text.contains(ENVOY_ID), "{text}");

    // A workload of the same trust domain but not the allowed caller: Envoy refuses it.
    let before = stat(
        &Envoy::stats(admin_addr, "ssl").await,
        "ssl.fail_verify_san",
    );
    let other = xds_mesh(&cp, "intruder", &intruder).await;
    let web = other.channel::<Empty<Bytes>>("xds:///web");
    other
        .wait_ready("xds:///web", support::PATIENCE)
        .await
        .unwrap();
    let e = call(&web).await.expect_err("Envoy refuses the intruder");
    let after = stat(
        &Envoy::stats(admin_addr, "ssl").await,
        "ssl.fail_verify_san",
    );
    assert!(
        after > before,
        "Envoy's ssl.fail_verify_san {before} -> {after}; our error: {e}"
    );
}

/// Envoy as the mTLS client of our server: a plaintext listener routing to a TLS cluster (its
/// certificate ENVOY_ID, our server's SAN required, HTTP/2 by ALPN), and a second cluster with
/// no client certificate that our server must turn away.
fn envoy_client_config(
    listener: SocketAddr,
    admin_addr: SocketAddr,
    server: SocketAddr,
    files: &WorkloadFiles,
) -> String {
    let cluster = |name: &str, tls: &str| {
        format!(
            r#"
    - name: {name}
      type: STATIC
      connect_timeout: 2s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: backend.shop.svc.cluster.local
          common_tls_context:{tls}"#,
            port = server.port(),
        )
    };
    let with_cert = envoy_tls_context(files, SERVER_ID, "h2");
    let anonymous = format!(
        r#"
            alpn_protocols: [h2]
            validation_context: {{ trusted_ca: {{ filename: "{}" }} }}"#,
        files.roots.display()
    );
    format!(
        r#"{head}                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - {{ match: {{ prefix: /anonymous }}, route: {{ cluster: anonymous }} }}
                        - {{ match: {{ prefix: / }}, route: {{ cluster: mesh }} }}
  clusters:{mesh}{anon}
"#,
        head = hcm_listener_head(admin_addr, "edge", listener.port()),
        mesh = cluster("mesh", &with_cert.replace("\n    ", "\n")),
        anon = cluster("anonymous", &anonymous),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_as_mtls_client_reaches_our_server_and_is_identified() {
    let pki = Pki::new();
    let (server_files, envoy_files) = (
        pki.workload("server", SERVER_ID),
        pki.workload("envoy", ENVOY_ID),
    );
    let (tls, _provider) =
        mesh_examples::identity::strict_server_tls("server", &server_files, "600s");
    let (server, _task) = mesh_examples::identity::spawn_identity_echo(tls.clone(), true)
        .await
        .unwrap();
    let (listener, admin_addr) = (free_port(), free_port());
    let _envoy = Envoy::start_static(
        &envoy_client_config(listener, admin_addr, server, &envoy_files),
        listener,
    );
    assert!(
        support::envoy_routes(listener, "/").await,
        "Envoy never reached our server"
    );
    let res = support::envoy_get(listener, "/", &[]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.body().as_ref(),
        ENVOY_ID.as_bytes(),
        "our server saw Envoy's SPIFFE ID"
    );
    let stats = Envoy::stats(admin_addr, "cluster.mesh.ssl").await;
    assert!(stat(&stats, "ssl.handshake") >= 1, "{stats}");

    // No client certificate: our server refuses the handshake, Envoy answers 503.
    let refused = tls.failed_handshakes();
    let res = support::envoy_get(listener, "/anonymous", &[])
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "{:?}", res.body());
    // Envoy answered once our alert arrived; the count follows on our side, bounded.
    let counted = tokio::time::timeout(support::PATIENCE, async {
        while tls.failed_handshakes() == refused {
            tokio::task::yield_now().await;
        }
    });
    assert!(
        counted.await.is_ok(),
        "our server counted the refused handshake"
    );
}
