//! Micro benches: the route layer, the timeout layer and the store read, each over an
//! in-memory inner service so only the layer's own work is measured.
//!
//! `cargo bench -p mesh-benches --bench route`

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use mesh_benches::{Instant, mixed_routes_yaml, request_for_route, routes_yaml};
use mesh_core::{MeshConfig, Store};
use mesh_tower::route::RouteLayer;
use mesh_tower::timeout::TimeoutLayer;
use std::hint::black_box;
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

fn request() -> http::Request<()> {
    http::Request::get("/some/path")
        .header("x-route", "none")
        .body(())
        .unwrap()
}

/// What every other bench also pays: building the request and calling the inner service.
fn baseline(c: &mut Criterion) {
    let mut svc = Instant;
    c.bench_function("baseline/request+inner", |b| {
        b.iter(|| {
            black_box(
                svc.call(black_box(request()))
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        })
    });
}

fn route_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [10, 100, 1000] {
        let store = Store::new();
        store
            .replace(MeshConfig::from_yaml(&routes_yaml(n)).unwrap())
            .unwrap();
        let mut svc = RouteLayer::for_target(store, "xds:///web").layer(Instant);
        group.bench_with_input(BenchmarkId::new("last_of", n), &n, |b, _| {
            b.iter(|| {
                let res = svc.call(black_box(request())).now_or_never().unwrap();
                black_box(res.unwrap())
            })
        });
    }
    group.finish();
}

/// Matching cost by position in a large virtual host (issue: sublinear route matching): the
/// request takes the first, middle or last route, or none.
fn indexed_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_index");
    for n in [10, 100, 1000, 10_000] {
        let store = Store::new();
        store
            .replace(MeshConfig::from_yaml(&mixed_routes_yaml(n)).unwrap())
            .unwrap();
        let mut svc = RouteLayer::for_target(store, "xds:///web").layer(Instant);
        for (label, which) in [
            ("first", Some(0)),
            ("middle", Some(n / 2)),
            ("last", Some(n - 1)),
            ("none", None),
        ] {
            let id = BenchmarkId::new(label, n);
            group.bench_with_input(id, &n, |b, _| {
                b.iter(|| {
                    let res = svc
                        .call(black_box(request_for_route(which)))
                        .now_or_never()
                        .unwrap();
                    black_box(res.is_ok())
                })
            });
        }
    }
    group.finish();
}

/// The matcher alone (`RouteTable`, the layer's own compiled table): no request building,
/// no inner service, no decision bookkeeping. The "≤ 1 µs at 10k routes" target is
/// about this.
fn matcher_only(c: &mut Criterion) {
    use mesh_tower::route::RouteTable;
    let mut group = c.benchmark_group("route_match");
    for n in [10, 10_000] {
        let config = MeshConfig::from_yaml(&mixed_routes_yaml(n)).unwrap();
        let Some(mesh_core::config::listener::RouteSource::Inline(rc)) =
            config.listeners[0].route_source()
        else {
            panic!("the bench config's routes are inline")
        };
        let table = RouteTable::compile(rc).unwrap();
        for (label, which) in [
            ("first", Some(0)),
            ("middle", Some(n / 2)),
            ("last", Some(n - 1)),
            ("none", None),
        ] {
            let mut req = request_for_route(which);
            req.headers_mut()
                .insert(http::header::HOST, http::HeaderValue::from_static("web"));
            assert_eq!(table.route(&req).is_ok(), which.is_some(), "{label}");
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| black_box(table.route(black_box(&req)).is_ok()))
            });
        }
    }
    group.finish();
}

fn timeout_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut svc = TimeoutLayer::new(Some(Duration::from_secs(15))).layer(Instant);
    c.bench_function("timeout/armed", |b| {
        b.iter(|| {
            black_box(
                svc.call(black_box(request()))
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        })
    });
}

fn store_read(c: &mut Criterion) {
    let store = Store::new();
    store
        .replace(MeshConfig::from_yaml(&routes_yaml(100)).unwrap())
        .unwrap();
    c.bench_function("store/version", |b| b.iter(|| black_box(store.version())));
    c.bench_function("store/load", |b| {
        b.iter(|| black_box(store.load().version()))
    });
}

criterion_group!(
    benches,
    baseline,
    route_matching,
    indexed_matching,
    matcher_only,
    timeout_layer,
    store_read
);
criterion_main!(benches);
