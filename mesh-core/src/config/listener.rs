//! Listeners: what a client target (`xds:///name`) resolves to.
//!
//! For an in-process client a listener is Envoy's *API listener*: no socket, only the
//! HttpConnectionManager's route config, given inline or named for RDS. The target name is the
//! listener name, as in gRPC's proxyless xDS (gRFC A27).

use super::route::RouteConfig;
use crate::error::{Errors, FieldPath};
use crate::policy::{HttpFault, LocalRateLimit};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// An API listener: the routes for one target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The target name (`xds:///<name>`, or a plain `host:port`).
    pub name: String,
    /// Name of a route config to use (RDS). Exactly one of `rds` and `route_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<String>,
    /// The route config, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_config: Option<RouteConfig>,
    /// The HTTP filters before the router (Envoy's HttpConnectionManager `http_filters`, the
    /// router itself implied). Their order in the mesh is fixed: local rate limit, then fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_filters: Vec<HttpFilter>,
    /// This target's access log (Envoy's HttpConnectionManager `access_log`, its file and
    /// stdout loggers): requests through the target write here instead of the mesh-wide
    /// log. Only the first entry is written to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<AccessLogConfig>,
}

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

/// Which requests an access log writes: the kinds of Envoy's `AccessLogFilter` that need
/// neither runtime nor an extension.
///
/// ```
/// use mesh_core::config::listener::{AccessLogFilter, CompareOp, Comparison};
/// // Errors, and anything slower than a second.
/// let f = AccessLogFilter::Or(vec![
///     AccessLogFilter::StatusCode(Comparison { op: CompareOp::Ge, value: 500 }),
///     AccessLogFilter::Duration(Comparison { op: CompareOp::Ge, value: 1000 }),
/// ]);
/// assert!(f.passes(503, 12, "-", None));
/// assert!(!f.passes(200, 12, "-", None));
/// assert!(f.passes(200, 1500, "-", None));
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
    /// Every filter passes.
    And(Vec<AccessLogFilter>),
    /// Any filter passes.
    Or(Vec<AccessLogFilter>),
}

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
    fn holds(self, x: u64) -> bool {
        match self.op {
            CompareOp::Eq => x == self.value,
            CompareOp::Ge => x >= self.value,
            CompareOp::Le => x <= self.value,
            CompareOp::Ne => x != self.value,
        }
    }
}

impl AccessLogFilter {
    /// Whether a request that ended with HTTP `code` (0: no answer) after `millis`, with
    /// response `flags` (Envoy's form: `-` or `UH,URX`) and gRPC status `grpc`, is written.
    pub fn passes(&self, code: u16, millis: u64, flags: &str, grpc: Option<u16>) -> bool {
        match self {
            Self::StatusCode(c) => c.holds(u64::from(code)),
            Self::Duration(c) => c.holds(millis),
            Self::ResponseFlag(want) => {
                let has = flags.split(',').filter(|f| !f.is_empty() && *f != "-");
                let mut has = has.peekable();
                match want.is_empty() {
                    true => has.peek().is_some(),
                    false => has.any(|f| want.iter().any(|w| w == f)),
                }
            }
            Self::GrpcStatus { statuses, exclude } => {
                let status = grpc.unwrap_or_else(|| http_to_grpc(code));
                statuses.contains(&status) != *exclude
            }
            Self::And(all) => all.iter().all(|f| f.passes(code, millis, flags, grpc)),
            Self::Or(any) => any.iter().any(|f| f.passes(code, millis, flags, grpc)),
        }
    }

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

/// One HTTP filter: a name (the key of route-level overrides) and exactly one config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFilter {
    /// The filter's name, e.g. `envoy.filters.http.fault`.
    pub name: String,
    /// Fault injection (`envoy.filters.http.fault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFault>,
    /// Local rate limiting (`envoy.filters.http.local_ratelimit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ratelimit: Option<LocalRateLimit>,
}

/// A route- or virtual-host-level override of one filter (Envoy's `typed_per_filter_config`
/// value): a config of the filter's kind that replaces the listener's, or `disabled`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Fault injection for these routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFault>,
    /// Local rate limiting for these routes (their own bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ratelimit: Option<LocalRateLimit>,
    /// Turn the filter off for these routes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
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

