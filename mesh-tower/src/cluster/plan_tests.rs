use super::*;
use std::sync::Arc;

/// `(priority, healthy, locality zone, locality weight)` per endpoint.
fn endpoints(spec: &[(u32, bool, &str, u32)]) -> Vec<EndpointInfo> {
    spec.iter()
        .enumerate()
        .map(|(i, &(priority, healthy, zone, lw))| EndpointInfo {
            address: ([10, 0, 0, 1], 8000 + i as u16).into(),
            weight: 1,
            health_status: if healthy {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            },
            locality: Arc::new(mesh_core::Locality {
                zone: zone.into(),
                ..Default::default()
            }),
            locality_weight: lw,
            priority,
            stats: Arc::default(),
            workload: None,
        })
        .collect()
}

fn shares(plan: &Plan, eps: &[EndpointInfo], f: impl Fn(&EndpointInfo) -> bool) -> f64 {
    let ctx = PickContext::for_test();
    let n = 20_000;
    let hits = (0..n).filter(|_| f(&eps[plan.pick(&ctx).unwrap()])).count();
    hits as f64 / n as f64
}

#[test]
fn a_degraded_priority_spills_to_the_next_and_recovers() {
    fastrand::seed(1);
    let cluster = Cluster::new("c");
    let mut spec: Vec<_> = (0..10).map(|i| (0, i < 5, "a", 1)).collect();
    spec.extend((0..10).map(|_| (1, true, "a", 1)));
    let eps = endpoints(&spec);
    let plan = Plan::new(&cluster, &eps, 140, None);
    let p1 = shares(&plan, &eps, |e| e.priority == 1);
    assert!((p1 - 0.30).abs() < 0.02, "P1 takes 30%: {p1}");
    assert!(shares(&plan, &eps, |e| !e.health_status.is_usable()) == 0.0);
    // All of P0 healthy again: P1 gets nothing.
    let spec: Vec<_> = spec.iter().map(|s| (s.0, true, s.2, s.3)).collect();
    let eps = endpoints(&spec);
    let plan = Plan::new(&cluster, &eps, 140, None);
    assert_eq!(shares(&plan, &eps, |e| e.priority == 1), 0.0);
}

#[test]
fn each_level_builds_only_the_group_it_uses() {
    let mut ring = Cluster::new("c");
    ring.lb_policy = mesh_core::LbPolicy::RingHash;
    let built = || GROUPS_BUILT.with(std::cell::Cell::get);
    // Healthy: one ring for the one level (the panic group is not built).
    let eps = endpoints(&(0..4).map(|_| (0, true, "a", 1)).collect::<Vec<_>>());
    let before = built();
    let plan = Plan::new(&ring, &eps, 140, None);
    assert!(!plan.panic);
    assert_eq!(built() - before, 1);
    // In panic: one ring too, over every endpoint.
    let eps = endpoints(&(0..10).map(|i| (0, i < 2, "a", 1)).collect::<Vec<_>>());
    let before = built();
    let plan = Plan::new(&ring, &eps, 140, None);
    assert!(plan.panic);
    assert_eq!(built() - before, 1);
}

#[test]
fn panic_mode_uses_unhealthy_endpoints_too() {
    fastrand::seed(2);
    let cluster = Cluster::new("c");
    let eps = endpoints(&(0..10).map(|i| (0, i < 2, "a", 1)).collect::<Vec<_>>());
    let plan = Plan::new(&cluster, &eps, 140, None);
    assert!(plan.panic, "28% < 50%");
    let unhealthy = shares(&plan, &eps, |e| !e.health_status.is_usable());
    assert!((unhealthy - 0.8).abs() < 0.02, "{unhealthy}");
    // A 0% threshold turns panic mode off.
    let mut no_panic = Cluster::new("c");
    no_panic.common_lb_config = Some(mesh_core::config::cluster::CommonLbConfig {
        healthy_panic_threshold: Some(mesh_core::policy::Percent::new(0.0)),
        ..Default::default()
    });
    let plan = Plan::new(&no_panic, &eps, 140, None);
    assert_eq!(shares(&plan, &eps, |e| !e.health_status.is_usable()), 0.0);
}

