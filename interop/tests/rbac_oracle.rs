//! Envoy as the oracle for authorization: one Envoy listener and one mesh server per policy,
//! each given the *same* RBAC filter YAML (Envoy's `envoy.extensions.filters.http.rbac.v3.RBAC`
//! is our `rbac:` config, field for field), both terminating mTLS with optional client
//! certificates from one CA. A matrix of callers (SPIFFE IDs of the namespace, of another
//! namespace and of another trust domain, a DNS-only certificate, no certificate) × requests
//! (methods, paths, queries, headers) × policies must get the same status from both: 200 or
//! 403. Disagreements are listed with the case that caused them.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_examples::pki::{DevCa, Issued, LeafSpec};
use mesh_interop::envoy::{Envoy, TypedFilter, answering_listener, free_port};
use mesh_tower::Mesh;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/backend";

/// (name, the filters in chain order: (filter name, RBAC YAML)).
fn policies() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "allow-frontend",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { action: ALLOW, policies: { frontend: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/frontend" } } }] } } } }"#,
            )],
        ),
        (
            "istio-deny-then-allow",
            vec![
                (
                    "envoy.filters.http.rbac.DENY",
                    r#"{ rules: { action: DENY, policies: { no-admin: { permissions: [{ url_path: { path: { prefix: /admin } } }], principals: [{ any: true }] } } } }"#,
                ),
                (
                    "envoy.filters.http.rbac",
                    r#"{ rules: { action: ALLOW, policies: { same-ns: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { safe_regex: { regex: ".*/ns/shop/.*" } } } }] } } } }"#,
                ),
            ],
        ),
        (
            "reads-only-not-admin",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { policies: { reads: { permissions: [{ and_rules: { rules: [{ header: { name: ":method", string_match: { exact: GET } } }, { not_rule: { url_path: { path: { prefix: /admin } } } }] } }], principals: [{ authenticated: { principal_name: { prefix: "spiffe://cluster.local/" } } }] } } } }"#,
            )],
        ),
        (
            "role-header-any-tls",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { policies: { admins: { permissions: [{ header: { name: x-role, string_match: { exact: admin, ignore_case: true } } }], principals: [{ authenticated: {} }] } } } }"#,
            )],
        ),
        (
            "dns-principal",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { policies: { dns: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: client.shop.svc } } }] } } } }"#,
            )],
        ),
        (
            "deny-outside-trust-domain",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { action: DENY, policies: { foreign: { permissions: [{ any: true }], principals: [{ not_id: { authenticated: { principal_name: { prefix: "spiffe://cluster.local/" } } } }] } } } }"#,
            )],
        ),
        (
            "path-exact-and-loopback",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { policies: { items: { permissions: [{ or_rules: { rules: [{ url_path: { path: { exact: /api/items } } }, { header: { name: ":path", string_match: { suffix: "debug=1" } } }] } }], principals: [{ and_ids: { ids: [{ remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }, { not_id: { direct_remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } } }] } }] } } } }"#,
            )],
        ),
        (
            "authority-and-method-regex",
            vec![(
                "envoy.filters.http.rbac",
                r#"{ rules: { policies: { host: { permissions: [{ and_rules: { rules: [{ header: { name: ":authority", string_match: { prefix: backend } } }, { header: { name: ":method", string_match: { safe_regex: { regex: "GET|DELETE" } } } }] } }], principals: [{ any: true }] } } } }"#,
            )],
        ),
    ]
}

/// A request of the matrix: label, method, path and query, extra headers.
type Req = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

fn requests() -> Vec<Req> {
    vec![
        ("GET /", "GET", "/", vec![]),
        ("GET /admin/users", "GET", "/admin/users", vec![]),
        ("POST /api/items", "POST", "/api/items", vec![]),
        (
            "GET /api/items?debug=1",
            "GET",
            "/api/items?debug=1",
            vec![],
        ),
        ("DELETE /api/items", "DELETE", "/api/items", vec![]),
        (
            "GET /api/other x-role: Admin",
            "GET",
            "/api/other",
            vec![("x-role", "Admin")],
        ),
    ]
}

struct Caller {
    label: &'static str,
    cert: Option<Issued>,
}

fn envoy_config(
    ca: &std::path::Path,
    server: &Files,
    listeners: &[(SocketAddr, &[(&str, &str)])],
) -> String {
    let tls = format!(
        "              common_tls_context:\n                alpn_protocols: [http/1.1]\n                \
         tls_certificates: [{{ certificate_chain: {{ filename: \"{cert}\" }}, private_key: {{ filename: \"{key}\" }} }}]\n                \
         validation_context: {{ trusted_ca: {{ filename: \"{ca}\" }} }}\n",
        cert = server.cert.display(),
        key = server.key.display(),
        ca = ca.display(),
    );
    let mut out = String::from("static_resources:\n  listeners:\n");
    for (i, (addr, filters)) in listeners.iter().enumerate() {
        let typed: Vec<TypedFilter<'_>> =
            filters.iter().map(|(n, y)| (*n, RBAC_TYPE, *y)).collect();
        out.push_str(&answering_listener(i, addr.port(), &tls, &typed));
    }
    out
}

