//! Side-by-side load harness: the same closed-loop load through bare hyper, our mesh (static
//! config, and config from go-control-plane over ADS), and an Envoy 1.40 sidecar, against one
//! echo server — each contender in its own process, alternated, repeated, medians reported.
//! The gRPC contenders (unary calls to the same server) are tonic straight to the server, tonic
//! through the mesh over ADS, and grpc-go's proxyless xDS client on the same control plane.
//! The `-h1` contenders are the same over HTTP/1.1 (bare hyper's HTTP/1.1 connections behind
//! the simplest pool, the mesh with an `HTTP1` cluster, Envoy's listener taking HTTP/1.1) and
//! are compared with `bare-hyper-h1`.
//!
//! `cargo bench -p mesh-benches --bench side_by_side` runs concurrency 1, 32 and 256 with
//! 64 B and 4 KiB bodies, 3 rounds of 3 s each, prints a markdown table and writes it to
//! `target/side_by_side.md`. Client CPU per request comes from the client process's
//! `/proc/self/stat` (user + system), and for the Envoy path Envoy's own CPU is added (a sidecar's
//! cost is the user's cost); `client user µs/req` is the client process's user time alone
//! (its own code, without the kernel's network stack and wakeups; Envoy's not added). Without
//! `--bench` (as `cargo test --all-targets` runs it) it is a seconds-long smoke run that checks
//! every contender ran and produced numbers.
//!
//! `SBS_CONTENDERS=a,b,…` picks the contenders (their baselines are added); `SBS_CELLS=32x64`
//! narrows a full run to the listed concurrency × body cells. `h2-direct` is
//! not in the default set: it drives the `h2` crate by hand (no hyper), as the floor under
//! bare hyper for profiling; the smoke run includes it so it cannot rot. Likewise
//! `mesh-ads-all` (the mesh with metrics, access log and 1% tracing) and `envoy-sidecar-all`
//! (the sidecar with an access log and 1% tracing, `sbs_envoy.rs`), which compare what the
//! same telemetry costs in each.
//!
//! Every Rust client process runs a one-thread tokio runtime and grpc-go runs with
//! `GOMAXPROCS=1`. Processes are pinned with `taskset`: the echo server to CPU 0, every client
//! to CPU 1, and the Envoy sidecar (`--concurrency 1`) to CPU 1 too — a sidecar runs next to
//! its application and takes its CPU from the same node.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_benches::harness::{
    self, CLIENT_CPU, Row, SERVER_CPU, TICK_US, closed_loop, cpu_ticks, pinned, run_result,
    spawn_server,
};
use mesh_tower::Mesh;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

mod sbs_envoy;
mod sbs_grpc;
mod sbs_table;

const CONTENDERS: [&str; 11] = [
    "bare-hyper",
    "mesh-static",
    "bare-hyper-h1",
    "mesh-static-h1",
    "envoy-sidecar-h1",
    "mesh-ads",
    "mesh-ads-metrics",
    "envoy-sidecar",
    "tonic-bare",
    "tonic-mesh-ads",
    "grpc-go-xds",
];

/// Measured only when asked for (`SBS_CONTENDERS`) and in the smoke run.
const FLOOR: &str = "h2-direct";

/// Likewise: the xDS mesh with all its telemetry on (Istio's metrics into Prometheus's
/// exporter, an access log line per request to /dev/null, traces sampled at 1% exported to
/// Jaeger), as a bootstrap mesh takes it from its environment.
const ALL_TELEMETRY: &str = "mesh-ads-all";

/// The contenders of this run: `SBS_CONTENDERS` (plus the baselines they are compared with),
/// or the default set (plus the floor in a smoke run).
fn contenders(smoke: bool) -> Vec<&'static str> {
    let all: Vec<&'static str> = CONTENDERS
        .iter()
        .copied()
        .chain([FLOOR, ALL_TELEMETRY, sbs_envoy::ENVOY_ALL])
        .collect();
    match std::env::var("SBS_CONTENDERS") {
        Ok(list) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            for w in &wanted {
                assert!(all.contains(w), "unknown contender {w} in SBS_CONTENDERS");
            }
            all.into_iter()
                .filter(|c| wanted.contains(c) || wanted.iter().any(|w| baseline(w) == *c))
                .collect()
        }
        Err(_) if smoke => all,
        Err(_) => CONTENDERS.to_vec(),
    }
}

