//! mTLS side by side: the same closed-loop HTTP/2 load over mutual TLS through
//! - `rustls-bare`: hyper over tokio-rustls at both ends (stock rustls configs, ring): the limit;
//! - `mesh-mtls`: a mesh client (static config, `file_watcher` identity, SAN-checked cluster) to
//!   a hyper server behind the mesh's `ServerTls`;
//! - `mesh-server`: the server half alone: the bare rustls client to `MeshServer::serve` (mTLS
//!   from a `servers:` entry, an RBAC filter of 10 Istio-shaped rules the caller matches only
//!   the last of, the same echo handler);
//! - `envoy-pair`: Istio's sidecar data path, app → Envoy → mTLS → Envoy → app (plaintext h2c
//!   at both ends, both Envoys `--concurrency 1`);
//! - `grpc-go-mtls`: grpc-go's proxyless xDS at both ends with xDS credentials (our Go programs
//!   `grpcload -xds-creds` → `grpcpeer server`, configured by go-control-plane as Istio
//!   configures proxyless gRPC), calling a raw-bytes unary echo: gRPC framing, same body size;
//! - `h2c-bare`: hyper without TLS, to show what TLS itself costs.
//!
//! Every contender is its own process pinned as in `side_by_side` (clients and the client-side
//! Envoy on CPU 1, servers and the server-side Envoy on CPU 0). CPU per request counts the
//! client, the server and any sidecar: each end's TLS is part of the cost.
//!
//! `cargo bench -p mesh-benches --bench sbs_mtls` runs c = 1 and 32 with 64 B and 4 KiB bodies,
//! 3 rounds of 3 s (`SBS_ROUNDS`), and writes `target/sbs_mtls.md`; without `--bench` it is a
//! smoke run that checks every contender served without errors.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_benches::harness::{
    self, CLIENT_CPU, Row, SERVER_CPU, TICK_US, closed_loop, cpu_ticks, median, pin_pid, pinned,
    run_result, spawn_server,
};
use mesh_examples::pki::{DevCa, LeafSpec, WorkloadFiles};
use mesh_interop::envoy::{Envoy, free_port};
use mesh_tower::{Mesh, MeshService};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod sbs_mtls_peers;

use sbs_mtls_peers::{envoy_config, envoy_tls, grpc_go, grpc_go_client};

const CONTENDERS: [&str; 6] = [
    "rustls-bare",
    "mesh-server",
    "mesh-mtls",
    "envoy-pair",
    "grpc-go-mtls",
    "h2c-bare",
];
const BASELINE: &str = "rustls-bare";
const SERVER_ID: &str = "spiffe://cluster.local/ns/bench/sa/echo";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/load";
/// The server certificate's DNS SAN: stock rustls verifies a name, the mesh a SPIFFE ID.
const SERVER_NAME: &str = "echo.bench.svc";

