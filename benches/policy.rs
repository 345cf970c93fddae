//! Micro benches for the traffic-policy layers: each layer alone with its policy configured,
//! and the whole stack (route → direct → rate limit → fault → rewrite → timeout → retry →
//! mirror) against the bare route layer, all over an in-memory inner service, so the numbers
//! are the layers' own cost per request.
//!
//! `cargo bench -p mesh-benches --bench policy`

#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http_body_util::Empty;
use mesh_benches::{BARE_YAML, InstantMesh, POLICY_YAML};
use mesh_core::{MeshConfig, Store};
use mesh_tower::fault::FaultLayer;
use mesh_tower::local::LocalAnswersLayer;
use mesh_tower::mirror::MirrorLayer;
use mesh_tower::ratelimit::RateLimitLayer;
use mesh_tower::retry::RetryLayer;
use mesh_tower::rewrite::RewriteLayer;
use mesh_tower::route::RouteLayer;
use mesh_tower::timeout::TimeoutLayer;
use std::hint::black_box;
use tower_layer::Layer;
use tower_service::Service;

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::get("http://web/some/path")
        .body(Empty::new())
        .unwrap()
}

fn store(yaml: &str) -> Store {
    let s = Store::new();
    s.replace(MeshConfig::from_yaml(yaml).unwrap()).unwrap();
    s
}

fn run<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<http::Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter(|| {
            let res = svc.call(black_box(request())).now_or_never().unwrap();
            black_box(res.unwrap())
        })
    });
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let route = |yaml| RouteLayer::for_target(store(yaml), "xds:///web");

    run(c, "policy/bare_route", route(BARE_YAML).layer(InstantMesh));
    run(
        c,
        "policy/route+direct",
        route(POLICY_YAML).layer(LocalAnswersLayer.layer(InstantMesh)),
    );
    run(
        c,
        "policy/route+ratelimit",
        route(POLICY_YAML).layer(RateLimitLayer::new().layer(InstantMesh)),
    );
    run(
        c,
        "policy/route+fault",
        route(POLICY_YAML).layer(FaultLayer::new().layer(InstantMesh)),
    );
    run(
        c,
        "policy/route+rewrite",
        route(POLICY_YAML).layer(RewriteLayer.layer(InstantMesh)),
    );
    run(
        c,
        "policy/route+timeout",
        route(POLICY_YAML).layer(TimeoutLayer::new(None).layer(InstantMesh)),
    );
    run(
        c,
        "policy/route+retry",
        route(POLICY_YAML).layer(RetryLayer::new().layer(InstantMesh)),
    );
    run(
        c,
        "policy/route+mirror(no mirror)",
        route(POLICY_YAML).layer(RetryLayer::new().layer(MirrorLayer::new().layer(InstantMesh))),
    );
    let full = |yaml| {
        let stack = MirrorLayer::new().layer(InstantMesh);
        let stack = RetryLayer::new().layer(stack);
        let stack = TimeoutLayer::new(None).layer(stack);
        let stack = RewriteLayer.layer(stack);
        let stack = FaultLayer::new().layer(stack);
        let stack = RateLimitLayer::new().layer(stack);
        let stack = LocalAnswersLayer.layer(stack);
        route(yaml).layer(stack)
    };
    run(c, "policy/full_stack_no_policy", full(BARE_YAML));
    run(c, "policy/full_stack_all_policies", full(POLICY_YAML));
}

criterion_group!(benches, layers);
criterion_main!(benches);