struct Files {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

/// Our side: one mesh whose `servers:` are the same policies, each on its own port.
fn mesh_config(
    files: &mesh_examples::pki::WorkloadFiles,
    servers: &[(&str, &[(&str, &str)])],
) -> String {
    let mut out = format!(
        "certificate_providers: {{ default: {} }}\nservers:\n",
        files.file_watcher_yaml("600s")
    );
    for (name, filters) in servers {
        out.push_str(&format!(
            "  - name: {name}\n    transport_socket: {{ common_tls_context: {{ tls_certificate_provider_instance: {{ instance_name: default }}, validation_context: {{ ca_certificate_provider_instance: {{ instance_name: default }} }} }} }}\n    http_filters:\n"
        ));
        for (fname, yaml) in *filters {
            out.push_str(&format!("      - {{ name: {fname}, rbac: {yaml} }}\n"));
        }
    }
    out
}

/// One request on a fresh mTLS connection; the status.
async fn status(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr}: {e}"));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "backend.shop.svc");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tx
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_rbac_decides_as_envoy_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("rbac oracle root");
    let server_cert = ca.issue(&LeafSpec {
        uris: &[SERVER_ID],
        dns: &["localhost"],
        validity: None,
    });
    let files = ca
        .write_workload(&dir.path().join("server"), &server_cert)
        .unwrap();
    let callers = vec![
        Caller {
            label: "frontend (ns shop)",
            cert: Some(ca.issue_spiffe("spiffe://cluster.local/ns/shop/sa/frontend")),
        },
        Caller {
            label: "reviews (ns other)",
            cert: Some(ca.issue_spiffe("spiffe://cluster.local/ns/other/sa/reviews")),
        },
        Caller {
            label: "foreign trust domain",
            cert: Some(ca.issue_spiffe("spiffe://example.org/ns/shop/sa/frontend")),
        },
        Caller {
            label: "DNS-only certificate",
            cert: Some(ca.issue(&LeafSpec {
                uris: &[],
                dns: &["client.shop.svc"],
                validity: None,
            })),
        },
        Caller {
            label: "no certificate",
            cert: None,
        },
    ];
    let policies = policies();

    // Envoy: one listener per policy.
    let envoy_addrs: Vec<SocketAddr> = policies.iter().map(|_| free_port()).collect();
    let listeners: Vec<(SocketAddr, &[(&str, &str)])> = envoy_addrs
        .iter()
        .zip(&policies)
        .map(|(a, (_, f))| (*a, f.as_slice()))
        .collect();
    let envoy = Envoy::start_static(
        &envoy_config(
            &files.roots,
            &Files {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            &listeners,
        ),
        envoy_addrs[0],
    );
    for a in &envoy_addrs {
        envoy.wait_listening(*a, Duration::from_secs(30)).await;
    }

    // Ours: one mesh, one server per policy, each on its own port.
    let servers: Vec<(&str, &[(&str, &str)])> =
        policies.iter().map(|(n, f)| (*n, f.as_slice())).collect();
    let mesh = Mesh::from_config(
        mesh_core::MeshConfig::from_yaml(&mesh_config(&files, &servers)).unwrap(),
    )
    .await
    .unwrap();
    let mut ours = Vec::new();
    for (name, _) in &policies {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ours.push(listener.local_addr().unwrap());
        let server = mesh.server(name).unwrap();
        let ok = tower::service_fn(|_req: http::Request<mesh_tower::server::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"ok"),
            )))
        });
        tokio::spawn(server.serve(listener, ok));
    }

    let mut cases = 0;
    let mut allowed = 0;
    let mut disagreements = Vec::new();
    for caller in &callers {
        let tls = support::client_tls(&ca, caller.cert.as_ref(), b"http/1.1");
        for (p, (policy, _)) in policies.iter().enumerate() {
            for (label, method, path, headers) in requests() {
                let theirs = status(envoy_addrs[p], tls.clone(), method, path, &headers).await;
                let mine = status(ours[p], tls.clone(), method, path, &headers).await;
                assert!(
                    [200, 403].contains(&theirs),
                    "Envoy answered {theirs} for {policy} / {} / {label}",
                    caller.label
                );
                cases += 1;
                allowed += usize::from(theirs == 200);
                if theirs != mine {
                    disagreements.push(format!(
                        "{policy} / {} / {label}: Envoy {theirs}, mesh {mine}",
                        caller.label
                    ));
                }
            }
        }
    }
    eprintln!(
        "RBAC oracle: {cases} cases ({allowed} allowed by Envoy), {} disagreements",
        disagreements.len()
    );
    assert!(
        allowed > 0 && allowed < cases,
        "the matrix exercises both outcomes"
    );
    assert!(
        disagreements.is_empty(),
        "{} of {cases} cases disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
