//! Overload (issue "reliability"): ten times an upstream's capacity offered, open loop. The
//! upstream serves 8 streams at a time (its HTTP/2 `max_concurrent_streams`), 20 ms each:
//! 400 requests/s. The cluster admits 16 requests (`max_requests`), of which at most 8 wait
//! for a stream slot (`max_pending_requests`). Measured against one caller's unloaded
//! latency:
//! - the admitted requests' p99 stays within 3× the unloaded p99 (they queue behind at most
//!   one round of streams, never behind the overload);
//! - everything else fails fast with `Overflow`, naming the threshold, in well under a
//!   service time;
//! - the upstream stays busy: admitted throughput is at least 80 % of its capacity.
//!
//! Arrivals are paced by the clock (4 000/s, a burst of 4 each millisecond), not by answers,
//! so a slow answer does not slow the offered load as a closed loop would.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::{ErrorKind, MeshService};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tower::ServiceExt;

const STREAMS: u32 = 8;
const SERVICE_TIME: Duration = Duration::from_millis(20);

/// An HTTP/2 upstream with `STREAMS` concurrent streams, each answered after `SERVICE_TIME`.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                tokio::time::sleep(SERVICE_TIME).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(STREAMS)
                    .serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    addr
}

async fn one(svc: &MeshService<Empty<Bytes>>) -> (Duration, Result<(), mesh_tower::MeshError>) {
    let started = Instant::now();
    let res = svc
        .clone()
        .oneshot(Request::get("/").body(Empty::new()).unwrap())
        .await;
    let res = match res {
        Ok(r) => {
            assert_eq!(r.status(), 200);
            r.into_body().collect().await.unwrap();
            Ok(())
        }
        Err(e) => Err(e),
    };
    (started.elapsed(), res)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_capacity_keeps_admitted_latency_and_fails_the_rest_fast() {
    let addr = upstream().await;
    let mesh = mesh_from(&web_config(
        &[addr],
        "HTTP2, circuit_breakers: { thresholds: [{ max_requests: 16, max_pending_requests: 8 }] }",
    ))
    .await;
    let web = mesh.channel::<Empty<Bytes>>("web");

    // Unloaded: one caller at a time.
    let mut unloaded = Vec::new();
    for _ in 0..100 {
        let (took, res) = one(&web).await;
        res.unwrap();
        unloaded.push(took);
    }
    unloaded.sort();
    let unloaded_p99 = quantile(&unloaded, 0.99);

    // 10x capacity for 2 s: 4 arrivals every millisecond.
    let capacity = f64::from(STREAMS) / SERVICE_TIME.as_secs_f64();
    let (window, per_ms) = (Duration::from_secs(2), 4);
    let mut calls = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    while start.elapsed() < window {
        tick.tick().await;
        for _ in 0..per_ms {
            let web = web.clone();
            calls.spawn(async move { one(&web).await });
        }
    }
    let offered = calls.len();
    let (mut admitted, mut refused) = (Vec::new(), Vec::new());
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            (took, Ok(())) => admitted.push(took),
            (took, Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
                assert!(
                    e.to_string().contains("max_requests (16)")
                        || e.to_string().contains("max_pending_requests (8)"),
                    "the error names its threshold: {e}"
                );
                refused.push(took);
            }
        }
    }
    let elapsed = start.elapsed();
    admitted.sort();
    refused.sort();
    let (admitted_p99, refused_p99) = (quantile(&admitted, 0.99), quantile(&refused, 0.99));
    let served_rate = admitted.len() as f64 / elapsed.as_secs_f64();
    eprintln!(
        "overload: {offered} offered in {window:?} ({:.0}x capacity {capacity:.0}/s): {} \
         admitted at {served_rate:.0}/s, p99 {admitted_p99:?} (unloaded p99 {unloaded_p99:?}); \
         {} refused with Overflow, p99 {refused_p99:?}",
        offered as f64 / window.as_secs_f64() / capacity,
        admitted.len(),
        refused.len(),
    );
    assert!(
        admitted_p99 <= unloaded_p99 * 3,
        "admitted p99 {admitted_p99:?} vs unloaded {unloaded_p99:?}"
    );
    assert!(
        refused_p99 < SERVICE_TIME / 4,
        "refusals are fast: p99 {refused_p99:?}"
    );
    assert!(
        served_rate >= capacity * 0.8,
        "the upstream stays busy: {served_rate:.0}/s of {capacity:.0}/s"
    );
}
