//! Endpoints failing under load (issue "reliability"): real `serve` processes behind one
//! cluster, 32 concurrent callers, and the exact count of failed requests.
//! - one of three SIGKILLed, with retries and outlier detection: no request fails;
//! - the same without retries: only requests that picked the dead endpoint fail (those in
//!   flight at the kill, and a few connect failures before each ejection), under 1 %;
//! - one frozen with SIGSTOP (the kernel still accepts for it; nothing answers): requests
//!   fail over within the per-try timeout, the endpoint is ejected, and after SIGCONT traffic
//!   returns to it when the ejection ends; without retries, only the requests that met it
//!   before its ejection fail, at the route timeout, which is what ejects it.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::yaml::web_config_routing;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::echo_process::EchoProcess;
use support::load::{Load, Report};
use support::*;

const CONCURRENCY: usize = 32;

/// Outlier detection that ejects after 3 consecutive failures for 1 s, one endpoint of three
/// at most; Istio's circuit-breaker default of unlimited concurrent retries (`max_retries`
/// 2³²−1), so a burst of retries after a crash is not refused by Envoy's default of 3.
const CLUSTER: &str = "protocol: HTTP2, \
    outlier_detection: { consecutive_5xx: 3, interval: 0.2s, base_ejection_time: 1s, max_ejection_percent: 34 }, \
    circuit_breakers: { thresholds: [{ max_retries: 4294967295 }] }";

const RETRIES: &str = "retry_policy: { retry_on: \"reset,connect-failure,5xx\", num_retries: 3, \
    per_try_timeout: 0.25s, retry_back_off: { base_interval: 0.005s, max_interval: 0.05s }, \
    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }], \
    host_selection_retry_max_attempts: 5 }";

/// Three echo processes and a mesh whose cluster `web` holds them.
async fn three(route: &str) -> (Vec<EchoProcess>, mesh_tower::Mesh) {
    let plain = config_file("{}\n");
    let echoes: Vec<EchoProcess> = (0..3).map(|_| EchoProcess::start(plain.path())).collect();
    let addrs: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
    let mesh = mesh_from(&web_config_routing(&addrs, CLUSTER, route)).await;
    (echoes, mesh)
}

/// Starts the load and waits until every endpoint answers.
async fn loaded(mesh: &mesh_tower::Mesh, echoes: &[EchoProcess]) -> Load {
    let load = Load::start(mesh.channel::<Empty<Bytes>>("web"), CONCURRENCY);
    for e in echoes {
        load.wait_served(e.addr, 50).await;
    }
    load
}

/// Kills one endpoint of three mid-load; returns the report and when the kill happened.
async fn kill_one(route: &str) -> (Report, Instant, SocketAddr) {
    let (mut echoes, mesh) = three(route).await;
    let load = loaded(&mesh, &echoes).await;
    let dead = echoes[2].addr;
    let killed_at = Instant::now();
    echoes[2].kill();
    load.wait_more(5_000).await;
    // The survivors carry everything after the kill.
    let before = load.served_by(echoes[0].addr);
    load.wait_served(echoes[0].addr, 500).await;
    assert!(load.served_by(echoes[0].addr) > before);
    let report = load.stop().await;
    (report, killed_at, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_under_load_fails_no_request_with_retries_and_outlier_detection() {
    let (report, _, _) = kill_one(RETRIES).await;
    eprintln!(
        "{}",
        report.summary("SIGKILL 1 of 3, retries + outlier detection")
    );
    report.assert_none_failed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_killed_under_load_without_retries_fails_only_requests_that_picked_it() {
    let (report, killed_at, dead) = kill_one("").await;
    let (in_flight, after) = report.split_at(killed_at);
    eprintln!(
        "{} ({in_flight} in flight at the kill, {after} sent after it)",
        report.summary("SIGKILL 1 of 3, outlier detection, no retries")
    );
    for f in &report.failures {
        assert!(
            f.error.contains(&dead.to_string()),
            "only the dead endpoint fails: {f:?}"
        );
    }
    // After the kill a request can still pick the dead endpoint until outlier detection has
    // seen its 3 consecutive failures, and again for 3 picks each time its ejection ends: a
    // few per ejection, not a share of the traffic (a third without ejection).
    assert!(
        after * 100 <= report.sent,
        "{after} of {} requests failed after the kill",
        report.sent
    );
}

/// Freezes one endpoint of three for 2 s under load (two ejection times: it is ejected, comes
/// back, fails its first requests again and is ejected for longer; the scenario's length,
/// not a wait for an event), thaws it, and waits for traffic to return to it.
async fn freeze_one(route: &str) -> Report {
    let (echoes, mesh) = three(route).await;
    let load = loaded(&mesh, &echoes).await;
    let frozen = &echoes[2];
    frozen.signal("STOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    frozen.signal("CONT");
    // The ejection ends and the endpoint is picked again.
    load.wait_served(frozen.addr, 200).await;
    load.stop().await
}

/// Requests that waited out a 250 ms timeout (per-try or route).
fn waited(report: &Report) -> usize {
    report
        .latencies
        .iter()
        .filter(|l| **l >= Duration::from_millis(250))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_endpoint_is_failed_over_ejected_and_returns_after_it_thaws() {
    let report = freeze_one(RETRIES).await;
    eprintln!(
        "{}",
        report.summary("SIGSTOP 1 of 3 then SIGCONT, retries + outlier detection")
    );
    report.assert_none_failed();
    // A request that met the frozen endpoint waited one per-try timeout (0.25 s) and went
    // elsewhere: none waited for the freeze to end.
    let max = report.quantile(1.0);
    assert!(
        max < Duration::from_millis(900),
        "the slowest request took {max:?}"
    );
    // Ejection keeps callers off it: only the requests that picked it before each ejection
    // waited a per-try timeout (without it, a third of all requests during the freeze would).
    let slow = waited(&report);
    eprintln!("{slow} requests waited a per-try timeout");
    assert!(
        slow <= 3 * CONCURRENCY,
        "{slow} requests met the frozen endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_endpoint_without_retries_is_ejected_by_its_route_timeouts() {
    // No retry policy: a request that meets the frozen endpoint fails at the route timeout,
    // and those timeouts are what ejects it (as Envoy counts them).
    let report = freeze_one("timeout: 0.25s").await;
    eprintln!(
        "{}",
        report.summary("SIGSTOP 1 of 3 then SIGCONT, route timeout + outlier detection")
    );
    for f in &report.failures {
        assert!(
            f.error.contains("timed out") || f.error.contains("timeout"),
            "{f:?}"
        );
    }
    let slow = waited(&report);
    assert_eq!(
        slow,
        report.failures.len(),
        "every timeout failed, nothing else did"
    );
    // Without the timeouts counting, a third of the requests of the whole freeze would fail.
    assert!(
        slow <= 3 * CONCURRENCY,
        "{slow} requests met the frozen endpoint"
    );
}
