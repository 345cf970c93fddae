//! Translation: Envoy's v3 protos → validated mesh-core config. The only place protos are seen.
//!
//! Rules, following gRPC's (gRFC A27/A28/A46):
//! - a resource that cannot be decoded, or whose name cannot be read, is a *top-level* error and
//!   the whole response is NACKed;
//! - a resource that decodes but breaks a rule is rejected *alone*, with its field path; the
//!   other resources of the response apply (A46), and the last good version of the rejected one
//!   stays in force;
//! - unknown or unused optional fields are ignored; a field whose value we cannot honour and
//!   that would change behaviour (a TLS transport socket, a custom cluster type, an unsupported
//!   LB policy, a filter with real config we do not implement) is rejected, never silently
//!   dropped.
//!
//! Traffic policy translates in full (retries and hedging, the fault and local rate limit
//! filters with their per-route overrides, circuit breakers, outlier detection, rewrites,
//! redirects, direct responses, mirrors, header mutations), and so do load-balancing policies and
//! route hash policies. The virtual host's `include_request_attempt_count` is accepted and not
//! applied: the header is always sent on retried routes.

mod access_log;
pub mod cluster;
pub mod endpoint;
mod inbound;
pub mod jwt;
pub mod listener;
mod policy;
pub mod rbac;
pub mod route;
pub mod secret;
pub mod server;
mod tls;

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use mesh_core::error::{Errors, FieldPath};
use mesh_core::{Cluster, ClusterLoadAssignment, Listener, ResourceKind, RouteConfig};
use prost::Message;
use std::time::Duration;

/// The resource types of the cascade: the four of gRPC's, and Envoy's SDS secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// LDS
    Listener,
    /// RDS
    RouteConfiguration,
    /// CDS
    Cluster,
    /// EDS
    ClusterLoadAssignment,
    /// SDS over ADS: certificates and roots named by clusters' TLS contexts.
    Secret,
}

impl ResourceType {
    /// All of them, in subscription order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Secret,
    ];

    /// The type URL on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type for a type URL.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The store's kind for this type.
    pub fn kind(self) -> ResourceKind {
        match self {
            ResourceType::Listener => ResourceKind::Listener,
            ResourceType::RouteConfiguration => ResourceKind::RouteConfig,
            ResourceType::Cluster => ResourceKind::Cluster,
            ResourceType::ClusterLoadAssignment => ResourceKind::Endpoints,
            ResourceType::Secret => ResourceKind::Secret,
        }
    }

    /// Index into per-type arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Short name (`LDS`, …) for logs.
    pub fn short(self) -> &'static str {
        ["LDS", "RDS", "CDS", "EDS", "SDS"][self.index()]
    }
}

/// A translated resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Translated {
    /// From LDS.
    Listener(Box<Listener>),
    /// From RDS.
    RouteConfig(RouteConfig),
    /// From CDS (boxed: much larger than the others).
    Cluster(Box<Cluster>),
    /// From EDS.
    Endpoints(ClusterLoadAssignment),
    /// From LDS: a server listener (gRFC A36).
    Server(Box<mesh_core::config::server::Server>),
    /// From SDS: the secret's name and its PEM material.
    Secret(String, mesh_core::config::tls::InlineMaterial),
}

impl Translated {
    /// The same resource under another name (the spelling we subscribed with).
    pub fn renamed(mut self, name: String) -> Self {
        match &mut self {
            Translated::Listener(l) => l.name = name,
            Translated::RouteConfig(rc) => rc.name = name,
            Translated::Cluster(c) => c.name = name,
            Translated::Endpoints(e) => e.cluster_name = name,
            Translated::Secret(n, _) => *n = name,
            Translated::Server(s) => s.name = name,
        }
        self
    }
}

/// A resource could not be decoded at all (top-level error: NACK the response).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// One decoded resource: its name and either its translation or why it was rejected.
#[derive(Debug)]
pub struct Decoded {
    /// Resource name.
    pub name: String,
    /// The translation, or the rule it breaks (with field paths).
    pub result: Result<Translated, String>,
}

