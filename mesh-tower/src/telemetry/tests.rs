//! Label sets, outcomes and the end of stream, read back from a recorder.

use super::edge::ClientCall;
use super::labels::{service_of_cluster, service_of_host, spiffe_namespace};
use super::*;
use crate::error::{ErrorKind, MeshError};
use crate::stats::Flags;
use crate::test_util::Series;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Runs `f` on a current-thread runtime with paused time and `series` as the recorder.
fn with_series<F: std::future::Future>(series: &Series, f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(series, || rt.block_on(f))
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://echo.default.svc.cluster.local:7070{path}"))
        .body(())
        .unwrap()
}

fn echo_workload() -> Telemetry {
    Telemetry::new(Workload {
        name: "echo-v1".into(),
        namespace: "default".into(),
        app: Some("echo".into()),
        version: Some("v1".into()),
        principal: Some("spiffe://cluster.local/ns/default/sa/echo".into()),
        ..Workload::default()
    })
}

#[test]
fn flags_render_in_envoys_short_form() {
    assert_eq!(Flags::NONE.as_str(), "-");
    assert_eq!(Flags::UH.as_str(), "UH");
    assert_eq!(Flags::UH.with(Flags::UT).as_str(), "UH,UT");
    assert_eq!(Flags::for_error(ErrorKind::NoEndpoint), Flags::UH);
    assert_eq!(Flags::for_error(ErrorKind::Connect), Flags::UF);
    assert_eq!(Flags::for_error(ErrorKind::Overflow), Flags::UO);
    assert_eq!(Flags::for_error(ErrorKind::NoRoute), Flags::NR);
    assert_eq!(Flags::for_error(ErrorKind::UnknownCluster), Flags::NC);
    assert_eq!(Flags::for_error(ErrorKind::PerTryTimeout), Flags::UT);
    assert_eq!(Flags::for_error(ErrorKind::Upstream), Flags::UC);
}

#[test]
fn services_come_from_istio_cluster_names_and_hosts() {
    let [host, name, ns] = service_of_cluster("outbound|7070|v1|echo.default.svc.cluster.local");
    assert_eq!(
        (&*host, &*name, &*ns),
        ("echo.default.svc.cluster.local", "echo", "default")
    );
    let [host, name, ns] = service_of_cluster("greeter");
    assert_eq!((&*host, &*name, &*ns), ("greeter", "greeter", "unknown"));
    assert_eq!(service_of_host("db.prod.svc")[2], "prod");
    assert_eq!(spiffe_namespace("spiffe://td/ns/shop/sa/web"), Some("shop"));
    assert_eq!(spiffe_namespace("spiffe://td/workload/web"), None);
    let w = Workload::default();
    assert_eq!(
        (w.canonical_service(), w.canonical_revision()),
        ("unknown", "latest")
    );
}

/// A gRPC handler answering 200, five bytes, then `grpc-status: 7` in the trailers, 30 ms
/// after the request.
async fn grpc_answer(
    _req: http::Request<crate::telemetry::InboundRequestBody<http_body_util::Empty<Bytes>>>,
) -> Result<
    http::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>,
    std::convert::Infallible,
> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("7"));
    let body = http_body_util::Full::new(Bytes::from_static(b"hello"))
        .with_trailers(async move { Some(Ok(trailers)) });
    Ok(http::Response::new(body.boxed()))
}

