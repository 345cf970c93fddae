//! Policy messages shared by routes, listeners and clusters: retries, hedging, faults, local
//! rate limits, percentages, header mutations, circuit breakers and outlier detection.

use super::duration;
use envoy_types::pb::envoy::config::cluster::v3 as cluster_pb;
use envoy_types::pb::envoy::config::core::v3 as core_pb;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault_pb;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3 as rl_pb;
use envoy_types::pb::envoy::r#type::v3 as type_pb;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::headers::{AppendAction, HeaderValue, HeaderValueOption};
use mesh_core::config::listener::FilterConfig;
use mesh_core::error::{Errors, FieldPath};
use mesh_core::policy::{
    CircuitBreakers, DenominatorType, Empty, FaultAbort, FaultDelay, FractionalPercent,
    HedgePolicy, HttpFault, LocalRateLimit, OutlierDetection, Percent, RetryBackOff, RetryBudget,
    RetryHostPredicate, RetryPolicy, RoutingPriority, RuntimeFractionalPercent, Thresholds,
    TokenBucket,
};
use prost::Message;

pub(crate) const FAULT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
pub(crate) const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const CORS_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";
pub(crate) const FILTER_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.config.route.v3.FilterConfig";

pub(crate) fn fractional(p: &type_pb::FractionalPercent) -> FractionalPercent {
    use type_pb::fractional_percent::DenominatorType as D;
    FractionalPercent {
        numerator: p.numerator,
        denominator: match D::try_from(p.denominator) {
            Ok(D::TenThousand) => DenominatorType::TenThousand,
            Ok(D::Million) => DenominatorType::Million,
            _ => DenominatorType::Hundred,
        },
    }
}

pub(crate) fn runtime_fraction(p: &core_pb::RuntimeFractionalPercent) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: p.default_value.as_ref().map(fractional).unwrap_or_default(),
        runtime_key: p.runtime_key.clone(),
    }
}

// `append` is deprecated in favour of `append_action`, but still sent.
#[allow(deprecated)]
pub(crate) fn header_options(
    list: &[core_pb::HeaderValueOption],
    path: &FieldPath,
    errors: &mut Errors,
) -> Vec<HeaderValueOption> {
    use core_pb::header_value_option::HeaderAppendAction as A;
    list.iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let p = path.index(i);
            let Some(hv) = &h.header else {
                errors.push(&p.field("header"), "field not present");
                return None;
            };
            let value = if hv.raw_value.is_empty() {
                hv.value.clone()
            } else {
                match String::from_utf8(hv.raw_value.clone()) {
                    Ok(v) => v,
                    Err(_) => {
                        errors.push(&p.field("header").field("raw_value"), "must be UTF-8");
                        return None;
                    }
                }
            };
            let append_action = match (
                h.append.as_ref().map(|b| b.value),
                A::try_from(h.append_action),
            ) {
                (Some(true), _) => AppendAction::AppendIfExistsOrAdd,
                (Some(false), _) => AppendAction::OverwriteIfExistsOrAdd,
                (None, Ok(A::AddIfAbsent)) => AppendAction::AddIfAbsent,
                (None, Ok(A::OverwriteIfExistsOrAdd)) => AppendAction::OverwriteIfExistsOrAdd,
                (None, Ok(A::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
                (None, _) => AppendAction::AppendIfExistsOrAdd,
            };
            Some(HeaderValueOption {
                header: HeaderValue {
                    key: hv.key.to_ascii_lowercase(),
                    value,
                },
                append_action,
                keep_empty_value: h.keep_empty_value,
            })
        })
        .collect()
}

pub(crate) fn retry(p: &pb::RetryPolicy, path: &FieldPath, errors: &mut Errors) -> RetryPolicy {
    let mut out = RetryPolicy {
        retry_on: p.retry_on.clone(),
        num_retries: p.num_retries.as_ref().map(|n| n.value),
        retriable_status_codes: p.retriable_status_codes.clone(),
        ..RetryPolicy::default()
    };
    if let Some(t) = &p.per_try_timeout {
        out.per_try_timeout =
            duration(t, &path.field("per_try_timeout"), errors).filter(|d| !d.is_zero());
    }
    if let Some(b) = &p.retry_back_off {
        let bp = path.field("retry_back_off");
        let base = b
            .base_interval
            .as_ref()
            .and_then(|d| duration(d, &bp.field("base_interval"), errors));
        match base {
            Some(base_interval) => {
                out.retry_back_off = Some(RetryBackOff {
                    base_interval,
                    max_interval: b
                        .max_interval
                        .as_ref()
                        .and_then(|d| duration(d, &bp.field("max_interval"), errors)),
                })
            }
            None => errors.push(&bp.field("base_interval"), "field not present"),
        }
    }
    out.retriable_headers = p
        .retriable_headers
        .iter()
        .enumerate()
        .map(|(i, h)| super::route::header(h, &path.field("retriable_headers").index(i), errors))
        .collect();
    out.retry_host_predicate = p
        .retry_host_predicate
        .iter()
        .map(|h| {
            use pb::retry_policy::retry_host_predicate::ConfigType;
            // Envoy identifies the extension by its config's type; the name is a label.
            let name = match &h.config_type {
                Some(ConfigType::TypedConfig(a)) if a.type_url == PREVIOUS_HOSTS_TYPE => {
                    mesh_core::policy::retry::PREVIOUS_HOSTS.to_owned()
                }
                _ => h.name.clone(),
            };
            RetryHostPredicate { name }
        })
        .collect();
    if p.host_selection_retry_max_attempts > 0 {
        out.host_selection_retry_max_attempts =
            Some(u32::try_from(p.host_selection_retry_max_attempts).unwrap_or(u32::MAX));
    }
    if p.retry_priority.is_some() {
        errors.push(&path.field("retry_priority"), "is not supported");
    }
    if !p.retriable_request_headers.is_empty() {
        errors.push(
            &path.field("retriable_request_headers"),
            "is not supported yet",
        );
    }
    out
}

