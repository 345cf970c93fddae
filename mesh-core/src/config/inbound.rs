//! A server's inbound routes (gRFC A36): which requests it serves, and per-route overrides of
//! its HTTP filters (`RBACPerRoute`, the JWT filter's `PerRouteConfig`, and, as Envoy takes
//! them, a route's own `HTTPFault` and `LocalRateLimit`).
//!
//! Why: a server listener's route config does not forward anywhere (its action is
//! `non_forwarding_action`); it selects requests, so that a policy can differ by path or
//! host, as Envoy's inbound routes let it. A request no route matches, or one matching a
//! route whose action would forward, is not served (A36: `UNAVAILABLE` for gRPC, 404 for
//! HTTP). Without a route config every request is served under the filters' own configs.

use super::rbac::RbacFilter;
use super::route::RouteMatch;
use super::server::ServerHttpFilter;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The inline route config of a server listener.
///
/// ```
/// let r: mesh_core::config::inbound::InboundRoutes = serde_saphyr::from_str(r#"
/// virtual_hosts:
///   - name: inbound
///     domains: ["*"]
///     routes:
///       - match: { prefix: /healthz }
///         typed_per_filter_config:
///           envoy.filters.http.rbac: { rbac: {} }        # RBACPerRoute without rbac: off
///       - match: { prefix: / }
/// "#).unwrap();
/// assert_eq!(r.virtual_hosts[0].routes.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundRoutes {
    /// Virtual hosts, chosen by the request's authority (Envoy's domain precedence).
    pub virtual_hosts: Vec<InboundVirtualHost>,
}

/// A virtual host of an inbound route config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundVirtualHost {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Domains: exact, `*.suffix`, `prefix.*` or `*`.
    pub domains: Vec<String>,
    /// Routes, first match wins.
    #[serde(default)]
    pub routes: Vec<InboundRoute>,
    /// Filter overrides for all its routes (a route's own win), by filter name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub typed_per_filter_config: BTreeMap<String, FilterOverride>,
}

/// A route of an inbound route config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundRoute {
    /// Its name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Which requests.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// The control plane sent a forwarding action (a route, redirect, direct response):
    /// a server cannot forward, so requests matching it are not served (A36).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarding: bool,
    /// Filter overrides for this route, by filter name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub typed_per_filter_config: BTreeMap<String, FilterOverride>,
}

/// A per-route override of one HTTP filter: exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterOverride {
    /// The filter does not run for these requests (Envoy's `FilterConfig.disabled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// `RBACPerRoute`: this policy instead of the filter's (its `rules` absent: no check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacFilter>,
    /// The JWT filter's `PerRouteConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_authn: Option<JwtPerRoute>,
    /// The fault filter's config for these requests instead of the filter's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::policy::HttpFault>,
    /// The local rate limit filter's config for these requests: their own token bucket, as
    /// Envoy gives a route's `LocalRateLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ratelimit: Option<crate::policy::LocalRateLimit>,
}

/// The JWT filter's `PerRouteConfig`: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtPerRoute {
    /// No token check for these requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// This requirement of the filter's `requirement_map` instead of its rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement_name: Option<String>,
}

impl InboundRoutes {
    /// Checks the routes against the server's filters (`filters`: by name); `path` locates
    /// them.
    pub fn validate(
        &self,
        filters: &BTreeMap<&str, &ServerHttpFilter>,
        path: &FieldPath,
        errors: &mut Errors,
    ) {
        self.check(Some(filters), path, errors);
    }

    /// Checks what can be checked without the server: domains and matches (a route config
    /// delivered on its own, by RDS; its overrides are checked against the server's filters
    /// when the server takes it).
    pub fn validate_alone(&self, path: &FieldPath, errors: &mut Errors) {
        self.check(None, path, errors);
    }

    fn check(
        &self,
        filters: Option<&BTreeMap<&str, &ServerHttpFilter>>,
        path: &FieldPath,
        errors: &mut Errors,
    ) {
        for (i, vh) in self.virtual_hosts.iter().enumerate() {
            let vp = path.field("virtual_hosts").index(i);
            errors.check(
                !vh.domains.is_empty(),
                &vp.field("domains"),
                "must name at least one domain",
            );
            if let Some(filters) = filters {
                overrides(&vh.typed_per_filter_config, filters, &vp, errors);
            }
            for (j, r) in vh.routes.iter().enumerate() {
                let rp = vp.field("routes").index(j);
                r.matcher.validate(&rp.field("match"), errors);
                if let Some(filters) = filters {
                    overrides(&r.typed_per_filter_config, filters, &rp, errors);
                }
            }
        }
    }
}

fn overrides(
    map: &BTreeMap<String, FilterOverride>,
    filters: &BTreeMap<&str, &ServerHttpFilter>,
    path: &FieldPath,
    errors: &mut Errors,
) {
    for (name, o) in map {
        let op = path.field("typed_per_filter_config").field(name);
        let Some(f) = filters.get(name.as_str()) else {
            errors.push(&op, format!("no HTTP filter named {name:?} on this server"));
            continue;
        };
        let set = usize::from(o.disabled)
            + usize::from(o.rbac.is_some())
            + usize::from(o.jwt_authn.is_some())
            + usize::from(o.fault.is_some())
            + usize::from(o.local_ratelimit.is_some());
        if set != 1 {
            errors.push(
                &op,
                "exactly one of disabled, rbac, jwt_authn, fault, local_ratelimit must be set",
            );
            continue;
        }
        let not = |field: &str, what: &str, errors: &mut Errors| {
            errors.push(&op.field(field), format!("{name:?} is not {what}"))
        };
        if let Some(r) = &o.rbac {
            match f.rbac {
                Some(_) => r.validate(&op.field("rbac"), errors),
                None => not("rbac", "an RBAC filter", errors),
            }
        }
        if let Some(p) = &o.jwt_authn {
            let pp = op.field("jwt_authn");
            match (&f.jwt_authn, &p.requirement_name, p.disabled) {
                (None, _, _) => not("jwt_authn", "the JWT filter", errors),
                (Some(j), Some(n), false) => errors.check(
                    j.requirement_map.contains_key(n),
                    &pp.field("requirement_name"),
                    format!("no requirement {n:?} in the filter's requirement_map"),
                ),
                (Some(_), None, true) => {}
                _ => errors.push(
                    &pp,
                    "exactly one of disabled and requirement_name must be set",
                ),
            }
        }
        if let Some(x) = &o.fault {
            match f.fault {
                Some(_) => x.validate(&op.field("fault"), errors),
                None => not("fault", "the fault filter", errors),
            }
        }
        if let Some(l) = &o.local_ratelimit {
            match f.local_ratelimit {
                Some(_) => l.validate(&op.field("local_ratelimit"), errors),
                None => not("local_ratelimit", "the local rate limit filter", errors),
            }
        }
    }
}