#[test]
fn locality_weights_split_a_level() {
    fastrand::seed(3);
    let mut cluster = Cluster::new("c");
    cluster.common_lb_config = Some(mesh_core::config::cluster::CommonLbConfig {
        locality_weighted_lb_config: Some(mesh_core::policy::Empty {}),
        ..Default::default()
    });
    // Zone a weight 1 with 4 endpoints, zone b weight 3 with 1 endpoint.
    let mut spec: Vec<_> = (0..4).map(|_| (0, true, "a", 1)).collect();
    spec.push((0, true, "b", 3));
    let eps = endpoints(&spec);
    let plan = Plan::new(&cluster, &eps, 140, None);
    let b = shares(&plan, &eps, |e| e.locality.zone == "b");
    assert!((b - 0.75).abs() < 0.02, "{b}");
    // Without locality weighting, endpoints share evenly (b is 1 of 5).
    let plan = Plan::new(&Cluster::new("c"), &eps, 140, None);
    let b = shares(&plan, &eps, |e| e.locality.zone == "b");
    assert!((b - 0.2).abs() < 0.02, "{b}");
}

#[test]
fn priority_loads_follow_envoys_examples() {
    // All healthy: P0 takes everything.
    assert_eq!(
        priority_loads(&[(10, 10), (10, 10)], 140, 50.0),
        (vec![100, 0], false)
    );
    // P0 at 80% healthy: 1.4 × 80 = 112 → still 100%.
    assert_eq!(
        priority_loads(&[(8, 10), (10, 10)], 140, 50.0),
        (vec![100, 0], false)
    );
    // P0 at 50%: health 70 → P0 70%, P1 30%.
    assert_eq!(
        priority_loads(&[(5, 10), (10, 10)], 140, 50.0),
        (vec![70, 30], false)
    );
    // P0 at 20%, P1 at 20%: health 28 + 28 = 56, normalised to 50/50.
    assert_eq!(
        priority_loads(&[(2, 10), (2, 10)], 140, 50.0),
        (vec![50, 50], false)
    );
    // Total health 28 < 50: panic, spread by endpoint count.
    assert_eq!(
        priority_loads(&[(2, 10), (0, 10)], 140, 50.0),
        (vec![50, 50], true)
    );
    // Panic disabled with a 0% threshold: the healthy remainder takes all.
    assert_eq!(
        priority_loads(&[(2, 10), (0, 10)], 140, 0.0),
        (vec![100, 0], false)
    );
}

fn zone_cluster(min: u64) -> Cluster {
    let mut c = Cluster::new("c");
    c.common_lb_config = Some(mesh_core::config::cluster::CommonLbConfig {
        zone_aware_lb_config: Some(mesh_core::config::cluster::ZoneAwareConfig {
            min_cluster_size: Some(min),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

fn view(zone: &str, shares: &[(&str, f64)]) -> LocalView {
    LocalView {
        zone: zone.into(),
        shares: shares.iter().map(|(z, s)| (z.to_string(), *s)).collect(),
    }
}

#[test]
fn zone_aware_keeps_traffic_local_while_capacity_allows_and_spills_the_rest() {
    fastrand::seed(5);
    let even: Vec<_> = (0..6)
        .map(|i| (0, true, if i < 3 { "a" } else { "b" }, 1))
        .collect();
    let eps = endpoints(&even);
    // Callers split 50/50 like the upstream: everything stays local.
    let plan = Plan::new(
        &zone_cluster(6),
        &eps,
        140,
        Some(&view("a", &[("a", 0.5), ("b", 0.5)])),
    );
    assert_eq!(shares(&plan, &eps, |e| e.locality.zone == "a"), 1.0);

    // 75% of callers in a, 25% of upstream in a: a keeps 1/3 of its traffic, b takes 2/3.
    let skewed: Vec<_> = (0..8)
        .map(|i| (0, true, if i < 2 { "a" } else { "b" }, 1))
        .collect();
    let eps = endpoints(&skewed);
    let plan = Plan::new(
        &zone_cluster(6),
        &eps,
        140,
        Some(&view("a", &[("a", 0.75), ("b", 0.25)])),
    );
    let a = shares(&plan, &eps, |e| e.locality.zone == "a");
    assert!((a - 1.0 / 3.0).abs() < 0.02, "{a}");

    // A lone caller (100% in its zone) changes nothing, as in Envoy: 2 of 8 endpoints.
    let plan = Plan::new(&zone_cluster(6), &eps, 140, Some(&view("a", &[("a", 1.0)])));
    let a = shares(&plan, &eps, |e| e.locality.zone == "a");
    assert!((a - 0.25).abs() < 0.02, "{a}");

    // Below min_cluster_size the preference is off.
    let eps = endpoints(&even);
    let plan = Plan::new(
        &zone_cluster(100),
        &eps,
        140,
        Some(&view("a", &[("a", 0.5), ("b", 0.5)])),
    );
    let a = shares(&plan, &eps, |e| e.locality.zone == "a");
    assert!((a - 0.5).abs() < 0.02, "{a}");
}
