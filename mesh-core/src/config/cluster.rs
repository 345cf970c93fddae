//! Clusters: a named group of endpoints and how to talk to them.

use super::endpoint::ClusterLoadAssignment;
use crate::duration;
use crate::error::{Errors, FieldPath};
use crate::policy::{CircuitBreakers, OutlierDetection, UpstreamTls, reject_unenforced};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Envoy's `Cluster`, reduced to what an in-process client acts on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Name, referenced by routes.
    pub name: String,
    /// How endpoints are discovered (`STATIC` or `EDS`).
    #[serde(rename = "type", default)]
    pub discovery: DiscoveryType,
    /// For `EDS`: the name to ask EDS for (defaults to the cluster name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eds_service_name: Option<String>,
    /// For `STATIC`: the endpoints, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_assignment: Option<ClusterLoadAssignment>,
    /// How an endpoint is picked for a request.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: Protocol,
    /// TCP connect timeout (Envoy default 5 s).
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Circuit breaker thresholds (Envoy's defaults apply without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// Passive health checking: eject endpoints that fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Reserved: TLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// Envoy's connect timeout default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

impl Cluster {
    /// A cluster with defaults: `EDS` discovery, round robin, HTTP/1.1, 5 s connect timeout.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            discovery: DiscoveryType::Eds,
            eds_service_name: None,
            load_assignment: None,
            lb_policy: LbPolicy::default(),
            protocol: Protocol::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            circuit_breakers: None,
            outlier_detection: None,
            tls: None,
        }
    }

    /// The name under which this cluster's endpoints are published (EDS service name or name).
    pub fn endpoints_name(&self) -> &str {
        self.eds_service_name.as_deref().unwrap_or(&self.name)
    }

    /// Checks this cluster; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.name.is_empty(),
            &path.field("name"),
            "must not be empty",
        );
        errors.check(
            !self.connect_timeout.is_zero(),
            &path.field("connect_timeout"),
            "must be greater than 0",
        );
        match (self.discovery, &self.load_assignment) {
            (DiscoveryType::Static, None) => errors.push(
                &path.field("load_assignment"),
                "is required for a STATIC cluster",
            ),
            (DiscoveryType::Static, Some(cla)) => {
                cla.validate(&path.field("load_assignment"), errors)
            }
            (DiscoveryType::Eds, Some(_)) => errors.push(
                &path.field("load_assignment"),
                "is only for STATIC clusters; EDS clusters take endpoints from `endpoints`",
            ),
            (DiscoveryType::Eds, None) => {}
        }
        if self.discovery == DiscoveryType::Static && self.eds_service_name.is_some() {
            errors.push(&path.field("eds_service_name"), "is only for EDS clusters");
        }
        if let Some(cb) = &self.circuit_breakers {
            cb.validate(&path.field("circuit_breakers"), errors);
        }
        if let Some(od) = &self.outlier_detection {
            od.validate(&path.field("outlier_detection"), errors);
        }
        reject_unenforced(&self.tls, &path.field("tls"), errors);
    }
}

/// Envoy's `Cluster.DiscoveryType` (DNS kinds come with the load-balancing work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscoveryType {
    /// Endpoints listed in the cluster.
    Static,
    /// Endpoints from EDS (or the file's `endpoints` list).
    #[default]
    Eds,
}

/// Envoy's `Cluster.LbPolicy`. The balancer seam takes more policies later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    /// Round robin over healthy endpoints.
    #[default]
    RoundRobin,
}

/// HTTP version spoken to a cluster's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 with a connection pool (Envoy's default).
    #[default]
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 (cleartext prior knowledge), multiplexed on one connection; needed for gRPC.
    #[serde(rename = "HTTP2")]
    Http2,
}
