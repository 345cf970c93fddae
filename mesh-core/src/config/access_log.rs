//! Access logs: where a listener's (or server's) request lines go, how they look, and which
//! requests are written.
//!
//! Why the filters are config here and evaluated in mesh-tower: the same filter comes from
//! Envoy's `AccessLogFilter` (xDS) and from the YAML, so it is validated once, with field
//! paths (a CEL expression is parsed here and refused with its position); evaluating it needs
//! the request, which only the data plane has.

use super::metadata::MetadataMatcher;
use super::route::HeaderMatcher;
use crate::error::{Errors, FieldPath};
use crate::policy::FractionalPercent;
use serde::{Deserialize, Serialize};

/// Where a listener's access log lines go and how they look.
///
/// ```
/// use mesh_core::MeshConfig;
/// let config = MeshConfig::from_yaml(r#"
/// listeners:
///   - name: web
///     route_config: { name: r, virtual_hosts: [] }
///     access_log:
///       - { path: /dev/stdout, text_format: "%REQ(:METHOD)% %RESPONSE_CODE%\n" }
/// "#).unwrap();
/// assert_eq!(config.listeners[0].access_log[0].path, "/dev/stdout");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file (appended to), or `/dev/stdout` / `/dev/stderr`.
    pub path: String,
    /// Envoy's `text_format` (add the `\n` yourself). Neither format: the mesh's JSON line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_format: Option<String>,
    /// Envoy's `json_format`: each key's value is a format string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_format: Option<std::collections::BTreeMap<String, String>>,
    /// Which requests are written (none: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

/// Which requests an access log writes: Envoy's `AccessLogFilter` kinds, and its CEL
/// extension filter (what Istio's Telemetry API `filter.expression` becomes).
///
/// ```
/// use mesh_core::config::listener::{AccessLogFilter, CompareOp, Comparison};
/// // Errors, and anything slower than a second, written as YAML would.
/// let f: AccessLogFilter = serde_saphyr::from_str(
///     "or: [ { status_code: { op: GE, value: 500 } }, { cel: \"request.duration > duration('1s')\" } ]",
/// ).unwrap();
/// assert!(matches!(f, AccessLogFilter::Or(ref fs) if fs.len() == 2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AccessLogFilter {
    /// The response code compared with a value (a request the mesh failed before any answer
    /// has code 0).
    StatusCode(Comparison),
    /// The whole request's duration in milliseconds compared with a value.
    Duration(Comparison),
    /// The request has one of these response flags (Envoy's short names, `UH`, `URX`, …); an
    /// empty list: any flag at all.
    ResponseFlag(Vec<String>),
    /// The gRPC status is one of these codes (with `exclude`: is none of them). Without a
    /// gRPC status, it is inferred from the HTTP code as Envoy does.
    GrpcStatus {
        /// The codes (0 `OK` … 16 `UNAUTHENTICATED`).
        statuses: Vec<u16>,
        /// Match the codes not listed.
        #[serde(default)]
        exclude: bool,
    },
    /// A request header matches (Envoy's `header_filter`).
    Header(Box<HeaderMatcher>),
    /// The request is not a health check. The mesh answers no health checks of its own (Envoy
    /// marks those its `health_check` filter answered), so every request passes.
    NotHealthCheck,
    /// The request is traced: its span is sampled (Envoy's `traceable_filter`).
    Traceable,
    /// A sample of the requests (Envoy's `runtime_filter`). The mesh has no runtime layer,
    /// so the key never overrides `percent_sampled`.
    Runtime(RuntimeFraction),
    /// The record's type is (with `exclude`: is not) one of these, by Envoy's names
    /// (`DownstreamEnd`, …). The mesh writes one record per request when it ends, of type
    /// `DownstreamEnd`.
    LogType {
        /// The types.
        types: Vec<String>,
        /// Match the types not listed.
        #[serde(default)]
        exclude: bool,
    },
    /// The request's dynamic metadata (Envoy's `metadata_filter`): in-process, the payloads
    /// the JWT filter stored (`payload_in_metadata`) on a server.
    Metadata(Box<MetadataLogFilter>),
    /// A CEL expression over Envoy's attribute names (`response.code >= 400`); see
    /// [`crate::cel`]. An evaluation error counts as false, as in Envoy.
    Cel(String),
    /// Every filter passes.
    And(Vec<AccessLogFilter>),
    /// Any filter passes.
    Or(Vec<AccessLogFilter>),
}

/// Envoy's `MetadataFilter`: a value found at the matcher's path must match it; when there
/// is none, `match_if_key_not_found` decides. As in Envoy, the matcher's `invert` is not
/// consulted. Only the JWT filter (`envoy.filters.http.jwt_authn`) stores metadata in the
/// mesh; a matcher naming another filter never finds a value.
///
/// ```
/// use mesh_core::config::listener::AccessLogFilter;
/// // Requests whose verified token's subject is alice (and those without a token).
/// let f: AccessLogFilter = serde_saphyr::from_str(r#"
/// metadata:
///   matcher:
///     filter: envoy.filters.http.jwt_authn
///     path: [{ key: payload }, { key: sub }]
///     value: { string_match: { exact: alice } }
/// "#).unwrap();
/// let AccessLogFilter::Metadata(m) = f else { panic!() };
/// assert!(m.match_if_key_not_found);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataLogFilter {
    /// Where to look and what the value must be (none: nothing is ever found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MetadataMatcher>,
    /// Whether a request without a value there is written (default true, as in Envoy).
    #[serde(default = "yes")]
    pub match_if_key_not_found: bool,
}

fn yes() -> bool {
    true
}

