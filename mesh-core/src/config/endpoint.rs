//! Endpoint sets: Envoy's `ClusterLoadAssignment`, with localities, priorities and health.

use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Envoy's `ClusterLoadAssignment`: the endpoints of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLoadAssignment {
    /// The cluster (or EDS service name) these endpoints belong to.
    pub cluster_name: String,
    /// Endpoints grouped by locality and priority.
    #[serde(default)]
    pub endpoints: Vec<LocalityLbEndpoints>,
    /// Load-balancing policy of the assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<AssignmentPolicy>,
}

/// Envoy's `ClusterLoadAssignment.Policy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssignmentPolicy {
    /// Percent by which a priority's (or locality's) healthy share is scaled before it is
    /// considered degraded (default 140: a level at 72% healthy still takes all its traffic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overprovisioning_factor: Option<u32>,
}

/// Envoy's default overprovisioning factor.
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

impl ClusterLoadAssignment {
    /// The overprovisioning factor in force.
    pub fn overprovisioning_factor(&self) -> u32 {
        self.policy
            .as_ref()
            .and_then(|p| p.overprovisioning_factor)
            .unwrap_or(DEFAULT_OVERPROVISIONING_FACTOR)
    }
}

/// Envoy's `LocalityLbEndpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityLbEndpoints {
    /// Where these endpoints run.
    #[serde(default, skip_serializing_if = "Locality::is_empty")]
    pub locality: Locality,
    /// The endpoints.
    #[serde(default)]
    pub lb_endpoints: Vec<LbEndpoint>,
    /// Locality weight, for locality-weighted balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_weight: Option<u32>,
    /// Priority: 0 is highest; levels must be contiguous from 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
}

/// Envoy's `Locality`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Zone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Sub-zone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub_zone: String,
}

impl Locality {
    /// True when no part is set.
    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.sub_zone.is_empty()
    }
}

/// Envoy's `LbEndpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbEndpoint {
    /// Socket address, `ip:port`.
    #[serde(deserialize_with = "socket_address")]
    pub address: SocketAddr,
    /// Health as reported by discovery.
    #[serde(default, skip_serializing_if = "HealthStatus::is_unknown")]
    pub health_status: HealthStatus,
    /// Endpoint weight (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_weight: Option<u32>,
    /// Envoy's endpoint `metadata` (its string values; see [`Metadata`]).
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// Envoy's `Metadata`, string values only: `filter_metadata` by filter name, then key. The
/// mesh reads `filter_metadata.istio.workload`, which istiod sets on every endpoint
/// (`<workload>;<namespace>;<canonical service>;<canonical revision>;<cluster>`), for the
/// destination labels of Istio's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Values by filter name, then key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter_metadata: BTreeMap<String, BTreeMap<String, String>>,
}

impl Metadata {
    /// True when there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.filter_metadata.is_empty()
    }

    /// Istio's workload descriptor (`filter_metadata.istio.workload`).
    pub fn istio_workload(&self) -> Option<&str> {
        self.filter_metadata
            .get("istio")?
            .get("workload")
            .map(String::as_str)
    }
}

/// An `ip:port` address; anything else (a hostname, a missing port) is an error that echoes
/// the value and says what to use instead.
fn socket_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        let hint = match text.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() && host.parse::<std::net::IpAddr>().is_err() => {
                format!(
                    "{host:?} is a hostname: endpoints take IP addresses; to resolve names, use a \
                     STRICT_DNS or LOGICAL_DNS cluster with `dns_endpoints: [{{ hostname: {host}, port: {port} }}]`"
                )
            }
            Some(_) => "expected ip:port (IPv6 as [::1]:8080)".to_owned(),
            None => "the port is missing: expected ip:port".to_owned(),
        };
        serde::de::Error::custom(format!("address {text:?} is not a socket address: {hint}"))
    })
}

impl LbEndpoint {
    /// An endpoint with unknown health and no weight.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            health_status: HealthStatus::Unknown,
            load_balancing_weight: None,
            metadata: Metadata::default(),
        }
    }
}

/// Envoy's `HealthStatus`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Not known; treated as usable.
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy: not used.
    Unhealthy,
    /// Draining: not used for new requests.
    Draining,
    /// Health check timed out: not used.
    Timeout,
    /// Degraded: used only when nothing better is available (treated as usable for now).
    Degraded,
}

impl HealthStatus {
    /// Whether new requests may go to an endpoint in this state (HEALTHY, UNKNOWN, DEGRADED).
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy | Self::Degraded)
    }

    fn is_unknown(&self) -> bool {
        *self == Self::Unknown
    }
}

impl ClusterLoadAssignment {
    /// Checks this assignment; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.cluster_name.is_empty(),
            &path.field("cluster_name"),
            "must not be empty",
        );
        let mut priorities = BTreeSet::new();
        for (i, loc) in self.endpoints.iter().enumerate() {
            let lp = path.field("endpoints").index(i);
            priorities.insert(loc.priority);
            if loc.load_balancing_weight == Some(0) {
                errors.push(&lp.field("load_balancing_weight"), "must be at least 1");
            }
            for (j, ep) in loc.lb_endpoints.iter().enumerate() {
                // Paths are built only for errors: assignments can hold many endpoints.
                let ep_path = || lp.field("lb_endpoints").index(j);
                if ep.load_balancing_weight == Some(0) {
                    errors.push(
                        &ep_path().field("load_balancing_weight"),
                        "must be at least 1",
                    );
                }
                if ep.address.port() == 0 {
                    errors.push(&ep_path().field("address"), "port must not be 0");
                }
            }
        }
        if let Some(max) = priorities.last()
            && *max as usize + 1 != priorities.len()
        {
            errors.push(
                &path.field("endpoints"),
                format!("priorities must be contiguous from 0, found {priorities:?}"),
            );
        }
    }

    /// Every endpoint, in order, with its locality's priority.
    pub fn iter_endpoints(&self) -> impl Iterator<Item = (u32, &LocalityLbEndpoints, &LbEndpoint)> {
        self.endpoints
            .iter()
            .flat_map(|l| l.lb_endpoints.iter().map(move |e| (l.priority, l, e)))
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
