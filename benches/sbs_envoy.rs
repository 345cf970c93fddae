//! The Envoy sidecar with its telemetry on, for the comparison the observability issue asks
//! for: what Envoy spends on an access log line and 1% tracing, next to what the mesh spends
//! (`mesh-ads-all`). Envoy's stats are always on; this listener adds, on the same routes as the
//! plain sidecar's, a file access log to /dev/null in a JSON format with the keys of the mesh's
//! default line, and the OpenTelemetry tracer sampling 1% of requests and exporting over
//! OTLP/gRPC to the Jaeger the harness starts for `mesh-ads-all`. `SBS_TRACE_RATIO` applies to
//! both; `SBS_TELEMETRY` (one part only) to the mesh alone.

use bytes::Bytes;
use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::trace::v3 as trace;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::v3::Percent;
use mesh_benches::harness::{CLIENT_CPU, pin_pid};
use mesh_interop::envoy::{Envoy, free_port};
use mesh_interop::gocp::GoControlPlane;
use mesh_interop::jaeger::Jaeger;
use mesh_xds_client::build;
use std::net::SocketAddr;
use std::time::Duration;

/// The contender: the client through Envoy's telemetry listener.
pub(crate) const ENVOY_ALL: &str = "envoy-sidecar-all";

/// The cluster Envoy's tracer exports to.
pub(crate) const JAEGER_CLUSTER: &str = "jaeger";

/// go-control-plane with the mesh's snapshot (node `bench-mesh`) and the sidecar's (node
/// `envoy`), and the Envoy sidecar (pinned next to the clients) proxying to `echo`, ready; with
/// `jaeger`, the sidecar's telemetry listener too (its address is the third value).
pub(crate) async fn start(
    echo: SocketAddr,
    jaeger: Option<&Jaeger>,
) -> (GoControlPlane, Envoy, Option<SocketAddr>) {
    let cp = GoControlPlane::start();
    let envoy_addr = free_port();
    // Envoy with its access log and tracer on: a second listener of the same sidecar.
    let envoy_all = jaeger.map(|_| free_port());
    let rc = build::route_config("routes", &["*"], vec![build::route("/", "echo")]);
    let common = vec![
        build::any(&rc),
        build::any(&build::eds_cluster("echo")),
        build::any(&build::assignment("echo", &[echo])),
    ];
    let mut mesh = vec![build::any(&build::api_listener_rds("web", "routes"))];
    mesh.extend(common.clone());
    cp.set("bench-mesh", "1", &mesh).await;
    let mut sidecar = vec![build::any(&build::socket_listener(
        "ingress", envoy_addr, "routes",
    ))];
    sidecar.extend(common);
    if let (Some(addr), Some(j)) = (envoy_all, jaeger) {
        sidecar.extend([
            build::any(&telemetry_listener(addr, "routes")),
            build::any(&build::eds_cluster(JAEGER_CLUSTER)),
            build::any(&build::assignment(JAEGER_CLUSTER, &[j.otlp])),
        ]);
    }
    cp.set("envoy", "1", &sidecar).await;
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    pin_pid(CLIENT_CPU, envoy.pid());
    // Envoy has no readiness signal: wait (bounded) until it proxies.
    tokio::time::timeout(Duration::from_secs(30), async {
        for addr in std::iter::once(envoy_addr).chain(envoy_all) {
            loop {
                if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                    drop(s);
                    let c = super::h2(addr).await;
                    if c.send(Bytes::from_static(b"x")).await.is_ok() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await
    .expect("Envoy proxies to the echo server");
    (cp, envoy, envoy_all)
}

/// A socket listener on `addr` over `route_config`, with the access log and tracer above.
pub(crate) fn telemetry_listener(addr: SocketAddr, route_config: &str) -> lds::Listener {
    let mut listener = build::socket_listener("ingress-all", addr, route_config);
    build::edit_manager(&mut listener, |m| {
        m.access_log = vec![access_log()];
        m.tracing = Some(tracing());
    });
    listener
}

/// The mesh's default JSON line, in Envoy's command operators.
fn access_log() -> accesslog::AccessLog {
    let fields = [
        ("authority", "%REQ(:AUTHORITY)%"),
        ("duration_ms", "%DURATION%"),
        ("grpc_status", "%GRPC_STATUS_NUMBER%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(:PATH)%"),
        ("peer_identity", "%UPSTREAM_PEER_URI_SAN%"),
        ("protocol", "%PROTOCOL%"),
        ("reporter", "source"),
        ("response_bytes", "%BYTES_SENT%"),
        ("response_code", "%RESPONSE_CODE%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("start_time", "%START_TIME%"),
        ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
    ];
    let format = build::json_log_format(&fields);
    let config = file::FileAccessLog {
        path: "/dev/null".into(),
        access_log_format: Some(file::file_access_log::AccessLogFormat::LogFormat(format)),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(build::any(
            &config,
        ))),
        filter: None,
    }
}

/// OpenTelemetry over gRPC to [`JAEGER_CLUSTER`], 1% of new traces (`SBS_TRACE_RATIO`, as
/// the mesh's, when set).
fn tracing() -> hcm::http_connection_manager::Tracing {
    let ratio: f64 = std::env::var("SBS_TRACE_RATIO")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.01);
    let otel = trace::OpenTelemetryConfig {
        grpc_service: Some(core::GrpcService {
            target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                core::grpc_service::EnvoyGrpc {
                    cluster_name: JAEGER_CLUSTER.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        service_name: "envoy-sidecar".into(),
        ..Default::default()
    };
    hcm::http_connection_manager::Tracing {
        random_sampling: Some(Percent {
            value: ratio * 100.0,
        }),
        provider: Some(trace::tracing::Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(trace::tracing::http::ConfigType::TypedConfig(build::any(
                &otel,
            ))),
        }),
        ..Default::default()
    }
}