fn workload(dir: &Path, name: &str) -> WorkloadFiles {
    WorkloadFiles {
        cert: dir.join(name).join("cert-chain.pem"),
        key: dir.join(name).join("key.pem"),
        roots: dir.join(name).join("root-cert.pem"),
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn roots(path: &Path) -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path) {
        store.add(c).unwrap();
    }
    Arc::new(store)
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Stock rustls, server side: client certificates required, verified by webpki.
fn bare_server_config(files: &WorkloadFiles) -> Arc<rustls::ServerConfig> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&files.roots), ring())
            .build()
            .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&files.cert),
            PrivateKeyDer::from_pem_file(&files.key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Stock rustls, client side: the server's name verified, our certificate presented.
fn bare_client_config(files: &WorkloadFiles) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&files.roots))
        .with_client_auth_cert(
            certs(&files.cert),
            PrivateKeyDer::from_pem_file(&files.key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

// ===== servers (their own processes) =====

async fn echo<IO>(io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body.unwrap_or_default())))
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn serve(kind: &str, dir: &Path) {
    use futures_util::StreamExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("ADDR {}", listener.local_addr().unwrap());
    let files = workload(dir, "server");
    match kind {
        "mesh" => {
            let (tls, _provider) =
                mesh_examples::identity::strict_server_tls("server", &files, "600s");
            let mut incoming = Box::pin(tls.incoming(listener));
            while let Some(Ok(conn)) = incoming.next().await {
                tokio::spawn(echo(conn));
            }
        }
        "mesh-server" => {
            let mut rules = String::new();
            for i in 0..9 {
                rules.push_str(&format!(
                    "r{i}: {{ permissions: [{{ any: true }}], principals: [{{ authenticated: {{ principal_name: {{ prefix: \"spiffe://cluster.local/ns/team{i}/\" }} }} }}] }}, "
                ));
            }
            rules.push_str(&format!(
                "r9: {{ permissions: [{{ any: true }}], principals: [{{ authenticated: {{ principal_name: {{ exact: \"{CLIENT_ID}\" }} }} }}] }}"
            ));
            let yaml = format!(
                "certificate_providers: {{ default: {} }}\nservers:\n  - name: echo\n    \
                 transport_socket: {{ require_client_certificate: true, common_tls_context: {{ \
                 tls_certificate_provider_instance: {{ instance_name: default }}, \
                 validation_context: {{ ca_certificate_provider_instance: {{ instance_name: default }} }} }} }}\n    \
                 http_filters:\n      - {{ name: envoy.filters.http.rbac, rbac: {{ rules: {{ policies: {{ {rules} }} }} }} }}\n",
                files.file_watcher_yaml("600s")
            );
            let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
                .await
                .unwrap();
            let svc = tower::service_fn(
                |req: http::Request<mesh_tower::server::Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        body.unwrap_or_default(),
                    )))
                },
            );
            let _ = mesh.server("echo").unwrap().serve(listener, svc).await;
        }
        "bare" => {
            let acceptor = tokio_rustls::TlsAcceptor::from(bare_server_config(&files));
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        echo(tls).await;
                    }
                });
            }
        }
        _ => loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            tokio::spawn(echo(tcp));
        },
    }
}

// ===== one contender's client (its own process) =====

#[derive(Clone)]
enum Client {
    Hyper(SendRequest<Full<Bytes>>),
    Mesh(MeshService<Full<Bytes>>),
}

impl Client {
    async fn send(&self, body: Bytes) -> Result<usize, String> {
        match self {
            Client::Hyper(tx) => harness::send_hyper(tx, body).await,
            Client::Mesh(svc) => harness::send_mesh(svc, body).await,
        }
    }
}

async fn hyper_over<IO>(io: IO) -> Client
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    Client::Hyper(tx)
}

fn mesh_yaml(target: SocketAddr, files: &WorkloadFiles) -> String {
    format!(
        r#"
certificate_providers: {{ default: {provider} }}
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{{ match: {{ prefix: / }}, route: {{ cluster: echo }} }}]
clusters:
  - name: echo
    type: STATIC
    protocol: HTTP2
    load_assignment:
      cluster_name: echo
      endpoints: [{{ lb_endpoints: [{{ address: "{target}" }}] }}]
    transport_socket:
      sni: {SERVER_NAME}
      common_tls_context:
        tls_certificate_provider_instance: {{ instance_name: default }}
        validation_context:
          ca_certificate_provider_instance: {{ instance_name: default }}
          match_typed_subject_alt_names:
            - {{ san_type: URI, matcher: {{ exact: "{SERVER_ID}" }} }}
"#,
        provider = files.file_watcher_yaml("600s"),
    )
}

async fn client(contender: &str, target: SocketAddr, dir: &Path, c: usize, secs: f64, size: usize) {
    let files = workload(dir, "client");
    let tcp = || async {
        let s = tokio::net::TcpStream::connect(target).await.unwrap();
        let _ = s.set_nodelay(true);
        s
    };
    let (client, _mesh) = match contender {
        "h2c-bare" | "envoy-pair" => (hyper_over(tcp().await).await, None),
        "rustls-bare" | "mesh-server" => {
            let connector = tokio_rustls::TlsConnector::from(bare_client_config(&files));
            let name = ServerName::try_from(SERVER_NAME).unwrap();
            let tls = connector.connect(name, tcp().await).await.unwrap();
            (hyper_over(tls).await, None)
        }
        "mesh-mtls" => {
            let config = mesh_core::MeshConfig::from_yaml(&mesh_yaml(target, &files)).unwrap();
            let mesh = Mesh::from_config(config).await.unwrap();
            (Client::Mesh(mesh.channel("xds:///web")), Some(mesh))
        }
        other => panic!("unknown contender {other}"),
    };
    closed_loop(c, secs, size, move |body| {
        let client = client.clone();
        async move { client.send(body).await }
    })
    .await;
}

