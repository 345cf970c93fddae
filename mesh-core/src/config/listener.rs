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

pub use super::access_log::{
    AccessLogConfig, AccessLogFilter, CompareOp, Comparison, LOG_TYPES, MetadataLogFilter,
    RuntimeFraction, http_to_grpc,
};

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
        // A metadata matcher must name a key and set one value kind.
        let e = crate::MeshConfig::from_yaml(&yaml(
            "{ metadata: { matcher: { filter: envoy.filters.http.jwt_authn, path: [], value: {} } } }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("access_log[0].filter.metadata.matcher.path: must name at least one key"),
            "{e}"
        );
        assert!(
            e.contains("filter.metadata.matcher.value: exactly one"),
            "{e}"
        );
        let ok = crate::MeshConfig::from_yaml(
            &yaml("{ metadata: { match_if_key_not_found: false } }")
                .replace("rds: r", "route_config: { name: r, virtual_hosts: [] }"),
        )
        .unwrap();
        assert_eq!(
            ok.listeners[0].access_log[0].filter,
            Some(super::AccessLogFilter::Metadata(Box::new(
                super::MetadataLogFilter {
                    matcher: None,
                    match_if_key_not_found: false
                }
            )))
        );
    }
}
