//! Clusters: a named group of endpoints and how to talk to them.

use super::endpoint::ClusterLoadAssignment;
use super::tls::UpstreamTls;
use crate::duration;
use crate::error::{Errors, FieldPath};
use crate::policy::{CircuitBreakers, OutlierDetection};
use serde::{Deserialize, Serialize};
use std::time::Duration;

mod aggregate;
mod lb;
pub use aggregate::*;
pub use lb::*;

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
    /// For `STRICT_DNS` / `LOGICAL_DNS`: the names to resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_endpoints: Vec<DnsEndpoint>,
    /// Which address families DNS lookups return.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub dns_lookup_family: DnsLookupFamily,
    /// How often names are re-resolved (default 5 s).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_refresh_rate: Option<Duration>,
    /// Re-resolve when the records' TTL expires instead of at the refresh rate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub respect_dns_ttl: bool,
    /// How an endpoint is picked for a request.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// `ROUND_ROBIN` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_robin_lb_config: Option<RoundRobinConfig>,
    /// `LEAST_REQUEST` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request_lb_config: Option<LeastRequestConfig>,
    /// `RING_HASH` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash_lb_config: Option<RingHashConfig>,
    /// `MAGLEV` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_lb_config: Option<MaglevConfig>,
    /// `PEAK_EWMA` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_ewma_lb_config: Option<PeakEwmaConfig>,
    /// `CLIENT_SIDE_WEIGHTED_ROUND_ROBIN` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_side_weighted_round_robin_lb_config: Option<ClientSideWeightedRoundRobinConfig>,
    /// Panic threshold and locality weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_lb_config: Option<CommonLbConfig>,
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
    /// TLS to the endpoints (Envoy's `transport_socket` with an `UpstreamTlsContext`, given
    /// directly). A TLS cluster never falls back to plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<UpstreamTls>,
    /// A custom cluster type instead of `type`: the aggregate cluster (gRFC A37), failover
    /// across the clusters it names. It has no endpoints of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<ClusterType>,
    /// Report this cluster's load (LRS) to the control plane it came from: Envoy's
    /// `lrs_server: { self: {} }`, the only form gRPC takes (xDS only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lrs_report: bool,
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
            dns_endpoints: Vec::new(),
            dns_lookup_family: DnsLookupFamily::default(),
            dns_refresh_rate: None,
            respect_dns_ttl: false,
            lb_policy: LbPolicy::default(),
            round_robin_lb_config: None,
            least_request_lb_config: None,
            ring_hash_lb_config: None,
            maglev_lb_config: None,
            peak_ewma_lb_config: None,
            client_side_weighted_round_robin_lb_config: None,
            common_lb_config: None,
            protocol: Protocol::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            circuit_breakers: None,
            outlier_detection: None,
            transport_socket: None,
            cluster_type: None,
            lrs_report: false,
        }
    }

    /// For an aggregate cluster, the clusters it fails over across, highest priority first.
    pub fn aggregate(&self) -> Option<&[String]> {
        self.cluster_type
            .as_ref()
            .map(|t| t.typed_config.clusters.as_slice())
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
        if self.discovery.is_dns() {
            errors.check(
                !self.dns_endpoints.is_empty(),
                &path.field("dns_endpoints"),
                "is required for a DNS cluster",
            );
            if self.discovery == DiscoveryType::LogicalDns {
                errors.check(
                    self.dns_endpoints.len() <= 1,
                    &path.field("dns_endpoints"),
                    "a LOGICAL_DNS cluster has exactly one name",
                );
            }
            for (i, d) in self.dns_endpoints.iter().enumerate() {
                let dp = path.field("dns_endpoints").index(i);
                errors.check(
                    !d.hostname.is_empty(),
                    &dp.field("hostname"),
                    "must not be empty",
                );
                errors.check(d.port != 0, &dp.field("port"), "must not be 0");
            }
            if let Some(r) = self.dns_refresh_rate {
                errors.check(
                    r >= Duration::from_millis(1),
                    &path.field("dns_refresh_rate"),
                    "must be at least 1ms",
                );
            }
        } else if !self.dns_endpoints.is_empty() {
            errors.push(&path.field("dns_endpoints"), "is only for DNS clusters");
        }
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
            (DiscoveryType::StrictDns | DiscoveryType::LogicalDns, Some(_)) => errors.push(
                &path.field("load_assignment"),
                "DNS clusters list their names in `dns_endpoints`",
            ),
            (DiscoveryType::StrictDns | DiscoveryType::LogicalDns, None) => {}
        }
        if let Some(t) = &self.cluster_type {
            t.validate(&self.name, &path.field("cluster_type"), errors);
            errors.check(
                self.load_assignment.is_none() && self.eds_service_name.is_none(),
                &path.field("cluster_type"),
                "an aggregate cluster has no endpoints of its own (no load_assignment or eds_service_name)",
            );
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
        if let Some(tls) = &self.transport_socket {
            tls.validate(&path.field("transport_socket"), errors);
        }
        self.validate_lb(path, errors);
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
    /// Every address each of `dns_endpoints` resolves to, re-resolved continuously.
    StrictDns,
    /// The first address `dns_endpoints[0]` resolves to (one logical host).
    LogicalDns,
}

impl DiscoveryType {
    /// `STRICT_DNS` or `LOGICAL_DNS`.
    pub fn is_dns(self) -> bool {
        matches!(self, Self::StrictDns | Self::LogicalDns)
    }
}

/// A hostname endpoint of a DNS cluster (Envoy's `load_assignment` endpoint whose socket
/// address is a name; written apart because `LbEndpoint.address` is an IP address).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsEndpoint {
    /// The name to resolve.
    pub hostname: String,
    /// The port of every resolved address.
    pub port: u16,
    /// Weight of each resolved address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_weight: Option<u32>,
}

/// Envoy's `Cluster.DnsLookupFamily`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DnsLookupFamily {
    /// IPv6 if any, else IPv4 (Envoy's default).
    #[default]
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 if any, else IPv6.
    V4Preferred,
    /// Both.
    All,
}

/// Envoy's default DNS refresh rate.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

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

fn is_auto(f: &DnsLookupFamily) -> bool {
    *f == DnsLookupFamily::Auto
}
