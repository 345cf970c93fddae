//! Istio's request metrics as the tools that read them see them. A client in this process
//! calls the `echo` service split 80/20 over two server processes (the `serve` example,
//! xDS-enabled by istiod: STRICT mTLS, an AuthorizationPolicy that denies `/admin`); a real
//! Prometheus scrapes the client's `/metrics` and both servers'; the test then asks it Kiali's
//! graph query and the Istio dashboards' request-rate, success-rate and p99 queries, and checks
//! the edges, counts, response codes and mTLS labels the traffic implies.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_interop::envoy::free_port;
use mesh_interop::prometheus::Prometheus;
use mesh_tower::admin::Admin;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use support::echo_process::EchoProcess;
use support::istio::*;
use support::*;
use tower::ServiceExt;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const ECHO_ID: &str = "spiffe://cluster.local/ns/default/sa/echo";

/// Starts `serve` on `listen` from `bootstrap`, with its admin endpoint on `admin` and its
/// access log in `log`; returns once it says it serves.
fn serve(listen: SocketAddr, bootstrap: &Path, admin: SocketAddr, log: &Path) -> EchoProcess {
    EchoProcess::spawn(listen, |cmd| {
        cmd.args(["--admin", &admin.to_string()])
            .arg("--bootstrap")
            .arg(bootstrap)
            .env("MESH_ACCESS_LOG", log);
    })
}

/// The value of each series of `promql`, keyed by the values of `by` (joined with `|`).
async fn by(prom: &Prometheus, promql: &str, by: &[&str]) -> HashMap<String, f64> {
    prom.query(promql)
        .await
        .into_iter()
        .map(|(labels, v)| {
            let key: Vec<&str> = by
                .iter()
                .map(|k| labels.get(*k).and_then(|v| v.as_str()).unwrap_or("<none>"))
                .collect();
            (key.join("|"), v)
        })
        .collect()
}

