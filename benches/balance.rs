//! Pick cost per balancer at 10, 100 and 10k endpoints (criterion), the request hash included
//! for the consistent-hashing ones.
//!
//! `cargo bench -p mesh-benches --bench balance`

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use mesh_tower::balance::{
    Balance, ClientSideWrr, EndpointInfo, EndpointStats, LeastRequest, Maglev, PeakEwma,
    PickContext, Random, RingHash, RoundRobin, peak_ewma,
};
use std::hint::black_box;
use std::sync::Arc;

fn endpoints(n: usize) -> Vec<EndpointInfo> {
    (0..n)
        .map(|i| EndpointInfo {
            address: ([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080).into(),
            weight: 1 + (i % 3) as u32,
            health_status: mesh_core::HealthStatus::Healthy,
            locality: Arc::default(),
            locality_weight: 1,
            priority: 0,
            stats: Arc::new(EndpointStats::default()),
            workload: None,
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 100, 10_000] {
        let eps = endpoints(n);
        let weights: Vec<u32> = eps.iter().map(|e| e.weight).collect();
        let keyed: Vec<_> = eps.iter().map(|e| (e.address, e.weight)).collect();
        for (i, e) in eps.iter().enumerate() {
            // Reported weights spread over 1..=10 (CPU 0.1..1.0 at 100 qps).
            e.stats
                .reported
                .update_at(100.0 / ((i % 10 + 1) as f64 / 10.0), 0);
            e.stats.ewma.observe(
                std::time::Duration::from_millis(5),
                peak_ewma::DEFAULT_DECAY,
            );
        }
        let balancers: Vec<(&str, Box<dyn Balance>)> = vec![
            ("round_robin", Box::new(RoundRobin::new(n))),
            (
                "round_robin_weighted",
                Box::new(RoundRobin::weighted(&weights)),
            ),
            ("random_weighted", Box::new(Random::new(&weights))),
            (
                "least_request_p2c",
                Box::new(LeastRequest::new(&weights, 2, 1.0)),
            ),
            (
                "peak_ewma_p2c",
                Box::new(PeakEwma::new(peak_ewma::DEFAULT_RTT)),
            ),
            ("ring_hash", Box::new(RingHash::new(&keyed, 1024, 8 << 20))),
            ("maglev", Box::new(Maglev::new(&keyed, 65537))),
            (
                "client_side_wrr",
                Box::new(ClientSideWrr::new(
                    &mesh_core::config::cluster::ClientSideWeightedRoundRobinConfig {
                        blackout_period: Some(std::time::Duration::ZERO),
                        ..Default::default()
                    },
                )),
            ),
        ];
        for (name, b) in &balancers {
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |bench, _| {
                bench.iter(|| {
                    key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let ctx = PickContext {
                        headers: &headers,
                        hash: Some(key),
                        attempt: 0,
                    };
                    black_box(b.pick(black_box(&eps), &ctx))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
