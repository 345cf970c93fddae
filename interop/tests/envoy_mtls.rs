//! mTLS against Envoy, the peer every mesh sidecar is: our client, configured over ADS by
//! go-control-plane (bootstrap `certificate_providers`, A29 `UpstreamTlsContext` on an EDS
//! cluster), calls an Envoy listener that requires a client certificate and matches the
//! caller's SPIFFE ID; and Envoy, as an mTLS client, calls our server. Each side judges the
//! other with its own TLS stack (BoringSSL against rustls), so a certificate, SAN or ALPN
//! that only we accept fails here.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::pki::{DevCa, WorkloadFiles};
use mesh_interop::envoy::{Envoy, free_port};
use mesh_tower::tls::PeerIdentity;
use mesh_tower::{ErrorKind, Mesh, MeshService};
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::Duration;
use support::gocp::GoControlPlane;
use tower::ServiceExt;

const NODE: &str = "mesh-client";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const ENVOY_ID: &str = "spiffe://cluster.local/ns/edge/sa/envoy";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/backend";
const INTRUDER_ID: &str = "spiffe://cluster.local/ns/other/sa/intruder";
/// Envoy is another process with no readiness signal: its start is waited for, bounded.
const ENVOY_START: Duration = Duration::from_secs(30);

struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: DevCa::new("envoy interop root"),
        }
    }

    fn workload(&self, name: &str, spiffe_id: &str) -> WorkloadFiles {
        self.ca
            .write_workload(
                &self.dir.path().join(name),
                &self.ca.issue_spiffe(spiffe_id),
            )
            .unwrap()
    }
}

/// Envoy's `common_tls_context` certificate and roots from `files`, matching peers whose URI
/// SAN is `peer` (YAML, indented for the configs below).
fn envoy_tls_context(files: &WorkloadFiles, peer: &str, alpn: &str) -> String {
    format!(
        r#"
                alpn_protocols: [{alpn}]
                tls_certificates:
                  - certificate_chain: {{ filename: "{cert}" }}
                    private_key: {{ filename: "{key}" }}
                validation_context:
                  trusted_ca: {{ filename: "{roots}" }}
                  match_typed_subject_alt_names:
                    - {{ san_type: URI, matcher: {{ exact: "{peer}" }} }}"#,
        cert = files.cert.display(),
        key = files.key.display(),
        roots = files.roots.display(),
    )
}

fn admin(port: SocketAddr) -> String {
    format!(
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        port.port()
    )
}

const ROUTER: &str = r#"[{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]"#;

/// An Envoy listener on `addr` that requires a client certificate with URI SAN `CLIENT_ID`
/// and answers 200 `envoy`, echoing the caller's URI SAN in `x-peer`.
fn envoy_server_config(addr: SocketAddr, admin_addr: SocketAddr, files: &WorkloadFiles) -> String {
    format!(
        r#"{admin}static_resources:
  listeners:
    - name: mtls
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:{tls}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: mtls
                codec_type: AUTO
                http_filters: {ROUTER}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      response_headers_to_add:
                        - header: {{ key: x-peer, value: "%DOWNSTREAM_PEER_URI_SAN%" }}
                      routes:
                        - match: {{ prefix: / }}
                          direct_response: {{ status: 200, body: {{ inline_string: envoy }} }}
"#,
        admin = admin(admin_addr),
        port = addr.port(),
        tls = envoy_tls_context(files, CLIENT_ID, "h2, http/1.1"),
    )
}