/// The contender each one's throughput is compared with: bare hyper for HTTP (its HTTP/1.1
/// client for the `-h1` contenders), tonic straight to the server for gRPC.
fn baseline(contender: &str) -> &'static str {
    if contender.starts_with("tonic") || contender.starts_with("grpc") {
        "tonic-bare"
    } else if contender.ends_with("-h1") {
        "bare-hyper-h1"
    } else {
        "bare-hyper"
    }
}
// ===== the echo server (its own process) =====

async fn serve() {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("ADDR {}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let grpc = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
                    .cloned();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                // gRPC: the framed message back with its status in trailers.
                let res = match grpc {
                    Some(ct) => {
                        sbs_grpc::echo_response(Some(ct), body).map(http_body_util::Either::Right)
                    }
                    None => http::Response::new(http_body_util::Either::Left(Full::new(body))),
                };
                Ok::<_, std::convert::Infallible>(res)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ===== one contender's client (its own process) =====

#[derive(Clone)]
enum Client {
    Hyper(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    HyperH1(std::sync::Arc<H1Pool>),
    H2(h2::client::SendRequest<Bytes>),
    Mesh(mesh_tower::MeshService<Full<Bytes>>),
    Grpc(sbs_grpc::Tonic),
}

impl Client {
    async fn send(&self, body: Bytes) -> Result<usize, String> {
        match self {
            Client::Hyper(tx) => harness::send_hyper(tx, body).await,
            Client::HyperH1(pool) => pool.send(body).await,
            Client::H2(tx) => {
                // What hyper does for this request, by hand: the head, the body as one DATA
                // frame ending the stream, the answer's DATA frames with their flow-control
                // credit given back. No dispatch channel, no per-request task.
                let mut tx = tx.clone().ready().await.map_err(|e| e.to_string())?;
                let (head, _) = harness::echo_request(Bytes::new()).into_parts();
                let (res, mut stream) = tx
                    .send_request(http::Request::from_parts(head, ()), false)
                    .map_err(|e| e.to_string())?;
                stream.send_data(body, true).map_err(|e| e.to_string())?;
                let mut body = res.await.map_err(|e| e.to_string())?.into_body();
                let mut n = 0;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.map_err(|e| e.to_string())?;
                    n += chunk.len();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Ok(n)
            }
            Client::Mesh(svc) => harness::send_mesh(svc, body).await,
            Client::Grpc(g) => g.call(body).await,
        }
    }
}

/// Bare hyper's HTTP/1.1 connections with the simplest pool in front: an idle connection if
/// there is one, else a new one, handed back once the answer is read (HTTP/1.1 carries one
/// request at a time, so concurrency c keeps c connections). The request is what the mesh
/// sends upstream: origin form with a `host` header.
struct H1Pool {
    target: SocketAddr,
    idle: std::sync::Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
}

impl H1Pool {
    async fn send(&self, body: Bytes) -> Result<usize, String> {
        let idle = {
            let mut idle = self.idle.lock().unwrap();
            std::iter::from_fn(|| idle.pop()).find(|tx| tx.is_ready())
        };
        let mut tx = match idle {
            Some(tx) => tx,
            None => {
                let stream = tokio::net::TcpStream::connect(self.target)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                let (tx, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                tx
            }
        };
        let req = http::Request::post("/echo")
            .header(http::header::HOST, "web")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let res = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let b = res.into_body().collect().await.map_err(|e| e.to_string())?;
        self.idle.lock().unwrap().push(tx);
        Ok(b.to_bytes().len())
    }
}

async fn h2(addr: SocketAddr) -> Client {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    Client::Hyper(tx)
}

async fn client(contender: &str, target: SocketAddr, concurrency: usize, secs: f64, size: usize) {
    let (client, _mesh) = match contender {
        "bare-hyper" | "envoy-sidecar" | "envoy-sidecar-all" => (h2(target).await, None),
        "bare-hyper-h1" | "envoy-sidecar-h1" => {
            let pool = H1Pool {
                target,
                idle: Default::default(),
            };
            (Client::HyperH1(std::sync::Arc::new(pool)), None)
        }
        "h2-direct" => {
            let stream = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = stream.set_nodelay(true);
            let (tx, conn) = h2::client::handshake(stream).await.unwrap();
            tokio::spawn(conn);
            (Client::H2(tx), None)
        }
        "mesh-static" => {
            let yaml = mesh_examples::yaml::web_config(&[target], "protocol: HTTP2");
            let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
                .await
                .unwrap();
            (Client::Mesh(mesh.channel("xds:///web")), Some(mesh))
        }
        "mesh-static-h1" => {
            let yaml = mesh_examples::yaml::web_config(&[target], "protocol: HTTP1");
            let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
                .await
                .unwrap();
            (Client::Mesh(mesh.channel("xds:///web")), Some(mesh))
        }
        "mesh-ads" | "mesh-ads-metrics" | "mesh-ads-all" | "tonic-mesh-ads" => {
            if contender == "mesh-ads-metrics" || contender == ALL_TELEMETRY {
                // Istio's metrics recorded into a real exporter (a mesh from xDS always
                // records; without a recorder the handles are no-ops).
                mesh_tower::telemetry::prometheus::install().unwrap();
            }
            let mesh = Mesh::from_xds(XdsClientBuilder::new(target.to_string(), "bench-mesh"))
                .await
                .unwrap();
            mesh.wait_ready("xds:///web", Duration::from_secs(10))
                .await
                .unwrap();
            let client = match contender {
                "mesh-ads" | "mesh-ads-metrics" | "mesh-ads-all" => {
                    Client::Mesh(mesh.channel("xds:///web"))
                }
                _ => Client::Grpc(sbs_grpc::Tonic::mesh(&mesh)),
            };
            (client, Some(mesh))
        }
        "tonic-bare" => (Client::Grpc(sbs_grpc::Tonic::bare(target).await), None),
        other => panic!("unknown contender {other}"),
    };
    closed_loop(concurrency, secs, size, move |body| {
        let client = client.clone();
        async move { client.send(body).await }
    })
    .await;
}

// ===== the orchestrator =====

/// One client run's load: concurrency, seconds, body size.
#[derive(Clone, Copy)]
struct Load {
    c: usize,
    secs: f64,
    size: usize,
}

fn run_client(
    contender: &str,
    target: SocketAddr,
    Load { c, secs, size }: Load,
    envoy_pid: Option<u32>,
    bootstrap: &std::path::Path,
    env: &[(&str, String)],
) -> Row {
    let envoy0 = envoy_pid.map(|p| cpu_ticks(&p.to_string()));
    let cmd = if contender == "grpc-go-xds" {
        sbs_grpc::grpc_go_command(bootstrap, c, secs, size)
    } else {
        let mut cmd = pinned(CLIENT_CPU, std::env::current_exe().unwrap());
        cmd.env("SIDE_BY_SIDE_ROLE", "client")
            .env("SBS_CONTENDER", contender)
            .env("SBS_TARGET", target.to_string())
            .env("SBS_CONCURRENCY", c.to_string())
            .env("SBS_SECS", secs.to_string())
            .env("SBS_SIZE", size.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v)));
        cmd
    };
    let mut row = run_result(contender, cmd);
    if let (Some(p), Some(t0)) = (envoy_pid, envoy0) {
        row.insert(
            "sidecar_cpu_us".into(),
            ((cpu_ticks(&p.to_string()) - t0) * TICK_US) as f64,
        );
    }
    row
}

fn main() {
    match std::env::var("SIDE_BY_SIDE_ROLE").as_deref() {
        Ok("server") => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            return rt.block_on(serve());
        }
        Ok("client") => {
            let v = |k: &str| std::env::var(k).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            return rt.block_on(client(
                &v("SBS_CONTENDER"),
                v("SBS_TARGET").parse().unwrap(),
                v("SBS_CONCURRENCY").parse().unwrap(),
                v("SBS_SECS").parse().unwrap(),
                v("SBS_SIZE").parse().unwrap(),
            ));
        }
        _ => {}
    }
    let full = std::env::args().any(|a| a == "--bench");
    let run = contenders(!full);
    let (rounds, secs, concurrencies, sizes): (usize, f64, &[usize], &[usize]) = if full {
        let rounds = std::env::var("SBS_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        (rounds, 3.0, &[1, 32, 256], &[64, 4096])
    } else {
        (1, 0.3, &[4], &[64])
    };
    // `SBS_CELLS=32x64,256x4096` narrows a full run to those concurrency × body cells (to
    // profile one of them).
    let cells: Option<Vec<(usize, usize)>> = std::env::var("SBS_CELLS").ok().map(|v| {
        (v.split(',').filter_map(|c| {
            let (c, s) = c.trim().split_once('x')?;
            Some((c.parse().ok()?, s.parse().ok()?))
        }))
        .collect()
    });
    let wanted = |c: usize, size: usize| cells.as_ref().is_none_or(|l| l.contains(&(c, size)));

    // The echo server, in its own process.
    let mut cmd = pinned(SERVER_CPU, std::env::current_exe().unwrap());
    cmd.env("SIDE_BY_SIDE_ROLE", "server");
    let (mut server, echo) = spawn_server(cmd);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The all-telemetry contenders' trace receiver.
    let jaeger = (run.contains(&ALL_TELEMETRY) || run.contains(&sbs_envoy::ENVOY_ALL))
        .then(|| rt.block_on(mesh_interop::jaeger::Jaeger::start()));
    let (cp, envoy, envoy_all) = rt.block_on(sbs_envoy::start(echo, jaeger.as_ref()));

    // What the all-telemetry mesh's environment says.
    // `SBS_TELEMETRY=log` or `=trace` keeps one part only, to see what each costs;
    // `SBS_TRACE_RATIO` changes the sampled share (default 0.01).
    let parts = std::env::var("SBS_TELEMETRY").unwrap_or_else(|_| "log,trace".into());
    let mut telemetry_env: Vec<(&str, String)> = Vec::new();
    if let Some(j) = &jaeger {
        if parts.contains("log") {
            telemetry_env.push(("MESH_ACCESS_LOG", "/dev/null".to_owned()));
        }
        if parts.contains("trace") {
            telemetry_env.extend([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", j.otlp)),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
                (
                    "OTEL_TRACES_SAMPLER_ARG",
                    std::env::var("SBS_TRACE_RATIO").unwrap_or_else(|_| "0.01".into()),
                ),
            ]);
        }
    }

    // grpc-go reads the same snapshot as the mesh (node `bench-mesh`); built before timing.
    let bootstrap = sbs_grpc::bootstrap(cp.ads, "bench-mesh");
    mesh_interop::gocp::grpc_go_load_binary();

    let mut results: HashMap<(String, usize, usize), Vec<Row>> = HashMap::new();
    for round in 0..rounds {
        for &c in concurrencies {
            for &size in sizes {
                if !wanted(c, size) {
                    continue;
                }
                // Alternate the order every round so no contender always runs first.
                let mut order = run.clone();
                order.rotate_left(round % run.len());
                for contender in order {
                    let (target, pid) = match contender {
                        "mesh-ads" | "mesh-ads-metrics" | "mesh-ads-all" | "tonic-mesh-ads"
                        | "grpc-go-xds" => (cp.ads, None),
                        "envoy-sidecar" | "envoy-sidecar-h1" => (envoy.listener, Some(envoy.pid())),
                        "envoy-sidecar-all" => (
                            envoy_all.expect("the telemetry listener"),
                            Some(envoy.pid()),
                        ),
                        _ => (echo, None),
                    };
                    let env = if contender == ALL_TELEMETRY {
                        &telemetry_env[..]
                    } else {
                        &[]
                    };
                    let load = Load { c, secs, size };
                    let row = run_client(contender, target, load, pid, &bootstrap, env);
                    results
                        .entry((contender.to_owned(), c, size))
                        .or_default()
                        .push(row);
                }
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let table = sbs_table::render(&results, &run, concurrencies, sizes, wanted);
    println!("{table}");
    if full {
        let out =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/side_by_side.md");
        let _ = std::fs::write(&out, &table);
        println!("written to {}", out.display());
    }
    let _ = std::fs::remove_file(&bootstrap);
    drop(envoy);
    drop(cp);
}
