//! Envoy as the oracle for traffic policy: go-control-plane serves one snapshot to Envoy 1.40
//! (a socket listener) and to our client (an API listener) — same routes, filters, clusters and
//! endpoints — and each scenario must come out the same through both: the rewritten path the
//! backend sees, a redirect, fault abort share and delay, retries over a flaky backend, a per-try
//! timeout on a slow endpoint, max_requests overflow, and outlier ejection.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use http_body_util::{BodyExt, Empty};
use mesh_examples::backend::{Backend, Mode};
use mesh_tower::{ErrorKind, MeshService};
use mesh_xds_client::build;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::envoy::{Envoy, free_port};
use support::gocp::GoControlPlane;
use support::*;

const FAULT: &str = "envoy.filters.http.fault";

fn ms(n: i32) -> PbDuration {
    PbDuration {
        seconds: i64::from(n / 1000),
        nanos: (n % 1000) * 1_000_000,
    }
}

fn route(prefix: &str, action: rds::RouteAction) -> rds::Route {
    let mut r = build::route(prefix, "");
    r.action = Some(rds::route::Action::Route(action));
    r
}

fn to(cluster: &str) -> rds::RouteAction {
    rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

fn with_fault(mut r: rds::Route, f: fault::HttpFault) -> rds::Route {
    r.typed_per_filter_config = [(FAULT.to_owned(), build::any(&f))].into();
    r
}

fn retry(retry_on: &str, retries: u32, per_try_ms: Option<i32>) -> rds::RetryPolicy {
    rds::RetryPolicy {
        retry_on: retry_on.into(),
        num_retries: Some(UInt32Value { value: retries }),
        per_try_timeout: per_try_ms.map(ms),
        retry_back_off: Some(rds::retry_policy::RetryBackOff {
            base_interval: Some(ms(5)),
            max_interval: None,
        }),
        ..Default::default()
    }
}

fn route_config() -> rds::RouteConfiguration {
    let pct = |n| FractionalPercent {
        numerator: n,
        denominator: 0,
    };
    let mut redirect = build::route("/redirect", "");
    redirect.action = Some(rds::route::Action::Redirect(rds::RedirectAction {
        path_rewrite_specifier: Some(rds::redirect_action::PathRewriteSpecifier::PathRedirect(
            "/new".into(),
        )),
        response_code: rds::redirect_action::RedirectResponseCode::Found as i32,
        ..Default::default()
    }));
    let abort = fault::HttpFault {
        abort: Some(fault::FaultAbort {
            percentage: Some(pct(50)),
            error_type: Some(fault::fault_abort::ErrorType::HttpStatus(503)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let delay = fault::HttpFault {
        delay: Some(common_fault::FaultDelay {
            percentage: Some(pct(100)),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                ms(200),
            )),
        }),
        ..Default::default()
    };
    let mut slow = retry("5xx", 2, Some(200));
    slow.retry_host_predicate = vec![rds::retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(
            rds::retry_policy::retry_host_predicate::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate".into(),
                value: Vec::new(),
            }),
        ),
    }];
    slow.host_selection_retry_max_attempts = 3;
    let routes = vec![
        route(
            "/rewrite",
            rds::RouteAction {
                prefix_rewrite: "/rewritten".into(),
                ..to("stable")
            },
        ),
        redirect,
        with_fault(route("/abort", to("stable")), abort),
        with_fault(route("/delay", to("stable")), delay),
        route(
            "/flaky",
            rds::RouteAction {
                retry_policy: Some(retry("5xx", 5, None)),
                ..to("flaky")
            },
        ),
        route(
            "/slow",
            rds::RouteAction {
                retry_policy: Some(slow),
                ..to("slowfast")
            },
        ),
        route(
            "/limited",
            rds::RouteAction {
                prefix_rewrite: "/delay/400".into(),
                ..to("limited")
            },
        ),
        route("/outlier", to("outlier")),
        route("/", to("stable")),
    ];
    build::route_config("policy-routes", &["*"], routes)
}

