//! Traffic policy end to end: a mesh configured from YAML sends real requests to loopback
//! backends that fail, stall or echo, and each policy shows at the backend or in the answer.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::backend::{Backend, Mode};
use mesh_tower::{ErrorKind, Mesh, MeshService, ServedBy};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tower::ServiceExt;

/// One listener `web` with the given routes; clusters `(name, addrs, extra yaml)`.
fn config(routes: &str, clusters: &[(&str, &[SocketAddr], &str)]) -> String {
    let mut out = format!(
        "listeners:\n  - name: web\n    route_config:\n      virtual_hosts:\n        - name: web\n          domains: [\"*\"]\n          routes:\n{routes}\nclusters:\n"
    );
    for (name, _, extra) in clusters {
        out.push_str(&format!("  - name: {name}\n    {extra}\n"));
    }
    out.push_str("endpoints:\n");
    for (name, addrs, _) in clusters {
        let eps: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ address: \"{a}\" }}"))
            .collect();
        out.push_str(&format!(
            "  - cluster_name: {name}\n    endpoints: [{{ lb_endpoints: [{}] }}]\n",
            eps.join(", ")
        ));
    }
    out
}

async fn send(
    svc: &MeshService<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response<Bytes>, mesh_tower::MeshError> {
    let mut req = http::Request::get(format!("http://web{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = svc.clone().oneshot(req.body(Empty::new()).unwrap()).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

fn served_by<T>(res: &http::Response<T>) -> SocketAddr {
    res.extensions().get::<ServedBy>().unwrap().endpoint
}

async fn web(yaml: &str) -> (Mesh, MeshService<Empty<Bytes>>) {
    let mesh = mesh_from(yaml).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    (mesh, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_a_budget_hide_a_flaky_backend() {
    let flaky = Backend::start_with(Mode::flaky(20)).await.unwrap();
    let routes = r#"            - match: { prefix: / }
              route:
                cluster: flaky
                retry_policy: { retry_on: 5xx, num_retries: 5, retry_back_off: { base_interval: 0.001s } }"#;
    // 8 callers: a 20% budget alone would allow 1.6 retries in flight; the floor of 8 (one
    // per caller: at most 8 requests, so 8 retries, are ever in flight) admits every retry
    // however the failures bunch up (a floor of 5 let a burst of 6 through unretried, 3 in
    // 2000 in one CI run), and the budget still caps a storm when the backend fails entirely.
    let cluster = "circuit_breakers: { thresholds: [{ retry_budget: { budget_percent: { value: 20.0 }, min_retry_concurrency: 8 } }] }";
    let (mesh, web) = web(&config(routes, &[("flaky", &[flaky.addr()], cluster)])).await;
    let requests = 2000;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let web = web.clone();
        tasks.spawn(async move {
            let mut ok = 0;
            for _ in (worker..requests).step_by(8) {
                ok += usize::from(send(&web, "/", &[]).await.is_ok_and(|r| r.status() == 200));
            }
            ok
        });
    }
    let ok: usize = tasks.join_all().await.into_iter().sum();
    let success = ok as f64 / requests as f64;
    let extra = flaky.served() as f64 / requests as f64 - 1.0;
    assert!(success >= 0.999, "success rate {success}");
    // 20% failures retried until success: 0.2 + 0.04 + 0.008 + … ≈ 25% extra attempts; five
    // retries leave 0.2^6 ≈ 0.006% of requests failing.
    assert!(extra <= 0.30, "extra load {extra}");
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_policy_means_no_retry() {
    let failing = Backend::start_with(Mode::failing(503)).await.unwrap();
    let routes = "            - match: { prefix: / }\n              route: { cluster: c }";
    let (_mesh, web) = web(&config(routes, &[("c", &[failing.addr()], "")])).await;
    for _ in 0..10 {
        assert_eq!(send(&web, "/", &[]).await.unwrap().status(), 503);
    }
    assert_eq!(failing.served(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_header_mutations_reach_the_backend() {
    let b = Backend::start().await.unwrap();
    let routes = r#"            - match: { prefix: /api/ }
              request_headers_to_add: [{ header: { key: x-route, value: r } }]
              response_headers_to_remove: [x-backend]
              route:
                cluster: c
                prefix_rewrite: /internal/
                host_rewrite_literal: backend.local
            - match: { safe_regex: { regex: "/users/([0-9]+)/profile" } }
              route:
                cluster: c
                regex_rewrite: { pattern: { regex: "^/users/([0-9]+)/profile$" }, substitution: "/profiles/\\1" }"#;
    let yaml = config(routes, &[("c", &[b.addr()], "")]);
    let (_mesh, web) = web(&yaml).await;
    let res = send(&web, "/api/items?x=1", &[("x-caller", "me")])
        .await
        .unwrap();
    let h = res.headers();
    assert_eq!(h["x-path"], "/internal/items?x=1");
    assert_eq!(h["x-authority"], "backend.local");
    assert_eq!(h["x-echo-x-route"], "r");
    assert_eq!(h["x-echo-x-caller"], "me");
    assert!(!h.contains_key("x-backend"), "response header removed");
    let res = send(&web, "/users/42/profile", &[]).await.unwrap();
    assert_eq!(res.headers()["x-path"], "/profiles/42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_direct_responses_never_reach_a_backend() {
    let b = Backend::start().await.unwrap();
    let routes = r#"            - match: { prefix: /old }
              redirect: { prefix_rewrite: /new, response_code: FOUND }
            - match: { path: /health }
              direct_response: { status: 200, body: { inline_string: ok } }
            - match: { prefix: / }
              route: { cluster: c }"#;
    let (_mesh, web) = web(&config(routes, &[("c", &[b.addr()], "")])).await;
    let res = send(&web, "/old/page?q=1", &[]).await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "http://web/new/page?q=1");
    let res = send(&web, "/health", &[]).await.unwrap();
    assert_eq!(
        (res.status().as_u16(), res.body().as_ref()),
        (200, b"ok".as_ref())
    );
    assert_eq!(b.served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_overflow_fails_fast_and_names_the_threshold() {
    let slow = Backend::start_with(Mode::slow(Duration::from_millis(300)))
        .await
        .unwrap();
    let routes = "            - match: { prefix: / }\n              route: { cluster: limited }";
    let cluster = "circuit_breakers: { thresholds: [{ max_requests: 1 }] }";
    let (_mesh, web) = web(&config(routes, &[("limited", &[slow.addr()], cluster)])).await;
    let first = tokio::spawn({
        let web = web.clone();
        async move { send(&web, "/", &[]).await }
    });
    // The first request is in flight once the backend has accepted it.
    tokio::time::timeout(PATIENCE, async {
        while slow.served() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let err = send(&web, "/", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow);
    let text = err.to_string();
    assert!(
        text.contains("cluster \"limited\"") && text.contains("max_requests (1)"),
        "{text}"
    );
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        send(&web, "/", &[]).await.unwrap().status(),
        200,
        "the slot is free again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_holds_its_request_slot_until_the_stream_ends() {
    // Envoy counts a request until its stream ends, not until the response head: a response
    // whose body is still streaming keeps its max_requests slot and its in-flight count.
    for protocol in ["HTTP1", "HTTP2"] {
        let b = Backend::start().await.unwrap();
        let routes =
            "            - match: { prefix: / }\n              route: { cluster: limited }";
        let cluster = format!(
            "protocol: {protocol}\n    circuit_breakers: {{ thresholds: [{{ max_requests: 1 }}] }}"
        );
        let (_mesh, web) = web(&config(routes, &[("limited", &[b.addr()], &cluster)])).await;
        let get = |path: &str| {
            let req = http::Request::get(format!("http://web{path}")).body(Empty::new());
            web.clone().oneshot(req.unwrap())
        };
        // The head and the first half arrive; the second half comes in a minute.
        let res = get("/drip/60000").await.unwrap();
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, b.addr().to_string());
        let err = get("/").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overflow, "{protocol}: {err}");
        // Dropping the unfinished body ends the stream and frees the slot.
        drop(body);
        let res = get("/").await.unwrap();
        // A body read to its end frees it too, even while the response is kept.
        let mut body = res.into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        assert_eq!(get("/").await.unwrap().status(), 200, "{protocol}");
        drop(body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_brings_it_back() {
    let (bad, good) = (
        Backend::start_with(Mode::failing(503)).await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let routes = "            - match: { prefix: / }\n              route: { cluster: c }";
    let cluster = "outlier_detection: { consecutive_5xx: 2, interval: 0.1s, base_ejection_time: 0.3s, max_ejection_percent: 50 }";
    let (_mesh, web) = web(&config(
        routes,
        &[("c", &[bad.addr(), good.addr()], cluster)],
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(send(&web, "/", &[]).await.unwrap().status().as_u16());
    }
    assert_eq!(
        bad.served(),
        2,
        "ejected after two consecutive 5xx: {statuses:?}"
    );
    assert!(statuses[4..].iter().all(|s| *s == 200), "{statuses:?}");
    // After the ejection time, a sweep returns it to the pick.
    tokio::time::timeout(PATIENCE, async {
        while bad.served() == 2 {
            let _ = send(&web, "/", &[]).await;
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the endpoint came back after base_ejection_time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_moves_a_slow_attempt_to_another_host() {
    let (slow, fast) = (
        Backend::start_with(Mode::slow(Duration::from_secs(30)))
            .await
            .unwrap(),
        Backend::start().await.unwrap(),
    );
    let routes = r#"            - match: { prefix: / }
              route:
                cluster: c
                timeout: 5s
                retry_policy:
                  retry_on: 5xx
                  num_retries: 2
                  per_try_timeout: 0.2s
                  retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
                  host_selection_retry_max_attempts: 3"#;
    let (_mesh, web) = web(&config(routes, &[("c", &[slow.addr(), fast.addr()], "")])).await;
    for _ in 0..6 {
        let res = send(&web, "/", &[]).await.unwrap();
        assert_eq!(served_by(&res), fast.addr());
    }
    assert!(slow.served() >= 1, "round robin tried the slow endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_rate_limits_and_mirrors() {
    let (b, shadow) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let routes = r#"            - match: { prefix: /chaos }
              route: { cluster: c }
            - match: { prefix: /limited }
              typed_per_filter_config:
                envoy.filters.http.fault: { disabled: true }
                rl:
                  local_ratelimit:
                    token_bucket: { max_tokens: 3, fill_interval: 60s }
                    filter_enabled: { numerator: 100 }
                    filter_enforced: { numerator: 100 }
              route: { cluster: c }
            - match: { prefix: /mirrored }
              typed_per_filter_config:
                envoy.filters.http.fault: { disabled: true }
              route: { cluster: c, request_mirror_policies: [{ cluster: shadow }] }"#;
    let mut yaml = config(
        routes,
        &[("c", &[b.addr()], ""), ("shadow", &[shadow.addr()], "")],
    );
    yaml = yaml.replacen(
        "    route_config:",
        r#"    http_filters:
      - name: envoy.filters.http.fault
        fault:
          abort: { http_status: 418, percentage: { numerator: 100 } }
          headers: [{ name: x-chaos }]
      - name: rl
        local_ratelimit: { token_bucket: { max_tokens: 1000, fill_interval: 60s } }
    route_config:"#,
        1,
    );
    let (_mesh, web) = web(&yaml).await;
    assert_eq!(send(&web, "/chaos", &[]).await.unwrap().status(), 200);
    assert_eq!(
        send(&web, "/chaos", &[("x-chaos", "1")])
            .await
            .unwrap()
            .status(),
        418
    );
    assert_eq!(b.served(), 1, "the abort never reached the backend");

    let statuses: Vec<u16> = futures_util::future::join_all((0..5).map(|_| async {
        send(&web, "/limited", &[("x-chaos", "1")])
            .await
            .unwrap()
            .status()
            .as_u16()
    }))
    .await;
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [200, 200, 200, 429, 429],
        "fault disabled on the route, bucket of 3"
    );

    for _ in 0..5 {
        assert_eq!(send(&web, "/mirrored", &[]).await.unwrap().status(), 200);
    }
    tokio::time::timeout(PATIENCE, async {
        while shadow.served() < 5 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every mirrored request reached the shadow");
}

/// Connects only once released, so requests stay pending on the connection.
#[derive(Clone)]
struct GatedConnector {
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    dialing: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl mesh_tower::connect::Connect for GatedConnector {
    fn connect(
        &self,
        target: &mesh_tower::connect::ConnectTarget,
    ) -> mesh_tower::connect::ConnectFuture {
        let (gate, target) = (self.gate.clone(), target.clone());
        self.dialing
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let _permit = gate.acquire().await.expect("gate open");
            mesh_tower::connect::Connect::connect(
                &mesh_tower::connect::TcpConnector::default(),
                &target,
            )
            .await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_connection_limits_fail_fast() {
    let b = Backend::start_with(Mode::slow(Duration::from_millis(200)))
        .await
        .unwrap();
    let routes = r#"            - match: { prefix: /h2 }
              route: { cluster: h2 }
            - match: { prefix: /h1 }
              route: { cluster: h1 }"#;
    let yaml = config(
        routes,
        &[
            (
                "h2",
                &[b.addr()],
                "protocol: HTTP2\n    circuit_breakers: { thresholds: [{ max_pending_requests: 1 }] }",
            ),
            (
                "h1",
                &[b.addr()],
                "circuit_breakers: { thresholds: [{ max_connections: 1 }] }",
            ),
        ],
    );
    let gated = GatedConnector {
        gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        dialing: Default::default(),
    };
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .unwrap();
    let mesh = Mesh::builder()
        .store(store)
        .connector(gated.clone())
        .build()
        .await
        .unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");

    // HTTP/2: the first request waits for the connection; a second one would be the second
    // pending request.
    let first = tokio::spawn({
        let web = web.clone();
        async move { send(&web, "/h2", &[]).await }
    });
    tokio::time::timeout(PATIENCE, async {
        while gated.dialing.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first request is dialing");
    let err = send(&web, "/h2", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow);
    assert!(
        err.to_string().contains("max_pending_requests (1)"),
        "{err}"
    );
    gated.gate.add_permits(100);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);

    // HTTP/1: one connection at most; while it is busy, a request needing another fails.
    let busy = tokio::spawn({
        let web = web.clone();
        async move { send(&web, "/h1", &[]).await }
    });
    tokio::time::timeout(PATIENCE, async {
        while b.served() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let err = send(&web, "/h1", &[]).await.unwrap_err();
    assert!(err.to_string().contains("max_connections (1)"), "{err}");
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        send(&web, "/h1", &[]).await.unwrap().status(),
        200,
        "the connection is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ends_a_stalled_wait_or_body() {
    let b = Backend::start().await.unwrap();
    let routes = r#"            - match: { prefix: / }
              route: { cluster: c, timeout: 30s, idle_timeout: 0.2s }"#;
    let (_mesh, web) = web(&config(routes, &[("c", &[b.addr()], "")])).await;
    // No response head within the idle timeout.
    let start = std::time::Instant::now();
    let err = send(&web, "/delay/5000", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // A body pausing longer than the idle timeout fails mid-stream...
    let req = http::Request::get("http://web/drip/2000")
        .body(Empty::new())
        .unwrap();
    let res = web.clone().oneshot(req).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert!(err.to_string().contains("stream idle timeout"), "{err}");
    // ...and one pausing less completes.
    let res = send(&web, "/drip/50", &[]).await.unwrap();
    assert!(res.body().ends_with(b" (second half)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_aware_routing_follows_where_the_callers_are() {
    let mut zone_a = Vec::new();
    let mut zone_b = Vec::new();
    for i in 0..8 {
        let b = Backend::start().await.unwrap();
        if i < 2 {
            zone_a.push(b)
        } else {
            zone_b.push(b)
        }
    }
    let eps = |bs: &[Backend]| {
        bs.iter()
            .map(|b| format!("{{ address: \"{}\" }}", b.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Callers ("self"): `a_callers` of 4 in zone a.
    let yaml = |a_callers: usize| {
        let callers: Vec<String> = (0..4)
            .map(|i| {
                let zone = if i < a_callers { "a" } else { "b" };
                format!("{{ locality: {{ zone: {zone} }}, lb_endpoints: [{{ address: \"10.9.0.{i}:80\" }}] }}")
            })
            .collect();
        format!(
            r#"
listeners:
  - name: web
    route_config:
      virtual_hosts: [{{ name: web, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: api }} }}] }}]
clusters:
  - name: api
    common_lb_config: {{ zone_aware_lb_config: {{ min_cluster_size: 6 }} }}
  - name: self
endpoints:
  - cluster_name: api
    endpoints:
      - {{ locality: {{ zone: a }}, lb_endpoints: [{}] }}
      - {{ locality: {{ zone: b }}, lb_endpoints: [{}] }}
  - cluster_name: self
    endpoints: [{}]
"#,
            eps(&zone_a),
            eps(&zone_b),
            callers.join(", ")
        )
    };
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(&yaml(1)).unwrap())
        .unwrap();
    let mesh = Mesh::builder()
        .store(store.clone())
        .local_zone("a", Some("self"))
        .build()
        .await
        .unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    let in_a = |addr: SocketAddr| zone_a.iter().any(|b| b.addr() == addr);
    // 25% of callers in zone a, 25% of endpoints there: everything stays local.
    for _ in 0..40 {
        let res = send(&web, "/", &[]).await.unwrap();
        assert!(in_a(served_by(&res)), "local while zone a has the capacity");
    }
    // 75% of callers now in zone a: it keeps 1/3 of its traffic and spills the rest.
    push(&store, &yaml(3));
    let mut local = 0;
    for _ in 0..600 {
        local += usize::from(in_a(served_by(&send(&web, "/", &[]).await.unwrap())));
    }
    let share = local as f64 / 600.0;
    assert!((share - 1.0 / 3.0).abs() < 0.08, "{share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_of_two_body_types_share_one_cluster_state() {
    use http_body_util::Full;
    let (bad, good) = (
        Backend::start_with(Mode::failing(503)).await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let routes = "            - match: { prefix: / }\n              route: { cluster: c }";
    let cluster = "protocol: HTTP2\n    circuit_breakers: { thresholds: [{ max_requests: 1 }] }\n    outlier_detection: { consecutive_5xx: 1, interval: 60s, base_ejection_time: 60s, max_ejection_percent: 50 }";
    let (mesh, _store, counter) = counting_mesh(&config(
        routes,
        &[("c", &[bad.addr(), good.addr()], cluster)],
    ))
    .await;
    let empty = mesh.channel::<Empty<Bytes>>("xds:///web");
    let full = mesh.channel::<Full<Bytes>>("xds:///web");
    let get_full = |path: &str| {
        let req = http::Request::get(format!("http://web{path}")).body(Full::new(Bytes::new()));
        full.clone().oneshot(req.unwrap())
    };
    // One ejection, seen by both: the Empty channel's requests eject `bad`…
    for _ in 0..4 {
        let res = send(&empty, "/", &[]).await.unwrap();
        if res.status() == 503 {
            break;
        }
    }
    assert!(
        bad.served() >= 1,
        "round robin reached the failing endpoint"
    );
    // …so the Full channel's never reach it.
    let before = bad.served();
    for _ in 0..10 {
        let res = get_full("/").await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.extensions().get::<ServedBy>().unwrap().endpoint,
            good.addr()
        );
    }
    assert_eq!(bad.served(), before);
    // One breaker limit: a stream held open on one body type fills max_requests for both.
    let held = empty
        .clone()
        .oneshot(
            http::Request::get("http://web/drip/60000")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let err = get_full("/").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overflow, "{err}");
    drop(held);
    assert_eq!(get_full("/").await.unwrap().status(), 200);
    // One HTTP/2 connection per endpoint, whatever the body type.
    assert_eq!(counter.count(good.addr()), 1);
    assert_eq!(counter.count(bad.addr()), 1);
}
