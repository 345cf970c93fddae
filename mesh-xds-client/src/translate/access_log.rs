//! An HttpConnectionManager's `access_log` → [`AccessLogConfig`]s.
//!
//! The file, stdout and stderr loggers are what go-control-plane users and Istio's Telemetry
//! API configure; their format strings are parsed here, so a format the mesh cannot write is
//! NACKed with its field path (as Envoy rejects an unknown command) instead of failing later.
//! Every filter kind is kept (CEL through the extension filter Istio's Telemetry API writes;
//! `metadata_filter` over the JWT filter's payloads, the only dynamic metadata in-process); a
//! logger the mesh does not implement (gRPC, OpenTelemetry, …) or with a filter it cannot
//! evaluate (a CEL function or attribute the mesh lacks) is skipped with a warning rather
//! than NACKed: a listener's traffic must not stop because of how it would be logged, and a
//! filtered log written unfiltered would be a different log.

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
use envoy_types::pb::envoy::config::core::v3::{SubstitutionFormatString, data_source};
use envoy_types::pb::envoy::data::accesslog::v3::AccessLogType;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog, stderr_access_log, stdout_access_log,
};
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use mesh_core::config::listener::{
    AccessLogConfig, AccessLogFilter, CompareOp, Comparison, MetadataLogFilter, RuntimeFraction,
};
use mesh_core::error::{Errors, FieldPath};
use mesh_tower::telemetry::LogFormat;
use prost::Message;
use std::collections::BTreeMap;

pub(crate) const FILE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub(crate) const STDOUT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const CEL_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";
pub(crate) const STDERR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// The loggers of `logs` the mesh writes; format errors go to `errors` under `path`.
pub(crate) fn access_logs(
    logs: &[accesslog::AccessLog],
    path: &FieldPath,
    errors: &mut Errors,
) -> Vec<AccessLogConfig> {
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let lp = path.index(i);
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
            errors.push(&lp.field("typed_config"), "field not present");
            continue;
        };
        let fp = lp.field("filter");
        let filter = match log.filter.as_ref().map(|f| filter(f, &fp, errors)) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(kind)) => {
                tracing::warn!(logger = %log.name, field = %fp, %kind, "access log filter not supported; this log is not written");
                continue;
            }
        };
        let tp = lp.field("typed_config");
        let decoded = match any.type_url.as_str() {
            FILE_TYPE => FileAccessLog::decode(&*any.value).map(|f| {
                let path = f.path.clone();
                (path, file(f, &tp, errors))
            }),
            STDOUT_TYPE => StdoutAccessLog::decode(&*any.value).map(|s| {
                let format = s.access_log_format.map(|f| match f {
                    stdout_access_log::AccessLogFormat::LogFormat(f) => {
                        substitution(&f, &tp.field("log_format"), errors)
                    }
                });
                ("/dev/stdout".to_owned(), format)
            }),
            STDERR_TYPE => StderrAccessLog::decode(&*any.value).map(|s| {
                let format = s.access_log_format.map(|f| match f {
                    stderr_access_log::AccessLogFormat::LogFormat(f) => {
                        substitution(&f, &tp.field("log_format"), errors)
                    }
                });
                ("/dev/stderr".to_owned(), format)
            }),
            other => {
                tracing::warn!(logger = %log.name, type_url = %other, "access logger not supported; this log is not written");
                continue;
            }
        };
        let (path_of, format) = match decoded {
            Ok(d) => d,
            Err(e) => {
                errors.push(&tp, format!("cannot decode {}: {e}", any.type_url));
                continue;
            }
        };
        if path_of.is_empty() {
            errors.push(&tp.field("path"), "must not be empty");
            continue;
        }
        let (text_format, json_format) = format.unwrap_or_default();
        out.push(AccessLogConfig {
            path: path_of,
            text_format,
            json_format,
            filter,
        });
    }
    out
}

type Formats = (Option<String>, Option<BTreeMap<String, String>>);

#[allow(deprecated)]
fn file(f: FileAccessLog, path: &FieldPath, errors: &mut Errors) -> Option<Formats> {
    use file_access_log::AccessLogFormat as F;
    Some(match f.access_log_format? {
        F::Format(text) => text_format(text, &path.field("format"), errors),
        F::JsonFormat(s) | F::TypedJsonFormat(s) => {
            json_format(&s, &path.field("json_format"), errors)
        }
        F::LogFormat(sfs) => substitution(&sfs, &path.field("log_format"), errors),
    })
}

#[allow(deprecated)]
fn substitution(f: &SubstitutionFormatString, path: &FieldPath, errors: &mut Errors) -> Formats {
    match &f.format {
        Some(Format::TextFormat(t)) => text_format(t.clone(), &path.field("text_format"), errors),
        Some(Format::TextFormatSource(ds)) => match &ds.specifier {
            Some(data_source::Specifier::InlineString(t)) => {
                text_format(t.clone(), &path.field("text_format_source"), errors)
            }
            Some(data_source::Specifier::InlineBytes(b)) => match String::from_utf8(b.clone()) {
                Ok(t) => text_format(t, &path.field("text_format_source"), errors),
                Err(_) => {
                    errors.push(&path.field("text_format_source"), "not UTF-8");
                    (None, None)
                }
            },
            _ => {
                errors.push(
                    &path.field("text_format_source"),
                    "only inline_string and inline_bytes are supported",
                );
                (None, None)
            }
        },
        Some(Format::JsonFormat(s)) => json_format(s, &path.field("json_format"), errors),
        None => (None, None),
    }
}

fn text_format(text: String, path: &FieldPath, errors: &mut Errors) -> Formats {
    if let Err(e) = LogFormat::text(&text) {
        errors.push(path, e);
    }
    (Some(text), None)
}

