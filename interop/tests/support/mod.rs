//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

#[allow(unused_imports)]
pub use mesh_interop::{ads, envoy, gocp, istiod};

pub mod echo_process;
pub mod envoy_tls;
pub mod fake;
pub mod go_oracle;
pub mod grpc_server;
pub mod istio;
pub mod load;
pub mod log_pair;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_tower::connect::{Connect, ConnectFuture, ConnectTarget, TcpConnector};
use mesh_tower::{Mesh, MeshError, MeshService, ServedBy};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

/// Generous bound for awaiting events in tests; never a synchronisation sleep.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A config with one listener `web` routing everything to cluster `web`, whose endpoints are
/// `addrs` with the given protocol.
pub fn web_config(addrs: &[SocketAddr], protocol: &str) -> String {
    mesh_examples::yaml::web_config(addrs, &format!("protocol: {protocol}"))
}

/// Sends a GET and returns who served it.
pub async fn get(
    svc: &MeshService<Empty<Bytes>>,
    uri: &str,
) -> Result<(u16, ServedBy, Bytes), MeshError> {
    let req = http::Request::get(uri).body(Empty::new()).unwrap();
    let res = svc.clone().oneshot(req).await?;
    let status = res.status().as_u16();
    let served = res
        .extensions()
        .get::<ServedBy>()
        .cloned()
        .expect("ServedBy on every upstream response");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    Ok((status, served, body))
}

/// Counts connections opened per endpoint.
#[derive(Clone, Default)]
pub struct CountingConnector {
    pub counts: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

impl CountingConnector {
    pub fn count(&self, addr: SocketAddr) -> usize {
        self.counts.lock().unwrap().get(&addr).copied().unwrap_or(0)
    }
}

impl Connect for CountingConnector {
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(target.address)
            .or_insert(0) += 1;
        TcpConnector::default().connect(target)
    }
}

/// The xDS resources of one service: listener `web` → route config `web-routes` → `/` to
/// `cluster` (its `Cluster` resource) → EDS assignment `endpoints`.
pub fn web_resources(
    cluster: envoy_types::pb::envoy::config::cluster::v3::Cluster,
    endpoints: &[SocketAddr],
) -> Vec<envoy_types::pb::google::protobuf::Any> {
    use mesh_xds_client::build;
    vec![
        build::any(&build::api_listener_rds("web", "web-routes")),
        build::any(&build::route_config(
            "web-routes",
            &["*"],
            vec![build::route("/", "web")],
        )),
        build::any(&build::assignment(&cluster.name, endpoints)),
        build::any(&cluster),
    ]
}

/// A client's and a server's identity files from `ca` under `dir` (`client/`, `server/`),
/// with SPIFFE IDs `client_id` and `server_id`.
pub fn identity_pair(
    ca: &mesh_examples::pki::DevCa,
    dir: &std::path::Path,
    client_id: &str,
    server_id: &str,
) -> (
    mesh_examples::pki::WorkloadFiles,
    mesh_examples::pki::WorkloadFiles,
) {
    let write = |name: &str, id: &str| {
        ca.write_workload(&dir.join(name), &ca.issue_spiffe(id))
            .unwrap()
    };
    (write("client", client_id), write("server", server_id))
}

/// The endpoint addresses of `cluster` in `snap`, sorted.
pub fn endpoints_of(snap: &mesh_core::Snapshot, cluster: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = snap
        .endpoints(cluster)
        .map(|e| e.iter_endpoints().map(|(_, _, ep)| ep.address).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Writes `yaml` to a fresh temp file and returns it (kept alive by the handle).
pub fn config_file(yaml: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), yaml).unwrap();
    f
}

/// Replaces a config file's content atomically (write + rename), as editors and ConfigMaps do.
pub fn rewrite(file: &tempfile::NamedTempFile, yaml: &str) {
    let tmp = file.path().with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, file.path()).unwrap();
}

