//! Retry conditions, limits, backoff bounds, per-try timeouts, hedging and body replay, with
//! paused time and a scripted inner service.

use super::*;
use crate::breaker::{Guard, Limits};
use crate::route::RoutePolicy;
use crate::test_util::{BoxFut, FnService, request, response, service};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_core::policy::{HedgePolicy, RetryBackOff, RetryHostPredicate};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn policy(retry_on: &str, f: impl FnOnce(&mut mesh_core::policy::RetryPolicy)) -> RetryPolicy {
    let mut p = mesh_core::policy::RetryPolicy {
        retry_on: retry_on.into(),
        num_retries: Some(2),
        retry_back_off: Some(RetryBackOff {
            base_interval: Duration::from_millis(10),
            max_interval: None,
        }),
        ..Default::default()
    };
    f(&mut p);
    RetryPolicy::new(&p, None, None).unwrap()
}

fn route(p: RetryPolicy) -> Arc<RoutePolicy> {
    let mut info = RoutePolicy::to_cluster("r", "c", None);
    info.retry = Some(Arc::new(p));
    Arc::new(info)
}

/// An inner service answering attempt `n` (1-based) with `script(n)`; records attempt headers.
type Inner = FnService<dyn Fn(Request<ReplayBody<Full<Bytes>>>) -> BoxFut + Send + Sync>;

fn scripted(
    script: impl Fn(u32) -> Result<Response<MeshBody>, MeshError> + Send + Sync + 'static,
) -> (Inner, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let n = Arc::new(AtomicU32::new(0));
    let script = Arc::new(script);
    let svc: Inner = FnService(Arc::new(
        move |req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            let attempt = req.headers()["x-envoy-attempt-count"]
                .to_str()
                .unwrap()
                .to_owned();
            log.lock().unwrap().push(attempt);
            let script = script.clone();
            Box::pin(async move { script(i) })
        },
    ));
    (svc, seen)
}

async fn call(
    svc: impl Service<
        Request<ReplayBody<Full<Bytes>>>,
        Response = Response<MeshBody>,
        Error = MeshError,
        Future = BoxFut,
    > + Clone
    + Send
    + 'static,
    info: &Arc<RoutePolicy>,
    limits: Option<Arc<dyn RetryLimits>>,
) -> Result<Response<MeshBody>, MeshError> {
    let mut retry = Retry::new(svc, limits);
    retry
        .call(request(info, "/", Full::new(Bytes::from_static(b"hello"))))
        .await
}

fn status(s: u16) -> Result<Response<MeshBody>, MeshError> {
    Ok(response(s, 1000 + s))
}

fn grpc(code: u8) -> Result<Response<MeshBody>, MeshError> {
    let mut r = response(200, 1);
    r.headers_mut()
        .insert("grpc-status", http::HeaderValue::from(u16::from(code)));
    Ok(r)
}

fn err(kind: ErrorKind) -> Result<Response<MeshBody>, MeshError> {
    Err(MeshError::new(kind, "scripted"))
}

#[tokio::test(start_paused = true)]
async fn retries_up_to_num_retries_with_attempt_count() {
    let (svc, seen) = scripted(|_| status(503));
    let start = Instant::now();
    let res = call(svc, &route(policy("5xx", |_| {})), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "the last attempt's response is returned");
    assert_eq!(*seen.lock().unwrap(), ["1", "2", "3"]);
    // The answer tells gRPC's metrics (A96) what the call took.
    let retried = res.extensions().get::<crate::stats::Retried>().unwrap();
    assert_eq!((retried.retries, retried.hedges), (2, 0));
    // The attempts answer at once (paused time): the call's time is its backoff (each of the
    // two sleeps rounded up to tokio's millisecond).
    let took = start.elapsed();
    assert!(retried.delay <= took && took - retried.delay <= Duration::from_millis(2));
    assert!(retried.delay > Duration::ZERO, "{retried:?}");
}

#[tokio::test(start_paused = true)]
async fn a_good_response_ends_the_retries() {
    let (svc, seen) = scripted(|n| if n == 1 { status(503) } else { status(200) });
    let res = call(svc, &route(policy("5xx", |_| {})), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 2);
    let retried = res.extensions().get::<crate::stats::Retried>().unwrap();
    assert_eq!(retried.retries, 1);
}

