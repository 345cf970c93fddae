//! Envoy as the oracle for access log filters: one go-control-plane snapshot gives Envoy's
//! socket listener and the mesh's API listener the same six loggers, each with its own
//! filter (CEL as Istio's Telemetry API writes it, a header filter, health check, log type,
//! traceable, and/or); the same requests through both must leave the same lines in each
//! logger's file.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use http_body_util::{BodyExt, Full};
use mesh_examples::backend::Backend;
use mesh_tower::Mesh;
use mesh_xds_client::build::any;
use support::envoy::{Envoy, free_port};
use tower::ServiceExt;

use accesslog::access_log_filter::FilterSpecifier as F;

fn spec(f: F) -> accesslog::AccessLogFilter {
    accesslog::AccessLogFilter {
        filter_specifier: Some(f),
    }
}

fn cel(expression: &str) -> accesslog::AccessLogFilter {
    spec(F::ExtensionFilter(accesslog::ExtensionFilter {
        name: "envoy.access_loggers.extension_filters.cel".into(),
        config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(any(
            &ExpressionFilter {
                expression: expression.into(),
                ..Default::default()
            },
        ))),
    }))
}

/// The loggers' filters; each passes at least one of [`REQUESTS`].
fn filters() -> Vec<accesslog::AccessLogFilter> {
    let status_ge = |v: u32| {
        spec(F::StatusCodeFilter(accesslog::StatusCodeFilter {
            comparison: Some(accesslog::ComparisonFilter {
                op: accesslog::comparison_filter::Op::Ge as i32,
                value: Some(core::RuntimeUInt32 {
                    default_value: v,
                    runtime_key: "log.status".into(),
                }),
            }),
        }))
    };
    vec![
        cel("response.code >= 400 || request.headers['x-user'] == 'bo'"),
        spec(F::HeaderFilter(accesslog::HeaderFilter {
            header: Some(route::HeaderMatcher {
                name: "X-User".into(),
                header_match_specifier: Some(
                    route::header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                ),
                ..Default::default()
            }),
        })),
        cel(
            "request.method == 'GET' && request.url_path.startsWith('/items') \
             && request.query == 'id=1' && xds.cluster_name == 'web' \
             && response.headers['x-path'].endsWith('id=1')",
        ),
        spec(F::AndFilter(accesslog::AndFilter {
            filters: vec![
                spec(F::NotHealthCheckFilter(accesslog::NotHealthCheckFilter {})),
                spec(F::LogTypeFilter(accesslog::LogTypeFilter {
                    types: vec![6], // DownstreamEnd
                    exclude: false,
                })),
                spec(F::OrFilter(accesslog::OrFilter {
                    filters: vec![
                        spec(F::TraceableFilter(accesslog::TraceableFilter {})),
                        status_ge(500),
                    ],
                })),
            ],
        })),
        // An error (the header is absent, or not a number) is false in both.
        cel("int(request.headers['x-n']) > 3 || request.method == 'DELETE'"),
        cel("response.code == 404 && !('x-user' in request.headers)"),
    ]
}

/// Method, path, headers.
type Req = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const REQUESTS: [Req; 5] = [
    (
        "GET",
        "/items?id=1",
        &[("x-user", "alexandra"), ("x-n", "9")],
    ),
    ("GET", "/status/404", &[("x-n", "nine")]),
    ("POST", "/status/503", &[]),
    ("DELETE", "/items/7", &[("x-user", "bo")]),
    ("GET", "/items?id=2", &[("x-n", "2")]),
];

/// A file logger writing method, path and code to `path`, with `filter`.
fn logger(path: &std::path::Path, filter: accesslog::AccessLogFilter) -> accesslog::AccessLog {
    let format = core::SubstitutionFormatString {
        format: Some(core::substitution_format_string::Format::TextFormatSource(
            core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString(
                    "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\n".into(),
                )),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let config = file::FileAccessLog {
        path: path.display().to_string(),
        access_log_format: Some(file::file_access_log::AccessLogFormat::LogFormat(format)),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(&config))),
        filter: Some(filter),
    }
}