pub async fn mesh_from(yaml: &str) -> Mesh {
    Mesh::from_config(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .await
        .unwrap()
}

/// A mesh over a store holding `yaml`, connecting through a [`CountingConnector`].
pub async fn counting_mesh(yaml: &str) -> (Mesh, mesh_core::Store, CountingConnector) {
    let counter = CountingConnector::default();
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .unwrap();
    let mesh = Mesh::builder()
        .store(store.clone())
        .connector(counter.clone())
        .build()
        .await
        .unwrap();
    (mesh, store, counter)
}

/// Replaces the store's whole config, as a control plane push would.
pub fn push(store: &mesh_core::Store, yaml: &str) -> u64 {
    store
        .replace(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .unwrap()
}

/// Requests sent in a loop through a mesh service until stopped, counting failures.
pub struct Traffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    failures: Arc<std::sync::atomic::AtomicUsize>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Starts sending `GET /` through `svc`.
    pub fn start(svc: MeshService<Empty<Bytes>>) -> Traffic {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let (stop, failures, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let task = {
            let (stop, failures, sent) = (stop.clone(), failures.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if get(&svc, "/").await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Traffic {
            stop,
            failures,
            sent,
            task,
        }
    }

    /// Waits until `n` more requests have completed (fails the test if traffic stalls).
    pub async fn wait_more(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let target = self.sent.load(Ordering::Relaxed) + n;
        tokio::time::timeout(PATIENCE, async {
            while self.sent.load(Ordering::Relaxed) < target {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("traffic kept flowing");
    }

    /// Stops and returns how many requests failed.
    pub async fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap();
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A mesh fed by go-control-plane at `ads` as node `mesh-client`, and its ready channel to
/// `xds:///web`.
pub async fn xds_web(ads: SocketAddr, delta: bool) -> (Mesh, MeshService<Empty<Bytes>>) {
    use mesh_xds_client::{XdsClientBuilder, XdsMesh};
    let mesh = Mesh::from_xds(XdsClientBuilder::new(ads.to_string(), "mesh-client").delta(delta))
        .await
        .unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    (mesh, web)
}

/// One HTTP/1.1 GET through Envoy's listener at `envoy` with `Host: oracle` and `headers`; the
/// response with its body read. `None` when Envoy is not (yet) answering.
pub async fn envoy_get(
    envoy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<http::Response<Bytes>> {
    let stream = tokio::net::TcpStream::connect(envoy).await.ok()?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "oracle");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tx
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .ok()?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(http::Response::from_parts(parts, body))
}

/// Whether Envoy answers `path` with a success within 30 s. Envoy is another process with no
/// readiness signal to await, so its listener is polled every 50 ms (bounded).
pub async fn envoy_routes(envoy: SocketAddr, path: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(30), async {
        while envoy_get(envoy, path, &[])
            .await
            .is_none_or(|r| !r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok()
}

/// Waits until the store's config satisfies `f` (an event per config change, no polling).
pub async fn until_config(mesh: &Mesh, f: impl Fn(&mesh_core::Snapshot) -> bool) {
    let mut changed = mesh.store().changed();
    tokio::time::timeout(PATIENCE, async {
        while !f(&mesh.store().load()) {
            changed.changed().await.unwrap();
        }
    })
    .await
    .expect("config reached the expected state");
}

/// A rustls client config trusting `ca`, presenting `cert` (none: no client certificate),
/// offering `alpn`, without session resumption (each connection is a full handshake, so each
/// is judged on its own certificate).
pub fn client_tls(
    ca: &mesh_examples::pki::DevCa,
    cert: Option<&mesh_examples::pki::Issued>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.root_der())).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The plain binary of example `name` (`target/debug/examples/<name>`), which the test
/// command builds first (`cargo test` builds examples only as test harnesses).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p mesh-examples --example {name}` first \
         (`bash .ci/test` does; `cargo test` builds examples only as test harnesses)",
        bin.display()
    );
    bin
}
