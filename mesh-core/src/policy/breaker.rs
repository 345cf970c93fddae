//! Envoy's `CircuitBreakers` and retry budgets.

use super::Percent;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

/// Envoy's `CircuitBreakers`: limits per routing priority. Without an entry for a priority,
/// Envoy's defaults apply (1024 connections, pending and requests; 3 concurrent retries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Thresholds, at most one entry per priority.
    #[serde(default)]
    pub thresholds: Vec<Thresholds>,
}

/// Envoy's `RoutingPriority`. Routes here are all `DEFAULT` priority (there is no route
/// `priority` field in this client), so `HIGH` thresholds are kept but never reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoutingPriority {
    /// The priority of every request.
    #[default]
    Default,
    /// High priority.
    High,
}

/// Envoy's `CircuitBreakers.Thresholds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Which priority these limits govern.
    #[serde(default)]
    pub priority: RoutingPriority,
    /// Maximum connections to the cluster (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Maximum requests waiting for a connection (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Maximum requests in flight (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Maximum retries in flight (default 3). Ignored when `retry_budget` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Retries in flight as a share of requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Envoy's defaults for [`Thresholds`].
pub mod defaults {
    /// `max_connections`, `max_pending_requests`, `max_requests`.
    pub const MAX: u32 = 1024;
    /// `max_retries`.
    pub const MAX_RETRIES: u32 = 3;
    /// `retry_budget.budget_percent`.
    pub const BUDGET_PERCENT: f64 = 20.0;
    /// `retry_budget.min_retry_concurrency`.
    pub const MIN_RETRY_CONCURRENCY: u32 = 3;
}

/// Envoy's `RetryBudget`: at most `budget_percent` of the requests in flight (active plus
/// pending) may be retries, but never fewer than `min_retry_concurrency`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of in-flight requests that may be retries (default 20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<Percent>,
    /// Retries always allowed in flight (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

impl CircuitBreakers {
    /// The thresholds for the default priority, if configured.
    pub fn default_priority(&self) -> Option<&Thresholds> {
        self.thresholds
            .iter()
            .find(|t| t.priority == RoutingPriority::Default)
    }

    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let mut seen = Vec::new();
        for (i, t) in self.thresholds.iter().enumerate() {
            let p = path.field("thresholds").index(i);
            if seen.contains(&t.priority) {
                errors.push(
                    &p.field("priority"),
                    format!("more than one entry for {:?}", t.priority),
                );
            }
            seen.push(t.priority);
            if let Some(b) = &t.retry_budget
                && let Some(pct) = &b.budget_percent
            {
                pct.validate(&p.field("retry_budget").field("budget_percent"), errors);
            }
        }
    }
}
