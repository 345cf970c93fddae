//! Envoy as the oracle for access log filters: one go-control-plane snapshot gives Envoy's
//! socket listener and the mesh's API listener the same eight loggers, each with its own
//! filter (CEL as Istio's Telemetry API writes it, a header filter, health check, log type,
//! traceable, dynamic metadata, and/or); the same requests through both must leave the same lines in each
//! logger's file.

mod support;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use http_body_util::BodyExt;
use mesh_examples::backend::Backend;
use mesh_xds_client::build::any;
use support::log_pair::{self, request};
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
        // Dynamic metadata: neither side has a JWT filter on this listener, so the payload is
        // never there and `match_if_key_not_found` decides (false, then Envoy's default true).
        spec(F::OrFilter(accesslog::OrFilter {
            filters: vec![jwt_sub(Some(false)), status_ge(500)],
        })),
        spec(F::AndFilter(accesslog::AndFilter {
            filters: vec![jwt_sub(None), cel("request.method == 'DELETE'")],
        })),
    ]
}

/// Envoy's `metadata_filter` on the JWT filter's payload `sub` being `alice`.
fn jwt_sub(if_not_found: Option<bool>) -> accesslog::AccessLogFilter {
    use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
    let key = |k: &str| matcher::metadata_matcher::PathSegment {
        segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
            k.into(),
        )),
    };
    spec(F::MetadataFilter(accesslog::MetadataFilter {
        matcher: Some(matcher::MetadataMatcher {
            filter: "envoy.filters.http.jwt_authn".into(),
            path: vec![key("payload"), key("sub")],
            value: Some(matcher::ValueMatcher {
                match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(
                    matcher::StringMatcher {
                        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(
                            "alice".into(),
                        )),
                        ..Default::default()
                    },
                )),
            }),
            invert: false,
        }),
        match_if_key_not_found: if_not_found
            .map(|value| envoy_types::pb::google::protobuf::BoolValue { value }),
    }))
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

fn read(p: &std::path::Path) -> Vec<String> {
    (std::fs::read_to_string(p).unwrap_or_default().lines())
        // Envoy's readiness probes are `GET /`; no request here has that path.
        .filter(|l| !l.starts_with("GET / "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_logs_from_go_control_plane_write_what_envoys_write() {
    let backend = Backend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = filters().len();
    let theirs: Vec<_> = (0..n)
        .map(|i| dir.path().join(format!("envoy-{i}.log")))
        .collect();
    let ours: Vec<_> = (0..n)
        .map(|i| dir.path().join(format!("mesh-{i}.log")))
        .collect();
    let loggers = |paths: &[std::path::PathBuf]| -> Vec<_> {
        (paths.iter().zip(filters()))
            .map(|(p, f)| logger(p, f))
            .collect()
    };
    let pair = log_pair::start(backend.addr(), loggers(&theirs), loggers(&ours)).await;
    for (method, path, headers) in REQUESTS {
        let uri = format!("http://{}{path}", pair.envoy.listener);
        let res = pair
            .plain
            .request(request(method, uri, headers))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
        let res = (pair.web.clone())
            .oneshot(request(method, format!("http://web{path}"), headers))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    // The mesh's file logs are flushed when its last user (the mesh) goes.
    let log_pair::Pair {
        mesh,
        web,
        cp,
        envoy,
        ..
    } = pair;
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
            vec!["POST /status/503 503"],
            vec!["DELETE /items/7 200"],
        ]
    );
    // Envoy flushes each file every second: wait until it has as many lines as ours.
    for (i, (theirs, ours)) in theirs.iter().zip(&ours).enumerate() {
        let got = log_pair::at_least(ours.len(), || read(theirs))
            .await
            .unwrap_or_else(|| panic!("Envoy writes log {i}: {:?}", read(theirs)));
        assert_eq!(&got, ours, "logger {i}");
    }
    drop((envoy, cp));
}