#[tokio::test(start_paused = true)]
async fn each_retry_on_condition_retries_what_it_names_and_nothing_else() {
    type Outcome = fn() -> Result<Response<MeshBody>, MeshError>;
    let cases: &[(&str, Outcome, bool)] = &[
        ("5xx", || status(500), true),
        ("5xx", || status(404), false),
        ("5xx", || err(ErrorKind::Connect), true),
        ("5xx", || err(ErrorKind::Upstream), true),
        ("5xx", || err(ErrorKind::PerTryTimeout), true),
        ("gateway-error", || status(502), true),
        ("gateway-error", || status(500), false),
        ("gateway-error", || status(504), true),
        ("reset", || err(ErrorKind::Upstream), true),
        ("reset", || status(503), false),
        ("reset-before-request", || err(ErrorKind::Connect), true),
        ("reset-before-request", || err(ErrorKind::Upstream), false),
        ("connect-failure", || err(ErrorKind::Connect), true),
        ("connect-failure", || err(ErrorKind::Upstream), false),
        ("retriable-4xx", || status(409), true),
        ("retriable-4xx", || status(429), false),
        ("refused-stream", || err(ErrorKind::Upstream), false),
        ("retriable-status-codes", || status(418), true),
        ("retriable-status-codes", || status(500), false),
        (
            "retriable-headers",
            || {
                let mut r = response(200, 1);
                r.headers_mut()
                    .insert("x-retry", http::HeaderValue::from_static("yes"));
                Ok(r)
            },
            true,
        ),
        ("retriable-headers", || status(500), false),
        ("cancelled", || grpc(1), true),
        ("deadline-exceeded", || grpc(4), true),
        ("resource-exhausted", || grpc(8), true),
        ("internal", || grpc(13), true),
        ("unavailable", || grpc(14), true),
        ("unavailable", || grpc(13), false),
        ("5xx", || err(ErrorKind::Overflow), false),
        ("5xx", || err(ErrorKind::NoEndpoint), false),
    ];
    for &(on, outcome, retried) in cases {
        let p = policy(on, |p| {
            p.num_retries = Some(1);
            p.retriable_status_codes = vec![418];
            p.retriable_headers = vec![mesh_core::config::route::HeaderMatcher {
                name: "x-retry".into(),
                exact_match: Some("yes".into()),
                ..Default::default()
            }];
        });
        let (svc, seen) = scripted(move |_| outcome());
        let _ = call(svc, &route(p), None).await;
        let attempts = seen.lock().unwrap().len();
        assert_eq!(attempts, if retried { 2 } else { 1 }, "{on}");
    }
}

