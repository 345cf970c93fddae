//! HttpConnectionManager `access_log` → the listener's access log config.

use super::*;
use crate::build::{self, any};
use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3 as stream;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_core::config::listener::AccessLogConfig;

/// Listener `web` (RDS `routes`) whose manager logs to `logs`.
fn with_logs(logs: Vec<accesslog::AccessLog>) -> Any {
    let mut l = build::api_listener_rds("web", "routes");
    let api = l
        .api_listener
        .as_mut()
        .unwrap()
        .api_listener
        .as_mut()
        .unwrap();
    let mut manager = hcm::HttpConnectionManager::decode(&*api.value).unwrap();
    manager.access_log = logs;
    *api = any(&manager);
    any(&l)
}

fn logger(name: &str, config: Any) -> accesslog::AccessLog {
    accesslog::AccessLog {
        name: name.into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn text(format: &str) -> core::SubstitutionFormatString {
    core::SubstitutionFormatString {
        format: Some(core::substitution_format_string::Format::TextFormatSource(
            core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString(format.into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn file_log(path: &str, format: Option<core::SubstitutionFormatString>) -> Any {
    any(&file::FileAccessLog {
        path: path.into(),
        access_log_format: format.map(file::file_access_log::AccessLogFormat::LogFormat),
    })
}

fn translated(a: &Any) -> Result<mesh_core::Listener, String> {
    match decode(ResourceType::Listener, a).unwrap().result {
        Ok(Translated::Listener(l)) => Ok(*l),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

#[test]
fn file_and_stdout_loggers_become_the_listeners_logs() {
    let json = Struct {
        fields: [("code", "%RESPONSE_CODE%"), ("path", "%REQ(:PATH)%")]
            .into_iter()
            .map(|(k, v)| {
                let v = Value {
                    kind: Some(Kind::StringValue(v.into())),
                };
                (k.to_owned(), v)
            })
            .collect(),
    };
    let stdout = stream::StdoutAccessLog {
        access_log_format: Some(stream::stdout_access_log::AccessLogFormat::LogFormat(
            core::SubstitutionFormatString {
                format: Some(core::substitution_format_string::Format::JsonFormat(json)),
                ..Default::default()
            },
        )),
    };
    let l = translated(&with_logs(vec![
        logger(
            "f",
            file_log("/var/log/web.log", Some(text("%RESPONSE_CODE%\n"))),
        ),
        logger("o", any(&stdout)),
        logger("d", file_log("/var/log/default.log", None)),
    ]))
    .unwrap();
    assert_eq!(
        l.access_log,
        [
            AccessLogConfig {
                path: "/var/log/web.log".into(),
                text_format: Some("%RESPONSE_CODE%\n".into()),
                ..Default::default()
            },
            AccessLogConfig {
                path: "/dev/stdout".into(),
                text_format: None,
                json_format: Some(
                    [("code", "%RESPONSE_CODE%"), ("path", "%REQ(:PATH)%")]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                ),
                ..Default::default()
            },
            AccessLogConfig {
                path: "/var/log/default.log".into(),
                ..Default::default()
            },
        ]
    );
}

#[test]
fn a_format_the_mesh_cannot_write_is_nacked_with_its_field_path() {
    let e = translated(&with_logs(vec![logger(
        "f",
        file_log("/tmp/x.log", Some(text("%NOPE%\n"))),
    )]))
    .unwrap_err();
    assert!(
        e.contains(
            "api_listener.api_listener.access_log[0].typed_config.log_format.text_format_source"
        ),
        "{e}"
    );
    assert!(e.contains("%NOPE%"), "{e}");
    let e = translated(&with_logs(vec![logger("f", file_log("", None))])).unwrap_err();
    assert!(e.contains("access_log[0].typed_config.path"), "{e}");
}

#[test]
fn status_duration_flag_and_grpc_filters_are_kept() {
    use accesslog::access_log_filter::FilterSpecifier as F;
    use mesh_core::config::listener::{AccessLogFilter, CompareOp, Comparison};
    let spec = |f: F| accesslog::AccessLogFilter {
        filter_specifier: Some(f),
    };
    let compare = |op: accesslog::comparison_filter::Op, value: u32| accesslog::ComparisonFilter {
        op: op as i32,
        value: Some(core::RuntimeUInt32 {
            default_value: value,
            runtime_key: String::new(),
        }),
    };
    let mut l = logger("f", file_log("/tmp/f.log", None));
    l.filter = Some(spec(F::OrFilter(accesslog::OrFilter {
        filters: vec![
            spec(F::StatusCodeFilter(accesslog::StatusCodeFilter {
                comparison: Some(compare(accesslog::comparison_filter::Op::Ge, 500)),
            })),
            spec(F::AndFilter(accesslog::AndFilter {
                filters: vec![
                    spec(F::DurationFilter(accesslog::DurationFilter {
                        comparison: Some(compare(accesslog::comparison_filter::Op::Ge, 1000)),
                    })),
                    spec(F::ResponseFlagFilter(accesslog::ResponseFlagFilter {
                        flags: vec!["UT".into()],
                    })),
                    spec(F::GrpcStatusFilter(accesslog::GrpcStatusFilter {
                        statuses: vec![0],
                        exclude: true,
                    })),
                ],
            })),
        ],
    })));
    let got = translated(&with_logs(vec![l])).unwrap().access_log;
    let ge = |value| Comparison {
        op: CompareOp::Ge,
        value,
    };
    assert_eq!(
        got[0].filter,
        Some(AccessLogFilter::Or(vec![
            AccessLogFilter::StatusCode(ge(500)),
            AccessLogFilter::And(vec![
                AccessLogFilter::Duration(ge(1000)),
                AccessLogFilter::ResponseFlag(vec!["UT".into()]),
                AccessLogFilter::GrpcStatus {
                    statuses: vec![0],
                    exclude: true,
                },
            ]),
        ]))
    );
}

#[test]
fn filtered_and_unknown_loggers_are_skipped_not_nacked() {
    // A filter the mesh cannot evaluate (runtime sampling): not written rather than unfiltered.
    let mut filtered = logger("f", file_log("/tmp/f.log", None));
    filtered.filter = Some(accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::RuntimeFilter(Default::default()),
        ),
    });
    let grpc = Any {
        type_url:
            "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
                .into(),
        value: Vec::new(),
    };
    let l = translated(&with_logs(vec![filtered, logger("g", grpc)])).unwrap();
    assert!(l.access_log.is_empty(), "{:?}", l.access_log);
    // The listener itself is unaffected.
    assert_eq!(l.rds.as_deref(), Some("routes"));
}

#[test]
fn a_server_listeners_logger_becomes_the_servers_log() {
    use super::server_tests::{edit_hcm, istio, translated as server};
    let mut l = istio();
    edit_hcm(&mut l, |m| {
        m.access_log = vec![logger(
            "f",
            file_log("/var/log/inbound.log", Some(text("%RESPONSE_CODE%\n"))),
        )]
    });
    let s = server(&l).unwrap();
    assert_eq!(
        s.access_log,
        [AccessLogConfig {
            path: "/var/log/inbound.log".into(),
            text_format: Some("%RESPONSE_CODE%\n".into()),
            ..Default::default()
        }]
    );
    edit_hcm(&mut l, |m| {
        m.access_log = vec![logger("f", file_log("/x.log", Some(text("%NOPE%"))))]
    });
    let e = server(&l).unwrap_err();
    assert!(
        e.contains(
            "filter_chains[0].filters[0].typed_config.access_log[0].typed_config.log_format"
        ),
        "{e}"
    );
}
