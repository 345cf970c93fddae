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
    caller_presenting(files, addr, true).await
}

/// A caller verifying BACKEND without a certificate of its own.
async fn anonymous_caller(files: &WorkloadFiles, addr: SocketAddr) -> Mesh {
    caller_presenting(files, addr, false).await
}

async fn caller_presenting(files: &WorkloadFiles, addr: SocketAddr, cert: bool) -> Mesh {
    let yaml = mesh_examples::yaml::mtls_web_config(files, &[addr], BACKEND, cert);
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
    // The probe counts answers by the server identity the client verified.
    let report = mesh_examples::probe::run(
        &frontend,
        &mesh_examples::probe::Args {
            target: "xds:///web".into(),
            requests: 3,
            path: "/items".into(),
            headers: vec![],
            concurrency: 1,
        },
    )
    .await;
    assert_eq!(report.peers, [(BACKEND.to_owned(), 3)].into());
    assert_eq!(report.to_json()["peers"][BACKEND], 3);
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

/// An ALLOW RBAC filter config letting only `principal` in (the proto istiod sends).
fn allow_only(
    principal: &str,
) -> envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac {
    use envoy_types::pb::envoy::config::rbac::v3 as rbac;
    use envoy_types::pb::envoy::r#type::matcher::v3 as m;
    let policy = rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::Any(true)),
        }],
        principals: vec![rbac::Principal {
            identifier: Some(rbac::principal::Identifier::Authenticated(
                rbac::principal::Authenticated {
                    principal_name: Some(m::StringMatcher {
                        match_pattern: Some(m::string_matcher::MatchPattern::Exact(
                            principal.into(),
                        )),
                        ..Default::default()
                    }),
                },
            )),
        }],
        ..Default::default()
    };
    envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac {
        rules: Some(rbac::Rbac {
            action: rbac::rbac::Action::Allow as i32,
            policies: [("allowed".to_owned(), policy)].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// gRFC A36 with go-control-plane as the control plane: the server's listener is found by the
/// bootstrap's template and its address, its TLS and RBAC come from the snapshot, a new
/// snapshot changes who may call, and a bad one is NACKed with the path while the last good
/// policy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xds_server_takes_tls_and_rbac_from_go_control_plane() {
    use mesh_xds_client::{XdsClientBuilder, XdsMesh, bootstrap::Bootstrap, build};
    let pki = Pki::new();
    let backend_files = pki.files("backend", BACKEND);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = format!("xds.istio.io/grpc/lds/inbound/{addr}");
    let resources = |rbac: &envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac| {
        vec![build::any(&build::server_listener(
            &name,
            addr,
            Some(build::downstream_mtls("default")),
            vec![build::rbac_filter("envoy.filters.http.rbac", rbac)],
        ))]
    };
    let cp = support::gocp::GoControlPlane::start();
    cp.set("backend", "1", &resources(&allow_only(FRONTEND)))
        .await;
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": "backend"},
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": backend_files.cert,
            "private_key_file": backend_files.key,
            "ca_certificate_file": backend_files.roots,
        }}},
    });
    let backend = Mesh::from_xds(XdsClientBuilder::from_bootstrap(
        Bootstrap::from_json(&json.to_string()).unwrap(),
    ))
    .await
    .unwrap();
    let server = backend.xds_server(addr, support::PATIENCE).await.unwrap();
    assert!(server.tls().is_some(), "mTLS from the listener's chain");
    let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(server.clone().serve(listener, echo));

    let frontend = caller(&pki.files("frontend", FRONTEND), addr).await;
    let intruder = caller(&pki.files("intruder", INTRUDER), addr).await;
    assert_eq!(
        http(&frontend, "GET", "/a").await,
        (200, format!("{addr} /a {FRONTEND}\n"))
    );
    assert_eq!(http(&intruder, "GET", "/a").await.0, 403);

    // The control plane now lets only the intruder in.
    cp.set("backend", "2", &resources(&allow_only(INTRUDER)))
        .await;
    let swapped = tokio::time::timeout(support::PATIENCE, async {
        while http(&intruder, "GET", "/a").await.0 != 200 {
            tokio::task::yield_now().await;
        }
    });
    assert!(swapped.await.is_ok(), "the new policy arrived");
    assert_eq!(http(&frontend, "GET", "/a").await.0, 403);

    // A policy with a CEL condition is NACKed with its path; the last good one stays.
    let mut bad = allow_only(FRONTEND);
    bad.rules
        .as_mut()
        .unwrap()
        .policies
        .get_mut("allowed")
        .unwrap()
        .condition = Some(Default::default());
    cp.set("backend", "3", &resources(&bad)).await;
    let nack = cp.wait_for(|e| e.nack.is_some()).await.nack.unwrap();
    assert!(
        nack.contains(&name) && nack.contains("rules.policies.allowed.condition: CEL"),
        "{nack}"
    );
    assert_eq!(http(&intruder, "GET", "/a").await.0, 200);
    assert_eq!(http(&frontend, "GET", "/a").await.0, 403);
}

