//! Envoy as the oracle for load balancing, on one go-control-plane snapshot:
//! - consistent hashing: a RING_HASH and a MAGLEV cluster of five endpoints and a route hashing
//!   the `x-key` header; for 10k keys, each must land on the same endpoint through both;
//! - priorities and localities: a half-unhealthy P0 spills 30% to P1 and locality weights 1:3
//!   split 25/75, through both within statistical tolerance.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::MeshService;
use mesh_xds_client::build;
use std::net::SocketAddr;
use support::envoy::{Envoy, free_port};
use support::gocp::GoControlPlane;
use support::*;

fn hashed_route(prefix: &str, cluster: &str) -> rds::Route {
    let mut r = build::route(prefix, cluster);
    let Some(rds::route::Action::Route(a)) = &mut r.action else {
        unreachable!()
    };
    a.hash_policy = vec![rds::route_action::HashPolicy {
        policy_specifier: Some(rds::route_action::hash_policy::PolicySpecifier::Header(
            rds::route_action::hash_policy::Header {
                header_name: "x-key".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    r
}

async fn via_envoy(envoy: SocketAddr, path: &str, key: &str) -> Option<String> {
    let res = envoy_get(envoy, path, &[("x-key", key)]).await?;
    Some(res.headers().get("x-backend")?.to_str().ok()?.to_owned())
}

async fn via_mesh(web: &MeshService<Empty<Bytes>>, path: &str, key: &str) -> String {
    let req = http::Request::get(format!("http://oracle{path}"))
        .header("x-key", key)
        .body(Empty::new())
        .unwrap();
    let res = tower::ServiceExt::oneshot(web.clone(), req).await.unwrap();
    res.headers()["x-backend"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_agrees_with_envoy_key_by_key() {
    let mut backends = Vec::new();
    for _ in 0..5 {
        backends.push(Backend::start().await.unwrap());
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let mut ring = build::eds_cluster("ring");
    ring.lb_policy = cds::cluster::LbPolicy::RingHash as i32;
    let mut maglev = build::eds_cluster("maglev");
    maglev.lb_policy = cds::cluster::LbPolicy::Maglev as i32;
    let rc = build::route_config(
        "lb-routes",
        &["*"],
        vec![
            hashed_route("/ring", "ring"),
            hashed_route("/maglev", "maglev"),
        ],
    );
    let cp = GoControlPlane::start();
    let envoy_addr = free_port();
    let listeners = [
        (
            "envoy",
            build::any(&build::socket_listener("ingress", envoy_addr, "lb-routes")),
        ),
        (
            "mesh-client",
            build::any(&build::api_listener_rds("web", "lb-routes")),
        ),
    ];
    for (node, listener) in listeners {
        let resources = vec![
            listener,
            build::any(&rc),
            build::any(&ring),
            build::any(&maglev),
            build::any(&build::assignment("ring", &addrs)),
            build::any(&build::assignment("maglev", &addrs)),
        ];
        cp.set(node, "1", &resources).await;
    }
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    let (_mesh, web) = xds_web(cp.ads, false).await;
    assert!(
        envoy_routes(envoy.listener, "/ring").await,
        "Envoy took its config from go-control-plane"
    );

    for path in ["/ring", "/maglev"] {
        let (mut agree, mut spread) = (0, std::collections::HashMap::new());
        let keys = 10_000;
        for k in 0..keys {
            let key = format!("user-{k}");
            let theirs = via_envoy(envoy.listener, path, &key).await.unwrap();
            let ours = via_mesh(&web, path, &key).await;
            agree += usize::from(theirs == ours);
            *spread.entry(ours).or_insert(0) += 1;
        }
        eprintln!("{path}: {agree}/{keys} keys agree with Envoy");
        assert!(
            agree * 100 >= keys * 99,
            "{path}: {agree}/{keys} keys agree"
        );
        assert_eq!(
            spread.len(),
            5,
            "{path}: every endpoint owns keys: {spread:?}"
        );
    }
}

/// Share of `n` requests to `path` that `served` says landed in `set`, through Envoy and us.
async fn shares(
    envoy: SocketAddr,
    web: &MeshService<Empty<Bytes>>,
    path: &str,
    set: &[String],
    n: usize,
) -> (f64, f64) {
    let (mut theirs, mut ours) = (0, 0);
    for i in 0..n {
        let key = i.to_string();
        theirs += usize::from(set.contains(&via_envoy(envoy, path, &key).await.unwrap()));
        ours += usize::from(set.contains(&via_mesh(web, path, &key).await));
    }
    (theirs as f64 / n as f64, ours as f64 / n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_spill_and_locality_weights_agree_with_envoy() {
    let mut b = Vec::new();
    for _ in 0..9 {
        b.push(Backend::start().await.unwrap());
    }
    let a: Vec<SocketAddr> = b.iter().map(Backend::addr).collect();
    // P0: 4 endpoints, 2 unhealthy (health 1.4 × 50% = 70%); P1: 2 healthy → 70/30.
    let mut tiers = build::assignment("tiers", &[]);
    tiers.endpoints = vec![
        build::locality("a", 0, 1, &a[0..4], &[true, true, false, false]),
        build::locality("a", 1, 1, &a[4..6], &[true, true]),
    ];
    // Locality weighting: zone a (weight 1, 2 endpoints) and zone b (weight 3, 1) → 25/75.
    let mut zones = build::assignment("zones", &[]);
    zones.endpoints = vec![
        build::locality("a", 0, 1, &a[6..8], &[true, true]),
        build::locality("b", 0, 3, &a[8..9], &[true]),
    ];
    let mut zones_cluster = build::eds_cluster("zones");
    zones_cluster.common_lb_config = Some(cds::cluster::CommonLbConfig {
        locality_config_specifier: Some(
            cds::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                Default::default(),
            ),
        ),
        ..Default::default()
    });
    let rc = build::route_config(
        "lb-routes",
        &["*"],
        vec![
            build::route("/tiers", "tiers"),
            build::route("/zones", "zones"),
        ],
    );
    let cp = GoControlPlane::start();
    let envoy_addr = free_port();
    let listeners = [
        (
            "envoy",
            build::any(&build::socket_listener("ingress", envoy_addr, "lb-routes")),
        ),
        (
            "mesh-client",
            build::any(&build::api_listener_rds("web", "lb-routes")),
        ),
    ];
    for (node, listener) in listeners {
        let resources = vec![
            listener,
            build::any(&rc),
            build::any(&build::eds_cluster("tiers")),
            build::any(&zones_cluster),
            build::any(&tiers),
            build::any(&zones),
        ];
        cp.set(node, "1", &resources).await;
    }
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    let (_mesh, web) = xds_web(cp.ads, false).await;
    assert!(
        envoy_routes(envoy.listener, "/zones").await,
        "Envoy took its config from go-control-plane"
    );

    let n = 600;
    let p1: Vec<String> = a[4..6].iter().map(ToString::to_string).collect();
    let (theirs, ours) = shares(envoy.listener, &web, "/tiers", &p1, n).await;
    // 30% of 600: sd ≈ 1.9%; ±4 sd around 30% for both.
    for (who, s) in [("Envoy", theirs), ("mesh", ours)] {
        assert!((s - 0.30).abs() <= 0.075, "{who} sent {s} to P1");
    }
    let unhealthy: Vec<String> = a[2..4].iter().map(ToString::to_string).collect();
    assert_eq!(
        shares(envoy.listener, &web, "/tiers", &unhealthy, 100).await,
        (0.0, 0.0)
    );
    let zone_b = vec![a[8].to_string()];
    let (theirs, ours) = shares(envoy.listener, &web, "/zones", &zone_b, n).await;
    for (who, s) in [("Envoy", theirs), ("mesh", ours)] {
        assert!((s - 0.75).abs() <= 0.075, "{who} sent {s} to zone b");
    }
}
