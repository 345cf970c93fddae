//! The differential oracle on one istiod: grpc-go's proxyless stack (`interop/gocp/grpcpeer`:
//! its xDS resolver and credentials, and `xds.NewGRPCServer`) and ours, given the same Istio
//! YAML and the same agent bootstrap, must see the same backends, status codes and
//! authorization outcomes. Calls are `helloworld.Greeter/SayHello` (tonic on our side).

mod support;

use mesh_tower::Mesh;
use mesh_xds_client::XdsMesh;
use std::path::PathBuf;
use support::go_oracle::*;
use support::istio::*;

use support::*;

/// istiod serving `files`, the bootstrap a grpc-go client reads (workload `client-go`), and
/// our mesh as the client workload, ready for `TARGET`: each test's two clients on one config.
async fn side_by_side(files: &[(&str, &str)]) -> (Cp, PathBuf, Mesh) {
    let cp = Cp::start(files);
    let go_bootstrap = cp.bootstrap_file(&Workload {
        name: "client-go",
        ..client_workload(None)
    });
    let mesh = cp.client(&client_workload(None), false).await;
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    (cp, go_bootstrap, mesh)
}

/// Routing and fault injection: header match, an 80/20 split, a gRPC abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_and_mesh_route_alike() {
    let (v1, v2) = (grpc_echo().await, grpc_echo().await);
    let rules = format!(
        "  - match: [{{headers: {{x-canary: {{exact: \"yes\"}}}}}}]\n    route: [{v2}]\n  \
         - match: [{{headers: {{x-fault: {{exact: abort}}}}}}]\n    \
         fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}\n    route: [{v1}]\n  \
         - route:\n    - {{destination: {{host: {HOST}, subset: v1}}, weight: 80}}\n    \
         - {{destination: {{host: {HOST}, subset: v2}}, weight: 20}}\n",
        v1 = dest("v1"),
        v2 = dest("v2"),
    );
    let (_cp, go_bootstrap, mesh) = side_by_side(&[
        ("service.yaml", &service(&[("v1", v1), ("v2", v2)], "")),
        ("vs.yaml", &virtual_service(&rules)),
    ])
    .await;

    let canary = [("x-canary", "yes")];
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 10, &canary).await,
        mesh_calls(&mesh, 10, &canary).await,
    );
    assert_eq!(theirs, Outcomes::from([(reply(v2, "-"), 10)]), "grpc-go");
    assert_eq!(ours, theirs, "header match");

    let abort = [("x-fault", "abort")];
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 5, &abort).await,
        mesh_calls(&mesh, 5, &abort).await,
    );
    assert_eq!(
        theirs,
        Outcomes::from([("Unavailable".into(), 5)]),
        "grpc-go"
    );
    assert_eq!(ours, theirs, "fault abort");

    // 80/20 over 500 calls each: both only reach the two subsets, v1's share within 5σ (≈ 45).
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 500, &[]).await,
        mesh_calls(&mesh, 500, &[]).await,
    );
    for (who, seen) in [("grpc-go", &theirs), ("mesh", &ours)] {
        let n1 = seen.get(&reply(v1, "-")).copied().unwrap_or(0);
        let n2 = seen.get(&reply(v2, "-")).copied().unwrap_or(0);
        assert_eq!(n1 + n2, 500, "{who}: {seen:?}");
        assert!((n1 as i64 - 400).abs() <= 45, "{who}: 80/20 gave {seen:?}");
    }
}

