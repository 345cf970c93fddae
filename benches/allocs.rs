//! Allocations per request (issue: cost that stays flat, "allocations"): the whole process's
//! heap allocations over many sequential requests, divided by their number, for
//! - `bare-hyper`: hyper's HTTP/2 client on one connection (the floor);
//! - `mesh-plain`: `mesh.channel("xds:///web")`, a route with no policy (the plain path);
//! - `mesh-policy`: the same with every policy layer configured but not firing (fault and
//!   rate-limit filters, header mutations, a prefix rewrite, a retry policy);
//! - the same three over HTTP/1.1 (hyper's pooled client connection for the floor);
//! - `mesh-telemetry`: the plain path with all of the mesh's telemetry on (Istio's metrics
//!   into no recorder, the default JSON access log into a sink, a tracer that samples
//!   nothing, so each call still carries and sends its trace context).
//!
//! Client and server share the process (one current-thread runtime, so nothing else runs):
//! the server's allocations are the same for every contender, so the difference to
//! `bare-hyper` is what the mesh adds. Counted with `stats_alloc` (a global allocator wrapper).
//!
//! `cargo bench -p mesh-benches --bench allocs` (20 000 requests each); without `--bench` a
//! short smoke run.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::Mesh;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::net::SocketAddr;
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let n: u64 = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        500
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(n));
}

async fn run(n: u64) {
    let addr = echo_server().await;
    let mut rows = Vec::new();
    // `ALLOCS_ONLY=mesh-plain-h1` (and the like): that contender alone, for a heap profiler.
    if let Ok(only) = std::env::var("ALLOCS_ONLY") {
        let http2 = only.ends_with("-h2");
        let per = match only.trim_end_matches("-h1").trim_end_matches("-h2") {
            "bare-hyper" => bare_hyper(addr, http2, n).await,
            "mesh-plain" => through_mesh(&plain_yaml(addr, http2), n).await,
            "mesh-telemetry" => with_telemetry(&plain_yaml(addr, http2), n).await,
            _ => through_mesh(&policy_yaml(addr, http2), n).await,
        };
        println!("{only}: {per:.2} allocations per request");
        return;
    }
    for (protocol, http2) in [("HTTP/2", true), ("HTTP/1.1", false)] {
        let bare = bare_hyper(addr, http2, n).await;
        let plain = through_mesh(&plain_yaml(addr, http2), n).await;
        let policy = through_mesh(&policy_yaml(addr, http2), n).await;
        let telemetry = with_telemetry(&plain_yaml(addr, http2), n).await;
        rows.push(format!(
            "| {protocol} | {bare:.2} | {plain:.2} (+{:.2}) | {policy:.2} (+{:.2}) | {telemetry:.2} (+{:.2}) |",
            plain - bare,
            policy - bare,
            telemetry - bare
        ));
    }
    println!(
        "| protocol | bare-hyper | mesh-plain (added) | mesh-policy (added) | mesh-telemetry (added) |\n|---|---|---|---|---|\n{}",
        rows.join("\n")
    );
}

/// Allocations per call of `one`, after a warm-up of the same size.
async fn per_request<F, Fut>(n: u64, mut one: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n.min(1000) {
        one().await;
    }
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        one().await;
    }
    region.change().allocations as f64 / n as f64
}

async fn bare_hyper(addr: SocketAddr, http2: bool, n: u64) -> f64 {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    let req = || {
        http::Request::get("http://web/echo")
            .body(Empty::<Bytes>::new())
            .expect("a request")
    };
    if http2 {
        let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        per_request(n, || {
            let mut tx = tx.clone();
            async move {
                let res = tx.send_request(req()).await.expect("answered");
                drop(res.into_body().collect().await.expect("a body"));
            }
        })
        .await
    } else {
        let (tx, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let tx = std::rc::Rc::new(tokio::sync::Mutex::new(tx));
        per_request(n, || {
            let tx = tx.clone();
            async move {
                let mut tx = tx.lock().await;
                tx.ready().await.expect("ready");
                let res = tx.send_request(req()).await.expect("answered");
                drop(res.into_body().collect().await.expect("a body"));
            }
        })
        .await
    }
}

/// Spans nowhere (the tracer samples none).
struct NoSpans;

impl mesh_tower::trace::SpanSink for NoSpans {
    fn record(&self, _: mesh_tower::trace::SpanRecord) {}
}

async fn with_telemetry(yaml: &str, n: u64) -> f64 {
    use mesh_tower::telemetry::{AccessLog, Telemetry};
    use mesh_tower::trace::{Sampler, Tracer};
    // `ALLOCS_TELEMETRY=log` (or `trace`, or `metrics`): the metrics and that part only.
    let parts = std::env::var("ALLOCS_TELEMETRY").unwrap_or_else(|_| "log,trace".into());
    let mut telemetry = Telemetry::new(Default::default());
    if parts.contains("log") {
        telemetry = telemetry.with_access_log(AccessLog::writer(std::io::sink()));
    }
    if parts.contains("trace") {
        telemetry = telemetry.with_tracer(Tracer::new(
            Sampler::AlwaysOff,
            std::sync::Arc::new(NoSpans),
        ));
    }
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(yaml).expect("valid config"))
        .expect("applied");
    let mesh = Mesh::builder()
        .store(store)
        .telemetry(telemetry)
        .build()
        .await
        .expect("the mesh");
    send(&mesh, n).await
}

async fn through_mesh(yaml: &str, n: u64) -> f64 {
    let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(yaml).expect("valid config"))
        .await
        .expect("the mesh");
    send(&mesh, n).await
}

/// Allocations per request through `mesh`'s channel to `web`.
async fn send(mesh: &Mesh, n: u64) -> f64 {
    let svc = mesh.channel::<Empty<Bytes>>("xds:///web");
    per_request(n, || {
        let svc = svc.clone();
        async move {
            let req = http::Request::get("http://web/echo")
                .body(Empty::new())
                .expect("a request");
            let res = svc.oneshot(req).await.expect("answered");
            drop(res.into_body().collect().await.expect("a body"));
        }
    })
    .await
}

fn protocol(http2: bool) -> &'static str {
    if http2 { "HTTP2" } else { "HTTP1" }
}

fn plain_yaml(addr: SocketAddr, http2: bool) -> String {
    mesh_examples::yaml::web_config(&[addr], &format!("protocol: {}", protocol(http2)))
}

fn policy_yaml(addr: SocketAddr, http2: bool) -> String {
    format!(
        r#"
clusters: [{{ name: c, type: EDS, protocol: {p} }}]
endpoints: [{{ cluster_name: c, endpoints: [{{ lb_endpoints: [{{ address: "{addr}" }}] }}] }}]
listeners:
  - name: web
    http_filters:
      - name: envoy.filters.http.fault
        fault: {{ abort: {{ http_status: 503, percentage: {{ numerator: 0 }} }} }}
      - name: rl
        local_ratelimit:
          token_bucket: {{ max_tokens: 1000000000, fill_interval: 1s }}
          filter_enabled: {{ numerator: 100 }}
          filter_enforced: {{ numerator: 100 }}
    route_config:
      request_headers_to_add: [{{ header: {{ key: x-mesh, value: "1" }} }}]
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              response_headers_to_add: [{{ header: {{ key: x-served, value: mesh }} }}]
              route:
                cluster: c
                prefix_rewrite: /v2
                retry_policy: {{ retry_on: "5xx,reset,connect-failure", num_retries: 2 }}
"#,
        p = protocol(http2)
    )
}

/// An HTTP/1.1 + HTTP/2 (prior knowledge) server answering `ok` to everything.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}