pub(crate) fn hedge(p: &pb::HedgePolicy, path: &FieldPath, errors: &mut Errors) -> HedgePolicy {
    if p.initial_requests.as_ref().is_some_and(|n| n.value > 1) {
        errors.push(&path.field("initial_requests"), "only 1 is supported");
    }
    if p.additional_request_chance
        .as_ref()
        .is_some_and(|c| c.numerator > 0)
    {
        errors.push(&path.field("additional_request_chance"), "is not supported");
    }
    HedgePolicy {
        hedge_on_per_try_timeout: p.hedge_on_per_try_timeout,
    }
}

pub(crate) fn fault(any: &Any, path: &FieldPath, errors: &mut Errors) -> Option<HttpFault> {
    let f = match fault_pb::HttpFault::decode(&*any.value) {
        Ok(f) => f,
        Err(e) => {
            errors.push(path, format!("cannot decode HTTPFault: {e}"));
            return None;
        }
    };
    let mut out = HttpFault {
        max_active_faults: f.max_active_faults.as_ref().map(|m| m.value),
        ..HttpFault::default()
    };
    if let Some(d) = &f.delay {
        use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier as S;
        let dp = path.field("delay");
        let mut delay = FaultDelay {
            percentage: d.percentage.as_ref().map(fractional),
            ..FaultDelay::default()
        };
        match &d.fault_delay_secifier {
            Some(S::FixedDelay(t)) => {
                delay.fixed_delay = duration(t, &dp.field("fixed_delay"), errors)
            }
            Some(S::HeaderDelay(_)) => delay.header_delay = Some(Empty {}),
            None => errors.push(&dp, "a delay type is required"),
        }
        out.delay = Some(delay);
    }
    if let Some(a) = &f.abort {
        use fault_pb::fault_abort::ErrorType as E;
        let mut abort = FaultAbort {
            percentage: a.percentage.as_ref().map(fractional),
            ..FaultAbort::default()
        };
        match &a.error_type {
            Some(E::HttpStatus(s)) => abort.http_status = Some(*s),
            Some(E::GrpcStatus(s)) => abort.grpc_status = Some(*s),
            Some(E::HeaderAbort(_)) => abort.header_abort = Some(Empty {}),
            None => errors.push(&path.field("abort"), "an error type is required"),
        }
        out.abort = Some(abort);
    }
    out.headers = f
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| super::route::header(h, &path.field("headers").index(i), errors))
        .collect();
    if !f.upstream_cluster.is_empty() || !f.downstream_nodes.is_empty() {
        errors.push(
            path,
            "upstream_cluster and downstream_nodes are not supported",
        );
    }
    if f.response_rate_limit.is_some() {
        errors.push(&path.field("response_rate_limit"), "is not supported yet");
    }
    Some(out)
}

