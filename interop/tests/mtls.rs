//! mTLS end to end on loopback: a mesh client and a mesh server (tonic and hyper), each with
//! its identity from a `file_watcher` provider, the failure modes a TLS cluster must never
//! paper over, and certificate rotation under load.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::backend::Backend;
use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
use mesh_examples::pki::{DevCa, WorkloadFiles};
use mesh_tower::tls::{CertificateProvider, PeerIdentity, PeerInfo, ServerTls};
use mesh_tower::{ErrorKind, Mesh, MeshService, ServedBy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::PATIENCE;
use tower::ServiceExt;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/backend";

/// The server side: a provider watching `files` and mTLS requiring client certificates.
fn server_tls(files: &WorkloadFiles, refresh: &str) -> (ServerTls, CertificateProvider) {
    mesh_examples::identity::strict_server_tls("server", files, refresh)
}

/// A server behind `tls` answering with the caller's SPIFFE ID.
async fn tls_backend(tls: ServerTls, keep_alive: bool) -> SocketAddr {
    mesh_examples::identity::spawn_identity_echo(tls, keep_alive)
        .await
        .unwrap()
        .0
}

/// A client config: listener `web` → cluster `web` at `addr`, with `tls` (YAML for the
/// cluster's `transport_socket`, or empty for plaintext) and provider `default` = `files`.
fn client_yaml(addr: SocketAddr, protocol: &str, files: &WorkloadFiles, tls: &str) -> String {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!("\n    transport_socket: {tls}")
    };
    format!(
        r#"
certificate_providers:
  default: {provider}
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{{ match: {{ prefix: / }}, route: {{ cluster: web }} }}]
clusters:
  - name: web
    type: STATIC
    protocol: {protocol}
    load_assignment:
      cluster_name: web
      endpoints: [{{ lb_endpoints: [{{ address: "{addr}" }}] }}]{tls}
"#,
        provider = files.file_watcher_yaml("0.2s"),
    )
}

fn mtls_to(expect_san: &str) -> String {
    format!(
        "{{ common_tls_context: {{ tls_certificate_provider_instance: {{ instance_name: default }}, \
         validation_context: {{ ca_certificate_provider_instance: {{ instance_name: default }}, \
         match_subject_alt_names: [{{ exact: \"{expect_san}\" }}] }} }} }}"
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    ca: DevCa,
    client_files: WorkloadFiles,
    server_files: WorkloadFiles,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("interop root");
    let (client_files, server_files) =
        support::identity_pair(&ca, dir.path(), CLIENT_ID, SERVER_ID);
    Setup {
        _dir: dir,
        ca,
        client_files,
        server_files,
    }
}

async fn mesh(yaml: &str) -> Mesh {
    Mesh::from_config(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .await
        .unwrap()
}

async fn get(
    svc: &MeshService<Empty<Bytes>>,
) -> Result<http::Response<Bytes>, mesh_tower::MeshError> {
    let res = svc
        .clone()
        .oneshot(
            http::Request::get("http://web/")
                .body(Empty::new())
                .unwrap(),
        )
        .await?;
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| mesh_tower::MeshError::new(ErrorKind::Upstream, format!("body: {e}")))?;
    Ok(http::Response::from_parts(parts, body.to_bytes()))
}

#[tokio::test]
async fn tonic_over_mesh_mtls_both_sides_see_the_others_spiffe_id() {
    let s = setup();
    let (tls, _provider) = server_tls(&s.server_files, "10s");
    let (addr, _server) = greeter::spawn_tls_server(tls, SERVER_ID).await.unwrap();
    let m = mesh(&client_yaml(
        addr,
        "HTTP2",
        &s.client_files,
        &mtls_to(SERVER_ID),
    ))
    .await;
    let reply = GreeterClient::new(m.channel("xds:///web"))
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();
    let peer = reply.extensions().get::<PeerIdentity>().cloned().unwrap();
    assert_eq!(peer.spiffe_id(), Some(SERVER_ID));
    let served = reply.extensions().get::<ServedBy>().cloned().unwrap();
    assert_eq!((&*served.cluster, served.endpoint), ("web", addr));
    assert_eq!(
        reply.into_inner().message,
        format!("hello x ({CLIENT_ID}) from {SERVER_ID}")
    );
}

#[tokio::test]
async fn a_tls_cluster_never_falls_back_to_plaintext() {
    let s = setup();
    let plain = Backend::start().await.unwrap();
    let m = mesh(&client_yaml(
        plain.addr(),
        "HTTP1",
        &s.client_files,
        &mtls_to(SERVER_ID),
    ))
    .await;
    let e = get(&m.http_client()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect);
    let text = e.to_string();
    assert!(
        text.contains(&format!("TLS handshake with {} failed", plain.addr())),
        "{text}"
    );
    assert!(text.contains("cluster \"web\""), "{text}");
    assert!(text.contains("did not answer with TLS"), "{text}");
    assert_eq!(plain.served(), 0, "no request reached the plaintext server");
}

#[tokio::test]
async fn plaintext_to_a_tls_port_never_reaches_the_application() {
    let s = setup();
    let (tls, _provider) = server_tls(&s.server_files, "10s");
    let addr = tls_backend(tls.clone(), true).await;
    let m = mesh(&client_yaml(addr, "HTTP1", &s.client_files, "")).await;
    assert!(get(&m.http_client()).await.is_err());
    let waited = tokio::time::timeout(PATIENCE, async {
        while tls.failed_handshakes() == 0 {
            tokio::task::yield_now().await;
        }
    });
    assert!(
        waited.await.is_ok(),
        "the server counts the refused handshake"
    );
}

#[tokio::test]
async fn the_wrong_identity_is_refused_naming_cluster_and_sans() {
    let s = setup();
    let (tls, _provider) = server_tls(&s.server_files, "10s");
    let addr = tls_backend(tls, true).await;
    let want = "spiffe://cluster.local/ns/shop/sa/payments";
    let m = mesh(&client_yaml(addr, "HTTP2", &s.client_files, &mtls_to(want))).await;
    let text = get(&m.http_client()).await.unwrap_err().to_string();
    assert!(text.contains("cluster \"web\""), "{text}");
    assert_eq!(text.matches("endpoint").count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "subject alternative names [\"URI:{SERVER_ID}\"] match none of [exact \"{want}\"]"
        )),
        "{text}"
    );
}