/// Kiali's graph query for the workload graph (namespace `default`, 1 m window), as Kiali
/// builds it: a series missing any of these labels (but the gRPC status) would be dropped.
const KIALI_GRAPH: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_service_namespace="default"}[1m])) by (source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags) > 0"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_split_the_denials_and_mtls_as_kiali_and_grafana_do() {
    // This process's recorder, before any mesh registers a metric.
    let handle = mesh_tower::telemetry::prometheus::install().unwrap();
    let pki = mesh_examples::pki::DevCa::new("istio telemetry root");
    let certs = tempfile::tempdir().unwrap();
    let issue = |name: &str, id: &str| issue(&pki, certs.path(), name, id);
    let (client_dir, echo_dir) = (issue("client", CLIENT_ID), issue("echo", ECHO_ID));
    let v1: SocketAddr = format!("127.0.0.1:{}", free_port().port()).parse().unwrap();
    let v2: SocketAddr = format!("127.0.0.2:{}", free_port().port()).parse().unwrap();
    let split = format!(
        "  - route:\n    - {{destination: {{host: {HOST}, subset: v1}}, weight: 80}}\n    \
         - {{destination: {{host: {HOST}, subset: v2}}, weight: 20}}\n"
    );
    let mtls = "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n";
    let cp = Cp::start(&[
        ("service.yaml", &service(&[("v1", v1), ("v2", v2)], mtls)),
        ("vs.yaml", &virtual_service(&split)),
        ("policy.yaml", &(STRICT_MTLS.to_owned() + DENY_ADMIN)),
    ]);

    // Two server processes, each its own workload (Istio's agent-style bootstrap).
    let mut servers = Vec::new();
    let mut logs = Vec::new();
    let mut targets = Vec::new();
    for (version, listen) in [("v1", v1), ("v2", v2)] {
        let (name, ip) = (format!("echo-{version}"), listen.ip().to_string());
        let workload = Workload {
            name: &name,
            namespace: "default",
            ip: &ip,
            service_account: "echo",
            labels: &[("app", "echo"), ("version", version)],
            cert_dir: Some(&echo_dir),
        };
        let admin = free_port();
        let log = cp.dir.path().join(format!("{name}.log"));
        servers.push(serve(listen, &cp.bootstrap_file(&workload), admin, &log));
        logs.push((name.clone(), log));
        targets.push(admin);
    }
    let client = cp.client(&client_workload(Some(&client_dir)), false).await;
    let channel = client.channel::<Empty<Bytes>>(TARGET);
    client.wait_ready(TARGET, PATIENCE).await.unwrap();
    // The client's `/metrics`: this process's exporter behind the mesh's admin endpoint.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    targets.push(admin.local_addr().unwrap());
    tokio::spawn(
        Admin::new(client.clone())
            .with_prometheus(handle)
            .serve(admin),
    );
    let prom = Prometheus::start(&targets);

    // What the client saw: which server answered, and with what.
    let mut seen: HashMap<String, f64> = HashMap::new();
    let mut call = async |path: &str| {
        let req = http::Request::get(path).body(Empty::new()).unwrap();
        let res = channel.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let server = if body.starts_with(v2.to_string().as_bytes()) {
            "echo-v2"
        } else {
            "echo-v1"
        };
        let key = if status == 403 {
            "403".to_owned()
        } else {
            format!("{server}|{status}")
        };
        *seen.entry(key).or_default() += 1.0;
    };
    // Two rounds with scrapes of every target between, so that rates over the window see the
    // counters grow.
    let totals = r#"sum(istio_requests_total{destination_service_name="echo"}) by (reporter)"#;
    let mut total = 0.0;
    for _ in 0..2 {
        for i in 0..50 {
            call(if i % 10 == 9 {
                "/admin/users"
            } else {
                "/items"
            })
            .await;
        }
        total += 50.0;
        // Scraped: both sides' counters reach what was sent (one scrape a second).
        let want = HashMap::from([
            ("source".to_owned(), total),
            ("destination".to_owned(), total),
        ]);
        tokio::time::timeout(2 * PATIENCE, async {
            while by(&prom, totals, &["reporter"]).await != want {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("Prometheus scraped every request on both sides");
    }

    // Exact counts per destination workload and code, on the servers' side, are what the
    // client saw (denials are answered by either server).
    let counts = by(
        &prom,
        r#"sum(istio_requests_total{reporter="destination"}) by (destination_workload, response_code)"#,
        &["destination_workload", "response_code"],
    )
    .await;
    let denied: f64 = counts
        .iter()
        .filter(|(k, _)| k.ends_with("|403"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(denied, seen["403"], "{counts:?}");
    for w in ["echo-v1", "echo-v2"] {
        assert_eq!(
            counts.get(&format!("{w}|200")).copied().unwrap_or(0.0),
            seen.get(&format!("{w}|200")).copied().unwrap_or(0.0),
            "{w}: {counts:?} vs {seen:?}"
        );
    }
    assert!(
        seen.get("echo-v2|200").copied().unwrap_or(0.0) > 0.0,
        "the 20% got some"
    );

    // mTLS as Kiali's badge reads it: who called whom, on the destination's series; the
    // caller's workload from Istio's metadata exchange (checked against its certificate).
    let mtls = by(
        &prom,
        r#"sum(istio_requests_total{reporter="destination",connection_security_policy="mutual_tls"}) by (source_principal, destination_principal, source_workload_namespace, source_workload, source_app)"#,
        &["source_principal", "destination_principal", "source_workload_namespace", "source_workload", "source_app"],
    )
    .await;
    assert_eq!(
        mtls,
        HashMap::from([(
            format!("{CLIENT_ID}|{ECHO_ID}|default|client|client"),
            total
        )]),
    );

    // Kiali's graph: an edge per destination workload and code, every label present.
    let graph = by(
        &prom,
        KIALI_GRAPH,
        &[
            "destination_workload",
            "destination_canonical_revision",
            "response_code",
            "request_protocol",
            "response_flags",
        ],
    )
    .await;
    for edge in ["echo-v1|v1|200|http|-", "echo-v2|v2|200|http|-"] {
        assert!(graph.contains_key(edge), "{edge} not in {graph:?}");
    }
    assert!(graph.keys().any(|k| k.contains("|403|")), "{graph:?}");

    // Grafana's Istio service dashboard: request rate, success rate (non-5xx) and p99, from
    // the client's (source) series.
    let rate = by(
        &prom,
        r#"round(sum(rate(istio_requests_total{reporter=~"source|waypoint",destination_service=~"echo.default.svc.cluster.local"}[1m])), 0.001)"#,
        &[],
    )
    .await;
    assert!(
        rate.get("").is_some_and(|r| *r > 0.0),
        "request rate: {rate:?}"
    );
    let success = by(
        &prom,
        r#"sum(increase(istio_requests_total{reporter=~"source|waypoint",response_code!~"5.*"}[1m])) / sum(increase(istio_requests_total{reporter=~"source|waypoint"}[1m]))"#,
        &[],
    )
    .await;
    assert_eq!(success.get(""), Some(&1.0), "no 5xx: {success:?}");
    let p99 = by(
        &prom,
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=~"source|waypoint"}[1m])) by (le))"#,
        &[],
    )
    .await;
    let p99 = p99.get("").copied().unwrap_or(f64::NAN);
    assert!(p99 > 0.0 && p99 <= 1000.0, "p99 {p99} ms");
    // The client knows which workload answered from istiod's endpoint metadata, as a
    // sidecar does (Kiali's graph on the source side).
    let by_workload = by(
        &prom,
        r#"sum(istio_requests_total{reporter="source",response_code="200"}) by (destination_workload, destination_version)"#,
        &["destination_workload", "destination_version"],
    )
    .await;
    for (w, v) in [("echo-v1", "v1"), ("echo-v2", "v2")] {
        assert_eq!(
            by_workload.get(&format!("{w}|{v}")).copied(),
            seen.get(&format!("{w}|200")).copied(),
            "{by_workload:?} vs {seen:?}"
        );
    }
    // The client's own series: the source side of each call.
    let source = by(
        &prom,
        r#"sum(istio_requests_total{reporter="source"}) by (source_workload, source_principal, destination_service_name, destination_principal, response_code)"#,
        &["source_workload", "source_principal", "destination_service_name", "destination_principal", "response_code"],
    )
    .await;
    assert_eq!(
        source.get(&format!("client|{CLIENT_ID}|echo|{ECHO_ID}|403")),
        Some(&seen["403"]),
        "{source:?}"
    );

    // Each server's access log has a line per request it answered, each naming the caller's
    // identity. The server buffers its file and flushes it every second from another process,
    // so the file is read until it holds what Prometheus counted (or the deadline passes).
    for (name, log) in &logs {
        let counted: f64 = counts
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}|")))
            .map(|(_, v)| v)
            .sum();
        let read = || {
            (std::fs::read_to_string(log).unwrap_or_default().lines())
                .map(str::to_owned)
                .collect()
        };
        let lines: Vec<serde_json::Value> = support::log_pair::at_least(counted as usize, read)
            .await
            .unwrap_or_else(read)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as f64, counted, "{name}: {lines:?}");
        for line in &lines {
            assert_eq!(line["reporter"], "destination", "{line}");
            assert_eq!(line["peer_identity"], CLIENT_ID, "{line}");
            let code = line["response_code"].as_u64().unwrap();
            let path = line["path"].as_str().unwrap();
            assert!(
                (code == 200 && path == "/items") || (code == 403 && path == "/admin/users"),
                "{line}"
            );
        }
    }
    drop(servers);
}