impl FilterConfig {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let n = usize::from(self.fault.is_some())
            + usize::from(self.local_ratelimit.is_some())
            + usize::from(self.disabled);
        errors.check(
            n == 1,
            path,
            "exactly one of fault, local_ratelimit and disabled must be set",
        );
        if let Some(f) = &self.fault {
            f.validate(&path.field("fault"), errors);
        }
        if let Some(r) = &self.local_ratelimit {
            r.validate(&path.field("local_ratelimit"), errors);
        }
    }
}

/// Where a listener's routes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSource<'a> {
    /// Named route config (RDS).
    Rds(&'a str),
    /// Inline route config.
    Inline(&'a RouteConfig),
}

impl Listener {
    /// The route source of a valid listener.
    pub fn route_source(&self) -> Option<RouteSource<'_>> {
        match (&self.rds, &self.route_config) {
            (Some(name), None) => Some(RouteSource::Rds(name)),
            (None, Some(rc)) => Some(RouteSource::Inline(rc)),
            _ => None,
        }
    }

    /// Checks this listener; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.name.is_empty(),
            &path.field("name"),
            "must not be empty",
        );
        match self.route_source() {
            None => errors.push(path, "exactly one of rds and route_config must be set"),
            Some(RouteSource::Rds(name)) => {
                errors.check(!name.is_empty(), &path.field("rds"), "must not be empty")
            }
            Some(RouteSource::Inline(rc)) => rc.validate(&path.field("route_config"), errors),
        }
        AccessLogConfig::validate_all(&self.access_log, &path.field("access_log"), errors);
        let mut names = HashSet::new();
        for (i, f) in self.http_filters.iter().enumerate() {
            let fp = path.field("http_filters").index(i);
            errors.check(!f.name.is_empty(), &fp.field("name"), "must not be empty");
            if !names.insert(f.name.as_str()) {
                errors.push(&fp.field("name"), format!("duplicate filter {:?}", f.name));
            }
            match (&f.fault, &f.local_ratelimit) {
                (Some(fault), None) => fault.validate(&fp.field("fault"), errors),
                (None, Some(rl)) => rl.validate(&fp.field("local_ratelimit"), errors),
                _ => errors.push(&fp, "exactly one of fault and local_ratelimit must be set"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_and_grpc_filters_read_what_envoy_reads() {
        let flags = AccessLogFilter::ResponseFlag(vec!["UT".into(), "UH".into()]);
        assert!(flags.passes(0, 1, "UH", None));
        assert!(flags.passes(504, 1, "URX,UT", None));
        assert!(!flags.passes(503, 1, "UF", None));
        let any_flag = AccessLogFilter::ResponseFlag(Vec::new());
        assert!(any_flag.passes(503, 1, "UF", None) && !any_flag.passes(200, 1, "-", None));
        let not_ok = AccessLogFilter::GrpcStatus {
            statuses: vec![0],
            exclude: true,
        };
        assert!(!not_ok.passes(200, 1, "-", Some(0)));
        assert!(not_ok.passes(200, 1, "-", Some(14)));
        // No gRPC status: inferred from the HTTP code (503: UNAVAILABLE; 200: UNKNOWN).
        let unavailable = AccessLogFilter::GrpcStatus {
            statuses: vec![14],
            exclude: false,
        };
        assert!(unavailable.passes(503, 1, "-", None));
        assert!(!unavailable.passes(200, 1, "-", None));
    }

    #[test]
    fn empty_and_or_lists_and_bad_codes_are_refused_with_their_paths() {
        let yaml = |filter: &str| {
            format!(
                "listeners:\n  - name: web\n    rds: r\n    access_log:\n      - {{ path: /dev/stdout, filter: {filter} }}\n"
            )
        };
        let e = crate::MeshConfig::from_yaml(&yaml("{ or: [] }"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listeners[0].access_log[0].filter.or: must not be empty"),
            "{e}"
        );
        let e = crate::MeshConfig::from_yaml(&yaml("{ grpc_status: { statuses: [3, 17] } }"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("access_log[0].filter.statuses[1]"), "{e}");
    }
}
