//! Traces read back from a real OTLP receiver (Jaeger v2, built from its Go module): a client
//! mesh (`frontend`) calls a server mesh (`backend`) with a retry; both export over OTLP to
//! Jaeger, and the trace Jaeger assembles must have the call, its two attempts, and the two
//! requests the backend served, linked parent to child across the two meshes by the
//! propagated headers, with the failed attempt marked. And an exporter whose receiver is down
//! fails no request: its spans are dropped and counted.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_interop::jaeger::Jaeger;
use mesh_tower::Mesh;
use mesh_tower::telemetry::Telemetry;
use mesh_tower::trace::{Sampler, TraceContext, Tracer};
use mesh_xds_client::otlp::OtlpExporter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt;

/// A mesh of `yaml` tracing every call to `exporter`.
async fn traced_mesh(yaml: &str, exporter: Arc<OtlpExporter>) -> Mesh {
    let telemetry =
        Telemetry::new(Default::default()).with_tracer(Tracer::new(Sampler::AlwaysOn, exporter));
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .unwrap();
    Mesh::builder()
        .store(store)
        .telemetry(telemetry)
        .build()
        .await
        .unwrap()
}

/// Listener `web` → cluster `web` (HTTP/2, `addr`), retrying a 5xx once.
fn client_yaml(addr: std::net::SocketAddr) -> String {
    mesh_examples::yaml::web_config_routing(
        &[addr],
        "protocol: HTTP2",
        "retry_policy: { retry_on: 5xx, num_retries: 1, retry_back_off: { base_interval: 0.001s } }",
    )
}

/// The tags of a Jaeger span, by key.
fn tag<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_assembles_one_trace_across_both_meshes() {
    let jaeger = Jaeger::start().await;
    let endpoint = format!("http://{}", jaeger.otlp);

    // The backend: fails its first request.
    let backend = traced_mesh(
        "servers: [{ name: s }]",
        OtlpExporter::start(&endpoint, &[("service.name", "backend")]).unwrap(),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU32::new(0));
    let count = served.clone();
    let handler = tower::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
        let first = count.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let mut res = http::Response::new(http_body_util::Full::new(Bytes::from("ok")));
            if first {
                *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    tokio::spawn(backend.server("s").unwrap().serve(listener, handler));

    let frontend = traced_mesh(
        &client_yaml(addr),
        OtlpExporter::start(&endpoint, &[("service.name", "frontend")]).unwrap(),
    )
    .await;
    let res = frontend
        .http_client::<Empty<Bytes>>()
        .oneshot(
            http::Request::get("http://web/items")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctx = res.extensions().get::<TraceContext>().cloned().unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Jaeger gets the spans within the exporters' batching delay.
    let id = ctx.trace_id.to_string();
    let trace = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Some(t) = jaeger.trace(&id).await
                && t["data"][0]["spans"]
                    .as_array()
                    .is_some_and(|s| s.len() >= 5)
            {
                return t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("Jaeger has the whole trace");
    let trace = &trace["data"][0];
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 5, "{trace:#}");
    let service = |s: &serde_json::Value| {
        trace["processes"][s["processID"].as_str().unwrap()]["serviceName"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let parent = |s: &serde_json::Value| {
        s["references"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
            .map(|r| r["spanID"].as_str().unwrap().to_owned())
    };
    let call_id = ctx.span_id.to_string();
    let call: Vec<_> = spans
        .iter()
        .filter(|s| s["spanID"] == call_id.as_str())
        .collect();
    assert_eq!(call.len(), 1);
    assert_eq!(call[0]["operationName"], "GET web");
    assert_eq!(service(call[0]), "frontend");
    assert_eq!(parent(call[0]), None, "the trace's root");
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| parent(s).as_deref() == Some(call_id.as_str()))
        .collect();
    assert_eq!(attempts.len(), 2, "two attempts under the call");
    for a in &attempts {
        assert_eq!(service(a), "frontend");
        let reached: Vec<_> = spans
            .iter()
            .filter(|s| parent(s).as_deref() == a["spanID"].as_str())
            .collect();
        assert_eq!(reached.len(), 1, "each attempt reached the backend once");
        let server = reached[0];
        assert_eq!(service(server), "backend");
        assert_eq!(server["operationName"], "GET /items");
        let code = tag(a, "http.response.status_code").unwrap().clone();
        assert_eq!(tag(server, "http.response.status_code"), Some(&code));
        let failed = code == 503;
        assert_eq!(tag(a, "error").is_some(), failed, "{a:#}");
        assert_eq!(
            tag(a, "previous-rpc-attempts"),
            Some(&serde_json::json!(if failed { 0 } else { 1 }))
        );
    }
    eprintln!(
        "Jaeger's trace {id}: {} spans from {:?}",
        spans.len(),
        trace["processes"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p["serviceName"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_fails_no_request() {
    let backend = mesh_examples::backend::Backend::start().await.unwrap();
    // Nothing listens there.
    let nowhere = format!("http://{}", support::envoy::free_port());
    let exporter = OtlpExporter::start(&nowhere, &[("service.name", "frontend")]).unwrap();
    let mesh = traced_mesh(
        &support::web_config(&[backend.addr()], "HTTP2"),
        exporter.clone(),
    )
    .await;
    let client = mesh.http_client::<Empty<Bytes>>();
    for _ in 0..200 {
        let res = client
            .clone()
            .oneshot(
                http::Request::get("http://web/")
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    // Each call's two spans (call, attempt) are dropped and counted, not kept.
    let dropped = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while exporter.dropped() < 400 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    assert!(
        dropped.await.is_ok(),
        "all 400 spans dropped and counted: {}",
        exporter.dropped()
    );
}
