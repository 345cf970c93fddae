//! Route configuration: virtual hosts, ordered routes, matchers and actions.
//!
//! Shapes follow Envoy's `envoy.config.route.v3` messages field for field, so a
//! `RouteConfiguration` from a control plane maps onto [`RouteConfig`] one-to-one and a user can
//! paste Envoy YAML into the mesh file. Protobuf `oneof`s are kept as sibling optional fields (as
//! in Envoy's YAML) and validation enforces "exactly one"; accessors such as
//! [`RouteMatch::path_match`] then hand out a typed enum.

mod action;
mod matcher;

pub use action::*;
pub use matcher::*;

use crate::config::headers::{HeaderValueOption, impl_mutations};
use crate::config::listener::FilterConfig;
use crate::error::{Errors, FieldPath};
use crate::policy::{HedgePolicy, RetryPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Envoy's `RouteConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name referenced by listeners through RDS (may be empty when inline).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Virtual hosts; one is chosen per request by its domains.
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Headers added to every request (applied after the virtual host's and route's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers added to every response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from every response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
    /// A server's routes instead (RDS on servers, gRFC A36): set when a server names this
    /// route config through `rds`, whose routes select requests to serve rather than
    /// clusters to forward to. A client listener finds no virtual host in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<crate::config::inbound::InboundRoutes>,
}

/// Per-filter overrides, keyed by the HTTP filter's name in the listener (Envoy's
/// `typed_per_filter_config`).
pub type PerFilterConfig = BTreeMap<String, FilterConfig>;

/// Envoy's `VirtualHost`: a set of domains and the routes that apply to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Name, unique within the route config.
    pub name: String,
    /// Domains: exact (`foo.com`, `foo.com:8080`), suffix wildcard (`*.foo.com`), prefix
    /// wildcard (`foo.*`) or `*`. Matching follows Envoy's precedence (exact, longest suffix,
    /// longest prefix, `*`).
    pub domains: Vec<String>,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Default retry policy of the routes that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Default hedge policy of the routes that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_policy: Option<HedgePolicy>,
    /// Bytes of request body kept for retries (default 64 KiB; a larger body is not retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request_buffer_limit_bytes: Option<u32>,
    /// Filter overrides for these routes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub typed_per_filter_config: PerFilterConfig,
    /// Headers added to requests (applied after the route's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers added to responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

/// Envoy's `Route`: a match and what to do with matching requests. Exactly one of `route`,
/// `redirect`, `direct_response`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Optional name, used in errors and logs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Which requests this route takes.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Forward to a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteAction>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectAction>,
    /// Answer directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponseAction>,
    /// Bytes of request body kept for retries (overrides the virtual host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request_buffer_limit_bytes: Option<u32>,
    /// Filter overrides for this route (over the virtual host's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub typed_per_filter_config: PerFilterConfig,
    /// Headers added to requests (applied after the weighted cluster's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    /// Headers added to responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Headers removed from responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

impl_mutations!(RouteConfig, VirtualHost, Route);

/// What a validated [`Route`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind<'a> {
    /// `route`
    Forward(&'a RouteAction),
    /// `redirect`
    Redirect(&'a RedirectAction),
    /// `direct_response`
    Direct(&'a DirectResponseAction),
}

impl Route {
    /// The one action that is set, or `None` when zero or several are.
    pub fn kind(&self) -> Option<RouteKind<'_>> {
        match (&self.route, &self.redirect, &self.direct_response) {
            (Some(a), None, None) => Some(RouteKind::Forward(a)),
            (None, Some(r), None) => Some(RouteKind::Redirect(r)),
            (None, None, Some(d)) => Some(RouteKind::Direct(d)),
            _ => None,
        }
    }
}

/// Default bytes of request body buffered for retries.
pub const DEFAULT_BUFFER_LIMIT: u32 = 64 * 1024;

// ===== validation =====

impl RouteConfig {
    /// Checks this route config; `path` locates it in the enclosing document.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(inbound) = &self.inbound {
            errors.check(
                self.virtual_hosts.is_empty(),
                &path.field("virtual_hosts"),
                "must be empty in a server's route config (its routes are under inbound)",
            );
            inbound.validate_alone(&path.field("inbound"), errors);
        }
        self.mutations().validate(path, errors);
        let mut names = HashSet::new();
        let mut domains = HashSet::new();
        for (i, vh) in self.virtual_hosts.iter().enumerate() {
            let p = path.field("virtual_hosts").index(i);
            errors.check(!vh.name.is_empty(), &p.field("name"), "must not be empty");
            if !names.insert(vh.name.as_str()) {
                errors.push(
                    &p.field("name"),
                    format!("duplicate virtual host {:?}", vh.name),
                );
            }
            errors.check(
                !vh.domains.is_empty(),
                &p.field("domains"),
                "must not be empty",
            );
            for (j, d) in vh.domains.iter().enumerate() {
                let dp = p.field("domains").index(j);
                if let Err(msg) = check_domain(d) {
                    errors.push(&dp, msg);
                } else if !domains.insert(d.to_ascii_lowercase()) {
                    errors.push(
                        &dp,
                        format!("domain {d:?} is used by more than one virtual host"),
                    );
                }
            }
            vh.mutations().validate(&p, errors);
            if let Some(r) = &vh.retry_policy {
                r.validate(&p.field("retry_policy"), errors);
            }
            validate_filters(&vh.typed_per_filter_config, &p, errors);
            for (j, route) in vh.routes.iter().enumerate() {
                route.validate(&p.field("routes").index(j), errors);
            }
        }
    }
}

fn validate_filters(map: &PerFilterConfig, path: &FieldPath, errors: &mut Errors) {
    for (name, f) in map {
        f.validate(&path.field("typed_per_filter_config").field(name), errors);
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("domain must not be empty".into());
    }
    let stars = d.matches('*').count();
    let ok = stars == 0 || (stars == 1 && (d.starts_with('*') || d.ends_with('*')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "domain {d:?}: only one wildcard, at the start or the end, is allowed"
        ))
    }
}

impl Route {
    /// Checks this route; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        self.matcher.validate(&path.field("match"), errors);
        match self.kind() {
            None => errors.push(
                path,
                "exactly one of route, redirect and direct_response must be set",
            ),
            Some(RouteKind::Forward(a)) => a.validate(&path.field("route"), errors),
            Some(RouteKind::Redirect(r)) => r.validate(&path.field("redirect"), errors),
            Some(RouteKind::Direct(d)) => d.validate(&path.field("direct_response"), errors),
        }
        self.mutations().validate(path, errors);
        validate_filters(&self.typed_per_filter_config, path, errors);
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}
