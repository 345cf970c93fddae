//! Load-balancing quality: 10 loopback endpoints, one of them 10× slower; per policy, the
//! client-side latency p50/p99 at a fixed concurrency, next to the same load over 10 equally
//! fast endpoints.
//!
//! `cargo bench -p mesh-benches --bench lb_quality` (8000 requests per policy, 32 in flight).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a seconds-long smoke run.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::backend::{Backend, Mode};
use mesh_tower::Mesh;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const FAST: Duration = Duration::from_millis(2);
const SLOW: Duration = Duration::from_millis(20);

/// Runs `requests` through `policy` with `concurrency` callers; returns (p50, p99, share of
/// requests the slow endpoint served).
async fn run(
    policy: &str,
    addrs: &[String],
    slow: Option<&str>,
    requests: usize,
    concurrency: usize,
) -> (Duration, Duration, f64) {
    let config = mesh_core::MeshConfig::from_yaml(&mesh_examples::yaml::web_config(
        addrs,
        &format!("protocol: HTTP2, lb_policy: {policy}"),
    ))
    .unwrap();
    let mesh = Mesh::from_config(config).await.unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", Duration::from_secs(5))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let web = web.clone();
        let slow = slow.map(str::to_owned);
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut on_slow = 0usize;
            for _ in (worker..requests).step_by(concurrency) {
                let start = Instant::now();
                let req = http::Request::get("http://web/")
                    .body(Empty::new())
                    .unwrap();
                let res = web.clone().oneshot(req).await.unwrap();
                let backend = res.headers()["x-backend"].to_str().unwrap().to_owned();
                let _ = res.into_body().collect().await;
                out.push(start.elapsed());
                on_slow += usize::from(slow.as_deref() == Some(backend.as_str()));
            }
            (out, on_slow)
        });
    }
    let mut all = Vec::new();
    let mut on_slow = 0;
    for (lat, s) in tasks.join_all().await {
        all.extend(lat);
        on_slow += s;
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (at(0.50), at(0.99), on_slow as f64 / requests as f64)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (requests, concurrency) = if full { (8000, 32) } else { (400, 8) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut fast = Vec::new();
        for _ in 0..10 {
            fast.push(Backend::start_with(Mode::slow(FAST)).await.unwrap());
        }
        let slow = Backend::start_with(Mode::slow(SLOW)).await.unwrap();
        let all_fast: Vec<String> = fast.iter().map(|b| b.addr().to_string()).collect();
        let mut with_slow: Vec<String> = all_fast[..9].to_vec();
        with_slow.push(slow.addr().to_string());
        let slow_addr = slow.addr().to_string();

        println!("lb quality: {requests} requests, {concurrency} in flight, endpoints answer in {FAST:?}, the slow one in {SLOW:?}");
        println!("| policy | endpoints | p50 | p99 | share on the slow endpoint |");
        println!("|---|---|---|---|---|");
        let (base50, base99, _) = run("ROUND_ROBIN", &all_fast, None, requests, concurrency).await;
        println!("| ROUND_ROBIN | 10 fast | {base50:.1?} | {base99:.1?} | — |");
        let mut results = Vec::new();
        for policy in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "PEAK_EWMA"] {
            let (p50, p99, share) = run(policy, &with_slow, Some(&slow_addr), requests, concurrency).await;
            println!("| {policy} | 9 fast + 1 slow | {p50:.1?} | {p99:.1?} | {:.1}% |", share * 100.0);
            results.push((policy, p99));
        }
        let ewma = results.iter().find(|r| r.0 == "PEAK_EWMA").unwrap().1;
        let rr = results.iter().find(|r| r.0 == "ROUND_ROBIN").unwrap().1;
        println!(
            "peak-EWMA p99 / all-fast p99 = {:.2} (target ≤ 1.5); round robin p99 / peak-EWMA p99 = {:.2} (target ≥ 3)",
            ewma.as_secs_f64() / base99.as_secs_f64(),
            rr.as_secs_f64() / ewma.as_secs_f64()
        );
    });
}
