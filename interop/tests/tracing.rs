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
async fn traced_mesh(yaml: &str, exporter: Arc<dyn mesh_tower::trace::SpanSink>) -> Mesh {
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

/// A GET through `mesh`'s HTTP client, read to its end: its status and the call's trace.
async fn get(mesh: &Mesh, uri: &str) -> (u16, TraceContext) {
    let res = mesh
        .http_client::<Empty<Bytes>>()
        .oneshot(http::Request::get(uri).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let ctx = res.extensions().get::<TraceContext>().cloned().unwrap();
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    (status, ctx)
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
    let handler = tower::service_fn(move |_req: http::Request<mesh_tower::server::Incoming>| {
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
    let (status, ctx) = get(&frontend, "http://web/items").await;
    assert_eq!(status, 200);
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

/// Log lines in memory.
#[derive(Clone, Default)]
struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Spans nowhere (the log lines are the point here).
struct Nowhere;

impl mesh_tower::trace::SpanSink for Nowhere {
    fn record(&self, _: mesh_tower::trace::SpanRecord) {}
}

// One thread: the handler runs where the test's log subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn a_handlers_log_lines_carry_the_trace_id() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yaml = support::web_config(&[addr], "HTTP2") + "servers: [{ name: s }]\n";
    let mesh = traced_mesh(&yaml, Arc::new(Nowhere)).await;
    let handler = tower::service_fn(|_req: http::Request<mesh_tower::server::Incoming>| async {
        tracing::info!("looking up the items");
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            Bytes::from("ok"),
        )))
    });
    tokio::spawn(mesh.server("s").unwrap().serve(listener, handler));
    let trace = get(&mesh, "http://web/").await.1.trace_id;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("looking up the items"))
        .unwrap_or_else(|| panic!("the handler's line: {text}"));
    assert!(line.contains(&format!("trace_id={trace}")), "{line}");
}