/// gRFC A36's serving modes: the server's config removed while a caller holds a request open:
/// that request finishes, new connections are closed, the application sees `NotServing`; the
/// config restored, it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_config_a_server_stops_serving_new_connections_and_comes_back() {
    use mesh_tower::server::Serving;
    let pki = Pki::new();
    let backend_files = pki.files("backend", BACKEND);
    let with_server =
        mesh_core::MeshConfig::from_yaml(&server_yaml(&backend_files, FRONTEND_ONLY)).unwrap();
    let mut without = with_server.clone();
    without.servers.clear();
    let backend = Mesh::from_config(with_server.clone()).await.unwrap();
    let server = backend.server("backend").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (entered, release, handler) = gated();
    tokio::spawn(server.clone().serve(listener, handler));

    let frontend_files = pki.files("frontend", FRONTEND);
    let holder = caller(&frontend_files, addr).await;
    let slow = tokio::spawn(async move { http(&holder, "GET", "/slow").await });
    entered.notified().await;

    backend.store().replace(without).unwrap();
    let mut serving = server.serving();
    let stopped = tokio::time::timeout(
        support::PATIENCE,
        serving.wait_for(|s| matches!(s, Serving::NotServing(_))),
    );
    assert!(stopped.await.is_ok(), "the application sees NotServing");
    // A new caller's connection is closed: no answer.
    let newcomer = caller(&frontend_files, addr).await;
    let req = http::Request::get("http://web/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let refused = newcomer
        .channel::<Empty<Bytes>>("xds:///web")
        .oneshot(req)
        .await;
    assert!(
        refused.is_err(),
        "a new connection was served while not serving"
    );
    // The request already in progress finishes.
    release.notify_one();
    assert_eq!(slow.await.unwrap(), (200, FRONTEND.to_owned()));

    backend.store().replace(with_server).unwrap();
    let back = tokio::time::timeout(
        support::PATIENCE,
        serving.wait_for(|s| *s == Serving::Serving),
    );
    assert!(back.await.is_ok(), "serving again");
    let later = caller(&frontend_files, addr).await;
    assert_eq!(http(&later, "GET", "/").await, (200, FRONTEND.to_owned()));
}

/// A36 for TLS: the server's `transport_socket` changes under it (client certificates no
/// longer asked). The connection holding a request drains: its request finishes, and the
/// caller's next request comes over a new connection with the new settings (no client
/// identity); a caller without a certificate, refused before, is served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tls_settings_apply_to_new_connections_while_the_old_ones_drain() {
    use std::sync::Arc;
    let pki = Pki::new();
    let backend_files = pki.files("backend", BACKEND);
    let allow_all = r#"{ rules: { policies: { all: { permissions: [{ any: true }], principals: [{ any: true }] } } } }"#;
    let strict = mesh_core::MeshConfig::from_yaml(&server_yaml(&backend_files, allow_all)).unwrap();
    let relaxed = mesh_core::MeshConfig::from_yaml(
        &server_yaml(&backend_files, allow_all).replace(
            "      require_client_certificate: true\n      common_tls_context:\n        tls_certificate_provider_instance: { instance_name: default }\n        validation_context: { ca_certificate_provider_instance: { instance_name: default } }",
            "      common_tls_context: { tls_certificate_provider_instance: { instance_name: default } }",
        ),
    )
    .unwrap();
    assert_ne!(strict, relaxed, "the replacement applied");
    let backend = Mesh::from_config(strict).await.unwrap();
    let server = backend.server("backend").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (entered, release, handler) = gated();
    tokio::spawn(server.clone().serve(listener, handler));

    let frontend = Arc::new(caller(&pki.files("frontend", FRONTEND), addr).await);
    assert_eq!(
        http(&frontend, "GET", "/").await,
        (200, FRONTEND.to_owned())
    );
    let holder = frontend.clone();
    let slow = tokio::spawn(async move { http(&holder, "GET", "/slow").await });
    entered.notified().await;
    let anonymous = anonymous_caller(&pki.files("anonymous", INTRUDER), addr).await;
    let refused = anonymous
        .channel::<Empty<Bytes>>("xds:///web")
        .oneshot(
            http::Request::get("http://web/")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "served without a client certificate");

    backend.store().replace(relaxed).unwrap();
    release.notify_one();
    assert_eq!(slow.await.unwrap(), (200, FRONTEND.to_owned()));
    // The old connection drains and closes (an idle one would stay in the caller's pool).
    let mut open = server.open_connections();
    let closed = tokio::time::timeout(support::PATIENCE, open.wait_for(|n| *n == 0));
    assert!(closed.await.is_ok(), "the old connection never closed");
    assert_eq!(
        http(&frontend, "GET", "/").await,
        (200, "-".to_owned()),
        "a new connection, no client certificate asked"
    );
    assert_eq!(http(&anonymous, "GET", "/").await, (200, "-".to_owned()));
    assert_eq!(server.stats().drain_expired, 0);
}

type Gate = std::sync::Arc<tokio::sync::Notify>;

/// A handler answering the caller's SPIFFE ID (or `-`); `/slow` first tells the first gate it
/// has begun and waits for the second.
fn gated() -> (
    Gate,
    Gate,
    impl tower::Service<
        http::Request<mesh_tower::server::Incoming>,
        Response = http::Response<http_body_util::Full<Bytes>>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
) {
    let (entered, release) = (Gate::default(), Gate::default());
    let (e, r) = (entered.clone(), release.clone());
    let handler = tower::service_fn(move |req: http::Request<mesh_tower::server::Incoming>| {
        let (e, r) = (e.clone(), r.clone());
        async move {
            if req.uri().path() == "/slow" {
                e.notify_one();
                r.notified().await;
            }
            let who = req
                .extensions()
                .get::<mesh_tower::tls::PeerInfo>()
                .and_then(|p| p.identity.as_ref())
                .and_then(|i| i.spiffe_id())
                .unwrap_or("-")
                .to_owned();
            Ok(http::Response::new(http_body_util::Full::new(Bytes::from(
                who,
            ))))
        }
    });
    (entered, release, handler)
}
