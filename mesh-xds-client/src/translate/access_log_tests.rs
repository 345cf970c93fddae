//! HttpConnectionManager `access_log` → the listener's access log config.

use super::*;
use crate::build::{self, any};
use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3 as stream;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
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
    let stdout = stream::StdoutAccessLog {
        access_log_format: Some(stream::stdout_access_log::AccessLogFormat::LogFormat(
            build::json_log_format(&[("code", "%RESPONSE_CODE%"), ("path", "%REQ(:PATH)%")]),
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
    // Filters the mesh cannot evaluate (an extension filter it lacks; a CEL function it
    // lacks): not written rather than unfiltered.
    let mut filtered = logger("f", file_log("/tmp/f.log", None));
    filtered.filter = Some(unknown_extension_filter());
    let mut cel = logger("c", file_log("/tmp/c.log", None));
    cel.filter = Some(cel_filter("[1].exists(x, x > 0)"));
    let l = translated(&with_logs(vec![filtered, cel])).unwrap();
    assert!(l.access_log.is_empty(), "{:?}", l.access_log);
    let mut filtered = logger("f", file_log("/tmp/f.log", None));
    filtered.filter = Some(unknown_extension_filter());
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

/// Envoy's CEL extension filter, as Istio's Telemetry API writes it.
fn cel_filter(expression: &str) -> accesslog::AccessLogFilter {
    use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
    let config = ExpressionFilter {
        expression: expression.into(),
        ..Default::default()
    };
    accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(
                accesslog::ExtensionFilter {
                    name: "envoy.access_loggers.extension_filters.cel".into(),
                    config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(any(
                        &config,
                    ))),
                },
            ),
        ),
    }
}

#[test]
fn header_runtime_type_trace_health_and_cel_filters_are_kept() {
    use accesslog::access_log_filter::FilterSpecifier as F;
    use envoy_types::pb::envoy::config::route::v3 as route;
    use envoy_types::pb::envoy::r#type::v3 as types;
    use mesh_core::config::listener::{AccessLogFilter, RuntimeFraction};
    let spec = |f: F| accesslog::AccessLogFilter {
        filter_specifier: Some(f),
    };
    let mut l = logger("f", file_log("/tmp/f.log", None));
    l.filter = Some(spec(F::AndFilter(accesslog::AndFilter {
        filters: vec![
            spec(F::HeaderFilter(accesslog::HeaderFilter {
                header: Some(route::HeaderMatcher {
                    name: "X-Tenant".into(),
                    header_match_specifier: Some(
                        route::header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                    ),
                    ..Default::default()
                }),
            })),
            spec(F::RuntimeFilter(accesslog::RuntimeFilter {
                runtime_key: "log.sample".into(),
                percent_sampled: Some(types::FractionalPercent {
                    numerator: 25,
                    denominator: types::fractional_percent::DenominatorType::TenThousand as i32,
                }),
                use_independent_randomness: true,
            })),
            spec(F::LogTypeFilter(accesslog::LogTypeFilter {
                types: vec![6, 9],
                exclude: false,
            })),
            spec(F::TraceableFilter(accesslog::TraceableFilter {})),
            spec(F::NotHealthCheckFilter(accesslog::NotHealthCheckFilter {})),
            cel_filter("response.code >= 400 && request.headers['x-b3-sampled'] == '1'"),
        ],
    })));
    let got = translated(&with_logs(vec![l])).unwrap().access_log;
    let Some(AccessLogFilter::And(fs)) = &got[0].filter else {
        panic!("{:?}", got[0].filter);
    };
    assert!(
        matches!(&fs[0], AccessLogFilter::Header(h) if h.name == "x-tenant" && h.present_match == Some(true))
    );
    assert_eq!(
        fs[1],
        AccessLogFilter::Runtime(RuntimeFraction {
            runtime_key: "log.sample".into(),
            percent_sampled: mesh_core::policy::FractionalPercent {
                numerator: 25,
                denominator: mesh_core::policy::DenominatorType::TenThousand,
            },
            use_independent_randomness: true,
        })
    );
    assert_eq!(
        fs[2],
        AccessLogFilter::LogType {
            types: vec!["DownstreamEnd".into(), "UpstreamEnd".into()],
            exclude: false
        }
    );
    assert_eq!(
        fs[3..5],
        [AccessLogFilter::Traceable, AccessLogFilter::NotHealthCheck]
    );
    assert_eq!(
        fs[5],
        AccessLogFilter::Cel(
            "response.code >= 400 && request.headers['x-b3-sampled'] == '1'".into()
        )
    );
}

