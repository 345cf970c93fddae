//! Envoy's other ways of giving a cluster or server its certificates, as control planes
//! written for Envoy send them, with Envoy judging our client's certificate:
//! - static fields in the cluster itself (`tls_certificates` and `trusted_ca`: files or
//!   inline PEM), which gRPC's xDS clients NACK;
//! - SDS `Secret`s on the ADS stream;
//! - the static fields on a server, from the YAML.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_interop::envoy::{Envoy, free_port};
use mesh_tower::ErrorKind;
use mesh_tower::tls::PeerIdentity;
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::time::Duration;
use support::envoy_tls::*;
use support::gocp::GoControlPlane;

/// A bootstrap with no certificate provider: the cluster carries everything.
async fn bare_mesh(cp: &GoControlPlane) -> mesh_tower::Mesh {
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": NODE},
    });
    mesh_tower::Mesh::from_xds(XdsClientBuilder::from_bootstrap(
        Bootstrap::from_json(&json.to_string()).unwrap(),
    ))
    .await
    .unwrap()
}

/// The cluster's certificate and key as files, its roots inline: the same fields Envoy's own
/// listener config uses here. Envoy checks our certificate; our client checks Envoy's with the
/// inline roots (roots of another CA fail the handshake: nothing falls back); inline PEM that
/// does not parse is NACKed with its field path and the last good cluster keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_static_tls_fields_give_our_client_its_identity_and_roots() {
    let pki = Pki::new();
    let (client, envoy_files) = (
        pki.workload("client", CLIENT_ID),
        pki.workload("envoy", ENVOY_ID),
    );
    let (listener, admin_addr) = (free_port(), free_port());
    let envoy = Envoy::start_static(
        &envoy_server_config(listener, admin_addr, &envoy_files),
        listener,
    );
    envoy.wait_listening(listener, ENVOY_START).await;

    let tls = |roots: &str| {
        build::static_tls(
            build::data_file(&client.cert.display().to_string()),
            build::data_file(&client.key.display().to_string()),
            build::data_inline(roots),
            &[ENVOY_ID],
        )
    };
    let other_ca = mesh_examples::pki::DevCa::new("another root");
    let mut good = tls_resources("web", tls(&pki.ca.root_pem()), listener);
    good.extend(tls_resources(
        "foreign",
        tls(&other_ca.root_pem()),
        listener,
    ));
    let cp = GoControlPlane::start();
    cp.set(NODE, "1", &good).await;
    let mesh = bare_mesh(&cp).await;

    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", support::PATIENCE)
        .await
        .unwrap();
    let res = call(&web).await.expect("mTLS with Envoy's static fields");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-peer"],
        CLIENT_ID,
        "Envoy saw our SPIFFE ID"
    );
    let peer = res.extensions().get::<PeerIdentity>().unwrap();
    assert_eq!(
        peer.spiffe_id(),
        Some(ENVOY_ID),
        "verified with the inline roots"
    );

    // Roots of another CA: Envoy's certificate does not verify, and nothing falls back.
    let foreign = mesh.channel::<Empty<Bytes>>("xds:///foreign");
    mesh.wait_ready("xds:///foreign", support::PATIENCE)
        .await
        .unwrap();
    let e = call(&foreign).await.expect_err("unknown issuer refused");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains("foreign"), "{e}");

    // Inline roots that are not PEM: NACKed with the path; the last good cluster serves on.
    let mut bad = tls_resources("web", tls("not a certificate"), listener);
    bad.extend(tls_resources(
        "foreign",
        tls(&other_ca.root_pem()),
        listener,
    ));
    cp.set(NODE, "2", &bad).await;
    let nack = cp
        .wait_for(|e| e.type_url.ends_with(".Cluster") && e.nack.is_some())
        .await;
    let text = nack.nack.unwrap();
    assert!(
        text.contains("web") && text.contains("common_tls_context.validation_context.trusted_ca"),
        "{text}"
    );
    let res = call(&web)
        .await
        .expect("still serving with the last good cluster");
    assert_eq!(res.status(), 200);
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

    let base = tls_resources(
        "web",
        build::sds_tls("client-cert", "mesh-roots", &[ENVOY_ID]),
        listener,
    );
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
    let mesh = bare_mesh(&cp).await;
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

/// A server given Envoy's static fields in the YAML: its chain and key as files, the client
/// roots inline. A caller with a certificate of that CA is served and identified; one without
/// a certificate is refused (TLS asked: TLS or nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_takes_envoys_static_tls_fields() {
    let pki = Pki::new();
    let (server_files, client_files) = (
        pki.workload("server", SERVER_ID),
        pki.workload("client", CLIENT_ID),
    );
    let roots: String = pki
        .ca
        .root_pem()
        .lines()
        .map(|l| format!("\n              {l}"))
        .collect();
    let yaml = format!(
        r#"
servers:
  - name: backend
    transport_socket:
      require_client_certificate: true
      common_tls_context:
        tls_certificates:
          - certificate_chain: {{ filename: "{cert}" }}
            private_key: {{ filename: "{key}" }}
        validation_context:
          trusted_ca:
            inline_string: |{roots}
"#,
        cert = server_files.cert.display(),
        key = server_files.key.display(),
    );
    let backend = mesh_tower::Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(backend.server("backend").unwrap().serve(listener, echo));

    let caller = |cert: bool| {
        let yaml = mesh_examples::yaml::mtls_web_config(&client_files, &[addr], SERVER_ID, cert);
        mesh_tower::Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
    };
    let frontend = caller(true).await.unwrap();
    let res = call(&frontend.channel::<Empty<Bytes>>("xds:///web"))
        .await
        .expect("served over mTLS");
    assert_eq!(
        res.body().as_ref(),
        format!("{addr} / {CLIENT_ID}\n").as_bytes()
    );
    let peer = res.extensions().get::<PeerIdentity>().unwrap();
    assert_eq!(peer.spiffe_id(), Some(SERVER_ID), "the file certificate");

    let anonymous = caller(false).await.unwrap();
    let e = call(&anonymous.channel::<Empty<Bytes>>("xds:///web"))
        .await
        .expect_err("no client certificate: refused");
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
}
