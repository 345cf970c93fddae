//! Envoy's `OutlierDetection`: passive health checking from the responses themselves.

use crate::duration;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Envoy's `OutlierDetection`. Every field is optional; `None` means Envoy's default, given on
/// each accessor. Its presence turns detection on for the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Consecutive 5xx (and, unless local-origin errors are split, connect failures and
    /// resets) before ejection. Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Time between analysis sweeps (success rate, failure percentage, un-ejection). Default
    /// 10 s.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Ejection time per ejection count. Default 30 s.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Cap on the ejection time. Default 300 s (or `base_ejection_time` if larger).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// Most endpoints ejected at once, percent. Default 10; at least one endpoint may always be
    /// ejected (Envoy's rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Chance, percent, that a consecutive-5xx detection ejects. Default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 before ejection. Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_failure: Option<u32>,
    /// Chance, percent, that a gateway-failure detection ejects. Default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    /// Count local-origin errors (connect failure, reset, timeout) apart from HTTP statuses.
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures before ejection (split mode). Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failure: Option<u32>,
    /// Chance, percent, that a local-origin detection ejects. Default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    /// Chance, percent, that a success-rate detection ejects. Default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_success_rate: Option<u32>,
    /// Endpoints with enough volume needed for success-rate analysis. Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate_minimum_hosts: Option<u32>,
    /// Requests per interval an endpoint needs to be analysed. Default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate_request_volume: Option<u32>,
    /// Ejects below `mean - stdev × factor / 1000`. Default 1900.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate_stdev_factor: Option<u32>,
    /// Failure percentage at or above which an endpoint is ejected. Default 85.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_percentage_threshold: Option<u32>,
    /// Chance, percent, that a failure-percentage detection ejects. Default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcing_failure_percentage: Option<u32>,
    /// Endpoints with enough volume needed for failure-percentage analysis. Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_percentage_minimum_hosts: Option<u32>,
    /// Requests per interval an endpoint needs for failure-percentage analysis. Default 50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_percentage_request_volume: Option<u32>,
}

macro_rules! accessors {
    ($($(#[$m:meta])* $name:ident: $ty:ty = $default:expr;)*) => {
        impl OutlierDetection {
            $(
                $(#[$m])*
                pub fn $name(&self) -> $ty {
                    self.$name.unwrap_or($default)
                }
            )*
        }
    };
}

impl OutlierDetection {
    /// The effective `interval`.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_secs(10))
    }
    /// The effective `base_ejection_time`.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time.unwrap_or(Duration::from_secs(30))
    }
    /// The effective `max_ejection_time`.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
            .unwrap_or(Duration::from_secs(300))
            .max(self.base_ejection_time())
    }
}

accessors! {
    /// The effective `consecutive_5xx`.
    consecutive_5xx: u32 = 5;
    /// The effective `max_ejection_percent`.
    max_ejection_percent: u32 = 10;
    /// The effective `enforcing_consecutive_5xx`.
    enforcing_consecutive_5xx: u32 = 100;
    /// The effective `consecutive_gateway_failure`.
    consecutive_gateway_failure: u32 = 5;
    /// The effective `enforcing_consecutive_gateway_failure`.
    enforcing_consecutive_gateway_failure: u32 = 0;
    /// The effective `consecutive_local_origin_failure`.
    consecutive_local_origin_failure: u32 = 5;
    /// The effective `enforcing_consecutive_local_origin_failure`.
    enforcing_consecutive_local_origin_failure: u32 = 100;
    /// The effective `enforcing_success_rate`.
    enforcing_success_rate: u32 = 100;
    /// The effective `success_rate_minimum_hosts`.
    success_rate_minimum_hosts: u32 = 5;
    /// The effective `success_rate_request_volume`.
    success_rate_request_volume: u32 = 100;
    /// The effective `success_rate_stdev_factor`.
    success_rate_stdev_factor: u32 = 1900;
    /// The effective `failure_percentage_threshold`.
    failure_percentage_threshold: u32 = 85;
    /// The effective `enforcing_failure_percentage`.
    enforcing_failure_percentage: u32 = 0;
    /// The effective `failure_percentage_minimum_hosts`.
    failure_percentage_minimum_hosts: u32 = 5;
    /// The effective `failure_percentage_request_volume`.
    failure_percentage_request_volume: u32 = 50;
}

impl OutlierDetection {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let percents = [
            ("max_ejection_percent", self.max_ejection_percent),
            ("enforcing_consecutive_5xx", self.enforcing_consecutive_5xx),
            (
                "enforcing_consecutive_gateway_failure",
                self.enforcing_consecutive_gateway_failure,
            ),
            (
                "enforcing_consecutive_local_origin_failure",
                self.enforcing_consecutive_local_origin_failure,
            ),
            ("enforcing_success_rate", self.enforcing_success_rate),
            (
                "failure_percentage_threshold",
                self.failure_percentage_threshold,
            ),
            (
                "enforcing_failure_percentage",
                self.enforcing_failure_percentage,
            ),
        ];
        for (field, v) in percents {
            if let Some(v) = v {
                errors.check(v <= 100, &path.field(field), "must be at most 100");
            }
        }
        for (field, d) in [
            ("interval", self.interval),
            ("base_ejection_time", self.base_ejection_time),
        ] {
            if let Some(d) = d {
                errors.check(!d.is_zero(), &path.field(field), "must be greater than 0");
            }
        }
    }
}
