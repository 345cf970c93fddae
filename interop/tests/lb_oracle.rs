//! Envoy as the oracle for load balancing, on one go-control-plane snapshot:
//! - consistent hashing: a RING_HASH and a MAGLEV cluster of five endpoints and a route hashing
//!   the `x-key` header; for 10k keys, each must land on the same endpoint through both;
//! - priorities and localities: a half-unhealthy P0 spills 30% to P1 and locality weights 1:3
//!   split 25/75, through both within statistical tolerance;
//! - aggregate clusters (gRFC A37): a primary with 1 of 4 endpoints healthy keeps 35% and
//!   spills 65% to the next cluster; with the first cluster down, a DNS cluster serves all;
//! - client-side weighted round robin: three endpoints reporting CPU 0.2, 0.4 and 0.8 at the
//!   same QPS (one in gRPC-style binary trailers) get 4/7, 2/7 and 1/7 through both.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use http_body_util::Empty;
use mesh_examples::backend::{Backend, LoadReport, Mode};
use mesh_tower::{Mesh, MeshService};
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

/// go-control-plane serving `rc` (named `lb-routes`) and `rest` to an Envoy (a socket listener)
/// and to the mesh (API listener `web`), both ready to route `path`.
async fn envoy_and_mesh(
    rc: &rds::RouteConfiguration,
    rest: Vec<envoy_types::pb::google::protobuf::Any>,
    path: &str,
) -> (GoControlPlane, Envoy, Mesh, MeshService<Empty<Bytes>>) {
    let cp = GoControlPlane::start();
    let envoy_addr = free_port();
    for (node, listener) in [
        (
            "envoy",
            build::any(&build::socket_listener("ingress", envoy_addr, "lb-routes")),
        ),
        (
            "mesh-client",
            build::any(&build::api_listener_rds("web", "lb-routes")),
        ),
    ] {
        let mut resources = vec![listener, build::any(rc)];
        resources.extend(rest.iter().cloned());
        cp.set(node, "1", &resources).await;
    }
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    let (mesh, web) = xds_web(cp.ads, false).await;
    assert!(
        envoy_routes(envoy.listener, path).await,
        "Envoy took its config from go-control-plane"
    );
    (cp, envoy, mesh, web)
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
    let (_cp, envoy, _mesh, web) = envoy_and_mesh(
        &rc,
        vec![
            build::any(&ring),
            build::any(&maglev),
            build::any(&build::assignment("ring", &addrs)),
            build::any(&build::assignment("maglev", &addrs)),
        ],
        "/ring",
    )
    .await;

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
        // The docs claim key-for-key agreement (10k/10k): assert exactly that.
        assert_eq!(agree, keys, "{path}: {agree}/{keys} keys agree with Envoy");
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
    let (_cp, envoy, _mesh, web) = envoy_and_mesh(
        &rc,
        vec![
            build::any(&build::eds_cluster("tiers")),
            build::any(&zones_cluster),
            build::any(&tiers),
            build::any(&zones),
        ],
        "/zones",
    )
    .await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_clusters_fail_over_as_envoy_does() {
    let mut b = Vec::new();
    for _ in 0..8 {
        b.push(Backend::start().await.unwrap());
    }
    let a: Vec<SocketAddr> = b.iter().map(Backend::addr).collect();
    // primary: 1 of 4 healthy (health 1.4 × 25% = 35%); secondary: 2 healthy; dead: none
    // healthy; last: a STRICT_DNS name for the eighth backend.
    let cla = |name: &str, addrs: &[SocketAddr], healthy: &[bool]| {
        let mut cla = build::assignment(name, &[]);
        cla.endpoints = vec![build::locality("a", 0, 1, addrs, healthy)];
        build::any(&cla)
    };
    let rc = build::route_config(
        "lb-routes",
        &["*"],
        vec![build::route("/agg", "agg"), build::route("/dns", "agg-dns")],
    );
    let (_cp, envoy, _mesh, web) = envoy_and_mesh(
        &rc,
        vec![
            build::any(&build::aggregate_cluster("agg", &["primary", "secondary"])),
            build::any(&build::aggregate_cluster("agg-dns", &["dead", "last"])),
            build::any(&build::eds_cluster("primary")),
            build::any(&build::eds_cluster("secondary")),
            build::any(&build::eds_cluster("dead")),
            build::any(&build::dns_cluster("last", "localhost", a[7].port())),
            cla("primary", &a[0..4], &[true, false, false, false]),
            cla("secondary", &a[4..6], &[true, true]),
            cla("dead", &a[6..7], &[false]),
        ],
        "/agg",
    )
    .await;

    let n = 600;
    let secondary: Vec<String> = a[4..6].iter().map(ToString::to_string).collect();
    let (theirs, ours) = shares(envoy.listener, &web, "/agg", &secondary, n).await;
    // 65% of 600: sd ≈ 1.9%; ±4 sd for both.
    for (who, s) in [("Envoy", theirs), ("mesh", ours)] {
        assert!((s - 0.65).abs() <= 0.075, "{who} sent {s} to the secondary");
    }
    // The DNS cluster resolves on first use: once a request reached it, all do.
    let last = vec![a[7].to_string()];
    tokio::time::timeout(PATIENCE, async {
        while via_mesh(&web, "/dns", "k").await != last[0] {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the DNS cluster served");
    assert_eq!(
        shares(envoy.listener, &web, "/dns", &last, 50).await,
        (1.0, 1.0),
        "with the first cluster down, the DNS cluster takes everything"
    );
}

/// The backend that answered one request through the mesh, with the body (and so its
/// trailers) read.
async fn served_through_mesh(web: &MeshService<Empty<Bytes>>, path: &str) -> String {
    let req = http::Request::get(format!("http://oracle{path}"))
        .body(Empty::new())
        .unwrap();
    let res = tower::ServiceExt::oneshot(web.clone(), req).await.unwrap();
    let who = res.headers()["x-backend"].to_str().unwrap().to_owned();
    http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    who
}

/// Per-backend shares of `n` requests through Envoy and through the mesh.
async fn wrr_shares(
    envoy: SocketAddr,
    web: &MeshService<Empty<Bytes>>,
    backends: &[String],
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut theirs, mut ours) = (vec![0usize; backends.len()], vec![0usize; backends.len()]);
    let index = |who: &str| backends.iter().position(|b| b == who).unwrap();
    for _ in 0..n {
        let res = envoy_get(envoy, "/orca", &[]).await.expect("Envoy answers");
        theirs[index(res.headers()["x-backend"].to_str().unwrap())] += 1;
        ours[index(&served_through_mesh(web, "/orca").await)] += 1;
    }
    let share = |c: Vec<usize>| c.into_iter().map(|x| x as f64 / n as f64).collect();
    (share(theirs), share(ours))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_weighted_round_robin_agrees_with_envoy() {
    use envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    let mut b = Vec::new();
    for (cpu, in_trailers) in [(0.2, false), (0.4, true), (0.8, false)] {
        let report = LoadReport {
            cpu_utilization: cpu,
            rps_fractional: 100.0,
            in_trailers,
            named: None,
        };
        b.push(
            Backend::start_with(Mode {
                report: Some(report),
                ..Mode::default()
            })
            .await
            .unwrap(),
        );
    }
    let a: Vec<SocketAddr> = b.iter().map(Backend::addr).collect();
    let mut cluster = build::eds_cluster("orca");
    let policy = ClientSideWeightedRoundRobin {
        blackout_period: Some(PbDuration::default()),
        weight_update_period: Some(PbDuration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        ..Default::default()
    };
    cluster.load_balancing_policy = Some(build::typed_lb_policy(
        "envoy.load_balancing_policies.client_side_weighted_round_robin",
        &policy,
    ));
    let rc = build::route_config("lb-routes", &["*"], vec![build::route("/orca", "orca")]);
    let (_cp, envoy, _mesh, web) = envoy_and_mesh(
        &rc,
        vec![
            build::any(&cluster),
            build::any(&build::assignment("orca", &a)),
        ],
        "/orca",
    )
    .await;
    let names: Vec<String> = a.iter().map(ToString::to_string).collect();
    // Weights start once reports arrive and the next schedule is built (every 100 ms): send
    // traffic until both favour the lightest endpoint, then measure.
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let (theirs, ours) = wrr_shares(envoy.listener, &web, &names, 70).await;
        if theirs[0] > 0.5 && ours[0] > 0.5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "weights never took effect: Envoy {theirs:?}, mesh {ours:?}"
        );
    }
    let (theirs, ours) = wrr_shares(envoy.listener, &web, &names, 700).await;
    let expected = [4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0];
    for (who, got) in [("Envoy", &theirs), ("mesh", &ours)] {
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() <= 0.04,
                "{who}: {got:?}, expected {expected:?}"
            );
        }
    }
}