pub(crate) fn local_ratelimit(
    any: &Any,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<LocalRateLimit> {
    let r = match rl_pb::LocalRateLimit::decode(&*any.value) {
        Ok(r) => r,
        Err(e) => {
            errors.push(path, format!("cannot decode LocalRateLimit: {e}"));
            return None;
        }
    };
    let token_bucket = r.token_bucket.as_ref().and_then(|b| {
        let fill = b.fill_interval.as_ref().and_then(|d| {
            duration(
                d,
                &path.field("token_bucket").field("fill_interval"),
                errors,
            )
        })?;
        Some(TokenBucket {
            max_tokens: b.max_tokens,
            tokens_per_fill: b.tokens_per_fill.as_ref().map(|t| t.value),
            fill_interval: fill,
        })
    });
    if !r.descriptors.is_empty() || !r.rate_limits.is_empty() {
        errors.push(
            &path.field("descriptors"),
            "descriptor rate limits are not supported yet",
        );
    }
    Some(LocalRateLimit {
        stat_prefix: r.stat_prefix.clone(),
        token_bucket,
        filter_enabled: r
            .filter_enabled
            .as_ref()
            .and_then(|f| f.default_value.as_ref())
            .map(fractional),
        filter_enforced: r
            .filter_enforced
            .as_ref()
            .and_then(|f| f.default_value.as_ref())
            .map(fractional),
        status: r
            .status
            .as_ref()
            .map(|s| u32::try_from(s.code).unwrap_or(0))
            .filter(|s| *s != 0),
        rate_limited_as_resource_exhausted: r.rate_limited_as_resource_exhausted,
        response_headers_to_add: header_options(
            &r.response_headers_to_add,
            &path.field("response_headers_to_add"),
            errors,
        ),
    })
}

/// A `typed_per_filter_config` value: the filter's own config, or a `FilterConfig` wrapper.
/// Unknown kinds are refused unless marked optional (gRFC A39).
pub(crate) fn filter_override(
    any: &Any,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<FilterConfig> {
    let mut out = FilterConfig::default();
    let (inner, optional) = if any.type_url == FILTER_CONFIG_TYPE {
        match pb::FilterConfig::decode(&*any.value) {
            Ok(fc) => {
                out.disabled = fc.disabled;
                (fc.config, fc.is_optional)
            }
            Err(e) => {
                errors.push(path, format!("cannot decode FilterConfig: {e}"));
                return None;
            }
        }
    } else {
        (Some(any.clone()), false)
    };
    match inner {
        Some(a) if a.type_url == FAULT_TYPE => out.fault = fault(&a, path, errors),
        Some(a) if a.type_url == LOCAL_RATELIMIT_TYPE => {
            out.local_ratelimit = local_ratelimit(&a, path, errors)
        }
        // A route's CORS policy (istiod sends one for every VirtualService `corsPolicy`)
        // configures the CORS filter, which a listener of ours never has (one naming it is
        // refused). Envoy ignores per-route config for filters not in the chain; so do we,
        // after checking it decodes. (grpc-go refuses the whole route config instead.)
        Some(a) if a.type_url == CORS_TYPE => {
            use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
            if let Err(e) = CorsPolicy::decode(&*a.value) {
                errors.push(path, format!("cannot decode CorsPolicy: {e}"));
            }
            return None;
        }
        Some(_) if out.disabled => {}
        None if out.disabled => {}
        Some(_) | None if optional => return None,
        Some(a) => {
            errors.push(path, format!("unsupported filter config {}", a.type_url));
            return None;
        }
        None => {
            errors.push(path, "FilterConfig has no config");
            return None;
        }
    }
    if out.disabled {
        out.fault = None;
        out.local_ratelimit = None;
    }
    Some(out)
}

pub(crate) fn circuit_breakers(cb: &cluster_pb::CircuitBreakers) -> CircuitBreakers {
    CircuitBreakers {
        thresholds: cb
            .thresholds
            .iter()
            .map(|t| Thresholds {
                priority: if t.priority == core_pb::RoutingPriority::High as i32 {
                    RoutingPriority::High
                } else {
                    RoutingPriority::Default
                },
                max_connections: t.max_connections.as_ref().map(|v| v.value),
                max_pending_requests: t.max_pending_requests.as_ref().map(|v| v.value),
                max_requests: t.max_requests.as_ref().map(|v| v.value),
                max_retries: t.max_retries.as_ref().map(|v| v.value),
                retry_budget: t.retry_budget.as_ref().map(|b| RetryBudget {
                    budget_percent: b.budget_percent.as_ref().map(|p| Percent::new(p.value)),
                    min_retry_concurrency: b.min_retry_concurrency.as_ref().map(|v| v.value),
                }),
            })
            .collect(),
    }
}

pub(crate) fn outlier_detection(
    o: &cluster_pb::OutlierDetection,
    path: &FieldPath,
    errors: &mut Errors,
) -> OutlierDetection {
    let u =
        |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| v.as_ref().map(|v| v.value);
    let mut d = |v: &Option<envoy_types::pb::google::protobuf::Duration>, f: &str| {
        v.as_ref().and_then(|v| duration(v, &path.field(f), errors))
    };
    OutlierDetection {
        consecutive_5xx: u(&o.consecutive_5xx),
        interval: d(&o.interval, "interval"),
        base_ejection_time: d(&o.base_ejection_time, "base_ejection_time"),
        max_ejection_time: d(&o.max_ejection_time, "max_ejection_time"),
        max_ejection_percent: u(&o.max_ejection_percent),
        enforcing_consecutive_5xx: u(&o.enforcing_consecutive_5xx),
        consecutive_gateway_failure: u(&o.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure: u(&o.enforcing_consecutive_gateway_failure),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        consecutive_local_origin_failure: u(&o.consecutive_local_origin_failure),
        enforcing_consecutive_local_origin_failure: u(&o.enforcing_consecutive_local_origin_failure),
        enforcing_success_rate: u(&o.enforcing_success_rate),
        success_rate_minimum_hosts: u(&o.success_rate_minimum_hosts),
        success_rate_request_volume: u(&o.success_rate_request_volume),
        success_rate_stdev_factor: u(&o.success_rate_stdev_factor),
        failure_percentage_threshold: u(&o.failure_percentage_threshold),
        enforcing_failure_percentage: u(&o.enforcing_failure_percentage),
        failure_percentage_minimum_hosts: u(&o.failure_percentage_minimum_hosts),
        failure_percentage_request_volume: u(&o.failure_percentage_request_volume),
    }
}