/// STRICT mTLS + ISTIO_MUTUAL + an AuthorizationPolicy, every pairing of client and server
/// implementation: grpc-go and ours agree on each outcome (allowed, with the verified caller
/// identity in the reply; PERMISSION_DENIED for another namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_and_mesh_authorize_alike() {
    let pki = mesh_examples::pki::DevCa::new("oracle root");
    let certs = tempfile::tempdir().unwrap();
    let issue = |name: &str, id: &str| -> PathBuf { issue(&pki, certs.path(), name, id) };
    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    let (client_dir, other_dir, echo_dir) = (
        issue("client", client_id),
        issue("other", "spiffe://cluster.local/ns/other/sa/intruder"),
        issue("echo", "spiffe://cluster.local/ns/default/sa/echo"),
    );
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let go_addr = free().local_addr().unwrap();
    let mesh_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mesh_addr = mesh_listener.local_addr().unwrap();
    let rules = format!(
        "  - match: [{{headers: {{x-server: {{exact: go}}}}}}]\n    route: [{go}]\n  \
         - route: [{mesh}]\n",
        go = dest("go"),
        mesh = dest("mesh"),
    );
    let policy = STRICT_MTLS.to_owned()
        + r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {paths: [/helloworld.Greeter/*]}}]
"#;
    let cp = Cp::start(&[
        (
            "service.yaml",
            &service(
                &[("go", go_addr), ("mesh", mesh_addr)],
                "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
            ),
        ),
        ("vs.yaml", &virtual_service(&rules)),
        ("policy.yaml", &policy),
    ]);
    let server = |name: &'static str, version: &'static str| Workload {
        name,
        namespace: "default",
        ip: "127.0.0.1",
        service_account: "echo",
        labels: if version == "go" {
            &[("app", "echo"), ("version", "go")]
        } else {
            &[("app", "echo"), ("version", "mesh")]
        },
        cert_dir: Some(&echo_dir),
    };
    let _go = gocp::GrpcGoServer::start(&cp.bootstrap_file(&server("echo-go", "go")), go_addr);
    let ours = cp.client(&server("echo-mesh", "mesh"), false).await;
    let ours = ours.xds_server(mesh_addr, PATIENCE).await.unwrap();
    let handler = tower::service_fn(move |req| mesh_examples::echo::handle(mesh_addr, req));
    tokio::spawn(ours.serve(mesh_listener, handler));

    let callers = [
        ("client", "default", "client", client_dir.as_path(), true),
        ("intruder", "other", "intruder", other_dir.as_path(), false),
    ];
    for (name, namespace, sa, dir, allowed) in callers {
        let workload = |name| Workload {
            name,
            namespace,
            ip: "127.0.0.10",
            service_account: sa,
            labels: &[("app", "caller")],
            cert_dir: Some(dir),
        };
        let go_bootstrap =
            cp.bootstrap_file(&workload(if allowed { "client-go" } else { "intruder-go" }));
        let mesh = cp.client(&workload(name), true).await;
        mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
        for (server, addr) in [("go", go_addr), ("mesh", mesh_addr)] {
            let headers = [("x-server", server)];
            let theirs = grpc_go(&go_bootstrap, TARGET, 3, &headers).await;
            let ours = mesh_calls(&mesh, 3, &headers).await;
            let expected = if allowed {
                Outcomes::from([(reply(addr, client_id), 3)])
            } else {
                Outcomes::from([("PermissionDenied".into(), 3)])
            };
            assert_eq!(theirs, expected, "grpc-go client, {name} → {server} server");
            assert_eq!(ours, expected, "mesh client, {name} → {server} server");
        }
    }
}

/// Timeouts and consistent hashing: a VirtualService `timeout` (istiod writes it as
/// `max_stream_duration` for proxyless clients) does not count a fault delay, in grpc-go as in
/// Envoy (whose route timer starts after the fault filter), so a 300 ms delay under a 100 ms
/// timeout still succeeds; and a DestinationRule `consistentHash` on a header: each user
/// sticks to one backend, and grpc-go and we pick the same one (both build Envoy's ring:
/// xxHash of `ip:port_i`, 1024 entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_and_mesh_time_out_and_hash_alike() {
    let backends = [
        ("a", grpc_echo().await),
        ("b", grpc_echo().await),
        ("c", grpc_echo().await),
    ];
    let rules = format!(
        "  - match: [{{headers: {{x-slow: {{exact: \"yes\"}}}}}}]\n    timeout: 100ms\n    \
         fault: {{delay: {{fixedDelay: 300ms, percentage: {{value: 100}}}}}}\n    route: [{{destination: {{host: {HOST}}}}}]\n  \
         - route: [{{destination: {{host: {HOST}}}}}]\n"
    );
    let (_cp, go_bootstrap, mesh) = side_by_side(&[
        (
            "service.yaml",
            &service(
                &backends,
                "  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n",
            ),
        ),
        ("vs.yaml", &virtual_service(&rules)),
    ])
    .await;

    let slow = [("x-slow", "yes")];
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 3, &slow).await,
        mesh_calls(&mesh, 3, &slow).await,
    );
    for (who, seen) in [("grpc-go", &theirs), ("mesh", &ours)] {
        let replies = replied(seen);
        assert_eq!(
            replies, 3,
            "{who}: the delay is outside the timeout: {seen:?}"
        );
    }

    let users: Vec<String> = (0..12).map(|u| format!("user-{u}")).collect();
    let theirs_by_user = grpc_go_each(&go_bootstrap, TARGET, 4, "x-user", &users).await;
    let mut used = std::collections::BTreeSet::new();
    for user in &users {
        let theirs = &theirs_by_user[user];
        let ours = mesh_calls(&mesh, 4, &[("x-user", user.as_str())]).await;
        assert_eq!(
            theirs.len(),
            1,
            "grpc-go: {user} sticks to one backend: {theirs:?}"
        );
        assert_eq!(&ours, theirs, "{user}: the same backend from the same ring");
        used.extend(theirs.keys().cloned());
    }
    assert!(
        used.len() >= 2,
        "12 users spread over the backends: {used:?}"
    );
}

/// Retries (gRFC A44 on istiod's retry policy): behind a backend that fails every other call
/// with `UNAVAILABLE`, istiod's default policy (2 attempts, `unavailable` among the
/// conditions) gets every call through for both clients; with `retries: {attempts: 0}` both
/// see the same half fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_and_mesh_retry_alike() {
    let flaky = grpc_server(true).await;
    let route = format!("  - route: [{{destination: {{host: {HOST}}}}}]\n");
    let (cp, go_bootstrap, mesh) = side_by_side(&[
        ("service.yaml", &service(&[("v1", flaky)], "")),
        ("vs.yaml", &virtual_service(&route)),
    ])
    .await;

    let all_through = Outcomes::from([(reply(flaky, "-"), 10)]);
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 10, &[]).await,
        mesh_calls(&mesh, 10, &[]).await,
    );
    assert_eq!(theirs, all_through, "grpc-go retries past the failures");
    assert_eq!(ours, theirs, "so do we");

    // Retries off: each client's 10 calls (an even number of attempts so far, so each batch
    // starts on a failure) alternate between the failure and the reply.
    cp.write(
        "vs.yaml",
        &virtual_service(&format!(
            "  - route: [{{destination: {{host: {HOST}}}}}]\n    retries: {{attempts: 0}}\n"
        )),
    );
    until_config(&mesh, |snap| {
        let routes = snap.names(mesh_core::ResourceKind::RouteConfig);
        !routes.is_empty()
            && routes.iter().all(|name| {
                let rc = snap.route_config(name).unwrap();
                rc.virtual_hosts
                    .iter()
                    .flat_map(|vh| &vh.routes)
                    .filter_map(|r| r.route.as_ref())
                    .all(|a| {
                        a.retry_policy
                            .as_ref()
                            .is_none_or(|p| p.num_retries == Some(0))
                    })
            })
    })
    .await;
    let half = Outcomes::from([(reply(flaky, "-"), 5), ("Unavailable".into(), 5)]);
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 10, &[]).await,
        mesh_calls(&mesh, 10, &[]).await,
    );
    assert_eq!(theirs, half, "grpc-go without retries");
    assert_eq!(ours, theirs, "the same without retries");
}

/// URI matches: an `exact` URI the call does not take, then a `regex` URI it does (istiod
/// sends gRPC's `safe_regex`), then the default route. Both clients read the matchers alike:
/// every call reaches v2 through the regex rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_and_mesh_match_uris_alike() {
    let (v1, v2) = (grpc_echo().await, grpc_echo().await);
    let rules = format!(
        "  - match: [{{uri: {{exact: /helloworld.Greeter/SayHelloAgain}}}}]\n    route: [{v1}]\n  \
         - match: [{{uri: {{regex: \"/helloworld[.]Greeter/Say[A-Z][a-z]+\"}}}}]\n    route: [{v2}]\n  \
         - route: [{v1}]\n",
        v1 = dest("v1"),
        v2 = dest("v2"),
    );
    let (_cp, go_bootstrap, mesh) = side_by_side(&[
        ("service.yaml", &service(&[("v1", v1), ("v2", v2)], "")),
        ("vs.yaml", &virtual_service(&rules)),
    ])
    .await;
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 10, &[]).await,
        mesh_calls(&mesh, 10, &[]).await,
    );
    assert_eq!(theirs, Outcomes::from([(reply(v2, "-"), 10)]), "grpc-go");
    assert_eq!(ours, theirs, "URI exact and regex matches");
}

/// Load-aware picks and admission, with requests held in flight at the backends: a
/// DestinationRule `LEAST_REQUEST` (istiod sends Envoy's `LEAST_REQUEST`, two choices, drawn
/// with replacement by both clients as by Envoy) sends about 3/4 of new calls to the backend
/// holding fewer (round robin would send half); `connectionPool.http.http2MaxRequests: 3`
/// (the cluster's `max_requests`, gRFC A32) fails new calls with `UNAVAILABLE` while three are
/// in flight, and admits them again once those end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_and_mesh_balance_and_limit_by_load_alike() {
    let held = Held::new();
    let (a, b) = (held.server().await, held.server().await);
    let route =
        format!("  - route: [{{destination: {{host: {HOST}}}}}]\n    retries: {{attempts: 0}}\n");
    let least = "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n";
    let (cp, go_bootstrap, mesh) = side_by_side(&[
        ("service.yaml", &service(&[("a", a), ("b", b)], least)),
        ("vs.yaml", &virtual_service(&route)),
    ])
    .await;

    // Five held (an odd number: one backend holds fewer), then 100 calls. With p = 3/4 the
    // less loaded one's share has σ ≈ 4.3: 62 is 3σ below, and round robin gives 50.
    let (theirs, ours) = (
        grpc_go_holding(&go_bootstrap, TARGET, &held, 5, 100).await,
        mesh_holding(&mesh, &held, 5, 100).await,
    );
    for (who, (at_hold, seen)) in [("grpc-go", &theirs), ("mesh", &ours)] {
        let count = |addr| at_hold.get(&addr).copied().unwrap_or(0);
        let lighter = if count(a) < count(b) { a } else { b };
        let to_lighter = seen.get(&reply(lighter, "-")).copied().unwrap_or(0);
        let replies = replied(seen);
        assert_eq!(replies, 100, "{who}: every call answered: {seen:?}");
        assert!(
            to_lighter >= 62,
            "{who}: {to_lighter} of 100 to the backend holding fewer ({at_hold:?}): {seen:?}"
        );
    }

    cp.write(
        "service.yaml",
        &service(
            &[("a", a), ("b", b)],
            "  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 3}}}\n",
        ),
    );
    until_config(&mesh, |snap| {
        let clusters = snap.names(mesh_core::ResourceKind::Cluster);
        let echo: Vec<_> = clusters.iter().filter(|n| n.contains(HOST)).collect();
        !echo.is_empty()
            && echo.iter().all(|name| {
                snap.cluster(name)
                    .and_then(|c| c.circuit_breakers.as_ref())
                    .is_some_and(|cb| cb.thresholds.iter().any(|t| t.max_requests == Some(3)))
            })
    })
    .await;
    let refused = Outcomes::from([("Unavailable".into(), 5)]);
    let (theirs, ours) = (
        grpc_go_holding(&go_bootstrap, TARGET, &held, 3, 5).await,
        mesh_holding(&mesh, &held, 3, 5).await,
    );
    assert_eq!(theirs.1, refused, "grpc-go: three in flight, none admitted");
    assert_eq!(ours.1, theirs.1, "the same limit");
    // The held calls ended with their callers: calls are admitted again.
    let (theirs, ours) = (
        grpc_go(&go_bootstrap, TARGET, 4, &[]).await,
        mesh_calls(&mesh, 4, &[]).await,
    );
    for (who, seen) in [("grpc-go", &theirs), ("mesh", &ours)] {
        let replies = replied(seen);
        assert_eq!(replies, 4, "{who}: admitted again: {seen:?}");
    }
}
