//! xDS scenario bench (not criterion: these are end-to-end timings and sizes).
//!
//! `cargo bench -p mesh-benches --bench xds` measures, against the in-process ADS server:
//! 1. push → served: from a control-plane snapshot change to the first request served under the
//!    new config, over 100 updates (p50/p99);
//! 2. a snapshot of 10k clusters × 10 endpoints referenced by one route config: time from
//!    subscribing to a ready target, and the client's memory growth (RSS);
//! 3. bytes the client receives for a one-endpoint change in that snapshot, SotW vs Delta, and
//!    the time from the push to the client's store holding the change.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does a seconds-long smoke run
//! with small sizes, so the harness cannot rot.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::Empty;
use mesh_benches::scale::{self, ListenerKind};
use mesh_examples::backend::Backend;
use mesh_interop::ads::{FakeAds, Resources};
use mesh_tower::{Mesh, ServedBy};
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Listener `web` → route config with one route per cluster → `clusters` EDS clusters with
/// `per` endpoints each. Endpoints are synthetic except cluster 0's, given by `first`.
fn snapshot(clusters: usize, per: usize, first: &[SocketAddr]) -> Resources {
    let synthetic = |i: usize, j: usize| match i {
        0 => first[j],
        _ => SocketAddr::from(([10, (i >> 8) as u8, i as u8, j as u8], 8080)),
    };
    let mut r = Resources::new();
    for (ty, name, any) in scale::snapshot(clusters, per, ListenerKind::Api, synthetic) {
        r.entry(ty.type_url().to_owned())
            .or_default()
            .insert(name, any);
    }
    r
}

async fn mesh(ads: &FakeAds, delta: bool) -> Mesh {
    Mesh::from_xds(XdsClientBuilder::new(ads.addr.to_string(), "bench").delta(delta))
        .await
        .unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// 1. push → served.
async fn push_to_served(updates: usize) -> (Duration, Duration) {
    let (a, b) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    ads.set(snapshot(1, 1, &[a.addr()]));
    let mesh = mesh(&ads, false).await;
    let svc = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", Duration::from_secs(10))
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(updates);
    for i in 0..updates {
        let target = if i % 2 == 0 { b.addr() } else { a.addr() };
        let start = Instant::now();
        ads.set(snapshot(1, 1, &[target]));
        loop {
            let req = http::Request::get("/c0/x").body(Empty::new()).unwrap();
            let res = svc.clone().oneshot(req).await.unwrap();
            if res.extensions().get::<ServedBy>().unwrap().endpoint == target {
                break;
            }
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    (pct(&samples, 0.5), pct(&samples, 0.99))
}

/// One-endpoint changes timed after the big snapshot is ready.
const CHANGES: usize = 20;

struct Big {
    ready: Duration,
    rss_mib: f64,
    change_bytes: u64,
    /// From the control plane's push of a one-endpoint change to the client's store holding
    /// it, median over [`CHANGES`]
    /// (the server's encoding, the wire, decoding, validation, the store's edit).
    applied: Duration,
}

/// 2 and 3 for one protocol.
async fn big_snapshot(clusters: usize, per: usize, delta: bool) -> Big {
    let first: Vec<SocketAddr> = (0..per)
        .map(|j| SocketAddr::from(([10, 255, 255, j as u8], 8080)))
        .collect();
    let ads = FakeAds::start().await;
    ads.set(snapshot(clusters, per, &first));
    let before = rss_kib();
    let start = Instant::now();
    let mesh = mesh(&ads, delta).await;
    // A channel is what keeps the target (and so every resource it uses) subscribed.
    let _web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", Duration::from_secs(120))
        .await
        .unwrap();
    let ready = start.elapsed();
    let rss_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;

    // One endpoint of cluster 0 changes, CHANGES times in a row, each pushed once the last
    // is applied. Pushed as an incremental control plane would (the server's work does not
    // grow with the snapshot), so the time is the wire and the client. The first change can
    // queue behind the tail of the initial load (ready is declared before the client has
    // finished its bookkeeping), hence the median.
    let mut watch = mesh.store().changed();
    let mut applied = Vec::with_capacity(CHANGES);
    let mut change_bytes = 0;
    for k in 0..CHANGES {
        let mut changed = first.clone();
        changed[0] = SocketAddr::from(([10, 254, 254, k as u8], 8080));
        let c0 = build::any(&build::assignment("c0", &changed));
        let sent_before = ads.bytes_sent();
        let pushed = Instant::now();
        ads.update(
            ResourceType::ClusterLoadAssignment.type_url(),
            "c0",
            Some(c0),
        );
        let want = changed[0];
        while !mesh
            .store()
            .load()
            .endpoints("c0")
            .is_some_and(|e| e.iter_endpoints().any(|(_, _, ep)| ep.address == want))
        {
            watch.changed().await.unwrap();
        }
        applied.push(pushed.elapsed());
        change_bytes = ads.bytes_sent() - sent_before;
        // The next push waits for this one's ACK: the fake server re-answers a request that
        // carries an older version than its current one.
        let acked = format!("{}-", ads.version());
        ads.wait_for(|s| s.nonce.starts_with(&acked)).await;
    }
    applied.sort();
    let applied = pct(&applied, 0.5);
    drop(mesh);
    Big {
        ready,
        rss_mib,
        change_bytes,
        applied,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (updates, clusters, per) = if full { (100, 10_000, 10) } else { (5, 50, 2) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (p50, p99) = push_to_served(updates).await;
        let sotw = big_snapshot(clusters, per, false).await;
        let delta = big_snapshot(clusters, per, true).await;
        println!("xds bench ({}):", if full { "full" } else { "smoke" });
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| push → served, p50 over {updates} updates | {:.2} ms |",
            p50.as_secs_f64() * 1e3
        );
        println!(
            "| push → served, p99 over {updates} updates | {:.2} ms |",
            p99.as_secs_f64() * 1e3
        );
        for (name, b) in [("SotW", &sotw), ("Delta", &delta)] {
            println!(
                "| {clusters} clusters × {per} endpoints, subscribe → ready ({name}) | {:.0} ms |",
                b.ready.as_secs_f64() * 1e3
            );
            println!("| … client RSS growth ({name}) | {:.1} MiB |", b.rss_mib);
            println!(
                "| … bytes received for a one-endpoint change ({name}) | {} |",
                b.change_bytes
            );
            println!(
                "| … push → applied for that change, p50 of {CHANGES} ({name}) | {:.2} ms |",
                b.applied.as_secs_f64() * 1e3
            );
        }
        assert!(
            p50 > Duration::ZERO && sotw.change_bytes > 0 && delta.change_bytes > 0,
            "every measure ran"
        );
        assert!(delta.change_bytes < sotw.change_bytes || clusters < 2);
    });
}