// ===== the orchestrator =====

fn server(kind: &str, dir: &Path) -> (std::process::Child, SocketAddr) {
    let mut cmd = pinned(SERVER_CPU, std::env::current_exe().unwrap());
    cmd.env("SBS_MTLS_ROLE", format!("server-{kind}"))
        .env("SBS_MTLS_DIR", dir);
    spawn_server(cmd)
}

fn main() {
    let dir = std::env::var_os("SBS_MTLS_DIR").map(PathBuf::from);
    let v = |k: &str| std::env::var(k).unwrap();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    match std::env::var("SBS_MTLS_ROLE").as_deref() {
        Ok(role) if role.starts_with("server-") => {
            return rt().block_on(serve(&role["server-".len()..], &dir.unwrap()));
        }
        Ok("client") => {
            return rt().block_on(client(
                &v("SBS_CONTENDER"),
                v("SBS_TARGET").parse().unwrap(),
                &dir.unwrap(),
                v("SBS_CONCURRENCY").parse().unwrap(),
                v("SBS_SECS").parse().unwrap(),
                v("SBS_SIZE").parse().unwrap(),
            ));
        }
        _ => {}
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, secs, concurrencies, sizes): (usize, f64, &[usize], &[usize]) = if full {
        let rounds = std::env::var("SBS_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        (rounds, 3.0, &[1, 32], &[64, 4096])
    } else {
        (1, 0.3, &[4], &[64])
    };

    let tmp = tempfile::tempdir().unwrap();
    let ca = DevCa::new("bench root");
    let server_leaf = ca.issue(&LeafSpec {
        uris: &[SERVER_ID],
        dns: &[SERVER_NAME],
        validity: None,
    });
    let server_files = ca
        .write_workload(&tmp.path().join("server"), &server_leaf)
        .unwrap();
    let client_files = ca
        .write_workload(&tmp.path().join("client"), &ca.issue_spiffe(CLIENT_ID))
        .unwrap();

    let servers: HashMap<&str, (std::process::Child, SocketAddr)> =
        ["plain", "bare", "mesh", "mesh-server"]
            .into_iter()
            .map(|k| (k, server(k, tmp.path())))
            .collect();
    let plain = servers["plain"].1;
    // The Envoy pair: the server-side one terminates mTLS in front of the plaintext app.
    let (front, back) = (free_port(), free_port());
    let server_envoy = Envoy::start_static(
        &envoy_config(
            back,
            Some(envoy_tls(&server_files, CLIENT_ID, 16)),
            plain,
            None,
        ),
        back,
    );
    let client_envoy = Envoy::start_static(
        &envoy_config(
            front,
            None,
            back,
            Some(envoy_tls(&client_files, SERVER_ID, 12)),
        ),
        front,
    );
    pin_pid(SERVER_CPU, server_envoy.pid());
    pin_pid(CLIENT_CPU, client_envoy.pid());
    rt().block_on(async {
        // Envoy has no readiness signal: wait (bounded) until the pair proxies.
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(s) = tokio::net::TcpStream::connect(front).await {
                    let c = hyper_over(s).await;
                    if c.send(Bytes::from_static(b"x")).await == Ok(1) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the Envoy pair proxies to the echo server over mTLS");
    });

    let go = grpc_go(&rt(), tmp.path(), &server_files, &client_files);
    pin_pid(SERVER_CPU, go.server.pid());

    let mut results: HashMap<(&str, usize, usize), Vec<Row>> = HashMap::new();
    for round in 0..rounds {
        for &c in concurrencies {
            for &size in sizes {
                let mut order = CONTENDERS.to_vec();
                order.rotate_left(round % CONTENDERS.len());
                for contender in order {
                    let (target, server_pid, sidecars) = match contender {
                        "rustls-bare" => (servers["bare"].1, servers["bare"].0.id(), vec![]),
                        "mesh-mtls" => (servers["mesh"].1, servers["mesh"].0.id(), vec![]),
                        "mesh-server" => (
                            servers["mesh-server"].1,
                            servers["mesh-server"].0.id(),
                            vec![],
                        ),
                        "envoy-pair" => (
                            front,
                            servers["plain"].0.id(),
                            vec![client_envoy.pid(), server_envoy.pid()],
                        ),
                        "grpc-go-mtls" => (plain, go.server.pid(), vec![]),
                        _ => (plain, servers["plain"].0.id(), vec![]),
                    };
                    let others: Vec<u32> = sidecars.iter().copied().chain([server_pid]).collect();
                    let before: Vec<u64> =
                        others.iter().map(|p| cpu_ticks(&p.to_string())).collect();
                    let mut cmd = pinned(CLIENT_CPU, std::env::current_exe().unwrap());
                    cmd.env("SBS_MTLS_ROLE", "client")
                        .env("SBS_MTLS_DIR", tmp.path())
                        .env("SBS_CONTENDER", contender)
                        .env("SBS_TARGET", target.to_string())
                        .env("SBS_CONCURRENCY", c.to_string())
                        .env("SBS_SECS", secs.to_string())
                        .env("SBS_SIZE", size.to_string());
                    if contender == "grpc-go-mtls" {
                        cmd = grpc_go_client(&go, c, secs, size);
                    }
                    let mut row = run_result(contender, cmd);
                    let others_us: u64 = others
                        .iter()
                        .zip(before)
                        .map(|(p, t0)| (cpu_ticks(&p.to_string()) - t0) * TICK_US)
                        .sum();
                    row.insert("others_cpu_us".into(), others_us as f64);
                    results.entry((contender, c, size)).or_default().push(row);
                }
            }
        }
    }
    for (_, (mut child, _)) in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let table = report(&results, concurrencies, sizes);
    println!("{table}");
    if full {
        let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sbs_mtls.md");
        let _ = std::fs::write(&out, &table);
        println!("written to {}", out.display());
    }
}

fn report(
    results: &HashMap<(&str, usize, usize), Vec<Row>>,
    concurrencies: &[usize],
    sizes: &[usize],
) -> String {
    let mut table = String::from(
        "| contender | c | body | req/s | vs rustls-bare (paired rounds, median) | range | p50 µs | p99 µs | CPU µs/req (all processes) | req per CPU-s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let rps = |r: &Row| r["requests"] / r["secs"];
    let cpu = |r: &Row| (r["cpu_us"] + r["others_cpu_us"]) / r["requests"].max(1.0);
    for &c in concurrencies {
        for &size in sizes {
            let rows = |k: &'static str| &results[&(k, c, size)];
            for contender in CONTENDERS {
                let rs = rows(contender);
                assert!(
                    rs.iter().all(|r| r["requests"] > 0.0 && r["errors"] == 0.0),
                    "{contender} failed: {rs:?}"
                );
                let mut ratios: Vec<f64> = rs
                    .iter()
                    .zip(rows(BASELINE))
                    .map(|(r, b)| rps(r) / rps(b).max(1.0))
                    .collect();
                let med =
                    |f: &dyn Fn(&Row) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
                let cpu_per_req = med(&cpu);
                table.push_str(&format!(
                    "| {contender} | {c} | {size} B | {:.0} | {:.2}× | {:.2}–{:.2} | {:.0} | {:.0} | {cpu_per_req:.1} | {:.0} |\n",
                    med(&rps),
                    median(&mut ratios),
                    ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    ratios.iter().copied().fold(0.0, f64::max),
                    med(&|r| r["p50"]),
                    med(&|r| r["p99"]),
                    1e6 / cpu_per_req.max(0.001),
                ));
            }
        }
    }
    table
}