#[test]
fn backoff_is_full_jitter_within_doubling_bounds() {
    let p = policy("5xx", |p| {
        p.retry_back_off = Some(RetryBackOff {
            base_interval: Duration::from_millis(100),
            max_interval: Some(Duration::from_millis(350)),
        })
    });
    let mut rng = fastrand::Rng::with_seed(1);
    for (n, upper) in [(1, 100), (2, 200), (3, 350), (4, 350), (30, 350)] {
        let mut max_seen = Duration::ZERO;
        for _ in 0..2000 {
            let b = p.backoff(n, rng.u64(..));
            assert!(b < Duration::from_millis(upper), "retry {n}: {b:?}");
            max_seen = max_seen.max(b);
        }
        // The range is used: the largest of 2000 draws is within 1% of the bound.
        assert!(
            max_seen > Duration::from_millis(upper) * 99 / 100,
            "retry {n}: {max_seen:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_retry_returns_the_failed_attempt() {
    struct Never;
    impl RetryLimits for Never {
        fn try_retry(&self, cluster: &str) -> Result<Guard, MeshError> {
            Err(MeshError::new(ErrorKind::Overflow, "budget exhausted")
                .with_cluster(cluster.into()))
        }
    }
    let (svc, seen) = scripted(|_| status(503));
    let res = call(svc, &route(policy("5xx", |_| {})), Some(Arc::new(Never)))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn cluster_retry_limits_bound_concurrent_retries() {
    // max_retries 1 in flight: with one retry held elsewhere, no retry is admitted.
    struct OneCluster(Limits);
    impl RetryLimits for OneCluster {
        fn try_retry(&self, _: &str) -> Result<Guard, MeshError> {
            self.0.try_retry()
        }
    }
    let limits = Arc::new(OneCluster(Limits::new("c".into())));
    limits
        .0
        .configure(Some(&mesh_core::policy::CircuitBreakers {
            thresholds: vec![mesh_core::policy::Thresholds {
                max_retries: Some(1),
                ..Default::default()
            }],
        }));
    let held = limits.0.try_retry().unwrap();
    let (svc, seen) = scripted(|_| status(503));
    call(
        svc.clone(),
        &route(policy("5xx", |_| {})),
        Some(limits.clone()),
    )
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(limits.0.overflows().retries.load(Ordering::Relaxed), 1);
    drop(held);
    let (svc, seen) = scripted(|_| status(503));
    call(svc, &route(policy("5xx", |_| {})), Some(limits.clone()))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "admitted once the slot is free"
    );
    assert_eq!(limits.0.retries(), 0, "retry slots are released");
}

fn slow_then_fast(slow: Duration) -> impl Fn(u32) -> BoxFut + Send + Sync + 'static {
    move |n| -> BoxFut {
        Box::pin(async move {
            if n == 1 {
                tokio::time::sleep(slow).await;
                Ok(response(200, 1))
            } else {
                Ok(response(200, 2))
            }
        })
    }
}

fn timed(f: impl Fn(u32) -> BoxFut + Send + Sync + 'static) -> (Inner, Arc<AtomicU32>) {
    let n = Arc::new(AtomicU32::new(0));
    let count = n.clone();
    let svc: Inner = FnService(Arc::new(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        f(n.fetch_add(1, Ordering::SeqCst) + 1)
    }));
    (svc, count)
}

fn served_by(res: &Response<MeshBody>) -> u16 {
    res.extensions().get::<ServedBy>().unwrap().endpoint.port()
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_cancels_the_slow_attempt_and_retries() {
    let p = policy("5xx", |p| p.per_try_timeout = Some(Duration::from_secs(1)));
    let (svc, attempts) = timed(slow_then_fast(Duration::from_secs(60)));
    let start = Instant::now();
    let res = call(svc, &route(p), None).await.unwrap();
    assert_eq!(served_by(&res), 2);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_without_retry_condition_fails_with_its_kind() {
    let p = policy("connect-failure", |p| {
        p.per_try_timeout = Some(Duration::from_secs(1))
    });
    let (svc, attempts) = timed(slow_then_fast(Duration::from_secs(60)));
    let e = call(svc, &route(p), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PerTryTimeout);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn hedging_keeps_the_slow_attempt_and_takes_the_first_answer() {
    let hedge = HedgePolicy {
        hedge_on_per_try_timeout: true,
    };
    let base = mesh_core::policy::RetryPolicy {
        retry_on: "5xx".into(),
        num_retries: Some(1),
        per_try_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    // The hedge answers first.
    let p = RetryPolicy::new(&base, Some(&hedge), None).unwrap();
    let (svc, attempts) = timed(slow_then_fast(Duration::from_secs(3)));
    let res = call(svc, &route(p), None).await.unwrap();
    assert_eq!((served_by(&res), attempts.load(Ordering::SeqCst)), (2, 2));
    let retried = res.extensions().get::<crate::stats::Retried>().unwrap();
    assert_eq!(
        (retried.retries, retried.hedges),
        (0, 1),
        "a hedge, not a retry"
    );

    // The original answers first (the hedge is slower still): it is not cancelled.
    let p = RetryPolicy::new(&base, Some(&hedge), None).unwrap();
    let (svc, attempts) = timed(|n| -> BoxFut {
        Box::pin(async move {
            let t = if n == 1 { 2 } else { 10 };
            tokio::time::sleep(Duration::from_secs(t)).await;
            Ok(response(200, n as u16))
        })
    });
    let start = Instant::now();
    let res = call(svc, &route(p), None).await.unwrap();
    assert_eq!((served_by(&res), attempts.load(Ordering::SeqCst)), (1, 2));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn the_body_is_replayed_to_every_attempt() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let log = bodies.clone();
    let n = Arc::new(AtomicU32::new(0));
    let svc = service(move |req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        let log = log.clone();
        let i = n.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(body);
            status(if i == 0 { 503 } else { 200 })
        })
    });
    let res = call(svc, &route(policy("5xx", |_| {})), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        *bodies.lock().unwrap(),
        [Bytes::from("hello"), Bytes::from("hello")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_buffer_limit_is_sent_once_and_not_retried() {
    let p = RetryPolicy::new(
        &mesh_core::policy::RetryPolicy {
            retry_on: "5xx".into(),
            ..Default::default()
        },
        None,
        Some(3),
    )
    .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    let svc = service(move |req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        let log = log.clone();
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(body);
            status(503)
        })
    });
    let res = call(svc, &route(p), None).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        *got.lock().unwrap(),
        [Bytes::from("hello")],
        "the primary streamed it whole"
    );
}

