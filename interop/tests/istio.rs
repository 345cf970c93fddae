//! Istio as the control plane: a real istiod (Istio's pilot with its gRPC generator, built from
//! Istio's Go module by `interop/istiod`, no Kubernetes) serves Istio YAML — ServiceEntry,
//! WorkloadEntry, DestinationRule, VirtualService — to clients configured by the bootstrap
//! Istio's agent writes for proxyless gRPC. Each scenario asserts behaviour (which backend
//! answered, with which status), in SotW and Delta, through `Mesh::channel` and `http_client`.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::{Backend, Mode};
use std::collections::HashMap;
use std::time::Duration;
use support::istio::*;
use support::*;

/// Header match, URI match and an 80/20 split, through the channel and the HTTP client.
async fn routing(delta: bool) {
    let v1 = Backend::start().await.unwrap();
    let v2 = Backend::start().await.unwrap();
    let (a1, a2) = (v1.addr().to_string(), v2.addr().to_string());
    let rules = format!(
        "  - match: [{{headers: {{x-canary: {{exact: \"yes\"}}}}}}]\n    route: [{v2}]\n  \
         - match: [{{uri: {{prefix: /v2/}}}}]\n    route: [{v2}]\n  \
         - route:\n    - {{destination: {{host: {HOST}, subset: v1}}, weight: 80}}\n    \
         - {{destination: {{host: {HOST}, subset: v2}}, weight: 20}}\n",
        v2 = dest("v2")
    );
    let cp = Cp::start(&[
        (
            "service.yaml",
            &service(&[("v1", v1.addr()), ("v2", v2.addr())], ""),
        ),
        ("vs.yaml", &virtual_service(&rules)),
    ]);
    let mesh = cp.client(&client_workload(None), delta).await;
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();

    let channel = mesh.channel::<Empty<Bytes>>(TARGET);
    let canary = tally(&channel, "/", &[("x-canary", "yes")], 20).await;
    assert_eq!(canary, HashMap::from([(a2.clone(), 20)]), "header match");
    let by_uri = tally(&channel, "/v2/items", &[], 20).await;
    assert_eq!(
        by_uri,
        HashMap::from([(a2.clone(), 20)]),
        "URI prefix match"
    );

    // 80/20 over 1000 requests: v1's share within 5 standard deviations (σ ≈ 12.6).
    let split = tally(&channel, "/", &[], 1000).await;
    let (n1, n2) = (split.get(&a1).copied(), split.get(&a2).copied());
    assert_eq!(
        n1.unwrap_or(0) + n2.unwrap_or(0),
        1000,
        "only the two subsets answer: {split:?}"
    );
    let n1 = n1.unwrap_or(0) as i64;
    assert!((n1 - 800).abs() <= 63, "80/20 split gave {split:?}");

    // The HTTP client routes by authority: the same VirtualService applies.
    let client = mesh.http_client::<Empty<Bytes>>();
    let uri = format!("http://{HOST}:{PORT}/");
    let via_client = tally(&client, &uri, &[("x-canary", "yes")], 10).await;
    assert_eq!(
        via_client,
        HashMap::from([(a2.clone(), 10)]),
        "http_client header match"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_routing_sotw() {
    routing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_routing_delta() {
    routing(true).await;
}

/// VirtualService fault abort and delay, a route timeout and retries on 5xx.
async fn traffic_policy(delta: bool) {
    let ok = Backend::start().await.unwrap();
    let flaky = Backend::start_with(Mode::flaky(50)).await.unwrap();
    let rules = format!(
        "  - match: [{{headers: {{x-fault: {{exact: abort}}}}}}]\n    \
         fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}\n    route: [{v1}]\n  \
         - match: [{{headers: {{x-fault: {{exact: delay}}}}}}]\n    \
         fault: {{delay: {{fixedDelay: 300ms, percentage: {{value: 100}}}}}}\n    route: [{v1}]\n  \
         - match: [{{uri: {{prefix: /delay/}}}}]\n    timeout: 150ms\n    route: [{v1}]\n  \
         - match: [{{uri: {{prefix: /flaky}}}}]\n    retries: {{attempts: 3, retryOn: 5xx}}\n    route: [{flaky}]\n  \
         - match: [{{uri: {{prefix: /once}}}}]\n    retries: {{attempts: 0}}\n    route: [{flaky}]\n  \
         - route: [{v1}]\n",
        v1 = dest("v1"),
        flaky = dest("flaky"),
    );
    let cp = Cp::start(&[
        (
            "service.yaml",
            &service(&[("v1", ok.addr()), ("flaky", flaky.addr())], ""),
        ),
        ("vs.yaml", &virtual_service(&rules)),
    ]);
    let mesh = cp.client(&client_workload(None), delta).await;
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let channel = mesh.channel::<Empty<Bytes>>(TARGET);
    let ok_addr = ok.addr().to_string();

    let abort = tally(&channel, "/", &[("x-fault", "abort")], 10).await;
    assert_eq!(
        abort,
        HashMap::from([("status 418".into(), 10)]),
        "fault abort"
    );
    assert_eq!(
        ok.served(),
        0,
        "an aborted request never reaches the backend"
    );

    // Envoy's order: the fault filter delays, then the router forwards (its timeout starts
    // after the delay).
    let started = std::time::Instant::now();
    let delayed = tally(&channel, "/", &[("x-fault", "delay")], 2).await;
    assert_eq!(
        delayed,
        HashMap::from([(ok_addr.clone(), 2)]),
        "delayed, then served"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "fault delay applied"
    );
    let slow = tally(&channel, "/delay/2000", &[], 3).await;
    // The mesh reports its own timeouts as errors (ErrorKind::Timeout), not as a made-up 504.
    assert_eq!(
        slow,
        HashMap::from([("error Timeout".into(), 3)]),
        "route timeout"
    );
    let fast = tally(&channel, "/delay/1", &[], 3).await;
    assert_eq!(fast, HashMap::from([(ok_addr, 3)]), "within the timeout");

    // Half of the flaky backend's answers are 503: with 3 retries on 5xx every call succeeds.
    let flaky_addr = flaky.addr().to_string();
    let retried = tally(&channel, "/flaky", &[], 20).await;
    assert_eq!(
        retried,
        HashMap::from([(flaky_addr.clone(), 20)]),
        "retries"
    );
    assert!(flaky.served() > 20, "retries reached the backend again");
    let once = tally(&channel, "/once", &[], 20).await;
    assert_eq!(once.get("status 503"), Some(&10), "no retries: {once:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_fault_timeout_retries_sotw() {
    traffic_policy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_fault_timeout_retries_delta() {
    traffic_policy(true).await;
}

/// DestinationRule load balancing: consistent hash by header keeps a user on one backend;
/// `http2MaxRequests` caps requests in flight (the excess is refused, not queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_hashing_and_connection_pool() {
    let slow = Mode {
        delay: Some(Duration::from_millis(300)),
        ..Mode::default()
    };
    let (b1, b2) = (
        Backend::start_with(slow).await.unwrap(),
        Backend::start_with(slow).await.unwrap(),
    );
    let hashing = "  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n    \
                   connectionPool: {http: {http2MaxRequests: 2}}\n";
    // Both WorkloadEntries in one subset `all`.
    let svc = service(&[("v1", b1.addr()), ("v2", b2.addr())], hashing).replace(
        "  subsets:\n",
        "  subsets:\n  - {name: all, labels: {app: echo}}\n",
    );
    let cp = Cp::start(&[("service.yaml", &svc)]);
    let mesh = cp.client(&client_workload(None), true).await;
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let channel = mesh.channel::<Empty<Bytes>>(TARGET);

    let mut homes = std::collections::HashSet::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        let seen = tally(&channel, "/", &[("x-user", &user)], 3).await;
        assert_eq!(seen.len(), 1, "{user} stays on one backend: {seen:?}");
        homes.extend(seen.into_keys());
    }
    assert_eq!(homes.len(), 2, "users spread over both backends: {homes:?}");

    // 6 at once against a cap of 2: 2 answered, the rest refused at once (overflow).
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let c = channel.clone();
        calls.spawn(async move { tally(&c, "/", &[("x-user", "same")], 1).await });
    }
    let outcomes = merged(calls).await;
    let refused: usize = outcomes
        .iter()
        .filter(|(k, _)| !k.contains(':'))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(refused, 4, "http2MaxRequests 2 of 6: {outcomes:?}");
}

/// Editing the VirtualService file moves traffic with no failed request; reports how long the
/// change took from the file write to the first request served under it.
async fn live_change(delta: bool) {
    let v1 = Backend::start().await.unwrap();
    let v2 = Backend::start().await.unwrap();
    let all_to = |subset: &str| virtual_service(&format!("  - route: [{}]\n", dest(subset)));
    let cp = Cp::start(&[
        (
            "service.yaml",
            &service(&[("v1", v1.addr()), ("v2", v2.addr())], ""),
        ),
        ("vs.yaml", &all_to("v1")),
    ]);
    let mesh = cp.client(&client_workload(None), delta).await;
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let channel = mesh.channel::<Empty<Bytes>>(TARGET);
    let (a1, a2) = (v1.addr().to_string(), v2.addr().to_string());
    assert_eq!(
        tally(&channel, "/", &[], 5).await,
        HashMap::from([(a1.clone(), 5)])
    );

    // Four callers keep sending while the file changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (c, stop) = (channel.clone(), stop.clone());
        callers.spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (k, v) in tally(&c, "/", &[], 1).await {
                    *seen.entry(k).or_default() += v;
                }
            }
            seen
        });
    }
    let written = std::time::Instant::now();
    cp.write("vs.yaml", &all_to("v2"));
    tokio::time::timeout(PATIENCE, async {
        while !tally(&channel, "/", &[], 1).await.contains_key(&a2) {}
    })
    .await
    .expect("traffic moved to v2");
    let took = written.elapsed();
    // Let the callers see the new config too, then stop them.
    tokio::time::timeout(PATIENCE, async {
        while v2.served() < 20 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = merged(callers).await;
    let failed: usize = total
        .iter()
        .filter(|(k, _)| **k != a1 && **k != a2)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(failed, 0, "no request failed during the change: {total:?}");
    eprintln!(
        "istio live change ({}): file write → first request on v2 in {took:?}; {} requests during the change, 0 failed",
        if delta { "Delta" } else { "SotW" },
        total.values().sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_edit_moves_traffic_without_errors_sotw() {
    live_change(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_edit_moves_traffic_without_errors_delta() {
    live_change(true).await;
}

/// Over Delta, a second target subscribed later must not cost the first its updates: istiod
/// tracks a client's LDS names from what it last pushed, so the client restates its whole LDS
/// subscription whenever it changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_second_target_keeps_the_first_updated() {
    let v1 = Backend::start().await.unwrap();
    let v2 = Backend::start().await.unwrap();
    let all_to = |subset: &str| virtual_service(&format!("  - route: [{}]\n", dest(subset)));
    let other = service(&[("v1", v1.addr())], "")
        .replace("name: echo,", "name: other,")
        .replace("name: echo-v1,", "name: other-v1,")
        .replace(HOST, "other.default.svc.cluster.local");
    let cp = Cp::start(&[
        (
            "service.yaml",
            &service(&[("v1", v1.addr()), ("v2", v2.addr())], ""),
        ),
        ("other.yaml", &other),
        ("vs.yaml", &all_to("v1")),
    ]);
    let mesh = cp.client(&client_workload(None), true).await;
    let first = mesh.channel::<Empty<Bytes>>(TARGET);
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let second_target = "xds:///other.default.svc.cluster.local:7070";
    let second = mesh.channel::<Empty<Bytes>>(second_target);
    mesh.wait_ready(second_target, PATIENCE).await.unwrap();
    let answered = tally(&second, "/", &[], 2).await;
    assert!(
        answered.keys().all(|k| k.contains(':')),
        "second target: {answered:?}"
    );
    cp.write("vs.yaml", &all_to("v2"));
    let a2 = v2.addr().to_string();
    tokio::time::timeout(PATIENCE, async {
        while !tally(&first, "/", &[], 1).await.contains_key(&a2) {}
    })
    .await
    .expect("the first target still gets updates");
}

/// A target whose interest ends (no channel holds it) and comes back, over Delta: istiod must
/// still answer. (Unsubscribing a client's last listener makes istiod treat the subscription
/// as a wildcard and record every listener as sent; a later subscription to the same name
/// then looks like no change and goes unanswered. The client keeps its last listener
/// subscribed instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_target_dropped_and_used_again() {
    let v1 = Backend::start().await.unwrap();
    let cp = Cp::start(&[("service.yaml", &service(&[("v1", v1.addr())], ""))]);
    let mesh = cp.client(&client_workload(None), true).await;
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    // Nothing holds the target now: the client drops its routes and clusters.
    let routes = format!("outbound|{PORT}||{HOST}");
    until_config(&mesh, |snap| snap.route_config(&routes).is_none()).await;
    let channel = mesh.channel::<Empty<Bytes>>(TARGET);
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let seen = tally(&channel, "/", &[], 3).await;
    assert_eq!(seen, HashMap::from([(v1.addr().to_string(), 3)]));
}

/// A channel dropped and its target used at once by the HTTP client (as the istio example
/// does): no request fails. Without the unsubscribe delay the client started removing the
/// target's listener, routes and clusters as the HTTP client routed by them, and a request
/// could be routed by the old route to a cluster already gone (`UnknownCluster`). A fresh
/// client each round: the HTTP client keeps an authority subscribed once it has used it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_released_and_used_again_at_once_never_fails() {
    let v1 = Backend::start().await.unwrap();
    let cp = Cp::start(&[("service.yaml", &service(&[("v1", v1.addr())], ""))]);
    let uri = format!("http://{HOST}:{PORT}/");
    let ok = HashMap::from([(v1.addr().to_string(), 1)]);
    for delta in [false, true] {
        for round in 0..15 {
            let mesh = cp.client(&client_workload(None), delta).await;
            let channel = mesh.channel::<Empty<Bytes>>(TARGET);
            assert_eq!(
                tally(&channel, "/", &[], 1).await,
                ok,
                "delta {delta} round {round}"
            );
            drop(channel);
            let http = mesh.http_client::<Empty<Bytes>>();
            assert_eq!(
                tally(&http, &uri, &[], 1).await,
                ok,
                "delta {delta} round {round}"
            );
        }
    }
}

/// What Envoy honours and grpc-go ignores, we honour as Envoy does: a VirtualService's
/// `rewrite.uri`, `headers.request.set`, `headers.response.add` and `mirror` (the mirror gets
/// a copy, the caller the primary's answer); a `corsPolicy` is accepted (and, as in Envoy
/// without a CORS filter in the chain, not enforced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_rewrite_headers_and_mirror_as_envoy() {
    use tower::ServiceExt;
    let primary = Backend::start().await.unwrap();
    let mirror = Backend::start().await.unwrap();
    let rules = format!(
        "  - corsPolicy: {{allowOrigins: [{{exact: 'https://a.example'}}], allowMethods: [GET]}}\n    \
         headers: {{request: {{set: {{x-tenant: blue}}}}, response: {{add: {{x-served-by: mesh}}}}}}\n    \
         rewrite: {{uri: /v1/}}\n    route: [{v1}]\n    mirror: {{host: {HOST}, subset: shadow}}\n",
        v1 = dest("v1"),
    );
    let cp = Cp::start(&[
        (
            "service.yaml",
            &service(&[("v1", primary.addr()), ("shadow", mirror.addr())], ""),
        ),
        ("vs.yaml", &virtual_service(&rules)),
    ]);
    for delta in [false, true] {
        let mesh = cp.client(&client_workload(None), delta).await;
        let channel = mesh.channel::<Empty<Bytes>>(TARGET);
        mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
        let mirrored_before = mirror.served();
        let req = http::Request::get("/items?id=1")
            .body(Empty::new())
            .unwrap();
        let res = channel.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let h = |k: &str| res.headers().get(k).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            h("x-backend"),
            Some(primary.addr().to_string()),
            "primary answers"
        );
        assert_eq!(
            h("x-path").as_deref(),
            Some("/v1/items?id=1"),
            "prefix rewritten"
        );
        assert_eq!(
            h("x-echo-x-tenant").as_deref(),
            Some("blue"),
            "request header set"
        );
        assert_eq!(
            h("x-served-by").as_deref(),
            Some("mesh"),
            "response header added"
        );
        tokio::time::timeout(PATIENCE, async {
            while mirror.served() == mirrored_before {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the mirror got a copy");
    }
}

/// The HTTP client's first request to an authority whose config has not arrived yet waits for
/// it (as a channel's first calls do), instead of failing with "waiting for route config";
/// so does a request after the authority's config was dropped for lack of use and asked for
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_requests_wait_for_config_on_its_way() {
    let v1 = Backend::start().await.unwrap();
    let cp = Cp::start(&[("service.yaml", &service(&[("v1", v1.addr())], ""))]);
    let uri = format!("http://{HOST}:{PORT}/");
    for delta in [false, true] {
        let mesh = cp.client(&client_workload(None), delta).await;
        let first = tally(&mesh.http_client::<Empty<Bytes>>(), &uri, &[], 1).await;
        assert_eq!(
            first,
            HashMap::from([(v1.addr().to_string(), 1)]),
            "first request"
        );
        // A channel uses the target and goes away; the HTTP client asks for it again.
        let channel = mesh.channel::<Empty<Bytes>>(TARGET);
        assert_eq!(tally(&channel, "/", &[], 1).await.len(), 1);
        drop(channel);
        let again = tally(&mesh.http_client::<Empty<Bytes>>(), &uri, &[], 3).await;
        assert_eq!(
            again,
            HashMap::from([(v1.addr().to_string(), 3)]),
            "after re-subscription"
        );
    }
}

/// DestinationRule `loadBalancer.simple`: ROUND_ROBIN spreads sequential calls evenly;
/// LEAST_REQUEST sends concurrent calls away from a slow endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_round_robin_and_least_request() {
    let slow = Backend::start_with(Mode::slow(Duration::from_millis(100)))
        .await
        .unwrap();
    let fast = [
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    ];
    let slow_addr = slow.addr().to_string();
    let all = |lb: &str| {
        service(
            &[
                ("v1", slow.addr()),
                ("v2", fast[0].addr()),
                ("v3", fast[1].addr()),
                ("v4", fast[2].addr()),
            ],
            &format!("  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n"),
        )
    };
    let cp = Cp::start(&[("service.yaml", &all("ROUND_ROBIN"))]);
    let mesh = cp.client(&client_workload(None), true).await;
    let channel = mesh.channel::<Empty<Bytes>>(TARGET);
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let rr = tally(&channel, "/", &[], 8).await;
    assert_eq!(rr.len(), 4, "round robin: {rr:?}");
    assert!(rr.values().all(|n| *n == 2), "round robin: {rr:?}");

    cp.write("service.yaml", &all("LEAST_REQUEST"));
    let cluster = format!("outbound|{PORT}||{HOST}");
    until_config(&mesh, |snap| {
        snap.cluster(&cluster).map(|c| c.lb_policy)
            == Some(mesh_core::config::cluster::LbPolicy::LeastRequest)
    })
    .await;
    // 4 callers × 40 calls. Round robin gives the slow endpoint 40 of 160 (random about as
    // many, σ ≈ 5.5). Least request (two choices, sampled with replacement as Envoy does)
    // takes it when it is idle or drawn twice (1 in 16): 13-18 measured with static config.
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let c = channel.clone();
        callers.spawn(async move { tally(&c, "/", &[], 40).await });
    }
    let seen = merged(callers).await;
    assert_eq!(seen.values().sum::<usize>(), 160, "{seen:?}");
    let to_slow = seen.get(&slow_addr).copied().unwrap_or(0);
    assert!(
        to_slow <= 26,
        "least request avoids the busy endpoint: {seen:?}"
    );
}