fn clusters(backends: &HashMap<&str, Vec<SocketAddr>>) -> Vec<Any> {
    let mut out = Vec::new();
    for (name, addrs) in backends {
        let mut c = build::eds_cluster(name);
        if *name == "limited" {
            c.circuit_breakers = Some(cds::CircuitBreakers {
                thresholds: vec![cds::circuit_breakers::Thresholds {
                    max_requests: Some(UInt32Value { value: 1 }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        if *name == "outlier" {
            c.outlier_detection = Some(cds::OutlierDetection {
                consecutive_5xx: Some(UInt32Value { value: 2 }),
                base_ejection_time: Some(ms(30_000)),
                max_ejection_percent: Some(UInt32Value { value: 50 }),
                interval: Some(ms(1000)),
                ..Default::default()
            });
        }
        out.push(build::any(&c));
        out.push(build::any(&build::assignment(name, addrs)));
    }
    out
}

/// What a scenario observed: status, and the response headers that matter.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: HashMap<String, String>,
}

const KEPT: [&str; 3] = ["x-path", "location", "x-backend"];

async fn via_envoy(envoy: SocketAddr, path: &str) -> Option<Seen> {
    let res = envoy_get(envoy, path, &[]).await?;
    Some(seen(res.status().as_u16(), res.headers()))
}

fn seen(status: u16, h: &http::HeaderMap) -> Seen {
    Seen {
        status,
        headers: KEPT
            .iter()
            .filter_map(|k| Some((k.to_string(), h.get(*k)?.to_str().ok()?.to_owned())))
            .collect(),
    }
}

async fn via_mesh(
    web: &MeshService<Empty<Bytes>>,
    path: &str,
) -> Result<Seen, mesh_tower::MeshError> {
    let req = http::Request::get(format!("http://oracle{path}"))
        .body(Empty::new())
        .unwrap();
    let res = tower::ServiceExt::oneshot(web.clone(), req).await?;
    let seen = seen(res.status().as_u16(), res.headers());
    let _ = res.into_body().collect().await;
    Ok(seen)
}

async fn policy_oracle(delta: bool) {
    let named = |b: &Backend| b.addr();
    let stable = Backend::start().await.unwrap();
    let flaky = Backend::start_with(Mode::flaky(20)).await.unwrap();
    let slow = Backend::start_with(Mode::slow(Duration::from_secs(30)))
        .await
        .unwrap();
    let fast = Backend::start().await.unwrap();
    let limited = Backend::start().await.unwrap();
    let bad = Backend::start_with(Mode::failing(503)).await.unwrap();
    let good = Backend::start().await.unwrap();
    let backends: HashMap<&str, Vec<SocketAddr>> = [
        ("stable", vec![named(&stable)]),
        ("flaky", vec![named(&flaky)]),
        ("slowfast", vec![named(&slow), named(&fast)]),
        ("limited", vec![named(&limited)]),
        ("outlier", vec![named(&bad), named(&good)]),
    ]
    .into();

    let cp = GoControlPlane::start();
    let envoy_addr = free_port();
    let mut socket = build::socket_listener("ingress", envoy_addr, "policy-routes");
    build::set_http_filters(&mut socket, vec![build::fault_filter(&Default::default())]);
    let mut api = build::api_listener_rds("web", "policy-routes");
    build::set_http_filters(&mut api, vec![build::fault_filter(&Default::default())]);
    for (node, listener) in [("envoy", socket), ("mesh-client", api)] {
        let mut resources = vec![build::any(&listener), build::any(&route_config())];
        resources.extend(clusters(&backends));
        cp.set(node, "1", &resources).await;
    }
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, delta);
    let (_mesh, web) = xds_web(cp.ads, delta).await;
    let ready = envoy_routes(envoy.listener, "/").await;
    let nack = cp
        .events()
        .await
        .into_iter()
        .find_map(|e| e.nack.map(|n| (e.node, n)));
    assert_eq!(nack, None, "nobody NACKed");
    assert!(ready, "Envoy took its config from go-control-plane");

    // Rewrite and redirect: the same path at the backend, the same location.
    for path in ["/rewrite/x?q=1", "/redirect/y?q=2"] {
        let theirs = via_envoy(envoy.listener, path).await.unwrap();
        let mut ours = via_mesh(&web, path).await.unwrap();
        ours.headers.remove("x-backend");
        let mut theirs_cmp = theirs;
        theirs_cmp.headers.remove("x-backend");
        assert_eq!(ours, theirs_cmp, "{path}");
    }

    // Fault abort 50%: both within 4 standard deviations (n = 200: sd ≈ 3.5%): unseeded (Envoy
    // cannot be), a false failure about once in 16 000 runs per contender.
    let n = 200;
    let (mut theirs, mut ours) = (0, 0);
    for _ in 0..n {
        theirs += usize::from(via_envoy(envoy.listener, "/abort").await.unwrap().status == 503);
        ours += usize::from(via_mesh(&web, "/abort").await.unwrap().status == 503);
    }
    for (who, c) in [("Envoy", theirs), ("mesh", ours)] {
        let share = c as f64 / n as f64;
        assert!((share - 0.5).abs() <= 0.14, "{who} aborted {share}");
    }

    // Fault delay of 200 ms: both hold the request, then forward it (Envoy's timers may fire a
    // couple of milliseconds early, hence 190).
    for who in ["Envoy", "mesh"] {
        let start = Instant::now();
        let status = if who == "Envoy" {
            via_envoy(envoy.listener, "/delay").await.unwrap().status
        } else {
            via_mesh(&web, "/delay").await.unwrap().status
        };
        assert_eq!(status, 200, "{who}");
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{who}: {:?}",
            start.elapsed()
        );
    }

    // Retries hide a 20% flaky backend; a per-try timeout moves off a stalled endpoint.
    for _ in 0..30 {
        assert_eq!(
            via_envoy(envoy.listener, "/flaky").await.unwrap().status,
            200
        );
        assert_eq!(via_mesh(&web, "/flaky").await.unwrap().status, 200);
    }
    for _ in 0..4 {
        let fast_addr = fast.addr().to_string();
        let theirs = via_envoy(envoy.listener, "/slow").await.unwrap();
        let ours = via_mesh(&web, "/slow").await.unwrap();
        assert_eq!(theirs.headers["x-backend"], fast_addr);
        assert_eq!(ours.headers["x-backend"], fast_addr);
    }

    // max_requests 1: a second request while the first is at the backend is refused (Envoy:
    // 503). "At the backend" is observed on the backend's counter, not guessed with a sleep.
    let limited = &limited;
    let in_flight = |n: u64| async move {
        tokio::time::timeout(PATIENCE, async {
            while limited.served() < n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first request reached the backend")
    };
    let first = tokio::spawn(via_envoy(envoy.listener, "/limited"));
    in_flight(1).await;
    assert_eq!(
        via_envoy(envoy.listener, "/limited").await.unwrap().status,
        503,
        "Envoy"
    );
    assert_eq!(first.await.unwrap().unwrap().status, 200);
    let first = tokio::spawn({
        let web = web.clone();
        async move { via_mesh(&web, "/limited").await }
    });
    in_flight(2).await;
    assert_eq!(
        via_mesh(&web, "/limited").await.unwrap_err().kind(),
        ErrorKind::Overflow
    );
    assert_eq!(first.await.unwrap().unwrap().status, 200);
    assert_eq!(
        limited.served(),
        2,
        "refused requests never reached the backend"
    );

    // Outlier detection: after two consecutive 5xx the failing endpoint is ejected by both.
    let mut tail = (Vec::new(), Vec::new());
    for i in 0..20 {
        let theirs = via_envoy(envoy.listener, "/outlier").await.unwrap().status;
        let ours = via_mesh(&web, "/outlier").await.unwrap().status;
        if i >= 10 {
            tail.0.push(theirs);
            tail.1.push(ours);
        }
    }
    assert!(tail.0.iter().all(|s| *s == 200), "Envoy: {:?}", tail.0);
    assert!(tail.1.iter().all(|s| *s == 200), "mesh: {:?}", tail.1);
    assert_eq!(
        bad.served(),
        4,
        "each client sent the bad endpoint exactly two requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_same_policy_outcomes_as_envoy() {
    policy_oracle(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_same_policy_outcomes_as_envoy() {
    policy_oracle(true).await;
}
