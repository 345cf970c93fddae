//! Istio security through a real istiod: PeerAuthentication STRICT with DestinationRule
//! ISTIO_MUTUAL and AuthorizationPolicy ALLOW/DENY, enforced by our server from istiod's inbound
//! listener (gRFC A36) and our clients' TLS from its ISTIO_MUTUAL clusters, SotW and Delta.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_xds_client::XdsMesh;
use support::istio::*;

use support::*;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const OTHER_ID: &str = "spiffe://cluster.local/ns/other/sa/intruder";
const ECHO_ID: &str = "spiffe://cluster.local/ns/default/sa/echo";

/// PeerAuthentication STRICT with DestinationRule ISTIO_MUTUAL, and AuthorizationPolicy ALLOW
/// and DENY by principal, namespace, path and method: istiod's inbound listener drives our
/// server (mTLS required, RBAC), its ISTIO_MUTUAL clusters drive our clients' TLS; identities
/// are `spiffe://cluster.local/ns/<ns>/sa/<sa>` from a test CA, read from files by the
/// certificate provider `default` as Istio's agent writes them.
async fn security(delta: bool) {
    let pki = mesh_examples::pki::DevCa::new("istio test root");
    let certs = tempfile::tempdir().unwrap();
    let issue = |name: &str, id: &str| issue(&pki, certs.path(), name, id);
    let (client_dir, other_dir, echo_dir) = (
        issue("client", CLIENT_ID),
        issue("other", OTHER_ID),
        issue("echo", ECHO_ID),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mtls = "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n";
    let policy = STRICT_MTLS.to_owned()
        + r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-allow, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {methods: [GET], paths: [/allowed*, /admin*]}}]
  - from: [{source: {namespaces: [other]}}]
    to: [{operation: {paths: [/public*]}}]
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {paths: [/helloworld.Greeter/*]}}]
---
"# + DENY_ADMIN;
    let cp = Cp::start(&[
        ("service.yaml", &service(&[("v1", addr)], mtls)),
        ("policy.yaml", &policy),
    ]);

    // The server: its own workload (IP = the WorkloadEntry's address), inbound config by A36.
    let echo = echo_workload(&echo_dir);
    let server_mesh = cp.client(&echo, delta).await;
    let server = server_mesh.xds_server(addr, PATIENCE).await.unwrap();
    assert!(
        server.tls().is_some(),
        "STRICT: the inbound chain requires mTLS"
    );
    let handler = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(server.clone().serve(listener, handler));

    let client = cp.client(&client_workload(Some(&client_dir)), delta).await;
    let other = Workload {
        name: "intruder",
        namespace: "other",
        ip: "127.0.0.11",
        service_account: "intruder",
        labels: &[("app", "intruder")],
        cert_dir: Some(&other_dir),
    };
    let other = cp.client(&other, delta).await;
    let (client_mesh, other_mesh) = (client, other);
    let (client, other) = (
        client_mesh.channel::<Empty<Bytes>>(TARGET),
        other_mesh.channel::<Empty<Bytes>>(TARGET),
    );
    for mesh in [&client_mesh, &other_mesh] {
        mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    }

    // The server saw the caller's verified identity.
    assert_eq!(
        call(&client, "GET", "/allowed").await,
        (200, format!("{addr} /allowed {CLIENT_ID}\n"))
    );
    let status = |r: (u16, String)| r.0;
    assert_eq!(
        status(call(&client, "POST", "/allowed").await),
        403,
        "method not allowed"
    );
    assert_eq!(
        status(call(&client, "GET", "/admin/x").await),
        403,
        "DENY wins"
    );
    assert_eq!(
        status(call(&client, "GET", "/public").await),
        403,
        "namespace default"
    );
    assert_eq!(
        status(call(&other, "GET", "/public").await),
        200,
        "namespace other"
    );
    assert_eq!(
        status(call(&other, "GET", "/allowed").await),
        403,
        "principal"
    );

    // gRPC through tonic on the same channels: allowed by principal, else PERMISSION_DENIED.
    use mesh_examples::greeter::{GreeterClient, HelloRequest};
    let hello = || HelloRequest { name: "a".into() };
    let reply = GreeterClient::new(client_mesh.channel(TARGET))
        .say_hello(hello())
        .await
        .expect("the client may call the greeter");
    assert_eq!(
        reply.into_inner().message,
        format!("{addr} /helloworld.Greeter/SayHello {CLIENT_ID}\n")
    );
    let denied = GreeterClient::new(other_mesh.channel(TARGET))
        .say_hello(hello())
        .await
        .expect_err("another namespace may not");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // STRICT: a plaintext caller gets no answer at all.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = raw
        .write_all(b"GET /allowed HTTP/1.1\r\nhost: echo\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("/allowed"),
        "plaintext reached the handler: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_and_authorization_policy_sotw() {
    security(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_and_authorization_policy_delta() {
    security(true).await;
}

/// PeerAuthentication PERMISSIVE as istiod's gRPC generator serves it: a gRPC server cannot
/// take plaintext and mTLS on one port (A36 matches no transport protocol but `raw_buffer`),
/// so istiod picks for it: STRICT for a workload labelled `security.istio.io/tlsMode: istio`
/// (what injection adds, and what tells clients it speaks mTLS), plaintext for any other. Our
/// server follows what istiod sends, and each kind of caller reaches it.
async fn permissive(tls_mode_label: bool) {
    let pki = mesh_examples::pki::DevCa::new("istio permissive root");
    let certs = tempfile::tempdir().unwrap();
    let client_dir = issue(&pki, certs.path(), "client", CLIENT_ID);
    let echo_dir = issue(&pki, certs.path(), "echo", ECHO_ID);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let permissive = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
"#;
    // Clients speak mTLS to a workload that does (as Istio's auto-mTLS would decide).
    let dr = if tls_mode_label {
        "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
    } else {
        ""
    };
    let mut yaml = service(&[("v1", addr)], dr);
    if tls_mode_label {
        // Injection labels the pod (here its WorkloadEntry) and the proxy alike.
        yaml = yaml.replace(
            "labels: {app: echo, version: v1}",
            "labels: {app: echo, version: v1, security.istio.io/tlsMode: istio}",
        );
    }
    let cp = Cp::start(&[("service.yaml", &yaml), ("policy.yaml", permissive)]);
    let labels: &[(&str, &str)] = if tls_mode_label {
        &[
            ("app", "echo"),
            ("version", "v1"),
            ("security.istio.io/tlsMode", "istio"),
        ]
    } else {
        &[("app", "echo"), ("version", "v1")]
    };
    let echo = Workload {
        name: "echo-v1",
        namespace: "default",
        ip: "127.0.0.1",
        service_account: "echo",
        labels,
        cert_dir: Some(&echo_dir),
    };
    let server_mesh = cp.client(&echo, false).await;
    let server = server_mesh.xds_server(addr, PATIENCE).await.unwrap();
    assert_eq!(server.tls().is_some(), tls_mode_label, "mTLS on the server");
    let handler = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(server.clone().serve(listener, handler));

    let client_mesh = cp.client(&client_workload(Some(&client_dir)), false).await;
    let client = client_mesh.channel::<Empty<Bytes>>(TARGET);
    client_mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let caller = if tls_mode_label { CLIENT_ID } else { "-" };
    assert_eq!(
        call(&client, "GET", "/items").await,
        (200, format!("{addr} /items {caller}\n"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_plaintext_to_a_workload_without_the_tls_mode_label() {
    permissive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_mtls_to_a_workload_labelled_tls_mode_istio() {
    permissive(true).await;
}
