//! Listeners: what a client target (`xds:///name`) resolves to.
//!
//! For an in-process client a listener is Envoy's *API listener*: no socket, only the
//! HttpConnectionManager's route config, given inline or named for RDS. The target name is the
//! listener name, as in gRPC's proxyless xDS (gRFC A27).

use super::route::RouteConfig;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

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
    }
}
