//! A cluster's load balancing policy: the `lb_policy` enum with its per-policy configs, or
//! `load_balancing_policy`'s typed list (gRFC A52), the first entry the mesh knows winning.
//!
//! Why apart: the typed policies are where custom and future policies arrive; their rules (skip
//! the unknown, NACK when none is known, peak EWMA under our own type name) read together here.

use super::*;

pub(super) fn lb_policy(
    c: &pb::Cluster,
    out: &mut Cluster,
    root: &FieldPath,
    errors: &mut Errors,
) -> LbPolicy {
    if let Some(policy) = &c.load_balancing_policy {
        // The first policy in the list that we support wins (Envoy and gRPC semantics).
        let lp = root.field("load_balancing_policy");
        let supported = policy.policies.iter().find_map(|p| {
            let t = p.typed_extension_config.as_ref()?.typed_config.as_ref()?;
            typed_policy(t, out, &lp, errors)
        });
        return supported.unwrap_or_else(|| {
            errors.push(&lp, "no supported policy in the list");
            LbPolicy::RoundRobin
        });
    }
    if let Some(common) = &c.common_lb_config {
        use pb::cluster::common_lb_config::LocalityConfigSpecifier as L;
        let mut cfg = mesh_core::config::cluster::CommonLbConfig {
            healthy_panic_threshold: common
                .healthy_panic_threshold
                .as_ref()
                .map(|p| mesh_core::policy::Percent::new(p.value)),
            ..Default::default()
        };
        match &common.locality_config_specifier {
            Some(L::LocalityWeightedLbConfig(_)) => {
                cfg.locality_weighted_lb_config = Some(mesh_core::policy::Empty {})
            }
            Some(L::ZoneAwareLbConfig(z)) => {
                cfg.zone_aware_lb_config = Some(mesh_core::config::cluster::ZoneAwareConfig {
                    routing_enabled: z
                        .routing_enabled
                        .as_ref()
                        .map(|p| mesh_core::policy::Percent::new(p.value)),
                    min_cluster_size: z.min_cluster_size.as_ref().map(|v| v.value),
                })
            }
            None => {}
        }
        out.common_lb_config = Some(cfg);
    }
    use pb::cluster::LbConfig as C;
    match &c.lb_config {
        Some(C::RingHashLbConfig(r)) => {
            if r.hash_function != 0 {
                errors.push(
                    &root.field("ring_hash_lb_config").field("hash_function"),
                    "only XX_HASH is supported",
                );
            }
            out.ring_hash_lb_config = Some(mesh_core::config::cluster::RingHashConfig {
                minimum_ring_size: r.minimum_ring_size.as_ref().map(|v| v.value),
                maximum_ring_size: r.maximum_ring_size.as_ref().map(|v| v.value),
            });
        }
        Some(C::MaglevLbConfig(m)) => {
            out.maglev_lb_config = Some(mesh_core::config::cluster::MaglevConfig {
                table_size: m.table_size.as_ref().map(|v| v.value),
            })
        }
        Some(C::LeastRequestLbConfig(l)) => {
            out.least_request_lb_config = Some(least_request_config!(
                l,
                root.field("least_request_lb_config"),
                errors
            ))
        }
        Some(C::RoundRobinLbConfig(r)) => {
            out.round_robin_lb_config = Some(mesh_core::config::cluster::RoundRobinConfig {
                slow_start_config: slow_start!(
                    r.slow_start_config,
                    root.field("round_robin_lb_config"),
                    errors
                ),
            })
        }
        _ => {}
    }
    match pb::cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(pb::cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(pb::cluster::LbPolicy::Random) => LbPolicy::Random,
        Ok(pb::cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(pb::cluster::LbPolicy::RingHash) => LbPolicy::RingHash,
        Ok(pb::cluster::LbPolicy::Maglev) => LbPolicy::Maglev,
        Ok(other) => {
            errors.push(
                &root.field("lb_policy"),
                format!("{other:?} is not supported yet"),
            );
            LbPolicy::RoundRobin
        }
        Err(_) => {
            errors.push(
                &root.field("lb_policy"),
                format!("unknown lb_policy {}", c.lb_policy),
            );
            LbPolicy::RoundRobin
        }
    }
}

/// One typed `load_balancing_policy` entry, if supported (its settings go into `out`).
fn typed_policy(
    t: &envoy_types::pb::google::protobuf::Any,
    out: &mut Cluster,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<LbPolicy> {
    use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
    let name = t.type_url.strip_prefix(LB_TYPE_PREFIX);
    let bad = |errors: &mut Errors, e: prost::DecodeError| {
        errors.push(path, format!("cannot decode {}: {e}", t.type_url));
    };
    match name {
        Some("round_robin.v3.RoundRobin") => {
            match lbp::round_robin::v3::RoundRobin::decode(&*t.value) {
                Ok(r) => {
                    out.round_robin_lb_config =
                        Some(mesh_core::config::cluster::RoundRobinConfig {
                            slow_start_config: slow_start!(
                                r.slow_start_config,
                                path.clone(),
                                errors
                            ),
                        });
                    Some(LbPolicy::RoundRobin)
                }
                Err(e) => {
                    bad(errors, e);
                    None
                }
            }
        }
        Some("random.v3.Random") => Some(LbPolicy::Random),
        Some("least_request.v3.LeastRequest") => {
            match lbp::least_request::v3::LeastRequest::decode(&*t.value) {
                Ok(l) => {
                    out.least_request_lb_config =
                        Some(least_request_config!(l, path.clone(), errors));
                    Some(LbPolicy::LeastRequest)
                }
                Err(e) => {
                    bad(errors, e);
                    None
                }
            }
        }
        Some("ring_hash.v3.RingHash") => match lbp::ring_hash::v3::RingHash::decode(&*t.value) {
            Ok(r) if r.hash_function <= 1 => {
                out.ring_hash_lb_config = Some(mesh_core::config::cluster::RingHashConfig {
                    minimum_ring_size: r.minimum_ring_size.as_ref().map(|v| v.value),
                    maximum_ring_size: r.maximum_ring_size.as_ref().map(|v| v.value),
                });
                Some(LbPolicy::RingHash)
            }
            Ok(_) => None,
            Err(e) => {
                bad(errors, e);
                None
            }
        },
        Some("maglev.v3.Maglev") => match lbp::maglev::v3::Maglev::decode(&*t.value) {
            Ok(m) => {
                out.maglev_lb_config = Some(mesh_core::config::cluster::MaglevConfig {
                    table_size: m.table_size.as_ref().map(|v| v.value),
                });
                Some(LbPolicy::Maglev)
            }
            Err(e) => {
                bad(errors, e);
                None
            }
        },
        Some("client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin") => {
            match lbp::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin::decode(
                &*t.value,
            ) {
                Ok(w) => {
                    let d = |v: &Option<envoy_types::pb::google::protobuf::Duration>,
                             name: &str,
                             errors: &mut Errors| {
                        v.as_ref()
                            .and_then(|v| duration(v, &path.field(name), errors))
                    };
                    out.client_side_weighted_round_robin_lb_config = Some(
                        mesh_core::config::cluster::ClientSideWeightedRoundRobinConfig {
                            enable_oob_load_report: w
                                .enable_oob_load_report
                                .as_ref()
                                .is_some_and(|b| b.value),
                            oob_reporting_period: d(
                                &w.oob_reporting_period,
                                "oob_reporting_period",
                                errors,
                            ),
                            blackout_period: d(&w.blackout_period, "blackout_period", errors),
                            weight_expiration_period: d(
                                &w.weight_expiration_period,
                                "weight_expiration_period",
                                errors,
                            ),
                            weight_update_period: d(
                                &w.weight_update_period,
                                "weight_update_period",
                                errors,
                            ),
                            error_utilization_penalty: w
                                .error_utilization_penalty
                                .as_ref()
                                .map(|p| mesh_core::policy::Double(f64::from(p.value))),
                            metric_names_for_computing_utilization: w
                                .metric_names_for_computing_utilization
                                .clone(),
                            slow_start_config: slow_start!(
                                w.slow_start_config,
                                path.clone(),
                                errors
                            ),
                        },
                    );
                    Some(LbPolicy::ClientSideWeightedRoundRobin)
                }
                Err(e) => {
                    bad(errors, e);
                    None
                }
            }
        }
        _ if t.type_url.rsplit('/').next() == Some(PEAK_EWMA_TYPE) => Some(LbPolicy::PeakEwma),
        _ => None,
    }
}