impl Default for MetadataLogFilter {
    fn default() -> Self {
        Self {
            matcher: None,
            match_if_key_not_found: true,
        }
    }
}

/// Envoy's `RuntimeFilter`: `percent_sampled` of the requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFraction {
    /// The runtime key (kept for the config's sake; no runtime overrides it).
    #[serde(default)]
    pub runtime_key: String,
    /// The share written (default 0 %).
    #[serde(default)]
    pub percent_sampled: FractionalPercent,
    /// Draw at random for each request even when it has an `x-request-id` (which otherwise
    /// decides, so that every process on the request's path samples it alike).
    #[serde(default)]
    pub use_independent_randomness: bool,
}

/// Envoy's access log record types (`envoy.data.accesslog.v3.AccessLogType`), by name.
pub const LOG_TYPES: [&str; 15] = [
    "NotSet",
    "TcpUpstreamConnected",
    "TcpPeriodic",
    "TcpConnectionEnd",
    "DownstreamStart",
    "DownstreamPeriodic",
    "DownstreamEnd",
    "UpstreamPoolReady",
    "UpstreamPeriodic",
    "UpstreamEnd",
    "DownstreamTunnelSuccessfullyEstablished",
    "UdpTunnelUpstreamConnected",
    "UdpPeriodic",
    "UdpSessionEnd",
    "TcpConnectionStart",
];

/// A comparison with a fixed value (Envoy's `ComparisonFilter`, without runtime keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// How to compare.
    pub op: CompareOp,
    /// With what.
    pub value: u64,
}

/// Envoy's comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Greater or equal.
    Ge,
    /// Less or equal.
    Le,
    /// Not equal.
    Ne,
}

impl Comparison {
    /// Whether `x` compares to the value as the operator asks.
    pub fn holds(self, x: u64) -> bool {
        match self.op {
            CompareOp::Eq => x == self.value,
            CompareOp::Ge => x >= self.value,
            CompareOp::Le => x <= self.value,
            CompareOp::Ne => x != self.value,
        }
    }
}

impl AccessLogFilter {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        match self {
            Self::GrpcStatus { statuses, .. } => {
                for (i, s) in statuses.iter().enumerate() {
                    errors.check(
                        *s <= 16,
                        &path.field("statuses").index(i),
                        "not a gRPC status code (0..=16)",
                    );
                }
            }
            Self::And(fs) | Self::Or(fs) => {
                let name = if matches!(self, Self::And(_)) {
                    "and"
                } else {
                    "or"
                };
                errors.check(!fs.is_empty(), &path.field(name), "must not be empty");
                for (i, f) in fs.iter().enumerate() {
                    f.validate(&path.field(name).index(i), errors);
                }
            }
            Self::Header(h) => h.validate(&path.field("header"), errors),
            Self::LogType { types, .. } => {
                for (i, t) in types.iter().enumerate() {
                    errors.check(
                        LOG_TYPES.contains(&t.as_str()),
                        &path.field("types").index(i),
                        "not an access log type",
                    );
                }
            }
            Self::Metadata(m) => {
                if let Some(matcher) = &m.matcher {
                    matcher.validate(&path.field("metadata").field("matcher"), errors);
                }
            }
            Self::Cel(expr) => {
                if let Err(e) = crate::cel::Program::parse(expr) {
                    errors.push(&path.field("cel"), format!("invalid expression: {e}"));
                }
            }
            _ => {}
        }
    }
}

/// The gRPC status an HTTP status stands for (gRPC's HTTP-to-gRPC mapping, as Envoy applies
/// it to local replies and to a response without `grpc-status`; anything else, 200
/// included, is `UNKNOWN`).
///
/// ```
/// assert_eq!(mesh_core::config::listener::http_to_grpc(503), 14);
/// ```
pub fn http_to_grpc(code: u16) -> u16 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

impl AccessLogConfig {
    /// Checks `logs`; `path` locates the list.
    pub fn validate_all(logs: &[AccessLogConfig], path: &FieldPath, errors: &mut Errors) {
        for (i, log) in logs.iter().enumerate() {
            let lp = path.index(i);
            errors.check(!log.path.is_empty(), &lp.field("path"), "must not be empty");
            errors.check(
                log.text_format.is_none() || log.json_format.is_none(),
                &lp,
                "at most one of text_format and json_format may be set",
            );
            if let Some(f) = &log.filter {
                f.validate(&lp.field("filter"), errors);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bad_filters_are_refused_with_their_paths() {
        let yaml = |filter: &str| {
            format!(
                "listeners:\n  - name: web\n    route_config: {{ name: r, virtual_hosts: [] }}\n    access_log:\n      - {{ path: /dev/stdout, filter: {filter} }}\n"
            )
        };
        let refused = |filter: &str| {
            crate::MeshConfig::from_yaml(&yaml(filter))
                .unwrap_err()
                .to_string()
        };
        let e = refused("{ or: [ not_health_check, { cel: \"response.code >=\" } ] }");
        assert!(
            e.contains("listeners[0].access_log[0].filter.or[1].cel: invalid expression: at 16"),
            "{e}"
        );
        let e = refused("{ log_type: { types: [DownstreamEnd, Sideways] } }");
        assert!(e.contains("filter.types[1]: not an access log type"), "{e}");
        let e = refused("{ header: { name: x-a, safe_regex_match: { regex: \"(\" } } }");
        assert!(e.contains("filter.header.safe_regex_match"), "{e}");
        let ok = crate::MeshConfig::from_yaml(&yaml(
            "{ and: [ traceable, { runtime: { percent_sampled: { numerator: 5 } } }, { cel: \"request.headers['x'] == 'y'\" } ] }",
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }
}
