//! Helpers for the middleware unit tests: a closure service and requests carrying a route
//! decision.

use crate::body::MeshBody;
use crate::cluster::ServedBy;
use crate::error::MeshError;
use crate::route::{RouteDecision, RoutePolicy};
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

pub(crate) type BoxFut =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody>, MeshError>> + Send>>;

/// A cloneable service from a closure.
pub(crate) struct FnService<F: ?Sized>(pub(crate) Arc<F>);

impl<F: ?Sized> Clone for FnService<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F: ?Sized> std::fmt::Debug for FnService<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnService")
    }
}

pub(crate) fn service<B, F>(f: F) -> FnService<F>
where
    F: Fn(Request<B>) -> BoxFut,
{
    FnService(Arc::new(f))
}

impl<B, F> Service<Request<B>> for FnService<F>
where
    F: Fn(Request<B>) -> BoxFut + ?Sized,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> BoxFut {
        (self.0)(req)
    }
}

/// A response with `status`, served by `endpoint`.
pub(crate) fn response(status: u16, endpoint: u16) -> Response<MeshBody> {
    let mut res = Response::new(MeshBody::empty());
    *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
    res.extensions_mut().insert(ServedBy {
        cluster: "c".into(),
        endpoint: ([127, 0, 0, 1], endpoint).into(),
        workload: None,
    });
    res
}

/// A request to `path` routed by `info` to cluster `c`.
pub(crate) fn request<B>(info: &Arc<RoutePolicy>, path: &str, body: B) -> Request<B> {
    let mut req = Request::builder()
        .uri(format!("http://svc{path}"))
        .body(body)
        .unwrap();
    req.extensions_mut().insert(RouteDecision {
        target: "t".into(),
        route: info.clone(),
        cluster: "c".into(),
        cluster_headers: None,
        hash: None,
    });
    req
}

// ===== a metrics recorder that keeps everything, for tests that read metrics back =====

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keeps every series: counters and the values each histogram saw.
#[derive(Clone, Default)]
pub(crate) struct Series {
    counters: Shared<AtomicU64>,
    histograms: Shared<Values>,
}

type Shared<T> = Arc<Mutex<Vec<(Key, Arc<T>)>>>;

#[derive(Default)]
pub(crate) struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl Recorder for Series {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut all = self.counters.lock().unwrap();
        let c = match all.iter().find(|(k, _)| k == key) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(AtomicU64::new(0));
                all.push((key.clone(), c.clone()));
                c
            }
        };
        Counter::from_arc(c)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut all = self.histograms.lock().unwrap();
        let h = match all.iter().find(|(k, _)| k == key) {
            Some((_, h)) => h.clone(),
            None => {
                let h = Arc::new(Values::default());
                all.push((key.clone(), h.clone()));
                h
            }
        };
        Histogram::from_arc(h)
    }
}

pub(crate) fn has(key: &Key, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(n, v)| key.labels().any(|l| l.key() == *n && l.value() == *v))
}

impl Series {
    /// The requests counted with all of `labels`.
    pub(crate) fn requests(&self, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.name() == crate::telemetry::REQUESTS_TOTAL && has(k, labels))
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The values histogram `name` saw with all of `labels`.
    pub(crate) fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.name() == name && has(k, labels))
            .flat_map(|(_, h)| h.0.lock().unwrap().clone())
            .collect()
    }

    /// Every label of the one `istio_requests_total` series.
    pub(crate) fn only_series(&self) -> Vec<(String, String)> {
        let all = self.counters.lock().unwrap();
        let istio: Vec<&Key> = all
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.name() == crate::telemetry::REQUESTS_TOTAL)
            .collect();
        assert_eq!(istio.len(), 1, "{istio:?}");
        istio[0]
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect()
    }
}

impl Series {
    /// The value of counter `name` with all of `labels`.
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.name() == name && has(k, labels))
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Listener `web` routing everything (with route fields `route_extra`, e.g. a
/// `retry_policy`) to the STATIC HTTP/2 cluster `web` at `addr`, and a server `s`.
pub(crate) fn web_h2_yaml(addr: std::net::SocketAddr, route_extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route:
                cluster: web
                {route_extra}
clusters:
  - name: web
    type: STATIC
    protocol: HTTP2
    load_assignment: {{ cluster_name: web, endpoints: [{{ lb_endpoints: [{{ address: "{addr}" }}] }}] }}
servers:
  - name: s
"#
    )
}

/// A mesh of `yaml` with `telemetry`.
pub(crate) async fn mesh_of(yaml: &str, telemetry: crate::telemetry::Telemetry) -> crate::Mesh {
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .unwrap();
    crate::Mesh::builder()
        .store(store)
        .telemetry(telemetry)
        .build()
        .await
        .unwrap()
}

/// Captured access log lines (a `Write` that keeps what it is given).
#[derive(Clone, Default)]
pub(crate) struct Lines(pub(crate) Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Everything written, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Each line parsed as JSON.
    pub(crate) fn json(&self) -> Vec<serde_json::Value> {
        (self.text().lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}
