//! Micro bench: xDS translation (protobuf `Any` → validated mesh-core config) of a large
//! snapshot, resource by resource, as the client does when a response arrives.
//!
//! `cargo bench -p mesh-benches --bench translate`
//!
//! The snapshot: one API listener, one route config with one route per cluster, N EDS
//! clusters (HTTP/2) and N assignments of 10 endpoints each — N = 1000 and 10 000.

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::build;
use mesh_xds_client::translate::{ResourceType, decode};
use std::hint::black_box;
use std::net::SocketAddr;

fn snapshot(n: usize) -> Vec<(ResourceType, Any)> {
    let mut out = vec![(
        ResourceType::Listener,
        build::any(&build::api_listener_rds("web", "routes")),
    )];
    let routes = (0..n)
        .map(|i| build::route(&format!("/svc-{i}/"), &format!("cluster-{i}")))
        .collect();
    out.push((
        ResourceType::RouteConfiguration,
        build::any(&build::route_config("routes", &["*"], routes)),
    ));
    for i in 0..n {
        let name = format!("cluster-{i}");
        out.push((
            ResourceType::Cluster,
            build::any(&build::eds_cluster(&name)),
        ));
        let addrs: Vec<SocketAddr> = (0..10u16)
            .map(|j| SocketAddr::from(([10, (i >> 8) as u8, i as u8, j as u8], 8080)))
            .collect();
        out.push((
            ResourceType::ClusterLoadAssignment,
            build::any(&build::assignment(&name, &addrs)),
        ));
    }
    out
}

fn translate(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    for n in [1000usize, 10_000] {
        let snap = snapshot(n);
        let bytes: usize = snap.iter().map(|(_, a)| a.value.len()).sum();
        eprintln!(
            "snapshot of {n} clusters: {} resources, {bytes} bytes",
            snap.len()
        );
        if n >= 10_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("snapshot", n), &snap, |b, snap| {
            b.iter(|| {
                for (ty, any) in snap {
                    let d = decode(*ty, black_box(any)).expect("decodes");
                    assert!(d.result.is_ok());
                    black_box(d);
                }
            })
        });
    }
    // The route config of the 10k snapshot alone (one virtual host, 10 000 routes).
    let big = snapshot(10_000);
    let (ty, any) = &big[1];
    group.bench_function("route_config_10000_routes", |b| {
        b.iter(|| black_box(decode(*ty, black_box(any))))
    });
    let one = snapshot(1);
    for (label, idx) in [("cluster", 2usize), ("assignment_10_endpoints", 3)] {
        let (ty, any) = &one[idx];
        group.bench_function(label, |b| b.iter(|| black_box(decode(*ty, black_box(any)))));
    }
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