#[test]
fn a_malformed_header_filter_is_nacked_with_its_path() {
    use accesslog::access_log_filter::FilterSpecifier as F;
    use envoy_types::pb::envoy::config::route::v3 as route;
    use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
    let mut l = logger("f", file_log("/tmp/f.log", None));
    l.filter = Some(accesslog::AccessLogFilter {
        filter_specifier: Some(F::OrFilter(accesslog::OrFilter {
            filters: vec![accesslog::AccessLogFilter {
                filter_specifier: Some(F::HeaderFilter(accesslog::HeaderFilter {
                    header: Some(route::HeaderMatcher {
                        name: "x-a".into(),
                        header_match_specifier: Some(
                            route::header_matcher::HeaderMatchSpecifier::StringMatch(
                                matcher::StringMatcher {
                                    match_pattern: Some(
                                        matcher::string_matcher::MatchPattern::SafeRegex(
                                            matcher::RegexMatcher {
                                                regex: "(".into(),
                                                ..Default::default()
                                            },
                                        ),
                                    ),
                                    ..Default::default()
                                },
                            ),
                        ),
                        ..Default::default()
                    }),
                })),
            }],
        })),
    });
    // Refused when the listener is validated, under the filter's path.
    let e = translated(&with_logs(vec![l])).unwrap_err();
    assert!(e.contains("access_log[0].filter.or[0].header"), "{e}");
    assert!(e.contains("invalid regex \"(\""), "{e}");
}

/// An extension filter of a type the mesh does not know.
fn unknown_extension_filter() -> accesslog::AccessLogFilter {
    accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(
                accesslog::ExtensionFilter {
                    name: "x".into(),
                    config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/example.Filter".into(),
                        value: Vec::new(),
                    })),
                },
            ),
        ),
    }
}

/// A `metadata_filter` on the JWT payload's `sub` (no value matcher when `exact` is `None`).
fn metadata_filter(exact: Option<&str>, if_not_found: Option<bool>) -> accesslog::AccessLogFilter {
    use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
    let key = |k: &str| matcher::metadata_matcher::PathSegment {
        segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
            k.into(),
        )),
    };
    accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::MetadataFilter(
                accesslog::MetadataFilter {
                    matcher: Some(matcher::MetadataMatcher {
                        filter: "envoy.filters.http.jwt_authn".into(),
                        path: vec![key("payload"), key("sub")],
                        value: exact.map(|e| matcher::ValueMatcher {
                            match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(
                                matcher::StringMatcher {
                                    match_pattern: Some(
                                        matcher::string_matcher::MatchPattern::Exact(e.into()),
                                    ),
                                    ..Default::default()
                                },
                            )),
                        }),
                        invert: false,
                    }),
                    match_if_key_not_found: if_not_found
                        .map(|value| envoy_types::pb::google::protobuf::BoolValue { value }),
                },
            ),
        ),
    }
}

#[test]
fn metadata_filters_are_kept_and_a_malformed_matcher_is_nacked() {
    use mesh_core::config::listener::{AccessLogFilter, MetadataLogFilter};
    let mut l = logger("f", file_log("/tmp/f.log", None));
    l.filter = Some(metadata_filter(Some("alice"), Some(false)));
    let mut unset = logger("g", file_log("/tmp/g.log", None));
    unset.filter = Some(metadata_filter(Some("bob"), None));
    let out = translated(&with_logs(vec![l, unset])).unwrap();
    let m = |i: usize| match &out.access_log[i].filter {
        Some(AccessLogFilter::Metadata(m)) => (**m).clone(),
        f => panic!("{f:?}"),
    };
    let first: MetadataLogFilter = m(0);
    let matcher = first.matcher.unwrap();
    assert_eq!(matcher.filter, "envoy.filters.http.jwt_authn");
    assert_eq!(
        matcher
            .path
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["payload", "sub"]
    );
    assert!(matcher.value.string_match.is_some());
    assert!(!first.match_if_key_not_found);
    // Unset, `match_if_key_not_found` is true (Envoy's default).
    assert!(m(1).match_if_key_not_found);
    // A matcher without its value is refused, under the filter's path.
    let mut bad = logger("f", file_log("/tmp/f.log", None));
    bad.filter = Some(metadata_filter(None, None));
    let e = translated(&with_logs(vec![bad])).unwrap_err();
    assert!(
        e.contains("metadata_filter.matcher.value: is required"),
        "{e}"
    );
}
