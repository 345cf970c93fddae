//! Load-balancing settings of a cluster: the policy and each policy's own config.

use super::Cluster;
use crate::duration;
use crate::error::{Errors, FieldPath};
use crate::policy::Double;
use serde::{Deserialize, Serialize};
use std::time::Duration;

impl Cluster {
    /// Checks the load-balancing settings.
    pub(super) fn validate_lb(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(r) = &self.ring_hash_lb_config {
            let (min, max) = (
                r.minimum_ring_size.unwrap_or(1024),
                r.maximum_ring_size.unwrap_or(8 << 20),
            );
            errors.check(
                min >= 1 && min <= max && max <= 8 << 20,
                &path.field("ring_hash_lb_config"),
                "need 1 <= minimum_ring_size <= maximum_ring_size <= 8388608",
            );
        }
        if let Some(m) = &self.maglev_lb_config
            && let Some(size) = m.table_size
        {
            errors.check(
                is_prime(size) && size < 5_000_011,
                &path.field("maglev_lb_config").field("table_size"),
                format!("{size} must be a prime below 5000011"),
            );
        }
        if let Some(c) = &self.common_lb_config
            && let Some(p) = &c.healthy_panic_threshold
        {
            p.validate(
                &path
                    .field("common_lb_config")
                    .field("healthy_panic_threshold"),
                errors,
            );
        }
        if let Some(c) = &self.client_side_weighted_round_robin_lb_config {
            c.validate(
                &path.field("client_side_weighted_round_robin_lb_config"),
                errors,
            );
        }
    }
}

/// Envoy's `Cluster.LbPolicy`, plus `PEAK_EWMA` (latency-aware P2C, not in Envoy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    /// Round robin, weighted by `load_balancing_weight`.
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewest requests in flight among `choice_count` random endpoints.
    LeastRequest,
    /// Consistent hashing on a ring (route `hash_policy` supplies the key).
    RingHash,
    /// Consistent hashing with a Maglev table.
    Maglev,
    /// Peak-EWMA power of two choices (Finagle/Linkerd): latency × in-flight.
    PeakEwma,
    /// Weighted round robin with weights the endpoints report about themselves (ORCA load
    /// reports, gRFC A58): `qps / utilization`.
    ClientSideWeightedRoundRobin,
}

/// Envoy's `Cluster.LeastRequestLbConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeastRequestConfig {
    /// Endpoints sampled per pick (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
    /// Exponent on `in_flight + 1` when weights differ (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_request_bias: Option<crate::policy::Percent>,
    /// Ramp new endpoints up gradually.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start_config: Option<SlowStartConfig>,
}

/// Envoy's `Cluster.RoundRobinLbConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoundRobinConfig {
    /// Ramp new endpoints up gradually.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start_config: Option<SlowStartConfig>,
}

/// Envoy's `SlowStartConfig`: an endpoint younger than the window gets
/// `weight × max(min_weight_percent, (age / window)^(1 / aggression))`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowStartConfig {
    /// How long a new endpoint ramps up.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub slow_start_window: Option<Duration>,
    /// Ramp curve (default 1.0: linear; higher ramps faster early).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggression: Option<crate::policy::RuntimeDouble>,
    /// The floor of the ramp (default 10%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_weight_percent: Option<crate::policy::Percent>,
}

/// Envoy's `Cluster.RingHashLbConfig` (xxHash only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingHashConfig {
    /// Default 1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
    /// Default 8 Mi.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_ring_size: Option<u64>,
}

/// Envoy's `Cluster.MaglevLbConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaglevConfig {
    /// Prime table size (default 65537).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Settings of the `PEAK_EWMA` policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeakEwmaConfig {
    /// How fast the average forgets a slow response (default 10 s).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub decay: Option<Duration>,
    /// Latency assumed for endpoints not measured yet (default 30 ms).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub default_rtt: Option<Duration>,
}