fn request(method: &str, uri: String, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    // Envoy makes up an x-request-id when there is none: always send one.
    req.header("host", "web")
        .header("x-request-id", format!("r-{method}"))
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap()
}

fn read(p: &std::path::Path) -> Vec<String> {
    (std::fs::read_to_string(p).unwrap_or_default().lines())
        // Envoy's readiness probes are `GET /`; no request here has that path.
        .filter(|l| !l.starts_with("GET / "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_logs_from_go_control_plane_write_what_envoys_write() {
    use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
    let backend = Backend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = filters().len();
    let theirs: Vec<_> = (0..n)
        .map(|i| dir.path().join(format!("envoy-{i}.log")))
        .collect();
    let ours: Vec<_> = (0..n)
        .map(|i| dir.path().join(format!("mesh-{i}.log")))
        .collect();
    let cp = support::gocp::GoControlPlane::start();
    let envoy_addr = free_port();
    let mut socket = build::socket_listener("ingress", envoy_addr, "routes");
    build::edit_manager(&mut socket, |m| {
        m.access_log = theirs
            .iter()
            .zip(filters())
            .map(|(p, f)| logger(p, f))
            .collect()
    });
    let mut api = build::api_listener_rds("web", "routes");
    build::edit_manager(&mut api, |m| {
        m.access_log = ours
            .iter()
            .zip(filters())
            .map(|(p, f)| logger(p, f))
            .collect()
    });
    for (node, listener) in [("envoy", socket), ("mesh-client", api)] {
        let resources = [
            any(&listener),
            any(&build::route_config(
                "routes",
                &["*"],
                vec![build::route("/", "web")],
            )),
            any(&build::eds_cluster("web")),
            any(&build::assignment("web", &[backend.addr()])),
        ];
        cp.set(node, "1", &resources).await;
    }
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    let mesh = Mesh::from_xds(XdsClientBuilder::new(cp.ads.to_string(), "mesh-client"))
        .await
        .unwrap();
    let web = mesh.channel::<Full<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", support::PATIENCE)
        .await
        .unwrap();
    let nack = (cp.events().await.into_iter()).find_map(|e| e.nack.map(|n| (e.node, n)));
    assert_eq!(nack, None, "nobody NACKed");
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    // Envoy listens once it has its config from the control plane.
    tokio::time::timeout(support::PATIENCE, async {
        loop {
            let probe = request("GET", format!("http://{}/", envoy.listener), &[]);
            if let Ok(res) = plain.request(probe).await {
                let ok = res.status().is_success();
                res.into_body().collect().await.unwrap();
                if ok {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("Envoy serves its listener");
    for (method, path, headers) in REQUESTS {
        let res = (plain.request(request(
            method,
            format!("http://{}{path}", envoy.listener),
            headers,
        )))
        .await
        .unwrap();
        res.into_body().collect().await.unwrap();
        let res = (web.clone())
            .oneshot(request(method, format!("http://web{path}"), headers))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    // The mesh's file logs are flushed when its last user (the mesh) goes.
    drop((web, mesh));
    let ours: Vec<Vec<String>> = ours.iter().map(|p| read(p)).collect();
    // What the filters must select, so that agreeing on nothing cannot pass.
    assert_eq!(
        ours,
        [
            vec![
                "GET /status/404 404",
                "POST /status/503 503",
                "DELETE /items/7 200"
            ],
            vec!["GET /items?id=1 200", "DELETE /items/7 200"],
            vec!["GET /items?id=1 200"],
            vec!["POST /status/503 503"],
            vec!["GET /items?id=1 200", "DELETE /items/7 200"],
            vec!["GET /status/404 404"],
        ]
    );
    // Envoy flushes each file every second: wait until it has as many lines as ours.
    for (i, (theirs, ours)) in theirs.iter().zip(&ours).enumerate() {
        let got = tokio::time::timeout(support::PATIENCE, async {
            loop {
                let lines = read(theirs);
                if lines.len() >= ours.len() {
                    return lines;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("Envoy writes log {i}: {:?}", read(theirs)));
        assert_eq!(&got, ours, "logger {i}");
    }
}