/// API listener `name` → route config → EDS cluster `name` (HTTP/2, mesh mTLS expecting
/// `expect`) → `endpoint`.
fn mtls_resources(
    name: &str,
    expect: &str,
    endpoint: SocketAddr,
) -> Vec<envoy_types::pb::google::protobuf::Any> {
    let mut cluster = build::eds_cluster(name);
    cluster.transport_socket = Some(build::mesh_tls("default", &[expect]));
    let routes = format!("{name}-routes");
    vec![
        build::any(&build::api_listener_rds(name, &routes)),
        build::any(&build::route_config(
            &routes,
            &["*"],
            vec![build::route("/", name)],
        )),
        build::any(&cluster),
        build::any(&build::assignment(name, &[endpoint])),
    ]
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

async fn call(
    svc: &MeshService<Empty<Bytes>>,
) -> Result<http::Response<Bytes>, mesh_tower::MeshError> {
    let res = svc
        .clone()
        .oneshot(http::Request::get("/").body(Empty::new()).unwrap())
        .await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

fn stat(stats: &str, suffix: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| name.ends_with(suffix))
        .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
        .sum()
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
        r#"{admin}static_resources:
  listeners:
    - name: edge
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: edge
                http_filters: {ROUTER}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - {{ match: {{ prefix: /anonymous }}, route: {{ cluster: anonymous }} }}
                        - {{ match: {{ prefix: / }}, route: {{ cluster: mesh }} }}
  clusters:{mesh}{anon}
"#,
        admin = admin(admin_addr),
        port = listener.port(),
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

/// Envoy's own way of delivering certificates: SDS secrets on the same ADS stream. The
/// bootstrap names no certificate provider; go-control-plane sends the client's certificate
/// and the roots as `Secret`s, which our client needs before its cluster is ready, rotates
/// when they change, and NACKs when bad (keeping the last good). Envoy judges the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_secrets_over_ads_give_our_client_its_identity_and_roots() {
    let pki = Pki::new();
    let envoy_files = pki.workload("envoy", ENVOY_ID);
    let (listener, admin_addr) = (free_port(), free_port());
    let envoy = Envoy::start_static(
        &envoy_server_config(listener, admin_addr, &envoy_files),
        listener,
    );
    envoy.wait_listening(listener, ENVOY_START).await;

    let mut cluster = build::eds_cluster("web");
    cluster.transport_socket = Some(build::sds_tls("client-cert", "mesh-roots", &[ENVOY_ID]));
    let base = vec![
        build::any(&build::api_listener_rds("web", "web-routes")),
        build::any(&build::route_config(
            "web-routes",
            &["*"],
            vec![build::route("/", "web")],
        )),
        build::any(&cluster),
        build::any(&build::assignment("web", &[listener])),
    ];
    let with = |leaf: &mesh_examples::pki::Issued| {
        let mut r = base.clone();
        r.push(build::any(&build::tls_secret(
            "client-cert",
            &leaf.cert_pem,
            &leaf.key_pem,
        )));
        r.push(build::any(&build::roots_secret(
            "mesh-roots",
            &pki.ca.root_pem(),
        )));
        r
    };
    let cp = GoControlPlane::start();
    cp.set(NODE, "1", &base).await;
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": NODE},
    });
    let mesh = Mesh::from_xds(XdsClientBuilder::from_bootstrap(
        Bootstrap::from_json(&json.to_string()).unwrap(),
    ))
    .await
    .unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");

    // The cluster names secrets the server has not sent: not ready, and saying why.
    cp.wait_for(|e| {
        e.type_url.ends_with(".Secret")
            && e.names.as_deref() == Some(&["client-cert".to_owned(), "mesh-roots".to_owned()][..])
    })
    .await;
    let e = mesh
        .wait_ready("xds:///web", Duration::from_millis(300))
        .await
        .expect_err("no identity yet");
    assert!(e.to_string().contains("secret \"client-cert\""), "{e}");

    // The secrets arrive: our client presents the SDS certificate and verifies Envoy with the
    // SDS roots and the cluster's SAN matcher.
    let first = pki.ca.issue_spiffe(CLIENT_ID);
    cp.set(NODE, "2", &with(&first)).await;
    mesh.wait_ready("xds:///web", support::PATIENCE)
        .await
        .unwrap();
    let res = call(&web).await.expect("mTLS with SDS material");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-peer"],
        CLIENT_ID,
        "Envoy saw our SPIFFE ID"
    );
    let peer = res.extensions().get::<PeerIdentity>().unwrap();
    assert_eq!(peer.spiffe_id(), Some(ENVOY_ID));
    let provider = mesh.certificate_provider("sds:client-cert").unwrap();
    assert_eq!(provider.status().serial.as_deref(), Some(&*first.serial));

    // Rotation: a new certificate secret replaces the material of the same provider.
    let second = pki.ca.issue_spiffe(CLIENT_ID);
    cp.set(NODE, "3", &with(&second)).await;
    let rotated = tokio::time::timeout(support::PATIENCE, async {
        while provider.status().serial.as_deref() != Some(&*second.serial) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(rotated.await.is_ok(), "{:?}", provider.status());

    // An expired certificate is NACKed with its field path; the last good one stays.
    let expired = pki.ca.issue(&mesh_examples::pki::LeafSpec {
        uris: &[CLIENT_ID],
        dns: &[],
        validity: Some(((2001, 1, 1), (2002, 1, 1))),
    });
    cp.set(NODE, "4", &with(&expired)).await;
    let nack = cp
        .wait_for(|e| e.type_url.ends_with(".Secret") && e.nack.is_some())
        .await;
    let text = nack.nack.unwrap();
    assert!(
        text.contains("client-cert") && text.contains("tls_certificate: leaf certificate"),
        "{text}"
    );
    assert_eq!(provider.status().serial.as_deref(), Some(&*second.serial));
    let res = call(&web)
        .await
        .expect("still serving with the last good secret");
    assert_eq!(res.status(), 200);
}
