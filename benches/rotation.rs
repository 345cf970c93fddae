//! Certificate rotation under load, measured (issue: mTLS, "rotation adds no latency spike
//! above 2× p99"). 32 callers in a closed loop send HTTP/1.1 requests without keep-alive, so
//! every request is a new mTLS handshake and meets the material in force: a mesh client
//! (`file_watcher` identity, SPIFFE-checked cluster) to a mesh `ServerTls` echo (`file_watcher`
//! identity and roots, client certificates required). A quiet phase comes first, then one in
//! which the server's leaf and the client's leaf are each rewritten every 2 s (1 s apart), so
//! the providers reload and the next handshakes present the new serials.
//!
//! Reported: requests, failures, p50 and p99 of each phase, and the worst p99 over the 250 ms
//! windows that follow a rotation, as a ratio to the quiet p99. The table goes to stdout and
//! `target/rotation.md`.
//!
//! `cargo bench -p mesh-benches --bench rotation` (`ROTATION_SECS` per phase, default 10).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a short smoke run that only
//! checks no request failed and the new serials were presented.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::pki::DevCa;
use mesh_tower::Mesh;
use mesh_tower::tls::PeerIdentity;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;

const SERVER_ID: &str = "spiffe://cluster.local/ns/bench/sa/echo";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/load";
const CALLERS: usize = 32;
const WINDOW: Duration = Duration::from_millis(250);

/// One request: when it started (since the run began) and how long it took.
type Sample = (Duration, Duration);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("ROTATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 10 } else { 3 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(Duration::from_secs(secs), full));
}

async fn run(phase: Duration, full: bool) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = DevCa::new("rotation bench root");
    let server_files = ca
        .write_workload(&dir.path().join("server"), &ca.issue_spiffe(SERVER_ID))
        .expect("server files");
    let client_files = ca
        .write_workload(&dir.path().join("client"), &ca.issue_spiffe(CLIENT_ID))
        .expect("client files");
    let (tls, server_provider) =
        mesh_examples::identity::strict_server_tls("server", &server_files, "0.1s");
    let (addr, _server) = mesh_examples::identity::spawn_identity_echo(tls, false)
        .await
        .expect("the echo server");
    let yaml = mesh_examples::yaml::mtls_web_config(&client_files, &[addr], SERVER_ID, true)
        .replace("protocol: HTTP2", "protocol: HTTP1")
        .replace("refresh_interval: 600s", "refresh_interval: 0.1s");
    let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).expect("valid config"))
        .await
        .expect("the mesh");
    let client_provider = mesh.certificate_provider("default").expect("provider");
    let svc = mesh.http_client::<Empty<Bytes>>();

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let serials = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (svc, stop, failed, serials) =
            (svc.clone(), stop.clone(), failed.clone(), serials.clone());
        callers.push(tokio::spawn(async move {
            let mut samples: Vec<Sample> = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let req = http::Request::get("http://web/")
                    .body(Empty::new())
                    .expect("a request");
                match svc.clone().oneshot(req).await {
                    Ok(res) if res.status() == 200 => {
                        if let Some(p) = res.extensions().get::<PeerIdentity>() {
                            serials.lock().expect("lock").insert(p.serial().to_owned());
                        }
                        let body = http_body_util::BodyExt::collect(res.into_body()).await;
                        if body.is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        samples.push((t0 - start, t0.elapsed()));
                    }
                    other => {
                        eprintln!("request failed: {:?}", other.map(|r| r.status()));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            samples
        }));
    }

    // Quiet phase, then rotations every second, alternating server and client leaves.
    tokio::time::sleep(phase).await;
    let mut rotations = Vec::new();
    let mut expected = Vec::new();
    let rotating_from = start.elapsed();
    while start.elapsed() < rotating_from + phase {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let server_turn = rotations.len() % 2 == 0;
        let (files, id, provider) = if server_turn {
            (&server_files, SERVER_ID, &server_provider)
        } else {
            (&client_files, CLIENT_ID, &client_provider)
        };
        let leaf = ca.issue_spiffe(id);
        let before = provider.material().generation();
        ca.write_workload_cert(files, &leaf).expect("rotated");
        rotations.push(start.elapsed());
        if server_turn {
            expected.push(leaf.serial.clone());
        }
        // The provider picks it up within its refresh interval.
        while provider.material().generation() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for c in callers {
        samples.extend(c.await.expect("a caller"));
    }
    let failed = failed.load(Ordering::Relaxed);
    let seen = serials.lock().expect("lock").clone();
    let missing: Vec<_> = expected.iter().filter(|s| !seen.contains(*s)).collect();
    assert_eq!(failed, 0, "requests failed during rotation");
    assert!(
        missing.is_empty(),
        "server serials never presented: {missing:?}"
    );
    report(&samples, rotating_from, &rotations, full);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn sorted(it: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = it.collect();
    v.sort_unstable();
    v
}

fn report(samples: &[Sample], rotating_from: Duration, rotations: &[Duration], full: bool) {
    let quiet = sorted(samples.iter().filter(|s| s.0 < rotating_from).map(|s| s.1));
    let rotating = sorted(samples.iter().filter(|s| s.0 >= rotating_from).map(|s| s.1));
    // The windows right after each rotation: where a reload would show.
    let worst = rotations
        .iter()
        .map(|&r| {
            let w = sorted(
                samples
                    .iter()
                    .filter(|s| s.0 >= r && s.0 < r + WINDOW)
                    .map(|s| s.1),
            );
            percentile(&w, 0.99)
        })
        .max()
        .unwrap_or_default();
    let quiet_p99 = percentile(&quiet, 0.99);
    let ratio = worst.as_secs_f64() / quiet_p99.as_secs_f64().max(1e-9);
    let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
    let table = format!(
        "| phase | requests | p50 | p99 |\n|---|---|---|---|\n\
         | quiet | {} | {} | {} |\n\
         | rotating (leaf every 1 s, server and client alternating) | {} | {} | {} |\n\
         | worst 250 ms window after a rotation ({} rotations) | — | — | {} ({ratio:.2}× the quiet p99) |\n",
        quiet.len(),
        us(percentile(&quiet, 0.5)),
        us(quiet_p99),
        rotating.len(),
        us(percentile(&rotating, 0.5)),
        us(percentile(&rotating, 0.99)),
        rotations.len(),
        us(worst),
    );
    println!("{table}");
    if full {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rotation.md");
        let _ = std::fs::write(out, &table);
    }
}