/// Envoy's `ClientSideWeightedRoundRobin` policy settings (gRFC A58).
///
/// Each endpoint's weight is `rps_fractional / (utilization + error_utilization_penalty ×
/// eps / rps_fractional)` from the ORCA load report on its responses; `utilization` is the
/// largest of the named metrics listed, else `application_utilization`, else
/// `cpu_utilization` (Envoy 1.40's order; the first that is positive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSideWeightedRoundRobinConfig {
    /// Take weights from out-of-band reports instead of the reports on responses: one ORCA
    /// stream (`xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`) per endpoint on its
    /// HTTP/2 connection, asking for a report every `oob_reporting_period` (gRFC A51; as in
    /// gRPC, reports on responses are then ignored).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enable_oob_load_report: bool,
    /// How often out-of-band reports are asked for (default 10 s; the endpoint may send
    /// them less often). Zero means the default, as in gRPC.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub oob_reporting_period: Option<Duration>,
    /// How long a new weight is held back after an endpoint starts reporting (default 10 s),
    /// so one early report does not swing traffic.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub blackout_period: Option<Duration>,
    /// A weight not refreshed for this long is forgotten (default 3 min).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub weight_expiration_period: Option<Duration>,
    /// How often the schedule is rebuilt from the weights (default 1 s, at least 100 ms).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub weight_update_period: Option<Duration>,
    /// How much errors per second count against an endpoint (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_utilization_penalty: Option<Double>,
    /// Named metrics (`named_metrics.<name>` or `utilization.<name>`) whose largest value is
    /// the utilization when positive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metric_names_for_computing_utilization: Vec<String>,
    /// Ramp new endpoints up gradually (their weights scaled by the ramp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start_config: Option<SlowStartConfig>,
}

/// Default `blackout_period`.
pub const DEFAULT_BLACKOUT_PERIOD: Duration = Duration::from_secs(10);
/// Default `weight_expiration_period`.
pub const DEFAULT_WEIGHT_EXPIRATION_PERIOD: Duration = Duration::from_secs(180);
/// Default `oob_reporting_period`.
pub const DEFAULT_OOB_REPORTING_PERIOD: Duration = Duration::from_secs(10);
/// Default `weight_update_period`.
pub const DEFAULT_WEIGHT_UPDATE_PERIOD: Duration = Duration::from_secs(1);
/// Shortest `weight_update_period`; shorter ones are raised to it.
pub const MIN_WEIGHT_UPDATE_PERIOD: Duration = Duration::from_millis(100);

impl ClientSideWeightedRoundRobinConfig {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(p) = self.error_utilization_penalty {
            errors.check(
                p.0.is_finite() && p.0 >= 0.0,
                &path.field("error_utilization_penalty"),
                format!("{} must be a finite number >= 0", p.0),
            );
        }
        for (i, m) in self
            .metric_names_for_computing_utilization
            .iter()
            .enumerate()
        {
            errors.check(
                !m.is_empty(),
                &path
                    .field("metric_names_for_computing_utilization")
                    .index(i),
                "must not be empty",
            );
        }
    }

    /// The out-of-band reporting period to ask endpoints for, when out-of-band reports are
    /// enabled.
    pub fn oob_period(&self) -> Option<Duration> {
        self.enable_oob_load_report.then(|| {
            self.oob_reporting_period
                .filter(|p| !p.is_zero())
                .unwrap_or(DEFAULT_OOB_REPORTING_PERIOD)
        })
    }

    /// `blackout_period`, `weight_expiration_period` and `weight_update_period` with defaults
    /// applied (the update period raised to at least 100 ms).
    pub fn periods(&self) -> (Duration, Duration, Duration) {
        (
            self.blackout_period.unwrap_or(DEFAULT_BLACKOUT_PERIOD),
            self.weight_expiration_period
                .unwrap_or(DEFAULT_WEIGHT_EXPIRATION_PERIOD),
            self.weight_update_period
                .unwrap_or(DEFAULT_WEIGHT_UPDATE_PERIOD)
                .max(MIN_WEIGHT_UPDATE_PERIOD),
        )
    }
}

/// Envoy's `Cluster.CommonLbConfig`, the parts that apply in-process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonLbConfig {
    /// Below this share of healthy endpoints in a priority, balance over all of them (default
    /// 50%; 0 disables panic mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold: Option<crate::policy::Percent>,
    /// Pick a locality by its weight first, then an endpoint inside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_weighted_lb_config: Option<crate::policy::Empty>,
    /// Prefer endpoints in the caller's zone, as far as their capacity allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_config: Option<ZoneAwareConfig>,
}

/// Envoy's `ZoneAwareLbConfig`. Needs the caller's zone and its own cluster (see
/// `MeshBuilder::local_zone`); without them it changes nothing, as in Envoy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneAwareConfig {
    /// Share of requests zone-aware routing applies to (default 100%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_enabled: Option<crate::policy::Percent>,
    /// Fewer upstream endpoints than this disable it (default 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u64>,
}

/// Whether `n` is prime (Maglev table sizes must be).
pub fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