/// What translation checks references against: the bootstrap's certificate provider
/// instances (a TLS context naming another one is NACKed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Instance names of `certificate_providers`.
    pub certificate_providers: std::collections::BTreeSet<String>,
    /// Route configs that server listeners name through RDS: translated in server form
    /// (inbound routes: non-forwarding actions, the inbound filters' overrides).
    pub inbound_route_configs: std::collections::BTreeSet<String>,
    /// The resources are read from files (a `file://` source): config sources naming files
    /// refer to the same file set.
    pub files: bool,
}

/// Decodes and translates one resource of type `ty`, without certificate providers.
pub fn decode(ty: ResourceType, any: &Any) -> Result<Decoded, DecodeError> {
    decode_in(ty, any, &Context::default())
}

/// Decodes and translates one resource of type `ty`; references are checked against `ctx`.
pub fn decode_in(ty: ResourceType, any: &Any, ctx: &Context) -> Result<Decoded, DecodeError> {
    if any.type_url != ty.type_url() {
        return Err(DecodeError(format!(
            "resource of type {:?} in a {} response",
            any.type_url,
            ty.short()
        )));
    }
    let bad = |e: prost::DecodeError| DecodeError(format!("cannot decode {}: {e}", ty.short()));
    let (name, result) = match ty {
        ResourceType::Listener => {
            let m = envoy_types::pb::envoy::config::listener::v3::Listener::decode(&*any.value)
                .map_err(bad)?;
            let t = if server::is_server(&m) {
                server::translate(&m, ctx).map(|s| Translated::Server(Box::new(s)))
            } else {
                listener::translate_in(&m, ctx).map(|l| Translated::Listener(Box::new(l)))
            };
            (m.name.clone(), t)
        }
        ResourceType::RouteConfiguration => {
            let m =
                envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(&*any.value)
                    .map_err(bad)?;
            let inbound = ctx.inbound_route_configs.contains(&m.name)
                || ctx
                    .inbound_route_configs
                    .contains(crate::federation::canonical(&m.name).as_ref());
            let t = if inbound {
                inbound::translate_config(&m)
            } else {
                route::translate_config(&m)
            };
            (m.name.clone(), t.map(Translated::RouteConfig))
        }
        ResourceType::Cluster => {
            let m = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(&*any.value)
                .map_err(bad)?;
            (
                m.name.clone(),
                cluster::translate(&m, ctx).map(|c| Translated::Cluster(Box::new(c))),
            )
        }
        ResourceType::ClusterLoadAssignment => {
            let m = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                &*any.value,
            )
            .map_err(bad)?;
            (
                m.cluster_name.clone(),
                endpoint::translate(&m).map(Translated::Endpoints),
            )
        }
        ResourceType::Secret => {
            let m = envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(
                &*any.value,
            )
            .map_err(bad)?;
            (
                m.name.clone(),
                secret::translate(&m).map(|s| Translated::Secret(m.name.clone(), s)),
            )
        }
    };
    if name.is_empty() {
        return Err(DecodeError(format!(
            "{} resource without a name",
            ty.short()
        )));
    }
    Ok(Decoded {
        name,
        result: result.map_err(|e| e.to_string()),
    })
}

/// A server's `transport_socket` (a listener filter chain's, gRFC A36) → its TLS context,
/// with provider instances checked against `ctx`.
pub fn downstream_tls(
    ts: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
    ctx: &Context,
) -> Result<mesh_core::config::tls::DownstreamTls, mesh_core::ConfigError> {
    let mut errors = Errors::new();
    let out = tls::downstream(
        ts,
        &ctx.certificate_providers,
        &FieldPath::root(),
        &mut errors,
    );
    if let Some(t) = &out {
        t.validate(&FieldPath::root(), &mut errors);
    }
    let out = out.unwrap_or_default();
    finish(out, errors)
}

/// Errors of one resource, as text: `path: message; path: message`.
pub(crate) fn finish<T>(value: T, errors: Errors) -> Result<T, mesh_core::ConfigError> {
    errors.into_result().map(|()| value)
}

pub(crate) fn duration(d: &PbDuration, path: &FieldPath, errors: &mut Errors) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        errors.push(path, "must be a non-negative duration");
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod aggregate_tests;

#[cfg(test)]
#[path = "secret_tests.rs"]
mod secret_tests;

#[cfg(test)]
mod access_log_tests;
#[cfg(test)]
mod server_chain_tests;
#[cfg(test)]
#[path = "server_tests.rs"]
mod server_tests;
