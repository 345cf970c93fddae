//! The differential oracle on one istiod: grpc-go's proxyless stack (`interop/gocp/grpcpeer`:
//! its xDS resolver and credentials, and `xds.NewGRPCServer`) and ours, given the same Istio
//! YAML and the same agent bootstrap, must see the same backends, status codes and
//! authorization outcomes. Calls are `helloworld.Greeter/SayHello` (tonic on our side).

mod support;

use mesh_examples::greeter::{GreeterClient, HelloRequest};
use mesh_tower::Mesh;
use mesh_xds_client::XdsMesh;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::istio::*;

use support::*;

/// Outcomes of a batch of calls: `reply <message>` or the gRPC code's name, with counts.
type Outcomes = BTreeMap<String, usize>;

/// Runs grpc-go's client (`grpcpeer client`) for `n` calls to `target` with `args`; its stdout.
async fn grpcpeer_client(bootstrap: &Path, target: &str, n: usize, args: Vec<String>) -> String {
    let mut cmd = Command::new(gocp::grpc_go_peer_binary());
    cmd.args(["client", "-target", target, "-n", &n.to_string()])
        .args(args)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .stderr(Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run grpcpeer"))
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// grpc-go's client: `n` calls to `target` with `headers`, through its xDS stack.
async fn grpc_go(bootstrap: &Path, target: &str, n: usize, headers: &[(&str, &str)]) -> Outcomes {
    let args = headers
        .iter()
        .flat_map(|(k, v)| ["-header".to_owned(), format!("{k}={v}")])
        .collect();
    let text = grpcpeer_client(bootstrap, target, n, args).await;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("grpcpeer client said nothing: {text}"));
    outcomes(line)
}

/// grpc-go's client: `n` calls per value of metadata `key`, one process and connection for
/// all (its xDS setup takes seconds); the outcomes by value.
async fn grpc_go_each(
    bootstrap: &Path,
    target: &str,
    n: usize,
    key: &str,
    values: &[String],
) -> BTreeMap<String, Outcomes> {
    let each = vec!["-each".to_owned(), format!("{key}={}", values.join(","))];
    let text = grpcpeer_client(bootstrap, target, n, each).await;
    let mut by_value = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("EACH ")) {
        let (value, json) = line.split_once(' ').unwrap();
        by_value.insert(value.to_owned(), outcomes(json));
    }
    assert_eq!(by_value.len(), values.len(), "grpcpeer client said: {text}");
    by_value
}

/// A `RESULT`/`EACH` JSON object as outcomes.
fn outcomes(json: &str) -> Outcomes {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut outcomes = Outcomes::new();
    for (msg, count) in v["replies"].as_object().unwrap() {
        outcomes.insert(format!("reply {msg}"), count.as_u64().unwrap() as usize);
    }
    for (code, count) in v["codes"].as_object().unwrap() {
        if code != "OK" {
            outcomes.insert(code.clone(), count.as_u64().unwrap() as usize);
        }
    }
    outcomes
}

/// Ours: the same calls through `Mesh::channel` with tonic.
async fn mesh_calls(mesh: &Mesh, n: usize, headers: &[(&'static str, &str)]) -> Outcomes {
    let mut client = GreeterClient::new(mesh.channel(TARGET));
    let mut outcomes = Outcomes::new();
    for _ in 0..n {
        let mut req = tonic::Request::new(HelloRequest { name: "a".into() });
        for (k, v) in headers {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        let key = match client.say_hello(req).await {
            Ok(reply) => format!("reply {}", reply.into_inner().message),
            Err(status) => format!("{:?}", status.code()),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    outcomes
}

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

/// A plaintext gRPC server answering SayHello with its address (the mesh's echo).
async fn grpc_echo() -> SocketAddr {
    grpc_server(false).await
}

/// The echo; with `flaky`, it answers `UNAVAILABLE` (trailers-only) to every other call it
/// gets, the first included: a flaky instance whose failures a retry always gets past.
async fn grpc_server(flaky: bool) -> SocketAddr {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let calls = calls.clone();
            let svc = hyper::service::service_fn(move |req| {
                let fail = flaky && calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
                async move {
                    if !fail {
                        return mesh_examples::echo::handle(addr, req).await;
                    }
                    let res = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "14")
                        .header("grpc-message", "flaky")
                        .body(http_body_util::Empty::new().boxed_unsync())
                        .unwrap();
                    Ok(res)
                }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn reply(addr: SocketAddr, who: &str) -> String {
    format!("reply {addr} /helloworld.Greeter/SayHello {who}\n")
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
        let replies: usize = seen
            .iter()
            .filter(|(k, _)| k.starts_with("reply "))
            .map(|(_, n)| n)
            .sum();
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