fn json_format(s: &Struct, path: &FieldPath, errors: &mut Errors) -> Formats {
    let mut map = BTreeMap::new();
    for (k, v) in &s.fields {
        match &v.kind {
            Some(Kind::StringValue(f)) => {
                map.insert(k.clone(), f.clone());
            }
            _ => errors.push(
                &path.field(k),
                "only format strings are supported as values",
            ),
        }
    }
    let text = serde_json::to_string(&map).unwrap_or_default();
    if let Err(e) = LogFormat::json(&text) {
        errors.push(path, e);
    }
    (None, Some(map))
}

/// `f` as the mesh evaluates it, or the kind it cannot; a malformed header matcher goes to
/// `errors` (a NACK, as Envoy rejects it).
fn filter(
    f: &accesslog::AccessLogFilter,
    path: &FieldPath,
    errors: &mut Errors,
) -> Result<AccessLogFilter, String> {
    use accesslog::access_log_filter::FilterSpecifier as F;
    let comparison = |c: Option<&accesslog::ComparisonFilter>| -> Result<Comparison, String> {
        let c = c.ok_or("a comparison without its fields")?;
        let v = c.value.as_ref().ok_or("a comparison without a value")?;
        // A runtime key names an override of the default; the mesh has no runtime, so the
        // default applies (as in an Envoy whose runtime does not set the key).
        use accesslog::comparison_filter::Op;
        let op = match Op::try_from(c.op) {
            Ok(Op::Eq) => CompareOp::Eq,
            Ok(Op::Ge) => CompareOp::Ge,
            Ok(Op::Le) => CompareOp::Le,
            Ok(Op::Ne) => CompareOp::Ne,
            Err(_) => return Err(format!("comparison op {}", c.op)),
        };
        Ok(Comparison {
            op,
            value: u64::from(v.default_value),
        })
    };
    let mut all = |fs: &[accesslog::AccessLogFilter], field: &str| {
        let p = path.field(field).field("filters");
        (fs.iter().enumerate())
            .map(|(i, f)| filter(f, &p.index(i), errors))
            .collect::<Result<Vec<_>, _>>()
    };
    match f.filter_specifier.as_ref().ok_or("an empty filter")? {
        F::StatusCodeFilter(s) => Ok(AccessLogFilter::StatusCode(comparison(
            s.comparison.as_ref(),
        )?)),
        F::DurationFilter(d) => Ok(AccessLogFilter::Duration(comparison(
            d.comparison.as_ref(),
        )?)),
        F::ResponseFlagFilter(r) => Ok(AccessLogFilter::ResponseFlag(r.flags.clone())),
        F::GrpcStatusFilter(g) => Ok(AccessLogFilter::GrpcStatus {
            statuses: (g.statuses.iter())
                .map(|s| u16::try_from(*s).map_err(|_| format!("gRPC status {s}")))
                .collect::<Result<_, _>>()?,
            exclude: g.exclude,
        }),
        F::AndFilter(a) => Ok(AccessLogFilter::And(all(&a.filters, "and_filter")?)),
        F::OrFilter(o) => Ok(AccessLogFilter::Or(all(&o.filters, "or_filter")?)),
        F::NotHealthCheckFilter(_) => Ok(AccessLogFilter::NotHealthCheck),
        F::TraceableFilter(_) => Ok(AccessLogFilter::Traceable),
        F::RuntimeFilter(r) => Ok(AccessLogFilter::Runtime(RuntimeFraction {
            runtime_key: r.runtime_key.clone(),
            percent_sampled: (r.percent_sampled.as_ref())
                .map(super::policy::fractional)
                .unwrap_or_default(),
            use_independent_randomness: r.use_independent_randomness,
        })),
        F::HeaderFilter(h) => {
            let hp = path.field("header_filter").field("header");
            let h = h
                .header
                .as_ref()
                .ok_or("a header_filter without its header")?;
            Ok(AccessLogFilter::Header(Box::new(super::route::header(
                h, &hp, errors,
            ))))
        }
        F::LogTypeFilter(t) => Ok(AccessLogFilter::LogType {
            types: (t.types.iter())
                .map(|i| {
                    AccessLogType::try_from(*i)
                        .map(|t| t.as_str_name().to_owned())
                        .map_err(|_| format!("access log type {i}"))
                })
                .collect::<Result<_, _>>()?,
            exclude: t.exclude,
        }),
        F::ExtensionFilter(e) => match e.config_type.as_ref() {
            Some(accesslog::extension_filter::ConfigType::TypedConfig(any))
                if any.type_url == CEL_TYPE =>
            {
                let cel = ExpressionFilter::decode(&*any.value)
                    .map_err(|e| format!("CEL filter: {e}"))?;
                // Envoy accepts any expression its CEL library parses; what the mesh cannot
                // evaluate (a function or attribute it lacks) leaves this log out.
                mesh_core::cel::Program::parse(&cel.expression)
                    .map_err(|e| format!("CEL filter {:?}: {e}", cel.expression))?;
                Ok(AccessLogFilter::Cel(cel.expression))
            }
            _ => Err(format!("extension_filter {:?}", e.name)),
        },
        F::MetadataFilter(m) => {
            let mp = path.field("metadata_filter").field("matcher");
            Ok(AccessLogFilter::Metadata(Box::new(MetadataLogFilter {
                matcher: (m.matcher.as_ref()).map(|x| super::rbac::metadata(x, &mp, errors)),
                match_if_key_not_found: m.match_if_key_not_found.is_none_or(|b| b.value),
            })))
        }
    }
}
