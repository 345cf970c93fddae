//! The server side end to end, mesh to mesh over mTLS: a tonic server with the mesh server's
//! RBAC layer refuses a caller its policy does not name with gRPC `PERMISSION_DENIED` (the
//! handler never runs); `MeshServer::serve` with the `serve` example's echo answers HTTP and
//! gRPC with the caller's verified identity; a policy change in the config applies to the next
//! request without a restart.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
use mesh_examples::pki::{DevCa, WorkloadFiles};
use mesh_tower::Mesh;
use std::net::SocketAddr;
use tower::ServiceExt;

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const INTRUDER: &str = "spiffe://cluster.local/ns/other/sa/intruder";
const BACKEND: &str = "spiffe://cluster.local/ns/shop/sa/backend";

struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            ca: DevCa::new("server interop root"),
        }
    }

    fn files(&self, name: &str, id: &str) -> WorkloadFiles {
        self.ca
            .write_workload(&self.dir.path().join(name), &self.ca.issue_spiffe(id))
            .unwrap()
    }
}

/// The backend's config: provider `default`, server `backend` (mTLS required) whose RBAC is
/// `rbac` (a YAML flow mapping).
fn server_yaml(files: &WorkloadFiles, rbac: &str) -> String {
    format!(
        r#"
certificate_providers: {{ default: {provider} }}
servers:
  - name: backend
    transport_socket:
      require_client_certificate: true
      common_tls_context:
        tls_certificate_provider_instance: {{ instance_name: default }}
        validation_context: {{ ca_certificate_provider_instance: {{ instance_name: default }} }}
    http_filters:
      - {{ name: envoy.filters.http.rbac, rbac: {rbac} }}
"#,
        provider = files.file_watcher_yaml("600s")
    )
}

const FRONTEND_ONLY: &str = r#"{ rules: { policies: { frontend: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/frontend" } } }] } } } }"#;

/// A caller with identity `files`: cluster `web` → `addr` over mTLS expecting BACKEND.
async fn caller(files: &WorkloadFiles, addr: SocketAddr) -> Mesh {
    let yaml = format!(
        r#"
certificate_providers: {{ default: {provider} }}
listeners:
  - name: web
    route_config:
      virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: web }} }}] }}]
clusters:
  - name: web
    type: STATIC
    protocol: HTTP2
    load_assignment: {{ cluster_name: web, endpoints: [{{ lb_endpoints: [{{ address: "{addr}" }}] }}] }}
    transport_socket:
      common_tls_context:
        tls_certificate_provider_instance: {{ instance_name: default }}
        validation_context:
          ca_certificate_provider_instance: {{ instance_name: default }}
          match_subject_alt_names: [{{ exact: "{BACKEND}" }}]
"#,
        provider = files.file_watcher_yaml("600s")
    );
    Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .await
        .unwrap()
}

async fn backend_mesh(files: &WorkloadFiles, rbac: &str) -> Mesh {
    Mesh::from_config(mesh_core::MeshConfig::from_yaml(&server_yaml(files, rbac)).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_with_the_rbac_layer_refuses_callers_the_policy_does_not_name() {
    let pki = Pki::new();
    let backend = backend_mesh(&pki.files("backend", BACKEND), FRONTEND_ONLY).await;
    let server = backend.server("backend").unwrap();
    let (addr, _task) = greeter::spawn_mesh_server(&server, BACKEND).await.unwrap();

    let frontend = caller(&pki.files("frontend", FRONTEND), addr).await;
    let reply = GreeterClient::new(frontend.channel("xds:///web"))
        .say_hello(HelloRequest { name: "a".into() })
        .await
        .expect("the frontend is allowed");
    assert_eq!(
        reply.into_inner().message,
        format!("hello a ({FRONTEND}) from {BACKEND}")
    );

    let intruder = caller(&pki.files("intruder", INTRUDER), addr).await;
    let status = GreeterClient::new(intruder.channel("xds:///web"))
        .say_hello(HelloRequest { name: "b".into() })
        .await
        .expect_err("the intruder is refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "RBAC: access denied");
}

async fn http(mesh: &Mesh, method: &str, path: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://web{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = mesh
        .channel::<Empty<Bytes>>("xds:///web")
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_with_the_verified_caller_and_follows_policy_changes() {
    let pki = Pki::new();
    let backend_files = pki.files("backend", BACKEND);
    // GETs from the frontend, and the gRPC method.
    let reads = r#"{ rules: { policies: { reads: { permissions: [{ header: { name: ":method", string_match: { exact: GET } } }, { url_path: { path: { exact: /helloworld.Greeter/SayHello } } }], principals: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/frontend" } } }] } } } }"#;
    let backend = backend_mesh(&backend_files, reads).await;
    let server = backend.server("backend").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(server.clone().serve(listener, echo));

    let frontend = caller(&pki.files("frontend", FRONTEND), addr).await;
    assert_eq!(
        http(&frontend, "GET", "/items?x=1").await,
        (200, format!("{addr} /items {FRONTEND}\n"))
    );
    let (status, body) = http(&frontend, "DELETE", "/items").await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let reply = GreeterClient::new(frontend.channel("xds:///web"))
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner().message,
        format!("{addr} /helloworld.Greeter/SayHello {FRONTEND}\n")
    );

    // The operator tightens the policy: nothing but the gRPC method. No restart.
    let grpc_only = r#"{ rules: { policies: { grpc: { permissions: [{ url_path: { path: { prefix: /helloworld. } } }], principals: [{ any: true }] } } } }"#;
    backend
        .store()
        .replace(mesh_core::MeshConfig::from_yaml(&server_yaml(&backend_files, grpc_only)).unwrap())
        .unwrap();
    let applied = tokio::time::timeout(support::PATIENCE, async {
        // Anonymous gRPC: refused by the old policy (frontend only), allowed by the new.
        let probe = || {
            http::Request::post("/helloworld.Greeter/SayHello")
                .body(())
                .unwrap()
        };
        while server.rbac().check(&probe()).is_err() {
            tokio::task::yield_now().await;
        }
    });
    assert!(applied.await.is_ok(), "the new policy was compiled");
    assert_eq!(http(&frontend, "GET", "/items").await.0, 403);
    assert!(
        GreeterClient::new(frontend.channel("xds:///web"))
            .say_hello(HelloRequest { name: "y".into() })
            .await
            .is_ok()
    );
}
