//! A server listener's inline route config (gRFC A36) → the server's [`InboundRoutes`]:
//! virtual hosts, route matches, whether each route is non-forwarding, and the per-route
//! overrides of the inbound filters (`RBACPerRoute`, the JWT filter's `PerRouteConfig`,
//! `HTTPFault`, `LocalRateLimit`,
//! Envoy's `FilterConfig` wrapper with `disabled`).
//!
//! A route whose action forwards is kept and marked: A36 fails the requests it matches
//! rather than the resource. An override of another type is NACKed unless `is_optional`.

use super::policy::FILTER_CONFIG_TYPE;
use super::route::route_match;
use super::{jwt, rbac};
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::inbound::{FilterOverride, InboundRoute, InboundRoutes, InboundVirtualHost};
use mesh_core::error::{Errors, FieldPath};
use prost::Message;
use std::collections::{BTreeMap, HashMap};

/// A route config a server names through RDS: its routes in server form, alone.
pub(crate) fn translate_config(
    rc: &pb::RouteConfiguration,
) -> Result<mesh_core::config::route::RouteConfig, mesh_core::ConfigError> {
    let mut errors = Errors::new();
    let root = FieldPath::root();
    let out = mesh_core::config::route::RouteConfig {
        name: rc.name.clone(),
        inbound: Some(routes(rc, &root, &mut errors)),
        ..Default::default()
    };
    if errors.is_empty() {
        out.validate(&root, &mut errors);
    }
    super::finish(out, errors)
}

/// The routes of `rc`.
pub(crate) fn routes(
    rc: &pb::RouteConfiguration,
    path: &FieldPath,
    errors: &mut Errors,
) -> InboundRoutes {
    let mut out = InboundRoutes::default();
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vp = path.field("virtual_hosts").index(i);
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (j, r) in vh.routes.iter().enumerate() {
            let rp = vp.field("routes").index(j);
            let Some(m) = &r.r#match else {
                errors.push(&rp.field("match"), "is required");
                continue;
            };
            routes.push(InboundRoute {
                name: r.name.clone(),
                matcher: route_match(m, &rp.field("match"), errors),
                forwarding: !matches!(r.action, Some(pb::route::Action::NonForwardingAction(_))),
                typed_per_filter_config: overrides(&r.typed_per_filter_config, &rp, errors),
            });
        }
        out.virtual_hosts.push(InboundVirtualHost {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
            routes,
            typed_per_filter_config: overrides(&vh.typed_per_filter_config, &vp, errors),
        });
    }
    out
}

fn overrides(
    map: &HashMap<String, Any>,
    path: &FieldPath,
    errors: &mut Errors,
) -> BTreeMap<String, FilterOverride> {
    map.iter()
        .filter_map(|(name, any)| {
            let p = path.field("typed_per_filter_config").field(name);
            filter_override(any, &p, errors).map(|o| (name.clone(), o))
        })
        .collect()
}

fn filter_override(any: &Any, path: &FieldPath, errors: &mut Errors) -> Option<FilterOverride> {
    let (inner, optional, disabled) = if any.type_url == FILTER_CONFIG_TYPE {
        match pb::FilterConfig::decode(&*any.value) {
            Ok(fc) => (fc.config, fc.is_optional, fc.disabled),
            Err(e) => {
                errors.push(path, format!("cannot decode FilterConfig: {e}"));
                return None;
            }
        }
    } else {
        (Some(any.clone()), false, false)
    };
    if disabled {
        return Some(FilterOverride {
            disabled: true,
            ..FilterOverride::default()
        });
    }
    match inner {
        Some(a) if a.type_url == rbac::RBAC_PER_ROUTE => Some(FilterOverride {
            rbac: rbac::per_route(&a, path, errors),
            ..FilterOverride::default()
        }),
        Some(a) if a.type_url == jwt::JWT_PER_ROUTE => {
            let p = jwt::per_route(&a, path, errors)?;
            Some(if p.disabled {
                FilterOverride {
                    disabled: true,
                    ..FilterOverride::default()
                }
            } else {
                FilterOverride {
                    jwt_authn: Some(p),
                    ..FilterOverride::default()
                }
            })
        }
        // Envoy's per-route configs of the fault and local rate limit filters: their type is
        // the filter's own.
        Some(a) if a.type_url == super::policy::FAULT_TYPE => Some(FilterOverride {
            fault: Some(super::policy::fault(&a, path, errors)?),
            ..FilterOverride::default()
        }),
        Some(a) if a.type_url == super::policy::LOCAL_RATELIMIT_TYPE => Some(FilterOverride {
            local_ratelimit: Some(super::policy::local_ratelimit(&a, path, errors)?),
            ..FilterOverride::default()
        }),
        Some(_) | None if optional => None,
        Some(a) => {
            errors.push(
                path,
                format!("unsupported per-route config {} on a server", a.type_url),
            );
            None
        }
        None => {
            errors.push(path, "a config is required");
            None
        }
    }
}
