//! Each ejection rule, the ejection cap, and un-ejection, with paused time.

use super::*;
use std::time::Duration;

fn detector(n: usize, config: OutlierDetection) -> (Detector, Vec<Arc<EndpointStats>>) {
    let eps: Vec<_> = (0..n).map(|_| Arc::new(EndpointStats::default())).collect();
    (Detector::new(config, eps.clone(), 7), eps)
}

fn ejected(eps: &[Arc<EndpointStats>]) -> Vec<bool> {
    eps.iter().map(|e| e.outlier.is_ejected()).collect()
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_ejects_and_the_sweep_returns_it_after_the_time() {
    let (d, eps) = detector(
        10,
        OutlierDetection {
            consecutive_5xx: Some(3),
            base_ejection_time: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    );
    d.report(&eps[0], Outcome::Status(500));
    d.report(&eps[0], Outcome::Status(503));
    d.report(&eps[0], Outcome::Status(200)); // a success resets the streak
    d.report(&eps[0], Outcome::Status(500));
    d.report(&eps[0], Outcome::LocalFailure); // counts as 5xx when not split
    assert!(!eps[0].outlier.is_ejected());
    d.report(&eps[0], Outcome::Status(502));
    assert!(eps[0].outlier.is_ejected());

    tokio::time::advance(Duration::from_secs(29)).await;
    d.sweep(Instant::now());
    assert!(
        eps[0].outlier.is_ejected(),
        "still inside the ejection time"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    d.sweep(Instant::now());
    assert!(!eps[0].outlier.is_ejected());

    // The second ejection lasts twice as long.
    for _ in 0..3 {
        d.report(&eps[0], Outcome::Status(500));
    }
    assert!(eps[0].outlier.is_ejected());
    tokio::time::advance(Duration::from_secs(59)).await;
    d.sweep(Instant::now());
    assert!(eps[0].outlier.is_ejected());
    tokio::time::advance(Duration::from_secs(1)).await;
    d.sweep(Instant::now());
    assert!(!eps[0].outlier.is_ejected());
    assert_eq!(eps[0].outlier.ejections(), 2);
}

#[tokio::test(start_paused = true)]
async fn ejection_time_is_capped_by_max_ejection_time() {
    let (d, eps) = detector(
        10,
        OutlierDetection {
            consecutive_5xx: Some(1),
            base_ejection_time: Some(Duration::from_secs(10)),
            max_ejection_time: Some(Duration::from_secs(15)),
            ..Default::default()
        },
    );
    for round in 0..3 {
        d.report(&eps[0], Outcome::Status(500));
        assert!(eps[0].outlier.is_ejected(), "round {round}");
        tokio::time::advance(Duration::from_secs(15)).await;
        d.sweep(Instant::now());
        assert!(!eps[0].outlier.is_ejected(), "round {round}: capped at 15s");
    }
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_caps_but_one_is_always_allowed() {
    let (d, eps) = detector(
        4,
        OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: Some(10),
            ..Default::default()
        },
    );
    d.report(&eps[0], Outcome::Status(500));
    d.report(&eps[1], Outcome::Status(500));
    assert_eq!(ejected(&eps), [true, false, false, false]);

    let (d, eps) = detector(
        4,
        OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: Some(50),
            ..Default::default()
        },
    );
    for e in &eps {
        d.report(e, Outcome::Status(500));
    }
    assert_eq!(ejected(&eps), [true, true, false, false]);
}

#[tokio::test(start_paused = true)]
async fn gateway_failures_eject_only_when_enforced() {
    let config = |enforcing| OutlierDetection {
        consecutive_5xx: Some(100),
        consecutive_gateway_failure: Some(2),
        enforcing_consecutive_gateway_failure: enforcing,
        ..Default::default()
    };
    let (d, eps) = detector(10, config(None));
    d.report(&eps[0], Outcome::Status(503));
    d.report(&eps[0], Outcome::Status(503));
    assert!(
        !eps[0].outlier.is_ejected(),
        "Envoy's default enforcement is 0%"
    );

    let (d, eps) = detector(10, config(Some(100)));
    d.report(&eps[0], Outcome::Status(500)); // not a gateway error: resets
    d.report(&eps[0], Outcome::Status(503));
    assert!(!eps[0].outlier.is_ejected());
    d.report(&eps[0], Outcome::Status(504));
    assert!(eps[0].outlier.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn split_mode_counts_local_origin_failures_apart() {
    let (d, eps) = detector(
        10,
        OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_5xx: Some(2),
            consecutive_local_origin_failure: Some(3),
            ..Default::default()
        },
    );
    d.report(&eps[0], Outcome::LocalFailure);
    d.report(&eps[0], Outcome::LocalFailure);
    // A response, even a 500, is a local-origin success: the local streak restarts.
    d.report(&eps[0], Outcome::Status(500));
    d.report(&eps[0], Outcome::LocalFailure);
    d.report(&eps[0], Outcome::LocalFailure);
    assert!(!eps[0].outlier.is_ejected(), "5xx streak 1, local streak 2");
    d.report(&eps[0], Outcome::LocalFailure);
    assert!(eps[0].outlier.is_ejected(), "third local failure in a row");
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_the_outlier_among_enough_busy_hosts() {
    let (d, eps) = detector(
        6,
        OutlierDetection {
            consecutive_5xx: Some(u32::MAX),
            success_rate_request_volume: Some(100),
            success_rate_minimum_hosts: Some(5),
            max_ejection_percent: Some(50),
            ..Default::default()
        },
    );
    for (i, e) in eps.iter().enumerate() {
        for n in 0..200 {
            let fail = if i == 3 { n % 2 == 0 } else { n % 100 == 0 };
            d.report(e, Outcome::Status(if fail { 500 } else { 200 }));
        }
    }
    d.sweep(Instant::now());
    assert_eq!(ejected(&eps), [false, false, false, true, false, false]);
}

#[tokio::test(start_paused = true)]
async fn success_rate_needs_the_minimum_number_of_hosts() {
    let (d, eps) = detector(
        4,
        OutlierDetection {
            consecutive_5xx: Some(u32::MAX),
            max_ejection_percent: Some(100),
            ..Default::default()
        },
    );
    for (i, e) in eps.iter().enumerate() {
        for n in 0..200 {
            d.report(
                e,
                Outcome::Status(if i == 0 && n % 2 == 0 { 500 } else { 200 }),
            );
        }
    }
    d.sweep(Instant::now());
    assert_eq!(
        ejected(&eps),
        [false; 4],
        "4 hosts < success_rate_minimum_hosts 5"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_at_the_threshold_when_enforced() {
    let (d, eps) = detector(
        5,
        OutlierDetection {
            consecutive_5xx: Some(u32::MAX),
            enforcing_success_rate: Some(0),
            enforcing_failure_percentage: Some(100),
            failure_percentage_threshold: Some(50),
            failure_percentage_minimum_hosts: Some(5),
            failure_percentage_request_volume: Some(10),
            max_ejection_percent: Some(100),
            ..Default::default()
        },
    );
    for (i, e) in eps.iter().enumerate() {
        for n in 0..20 {
            let fail = match i {
                0 => n < 10, // exactly 50%
                1 => n < 9,  // 45%
                _ => false,
            };
            d.report(e, Outcome::Status(if fail { 500 } else { 200 }));
        }
    }
    d.sweep(Instant::now());
    assert_eq!(ejected(&eps), [true, false, false, false, false]);
}

#[tokio::test(start_paused = true)]
async fn enforcement_percentage_is_a_seeded_chance() {
    let mut ejections = 0;
    for seed in 0..200 {
        let eps: Vec<_> = (0..10)
            .map(|_| Arc::new(EndpointStats::default()))
            .collect();
        let d = Detector::new(
            OutlierDetection {
                consecutive_5xx: Some(1),
                enforcing_consecutive_5xx: Some(30),
                ..Default::default()
            },
            eps.clone(),
            seed,
        );
        d.report(&eps[0], Outcome::Status(500));
        ejections += usize::from(eps[0].outlier.is_ejected());
    }
    // 30% of 200: binomial sd ≈ 6.5, so 60 ± 26 is a 4-sigma band.
    assert!((34..=86).contains(&ejections), "{ejections}");
}

#[test]
fn ejections_are_counted_as_grpc_counts_them() {
    let series = crate::test_util::Series::default();
    metrics::with_local_recorder(&series, || {
        let eps: Vec<Arc<EndpointStats>> = (0..4).map(|_| Arc::default()).collect();
        // Enforced: the fifth consecutive 5xx ejects.
        let config = OutlierDetection {
            consecutive_5xx: Some(5),
            ..OutlierDetection::default()
        };
        let d = Detector::new(config, eps.clone(), 7).for_cluster("web".into());
        for _ in 0..5 {
            d.report(&eps[0], Outcome::Status(503));
        }
        // Unenforced: detected, but the enforcement percentage says no.
        let config = OutlierDetection {
            consecutive_gateway_failure: Some(2),
            enforcing_consecutive_gateway_failure: Some(0),
            ..OutlierDetection::default()
        };
        let d = Detector::new(config, eps.clone(), 7).for_cluster("api".into());
        for _ in 0..2 {
            d.report(&eps[1], Outcome::Status(502));
        }
    });
    let count = |name: &str, cluster: &str, method: &str| {
        series.counter(
            name,
            &[
                ("grpc.lb.backend_service", cluster),
                ("grpc.lb.outlier_detection.detection_method", method),
            ],
        )
    };
    let enforced = "grpc.lb.outlier_detection.ejections_enforced";
    let unenforced = "grpc.lb.outlier_detection.ejections_unenforced";
    assert_eq!(count(enforced, "web", "consecutive_5xx"), 1);
    assert_eq!(count(unenforced, "api", "consecutive_gateway_failure"), 1);
    assert_eq!(count(enforced, "api", "consecutive_gateway_failure"), 0);
}