#[tokio::test(start_paused = true)]
async fn previous_hosts_are_passed_to_the_pick() {
    let p = policy("5xx", |p| {
        p.retry_host_predicate = vec![RetryHostPredicate {
            name: mesh_core::policy::retry::PREVIOUS_HOSTS.into(),
        }];
        p.host_selection_retry_max_attempts = Some(5);
    });
    let avoid = Arc::new(Mutex::new(Vec::new()));
    let log = avoid.clone();
    let n = Arc::new(AtomicU32::new(0));
    let svc = service(move |req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        let prev = req.extensions().get::<PreviousHosts>().cloned();
        log.lock()
            .unwrap()
            .push(prev.map(|p| (p.hosts, p.attempts)));
        let i = n.fetch_add(1, Ordering::SeqCst) as u16;
        Box::pin(async move { Ok(response(503, 9000 + i)) })
    });
    call(svc, &route(p), None).await.unwrap();
    let port = |p: u16| -> SocketAddr { ([127, 0, 0, 1], p).into() };
    assert_eq!(
        *avoid.lock().unwrap(),
        [
            Some((vec![], 5)),
            Some((vec![port(9000)], 5)),
            Some((vec![port(9000), port(9001)], 5))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_host_whose_attempt_timed_out_is_avoided_by_the_next() {
    // The first attempt's endpoint never answers: no ServedBy comes back, only the pick the
    // cluster recorded tells the retry where it went.
    let p = policy("5xx", |p| {
        p.retry_host_predicate = vec![RetryHostPredicate {
            name: mesh_core::policy::retry::PREVIOUS_HOSTS.into(),
        }];
        p.per_try_timeout = Some(Duration::from_secs(1));
    });
    let avoided = Arc::new(Mutex::new(Vec::new()));
    let log = avoided.clone();
    let n = Arc::new(AtomicU32::new(0));
    let svc = service(move |req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        let prev = req.extensions().get::<PreviousHosts>().cloned().unwrap();
        let i = n.fetch_add(1, Ordering::SeqCst) as u16;
        let host: SocketAddr = ([127, 0, 0, 1], 9000 + i).into();
        prev.note.as_ref().unwrap().picked(host);
        log.lock().unwrap().push(prev.hosts);
        if i == 0 {
            Box::pin(std::future::pending())
        } else {
            Box::pin(async move { Ok(response(200, 9000 + i)) })
        }
    });
    let res = call(svc, &route(p), None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        *avoided.lock().unwrap(),
        [vec![], vec![SocketAddr::from(([127, 0, 0, 1], 9000))]]
    );
}

#[tokio::test(start_paused = true)]
async fn routes_without_a_policy_pass_through_unbuffered() {
    let info = Arc::new(RoutePolicy::to_cluster("r", "c", None));
    let svc = service(|req: Request<ReplayBody<Full<Bytes>>>| -> BoxFut {
        assert!(req.body().try_clone().is_none(), "no replay record");
        assert!(req.headers().get("x-envoy-attempt-count").is_none());
        Box::pin(async { status(503) })
    });
    let mut retry = Retry::new(svc, None);
    let res = retry
        .call(request(&info, "/", Full::new(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}