/// Writes `pem` as the roots of both workloads.
fn write_roots(s: &Setup, pem: &str) {
    for f in [&s.client_files, &s.server_files] {
        let tmp = f.roots.with_extension("tmp");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(tmp, &f.roots).unwrap();
    }
}

/// Waits until `provider` serves leaf `serial` (its refresh is 0.2 s).
async fn until_serving(provider: &CertificateProvider, serial: &str) {
    let ok = tokio::time::timeout(PATIENCE, async {
        while provider.status().serial.as_deref() != Some(serial) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        ok.await.is_ok(),
        "provider never served {serial}: {:?}",
        provider.status()
    );
}

/// Waits until `provider` has material newer than `generation`.
async fn until_newer(provider: &CertificateProvider, generation: u64) {
    let ok = tokio::time::timeout(PATIENCE, async {
        while provider.material().generation() <= generation {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        ok.await.is_ok(),
        "provider never reloaded: {:?}",
        provider.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_nothing_and_new_handshakes_show_new_serials() {
    let secs: u64 = std::env::var("MESH_ROTATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let s = setup();
    let (tls, server_provider) = server_tls(&s.server_files, "0.2s");
    // HTTP/1.1 without keep-alive: every request is a new connection and handshake.
    let addr = tls_backend(tls, false).await;
    let m = mesh(&client_yaml(
        addr,
        "HTTP1",
        &s.client_files,
        &mtls_to(SERVER_ID),
    ))
    .await;
    let client_provider = m.certificate_provider("default").unwrap();
    let svc = m.http_client::<Empty<Bytes>>();

    // c=32 callers; each records the serial its response's handshake saw.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut callers = Vec::new();
    for _ in 0..32 {
        let (svc, stop, ok, failed, seen) = (
            svc.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen.clone(),
        );
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(&svc).await {
                    Ok(res) => {
                        let peer = res.extensions().get::<PeerIdentity>().unwrap();
                        seen.lock().unwrap().insert(peer.serial().to_owned());
                        assert_eq!(res.body(), CLIENT_ID.as_bytes());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let new_ca = DevCa::new("interop root 2");
    let started = tokio::time::Instant::now();
    let mut rotations = 0;
    let mut ca_rotated = false;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if !ca_rotated && started.elapsed() > Duration::from_secs(secs / 2) {
            // CA rotation with an overlapping bundle: trust both, move both leaves to the
            // new CA, then drop the old root.
            let (g_client, g_server) = (
                client_provider.material().generation(),
                server_provider.material().generation(),
            );
            write_roots(&s, &format!("{}{}", s.ca.root_pem(), new_ca.root_pem()));
            until_newer(&client_provider, g_client).await;
            until_newer(&server_provider, g_server).await;
            let c = new_ca.issue_spiffe(CLIENT_ID);
            new_ca.write_workload_cert(&s.client_files, &c).unwrap();
            let l = new_ca.issue_spiffe(SERVER_ID);
            new_ca.write_workload_cert(&s.server_files, &l).unwrap();
            until_serving(&client_provider, &c.serial).await;
            until_serving(&server_provider, &l.serial).await;
            let g = server_provider.material().generation();
            write_roots(&s, &new_ca.root_pem());
            until_newer(&server_provider, g).await;
            ca_rotated = true;
            continue;
        }
        let ca = if ca_rotated { &new_ca } else { &s.ca };
        let leaf = ca.issue_spiffe(SERVER_ID);
        ca.write_workload_cert(&s.server_files, &leaf).unwrap();
        until_serving(&server_provider, &leaf.serial).await;
        // The next handshakes present the new serial.
        let ok = tokio::time::timeout(PATIENCE, async {
            while !seen.lock().unwrap().contains(&leaf.serial) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(
            ok.await.is_ok(),
            "no handshake presented serial {}",
            leaf.serial
        );
        rotations += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "{ok} requests, {failed} failed, {rotations} leaf rotations, CA rotated: {ca_rotated}"
    );
    assert!(ca_rotated && rotations >= 3, "{rotations} rotations");
    assert_eq!(failed, 0, "no request may fail during rotation");
    assert!(ok > 100, "{ok} requests");
}

/// tonic puts a mesh TLS connection's `PeerInfo` in each request's extensions.
#[test]
fn peer_info_is_what_tonic_handlers_read() {
    fn assert_connect_info<T: tonic::transport::server::Connected<ConnectInfo = PeerInfo>>() {}
    assert_connect_info::<mesh_tower::tls::TlsConnection<tokio::net::TcpStream>>();
}