fn grpc_request(authority: &str) -> http::Request<http_body_util::Empty<Bytes>> {
    http::Request::post(format!("http://{authority}/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .body(http_body_util::Empty::new())
        .unwrap()
}

#[test]
fn a_server_records_each_request_at_the_end_of_its_stream() {
    let series = Series::default();
    with_series(&series, async {
        let mut svc =
            InboundMetricsLayer::new(echo_workload()).layer(tower::service_fn(grpc_answer));
        let res = svc
            .call(grpc_request("echo.default.svc.cluster.local:7070"))
            .await
            .unwrap();
        // Nothing is recorded before the stream ends: the status is in the trailers.
        assert_eq!(series.requests(&[]), 0);
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "7");
    });
    let labels = series.only_series();
    let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for (k, v) in [
        ("reporter", "destination"),
        ("destination_workload", "echo-v1"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "echo"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "echo"),
        ("destination_canonical_revision", "v1"),
        ("destination_service", "echo.default.svc.cluster.local"),
        ("destination_service_name", "echo"),
        ("destination_service_namespace", "default"),
        // Plaintext: no caller identity, and not ours either.
        ("source_principal", "unknown"),
        ("destination_principal", "unknown"),
        ("source_workload", "unknown"),
        ("connection_security_policy", "none"),
        ("request_protocol", "grpc"),
        ("response_code", "200"),
        ("grpc_response_status", "7"),
        ("response_flags", "-"),
    ] {
        assert_eq!(get(k), Some(v), "{k} in {labels:?}");
    }
    // Kiali skips a series missing any of its graph labels: all are always there.
    assert_eq!(labels.len(), 25, "{labels:?}");
    assert_eq!(series.values(RESPONSE_BYTES, &[]), vec![5.0]);
    assert_eq!(series.values(REQUEST_DURATION, &[]), vec![30.0]);
    // gRPC's own call metrics (A66): counted on arrival, the duration in seconds.
    assert_eq!(
        series.counter(SERVER_CALL_STARTED, &[("grpc.method", "echo.Echo/Say")]),
        1
    );
    assert_eq!(
        series.values(
            SERVER_CALL_DURATION,
            &[
                ("grpc.method", "echo.Echo/Say"),
                ("grpc.status", "PERMISSION_DENIED")
            ]
        ),
        vec![0.03]
    );
}

#[test]
fn a_response_dropped_before_its_end_is_counted_as_dc() {
    let series = Series::default();
    with_series(&series, async {
        let mut svc =
            InboundMetricsLayer::new(echo_workload()).layer(tower::service_fn(grpc_answer));
        let res = svc.call(grpc_request("echo")).await.unwrap();
        drop(res);
    });
    assert_eq!(
        series.requests(&[("response_flags", "DC"), ("destination_service", "echo")]),
        1
    );
}

#[test]
fn hostile_authorities_cannot_grow_the_label_sets_without_bound() {
    let series = Series::default();
    let t = echo_workload();
    with_series(&series, async {
        for i in 0..5000 {
            let call = InboundCall::start(&t, &mut grpc_request(&format!("host-{i}")), None, None);
            call.answered::<()>(200, None).finish(Flags::NONE);
        }
    });
    assert_eq!(t.server().len(), crate::stats::MAX_EDGES);
    // The rest share one edge, made once.
    assert_eq!(t.server().overflow_len(), 1);
    assert_eq!(series.requests(&[]), 5000);
    assert_eq!(
        series.requests(&[("destination_service", "unknown")]),
        5000 - crate::stats::MAX_EDGES as u64
    );
}

#[test]
fn a_client_reports_as_the_source_with_the_cluster_as_the_service() {
    let series = Series::default();
    let t = echo_workload();
    with_series(&series, async {
        let call = ClientCall::start(&t, &mut get("/x"), None, None);
        tokio::time::advance(Duration::from_millis(12)).await;
        let res = crate::test_util::response(503, 8080);
        let mut rec = call.response(&res);
        rec.finish(Flags::NONE);
        // A failure the mesh answered itself: the flag says what happened.
        // A gRPC call on a channel: gRPC's call metric too (A66).
        let target = Arc::from("xds:///echo.default.svc.cluster.local:7070");
        let call = ClientCall::start(&t, &mut grpc_request("echo"), Some(&target), None);
        tokio::time::advance(Duration::from_millis(3)).await;
        let e = MeshError::new(ErrorKind::NoEndpoint, "no endpoint")
            .with_cluster("outbound|7070|v1|echo.default.svc.cluster.local".into());
        call.failed(&e).finish(Flags::NONE);
        let e = MeshError::new(ErrorKind::NoRoute, "no route");
        ClientCall::start(&t, &mut get("/x"), None, None)
            .failed(&e)
            .finish(Flags::NONE);
    });
    let source = [
        ("reporter", "source"),
        ("source_workload", "echo-v1"),
        ("source_app", "echo"),
    ];
    assert_eq!(series.requests(&source), 3);
    let served = crate::test_util::response(503, 8080);
    let cluster = &*served
        .extensions()
        .get::<crate::ServedBy>()
        .unwrap()
        .cluster;
    assert_eq!(
        series.requests(&[
            ("destination_service", cluster),
            ("response_code", "503"),
            ("response_flags", "-")
        ]),
        1
    );
    assert_eq!(
        series.values(REQUEST_DURATION, &[("response_code", "503")]),
        vec![12.0]
    );
    assert_eq!(
        series.requests(&[
            ("destination_service_name", "echo"),
            ("destination_service_namespace", "default"),
            ("response_code", "200"),
            ("grpc_response_status", "14"),
            ("response_flags", "UH"),
            ("request_protocol", "grpc"),
        ]),
        1
    );
    assert_eq!(
        series.values(
            CLIENT_CALL_DURATION,
            &[
                ("grpc.method", "echo.Echo/Say"),
                ("grpc.target", "xds:///echo.default.svc.cluster.local:7070"),
                ("grpc.status", "UNAVAILABLE"),
            ]
        ),
        vec![0.003]
    );
    assert_eq!(
        series.values(CLIENT_CALL_DURATION, &[]).len(),
        1,
        "HTTP calls have none"
    );
    assert_eq!(
        series.requests(&[
            ("destination_service", "unknown"),
            ("response_code", "0"),
            ("response_flags", "NR")
        ]),
        1
    );
}

#[test]
fn a_client_reads_the_destination_workload_from_endpoint_metadata() {
    let series = Series::default();
    let t = echo_workload();
    with_series(&series, async {
        let mut res = crate::test_util::response(200, 8080);
        res.extensions_mut()
            .get_mut::<crate::ServedBy>()
            .unwrap()
            .workload = Some("reviews-v2;bookinfo;reviews;v2;Kubernetes".into());
        ClientCall::start(&t, &mut get("/x"), None, None)
            .response(&res)
            .finish(Flags::NONE);
        // istiod leaves the revision out when it is the default.
        let mut res = crate::test_util::response(200, 8081);
        res.extensions_mut()
            .get_mut::<crate::ServedBy>()
            .unwrap()
            .workload = Some("ratings;bookinfo;ratings;;Kubernetes".into());
        ClientCall::start(&t, &mut get("/x"), None, None)
            .response(&res)
            .finish(Flags::NONE);
    });
    let reviews = [
        ("destination_workload", "reviews-v2"),
        ("destination_workload_namespace", "bookinfo"),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v2"),
        ("destination_cluster", "Kubernetes"),
    ];
    assert_eq!(series.requests(&reviews), 1);
    let ratings = [
        ("destination_workload", "ratings"),
        ("destination_version", "latest"),
        ("destination_canonical_revision", "latest"),
    ];
    assert_eq!(series.requests(&ratings), 1);
}

use crate::test_util::Lines;

#[test]
fn access_log_lines_say_what_each_request_did() {
    let series = Series::default();
    let lines = Lines::default();
    let t = echo_workload().with_access_log(AccessLog::writer(lines.clone()));
    with_series(&series, async {
        // A server's gRPC request, answered with status 7 in the trailers after 30 ms.
        let mut svc = InboundMetricsLayer::new(t.clone()).layer(tower::service_fn(grpc_answer));
        let res = svc
            .call(grpc_request("echo.default.svc.cluster.local:7070"))
            .await
            .unwrap();
        assert!(lines.json().is_empty(), "written when the stream ends");
        res.into_body().collect().await.unwrap();
        // A client's call the mesh failed: no endpoint in the cluster.
        let e = MeshError::new(ErrorKind::NoEndpoint, "no endpoint")
            .with_cluster("outbound|7070|v1|echo.default.svc.cluster.local".into());
        ClientCall::start(&t, &mut get("/items?id=1"), None, None)
            .failed(&e)
            .finish(Flags::NONE);
    });
    let json = lines.json();
    assert_eq!(json.len(), 2, "{json:?}");
    let server = &json[0];
    assert_eq!(server["reporter"], "destination");
    assert_eq!(server["method"], "POST");
    assert_eq!(server["authority"], "echo.default.svc.cluster.local:7070");
    assert_eq!(server["path"], "/echo.Echo/Say");
    assert_eq!(server["response_code"], 200);
    assert_eq!(server["grpc_status"], 7);
    assert_eq!(server["response_flags"], "-");
    assert_eq!(server["duration_ms"], 30.0);
    assert_eq!(server["response_bytes"], 5);
    assert!(
        server["start_time"].as_str().unwrap().ends_with('Z'),
        "{server}"
    );
    let client = &json[1];
    assert_eq!(client["reporter"], "source");
    assert_eq!(client["method"], "GET");
    assert_eq!(client["path"], "/items?id=1");
    assert_eq!(client["response_code"], 0);
    assert_eq!(client["response_flags"], "UH");
    assert_eq!(
        client["upstream_cluster"],
        "outbound|7070|v1|echo.default.svc.cluster.local"
    );
    // Access logs and metrics describe the same requests.
    assert_eq!(series.requests(&[]), 2);
}

#[test]
fn a_formatted_line_on_a_server_names_the_caller_and_the_trailers_status() {
    let lines = Lines::default();
    let format = crate::telemetry::LogFormat::text(
        "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_PEER_URI_SAN% %REQ(:METHOD)% %REQ(:PATH)% %REQ(CONTENT-TYPE)% %PROTOCOL% %RESPONSE_CODE% %GRPC_STATUS% %BYTES_SENT% %DURATION%\n",
    )
    .unwrap();
    let t = echo_workload().with_access_log(AccessLog::writer(lines.clone()).with_format(format));
    with_series(&Series::default(), async {
        let mut svc = InboundMetricsLayer::new(t.clone()).layer(tower::service_fn(grpc_answer));
        let mut req = grpc_request("echo.default.svc.cluster.local:7070");
        req.extensions_mut().insert(crate::tls::PeerInfo::plaintext(
            "10.1.2.3:40000".parse().unwrap(),
            "10.0.0.7:7070".parse().unwrap(),
        ));
        let res = svc.call(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        "10.1.2.3:40000 10.0.0.7 - POST /echo.Echo/Say application/grpc HTTP/1.1 200 PermissionDenied 5 30\n"
    );
}

#[test]
fn rfc3339_times_are_utc_civil_dates() {
    use std::time::{Duration, UNIX_EPOCH};
    let at = |secs: u64, millis: u64| {
        crate::stats::rfc3339(
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
        )
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    // 2024-02-29 (a leap day) 23:59:59.999
    assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
    assert_eq!(at(1_796_181_600, 5), "2026-12-02T03:20:00.005Z");
}

/// A caller that gives up before the answer (drops the call's future) is counted, as Envoy
/// counts a downstream disconnect.
#[test]
fn a_call_dropped_before_its_answer_is_counted_as_dc() {
    let series = Series::default();
    with_series(&series, async {
        let yaml = "clusters: [{ name: web, type: STATIC, load_assignment: { cluster_name: web, endpoints: [{ lb_endpoints: [{ address: \"127.0.0.1:9\" }] }] } }]\nlisteners: [{ name: web, route_config: { virtual_hosts: [{ name: web, domains: [\"*\"], routes: [{ match: { prefix: / }, route: { cluster: web } }] }] } }]";
        let store = mesh_core::Store::new();
        store
            .replace(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
            .unwrap();
        let mesh = crate::Mesh::builder()
            .store(store)
            .control(crate::control::Control::runtime(
                tokio::runtime::Handle::current(),
            ))
            .telemetry(echo_workload())
            .build()
            .await
            .unwrap();
        let mut web = mesh.channel::<http_body_util::Empty<Bytes>>("xds:///web");
        let call = web.call(http::Request::get("/").body(Default::default()).unwrap());
        drop(call);
    });
    assert_eq!(
        series.requests(&[
            ("reporter", "source"),
            ("response_code", "0"),
            ("response_flags", "DC")
        ]),
        1
    );
}
