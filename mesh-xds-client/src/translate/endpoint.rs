//! `ClusterLoadAssignment` → [`ClusterLoadAssignment`].

use super::finish;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as pb;
use mesh_core::config::endpoint::Metadata;
use mesh_core::error::{Errors, FieldPath};
use mesh_core::{
    ClusterLoadAssignment, ConfigError, HealthStatus, LbEndpoint, Locality, LocalityLbEndpoints,
};
use std::net::{IpAddr, SocketAddr};

/// Translates and validates an endpoint assignment.
pub fn translate(cla: &pb::ClusterLoadAssignment) -> Result<ClusterLoadAssignment, ConfigError> {
    let mut errors = Errors::new();
    let out = assignment(cla, &FieldPath::root(), &mut errors);
    finish(out, errors)
}

pub(crate) fn assignment(
    cla: &pb::ClusterLoadAssignment,
    path: &FieldPath,
    errors: &mut Errors,
) -> ClusterLoadAssignment {
    let endpoints = cla
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, l)| locality_endpoints(l, &path.field("endpoints").index(i), errors))
        .collect();
    let out = ClusterLoadAssignment {
        cluster_name: cla.cluster_name.clone(),
        endpoints,
        policy: cla.policy.as_ref().and_then(|p| {
            p.overprovisioning_factor.as_ref().map(|f| {
                mesh_core::config::endpoint::AssignmentPolicy {
                    overprovisioning_factor: Some(f.value),
                }
            })
        }),
    };
    if errors.is_empty() {
        out.validate(path, errors);
    }
    out
}

fn locality_endpoints(
    l: &pb::LocalityLbEndpoints,
    path: &FieldPath,
    errors: &mut Errors,
) -> LocalityLbEndpoints {
    let locality = l
        .locality
        .as_ref()
        .map(|l| Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        })
        .unwrap_or_default();
    let lb_endpoints = l
        .lb_endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| lb_endpoint(e, &|| path.field("lb_endpoints").index(i), errors))
        .collect();
    LocalityLbEndpoints {
        locality,
        lb_endpoints,
        load_balancing_weight: l.load_balancing_weight.as_ref().map(|w| w.value),
        priority: l.priority,
    }
}

/// One endpoint; `path` builds its field path, which only errors need (an assignment can hold
/// thousands of endpoints, and formatting each path would dominate the translation).
fn lb_endpoint(
    e: &pb::LbEndpoint,
    path: &dyn Fn() -> FieldPath,
    errors: &mut Errors,
) -> Option<LbEndpoint> {
    let ep = match &e.host_identifier {
        Some(pb::lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        _ => {
            errors.push(&path().field("endpoint"), "field not present");
            return None;
        }
    };
    let address = socket_address(
        ep.address.as_ref(),
        &|| path().field("endpoint").field("address"),
        errors,
    )?;
    let health_status = match core::HealthStatus::try_from(e.health_status) {
        Ok(core::HealthStatus::Unknown) => HealthStatus::Unknown,
        Ok(core::HealthStatus::Healthy) => HealthStatus::Healthy,
        Ok(core::HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
        Ok(core::HealthStatus::Draining) => HealthStatus::Draining,
        Ok(core::HealthStatus::Timeout) => HealthStatus::Timeout,
        Ok(core::HealthStatus::Degraded) => HealthStatus::Degraded,
        Err(_) => {
            errors.push(
                &path().field("health_status"),
                format!("unknown health status {}", e.health_status),
            );
            HealthStatus::Unknown
        }
    };
    Some(LbEndpoint {
        address,
        health_status,
        load_balancing_weight: e.load_balancing_weight.as_ref().map(|w| w.value),
        metadata: metadata(e.metadata.as_ref()),
    })
}

/// The string values of an endpoint's `filter_metadata` (what the mesh reads; other kinds of
/// value are left out).
fn metadata(m: Option<&core::Metadata>) -> Metadata {
    use envoy_types::pb::google::protobuf::value::Kind;
    let filter_metadata = m
        .iter()
        .flat_map(|m| &m.filter_metadata)
        .map(|(filter, fields)| {
            let strings = fields
                .fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect();
            (filter.clone(), strings)
        })
        .collect();
    Metadata { filter_metadata }
}

fn socket_address(
    a: Option<&core::Address>,
    path: &dyn Fn() -> FieldPath,
    errors: &mut Errors,
) -> Option<SocketAddr> {
    use core::address::Address as A;
    use core::socket_address::PortSpecifier as Port;
    let Some(A::SocketAddress(sa)) = a.and_then(|a| a.address.as_ref()) else {
        errors.push(&path(), "a socket address is required");
        return None;
    };
    let sp = || path().field("socket_address");
    let Ok(ip) = sa.address.parse::<IpAddr>() else {
        errors.push(
            &sp().field("address"),
            format!(
                "{:?} is not an IP address (DNS names are not supported yet)",
                sa.address
            ),
        );
        return None;
    };
    match sa.port_specifier {
        Some(Port::PortValue(p)) if (1..=65535).contains(&p) => Some(SocketAddr::new(ip, p as u16)),
        Some(Port::PortValue(p)) => {
            errors.push(
                &sp().field("port_value"),
                format!("{p} is not a valid port"),
            );
            None
        }
        _ => {
            errors.push(&sp().field("port_value"), "field not present");
            None
        }
    }
}
