//! Load reports (Envoy's LRS, `envoy.service.load_stats.v3`): what the mesh sent to each
//! locality of a cluster since the last report.
//!
//! Why counters here and not in telemetry: a control plane that balances across clients
//! (Traffic Director, a go-control-plane server doing global load balancing) asks for
//! per-locality counts of requests issued, succeeded and failed and in progress, whether or
//! not the application exports metrics. The counters live with each endpoint's stats (so
//! they survive config updates) and are only touched for clusters whose config asks for
//! reports (`lrs_report`): three relaxed atomic adds per request there, nothing elsewhere. A
//! report takes them (swap to zero), so each report covers the time since the previous one.
//! Named metrics from the endpoints' per-response ORCA reports ride along (gRFC A64): summed
//! per name with the count of reports carrying each; reports on out-of-band streams do not
//! count, as in gRPC.

use super::registry::Registry;
use std::sync::Weak;
use std::sync::atomic::Ordering;

/// One cluster's load since the previous report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterLoad {
    /// The cluster.
    pub cluster: String,
    /// Its EDS service name, when it has one.
    pub service_name: Option<String>,
    /// Per locality of its endpoints.
    pub localities: Vec<LocalityLoad>,
    /// Requests refused by the cluster's circuit breaker (`max_requests`) before any endpoint.
    pub dropped: u64,
}

/// One locality's load since the previous report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalityLoad {
    /// The locality (region, zone, sub-zone).
    pub locality: mesh_core::config::endpoint::Locality,
    /// Requests sent to its endpoints.
    pub issued: u64,
    /// Of those, answered without an error (a status below 500 and, for gRPC, `OK` or a
    /// status in the trailers; a stream's final status is not waited for).
    pub succeeded: u64,
    /// Of those, failed: no answer, a 5xx, or a gRPC error status in the answer's head.
    pub errored: u64,
    /// Requests in flight at the time of the report.
    pub in_progress: u64,
    /// Named metrics from its endpoints' per-response ORCA reports (gRFC A64; LRS's
    /// `load_metric_stats`), in the order first seen.
    pub metrics: Vec<crate::balance::NamedMetric>,
}

/// Reads the load of a mesh's clusters for a load-reporting client (see
/// [`Mesh::load_reporter`](crate::Mesh::load_reporter)). It does not keep the mesh alive.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = mesh_tower::Mesh::from_config(mesh_core::MeshConfig::from_yaml("clusters: []")?).await?;
/// let reporter = mesh.load_reporter();
/// assert!(reporter.take("web").is_none(), "no such cluster in use");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct LoadReporter {
    pub(crate) registry: Weak<Registry>,
}

impl LoadReporter {
    /// `cluster`'s load since the last call (its counters restart at zero), or `None` when the
    /// cluster carries no traffic yet, or the mesh is gone.
    pub fn take(&self, cluster: &str) -> Option<ClusterLoad> {
        let registry = self.registry.upgrade()?;
        let handle = registry.existing(cluster)?;
        let state = handle.current();
        let mut localities: Vec<LocalityLoad> = Vec::new();
        for e in state.endpoints() {
            let (issued, succeeded, errored) = e.stats.load.take();
            let in_progress = e.stats.in_flight();
            let at = match localities.iter().position(|l| l.locality == *e.locality) {
                Some(i) => i,
                None => {
                    localities.push(LocalityLoad {
                        locality: (*e.locality).clone(),
                        ..LocalityLoad::default()
                    });
                    localities.len() - 1
                }
            };
            let l = &mut localities[at];
            l.issued += issued;
            l.succeeded += succeeded;
            l.errored += errored;
            l.in_progress += in_progress;
            for m in e.stats.load.take_named() {
                match l.metrics.iter_mut().find(|x| x.name == m.name) {
                    Some(x) => {
                        x.requests += m.requests;
                        x.total += m.total;
                    }
                    None => l.metrics.push(m),
                }
            }
        }
        Some(ClusterLoad {
            cluster: cluster.to_owned(),
            service_name: state.eds_service_name(),
            localities,
            dropped: handle.dropped.swap(0, Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::balance::weighted_round_robin::orca;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// A mesh server on loopback answering `/grpc` as a gRPC server does (report in the
    /// trailers) and `/http` with the report in a header; `/plain` carries none.
    async fn reporting_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = tower::service_fn(|req: http::Request<crate::server::Incoming>| async move {
            let res = http::Response::builder();
            let body = match req.uri().path() {
                "/grpc" => {
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", "0".parse().unwrap());
                    use base64::Engine;
                    let report = orca::tests::encode(&[(1, 0.5)], &[("queue", 3.0)]);
                    let b64 = base64::engine::general_purpose::STANDARD.encode(report);
                    t.insert(orca::HEADER_BIN, b64.parse().unwrap());
                    let frames = [
                        Ok::<_, Infallible>(http_body::Frame::data(Bytes::new())),
                        Ok(http_body::Frame::trailers(t)),
                    ];
                    return Ok(res
                        .header("content-type", "application/grpc")
                        .body(BodyExt::boxed(http_body_util::StreamBody::new(
                            futures_util::stream::iter(frames),
                        )))
                        .unwrap());
                }
                "/http" => Full::new(Bytes::new()),
                _ => Full::new(Bytes::new()),
            };
            let res = match req.uri().path() {
                "/http" => res.header(
                    orca::HEADER,
                    "TEXT named_metrics.queue=1, named_metrics.disk=4",
                ),
                _ => res,
            };
            Ok::<_, Infallible>(res.body(BodyExt::boxed(body)).unwrap())
        });
        let yaml = "servers:\n  - name: s\n";
        let mesh =
            crate::test_util::mesh_of(yaml, crate::telemetry::Telemetry::new(Default::default()))
                .await;
        tokio::spawn(mesh.server("s").unwrap().serve(listener, handler));
        addr
    }

    #[tokio::test]
    async fn named_metrics_from_heads_and_grpc_trailers_reach_the_load_report() {
        let addr = reporting_server().await;
        let yaml = crate::test_util::web_h2_yaml(addr, "").replace(
            "    protocol: HTTP2\n",
            "    protocol: HTTP2\n    lrs_report: true\n",
        );
        let mesh =
            crate::test_util::mesh_of(&yaml, crate::telemetry::Telemetry::new(Default::default()))
                .await;
        let web = mesh.channel::<Full<Bytes>>("web");
        for (path, grpc) in [
            ("/grpc", true),
            ("/grpc", true),
            ("/http", false),
            ("/plain", false),
        ] {
            let mut req = http::Request::post(format!("http://web{path}"));
            if grpc {
                req = req.header("content-type", "application/grpc");
            }
            let res = web
                .clone()
                .oneshot(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            // The trailers are read with the body.
            res.into_body().collect().await.unwrap();
        }
        let load = mesh.load_reporter().take("web").unwrap();
        let metrics = &load.localities[0].metrics;
        let get = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == name)
                .map(|m| (m.requests, m.total))
        };
        assert_eq!(get("queue"), Some((3, 7.0)), "{metrics:?}");
        assert_eq!(get("disk"), Some((1, 4.0)), "{metrics:?}");
        assert_eq!(load.localities[0].issued, 4);
        // Taken: the next report starts from nothing.
        assert!(
            mesh.load_reporter().take("web").unwrap().localities[0]
                .metrics
                .is_empty()
        );
    }
}
