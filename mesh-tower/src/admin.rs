//! [`Admin`]: an optional HTTP admin endpoint for a mesh, as Envoy's admin port is for a
//! sidecar: `/ready`, `/config_dump`, `/clusters` and (with an exporter) `/metrics`.
//!
//! Why in the library: every application that embeds the mesh needs the same four answers
//! when something goes wrong (is its config here, what is in force, which endpoints are up or
//! ejected and how busy, what do the metrics say), and they read live state only the mesh
//! has. It is a plain tower service: mount it on an admin listener with [`Admin::serve`], or
//! route to it from an existing server. Keep it on a private address: `/config_dump` shows
//! the whole config.

use crate::mesh::Mesh;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;
use std::fmt::Write;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tower_service::Service;

/// The admin endpoint of a [`Mesh`]. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tower_service::Service;
/// let config = mesh_core::MeshConfig::from_yaml("clusters: [{ name: web }]").unwrap();
/// let mesh = mesh_tower::Mesh::from_config(config).await.unwrap();
/// let mut admin = mesh_tower::admin::Admin::new(mesh);
/// let res = admin.call(http::Request::get("/ready").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 200);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Admin {
    mesh: Mesh,
    metrics: Option<fn_render::Render>,
}

mod fn_render {
    use std::sync::Arc;

    /// What renders `/metrics` (the exporter's text).
    #[derive(Clone)]
    pub(super) struct Render(pub(super) Arc<dyn Fn() -> String + Send + Sync>);

    impl std::fmt::Debug for Render {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Render")
        }
    }
}

impl Admin {
    /// The admin endpoint of `mesh`, without `/metrics`.
    pub fn new(mesh: Mesh) -> Self {
        Self {
            mesh,
            metrics: None,
        }
    }

    /// Serves `/metrics` with what `render` returns (Prometheus text).
    pub fn with_metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(fn_render::Render(std::sync::Arc::new(render)));
        self
    }

    /// Serves `/metrics` from the Prometheus exporter's handle.
    #[cfg(feature = "prometheus")]
    pub fn with_prometheus(self, handle: crate::telemetry::prometheus::PrometheusHandle) -> Self {
        self.with_metrics(move || handle.render())
    }

    /// Serves on `listener` (HTTP/1.1 and HTTP/2) until accepting fails.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        loop {
            let (tcp, _) = listener.accept().await?;
            let svc = hyper_util::service::TowerToHyperService::new(self.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    fn answer(&self, path: &str) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/ready" => {
                let status = self.mesh.source_status().borrow().clone();
                // A config source that fetches on demand (xDS) is ready once something applied.
                if status.on_demand && status.applied == 0 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        "PRE_INITIALIZING\n".into(),
                    )
                } else {
                    (StatusCode::OK, TEXT, "LIVE\n".into())
                }
            }
            "/config_dump" => (
                StatusCode::OK,
                "application/yaml",
                self.mesh.config_dump().to_yaml(),
            ),
            "/clusters" => (StatusCode::OK, TEXT, self.clusters()),
            "/metrics" => match &self.metrics {
                Some(render) => (StatusCode::OK, "text/plain; version=0.0.4", (render.0)()),
                None => (
                    StatusCode::NOT_FOUND,
                    TEXT,
                    "no metrics exporter configured\n".into(),
                ),
            },
            _ => (
                StatusCode::NOT_FOUND,
                TEXT,
                "admin: /ready /config_dump /clusters /metrics\n".into(),
            ),
        }
    }

    /// Envoy's `/clusters` text: one `cluster::endpoint::stat::value` line per fact, for the
    /// clusters requests have used; the others are listed as not used yet.
    fn clusters(&self) -> String {
        let mut out = String::new();
        let handles = self.mesh.registry().handles();
        for handle in &handles {
            let state = handle.current();
            let name = &handle.name;
            for ep in state.endpoints() {
                let addr = ep.address;
                let health = if ep.stats.outlier.is_ejected() {
                    "/failed_outlier_check".to_owned()
                } else {
                    format!("{:?}", ep.health_status).to_lowercase()
                };
                let _ = writeln!(out, "{name}::{addr}::health_flags::{health}");
                let _ = writeln!(out, "{name}::{addr}::weight::{}", ep.weight);
                let _ = writeln!(out, "{name}::{addr}::priority::{}", ep.priority);
                let _ = writeln!(out, "{name}::{addr}::zone::{}", ep.locality.zone);
                let _ = writeln!(out, "{name}::{addr}::rq_active::{}", ep.stats.in_flight());
                let _ = writeln!(
                    out,
                    "{name}::{addr}::outlier_ejections::{}",
                    ep.stats.outlier.ejections()
                );
            }
        }
        for c in self.mesh.config_dump().clusters {
            if !handles.iter().any(|h| *h.name == *c.name) {
                let _ = writeln!(out, "{}::not_used_yet", c.name);
            }
        }
        out
    }
}

impl<B> Service<Request<B>> for Admin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (status, content_type, body) = self.answer(req.uri().path());
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        ready(Ok(res))
    }
}

#[cfg(test)]
mod tests;
