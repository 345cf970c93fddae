//! What Envoy's JSON/YAML forms of xDS cost (feature `json` of mesh-xds-client): decoding
//! envoy-types' descriptor set into a pool (once per process, on first use), reading one
//! cluster from JSON, and parsing a resource file of 100 clusters in JSON and in YAML (what a
//! `file://` source does when its files change). The pool's live heap is printed once.
//!
//! `cargo bench -p mesh-benches --bench xds_json`

#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CLUSTER: &str = r#"{"name": "web", "type": "EDS", "connect_timeout": "0.25s",
  "eds_cluster_config": {"eds_config": {"ads": {}}},
  "circuit_breakers": {"thresholds": [{"max_requests": 1000}]},
  "outlier_detection": {"consecutive_5xx": 5, "interval": "10s"},
  "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}}"#;

/// A DiscoveryResponse of `n` clusters like `CLUSTER`, as JSON.
fn response(n: usize) -> String {
    let one: serde_json::Value = serde_json::from_str(CLUSTER).unwrap();
    let resources: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = one.clone();
            c["name"] = format!("web-{i}").into();
            c["@type"] = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
            c
        })
        .collect();
    serde_json::json!({"version_info": "1", "resources": resources}).to_string()
}

fn bench(c: &mut Criterion) {
    // Once: the pool's live heap after decoding.
    let region = Region::new(GLOBAL);
    let pool =
        prost_reflect::DescriptorPool::decode(mesh_xds_client::json::descriptor_set()).unwrap();
    let stats = region.change();
    println!(
        "descriptor pool: {} messages, {:.1} MiB live ({} KiB of descriptors)",
        pool.all_messages().count(),
        (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64) / (1 << 20) as f64,
        mesh_xds_client::json::descriptor_set().len() / 1024
    );
    drop(pool);

    let mut g = c.benchmark_group("xds_json");
    g.sample_size(10);
    g.bench_function("descriptor pool decode (once per process)", |b| {
        b.iter(|| {
            prost_reflect::DescriptorPool::decode(
                black_box(mesh_xds_client::json::descriptor_set()),
            )
            .unwrap()
        })
    });
    g.sample_size(50);
    mesh_xds_client::json::pool().unwrap();
    g.bench_function("one cluster from JSON", |b| {
        b.iter(|| mesh_xds_client::json::from_str::<Cluster>(black_box(CLUSTER)).unwrap())
    });
    let json = response(100);
    let yaml = {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        serde_saphyr::to_string(&v).unwrap()
    };
    let files = |name: &str, text: &str| vec![(PathBuf::from(name), text.as_bytes().to_vec())];
    let (json_files, yaml_files) = (files("c.json", &json), files("c.yaml", &yaml));
    g.bench_function("resource file, 100 clusters, JSON", |b| {
        b.iter(|| mesh_xds_client::files::parse(black_box(&json_files)).unwrap())
    });
    g.bench_function("resource file, 100 clusters, YAML", |b| {
        b.iter(|| mesh_xds_client::files::parse(black_box(&yaml_files)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
