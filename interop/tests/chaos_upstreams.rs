//! Upstreams that misbehave under load (issue "reliability"), each an HTTP/2 server on
//! loopback behind one cluster, 32 concurrent callers:
//! - one that sends GOAWAY after every 100 requests on a connection (graceful, as servers do
//!   on deploys and connection-age limits): a new connection takes over each time, the old
//!   ones close (none leak), and with Istio's default retry conditions no request fails (the
//!   few streams a GOAWAY leaves out, which the server never processed, are refused streams,
//!   retried on `refused-stream` as Envoy does);
//! - one that resets every tenth stream: retried on `reset`, no request fails, and the
//!   connection survives every reset;
//! - one that trickles its body (a byte, then silence longer than the route's idle timeout):
//!   every request ends within the idle timeout with `stream idle timeout`, the server sees
//!   each stream cancelled, and the connection stays.

mod support;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_examples::yaml::web_config_routing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::load::{Load, Report};
use support::*;
use tokio::sync::{Notify, watch};

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Graceful GOAWAY after this many requests on a connection.
    GoawayEvery(usize),
    /// Every n-th first attempt (`x-envoy-attempt-count: 1`) is answered with RST_STREAM;
    /// retries are answered, so the outcome does not depend on which requests the resets hit.
    ResetEvery(usize),
    /// A head, one body byte, then one byte per period, forever.
    Trickle(Duration),
}

/// What the server saw: connections accepted, connections open, streams whose body is
/// still being sent.
#[derive(Clone)]
struct Seen {
    accepted: Arc<AtomicUsize>,
    open: watch::Sender<usize>,
    streaming: watch::Sender<usize>,
}

/// Decrements a counter when dropped (a connection or a trickled body ending).
struct Held(watch::Sender<usize>);

impl Held {
    fn new(counter: &watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(counter.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

async fn upstream(how: Misbehaviour) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen {
        accepted: Arc::new(AtomicUsize::new(0)),
        open: watch::channel(0).0,
        streaming: watch::channel(0).0,
    };
    let server_seen = seen.clone();
    tokio::spawn(async move {
        let seen = server_seen;
        let requests = Arc::new(AtomicUsize::new(0));
        while let Ok((tcp, _)) = listener.accept().await {
            seen.accepted.fetch_add(1, Ordering::Relaxed);
            let (seen, requests) = (seen.clone(), requests.clone());
            tokio::spawn(async move {
                let _open = Held::new(&seen.open);
                let on_conn = Arc::new(AtomicUsize::new(0));
                let goaway = Arc::new(Notify::new());
                let svc = {
                    let (goaway, streaming) = (goaway.clone(), seen.streaming.clone());
                    hyper::service::service_fn(move |req: Request<Incoming>| {
                        let n = on_conn.fetch_add(1, Ordering::Relaxed) + 1;
                        let total = requests.fetch_add(1, Ordering::Relaxed) + 1;
                        let first = req
                            .headers()
                            .get("x-envoy-attempt-count")
                            .is_none_or(|v| v == "1");
                        let streaming = streaming.clone();
                        let goaway = goaway.clone();
                        async move {
                            let body: Body = match how {
                                Misbehaviour::GoawayEvery(every) => {
                                    if n == every {
                                        goaway.notify_one();
                                    }
                                    Full::new(Bytes::from_static(b"ok"))
                                        .map_err(|e| match e {})
                                        .boxed_unsync()
                                }
                                Misbehaviour::ResetEvery(every) if first && total % every == 0 => {
                                    return Err(std::io::Error::other("reset this stream"));
                                }
                                Misbehaviour::ResetEvery(_) => Full::new(Bytes::from_static(b"ok"))
                                    .map_err(|e| match e {})
                                    .boxed_unsync(),
                                Misbehaviour::Trickle(period) => {
                                    let held = Held::new(&streaming);
                                    let bytes = stream::unfold(
                                        (held, true),
                                        move |(held, first)| async move {
                                            if !first {
                                                tokio::time::sleep(period).await;
                                            }
                                            Some((
                                                Ok(Frame::data(Bytes::from_static(b"."))),
                                                (held, false),
                                            ))
                                        },
                                    );
                                    BodyExt::boxed_unsync(StreamBody::new(bytes.boxed()))
                                }
                            };
                            Ok::<_, std::io::Error>(Response::new(body))
                        }
                    })
                };
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = goaway.notified() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Istio's default retry conditions for mesh routes (what istiod sends when a VirtualService
/// sets none), with 5 retries instead of its 2: a GOAWAY every 100 requests is one every
/// ~50 ms here, and with 2 retries about one run in three lost a request of 5,000 to three
/// refusals in a row (each a stream the server never processed). Istio's circuit-breaker
/// default of unlimited concurrent retries.
const ISTIO_RETRIES: &str = "retry_policy: { retry_on: \"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\", \
    num_retries: 5, retriable_status_codes: [503] }";
const ISTIO_CLUSTER: &str =
    "protocol: HTTP2, circuit_breakers: { thresholds: [{ max_retries: 4294967295 }] }";

async fn under_load(how: Misbehaviour, route: &str, requests: usize) -> (Report, Seen) {
    let (addr, seen) = upstream(how).await;
    let mesh = mesh_from(&web_config_routing(&[addr], ISTIO_CLUSTER, route)).await;
    let load = Load::start(mesh.channel::<Empty<Bytes>>("web"), 32);
    load.wait_more(requests).await;
    (load.stop().await, seen)
}

/// Waits until a server counter reaches at most `n`.
async fn until_at_most(counter: &watch::Sender<usize>, n: usize, what: &str) {
    let mut rx = counter.subscribe();
    tokio::time::timeout(PATIENCE, rx.wait_for(|v| *v <= n))
        .await
        .unwrap_or_else(|_| panic!("{what}: still {}", *counter.borrow()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_sending_goaway_every_100_requests_fails_no_request_and_leaks_no_connection() {
    let (report, seen) = under_load(Misbehaviour::GoawayEvery(100), ISTIO_RETRIES, 5_000).await;
    let accepted = seen.accepted.load(Ordering::Relaxed);
    eprintln!(
        "{} over {accepted} connections",
        report.summary("GOAWAY every 100")
    );
    report.assert_none_failed();
    // Each connection served its 100 requests and at most the 32 in flight at its GOAWAY,
    // then a new one took over.
    assert!(
        accepted >= report.sent / 132 && accepted <= report.sent / 100 + 1,
        "{accepted} connections for {} requests",
        report.sent
    );
    // The drained connections close: at most the current one stays open.
    until_at_most(&seen.open, 1, "connections open after GOAWAY").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_resetting_streams_is_retried_and_keeps_its_connection() {
    let retry = "retry_policy: { retry_on: reset, num_retries: 3, \
                 retry_back_off: { base_interval: 0.001s, max_interval: 0.01s } }";
    let (report, seen) = under_load(Misbehaviour::ResetEvery(10), retry, 5_000).await;
    eprintln!(
        "{}",
        report.summary("RST_STREAM every 10th stream, retry_on reset")
    );
    report.assert_none_failed();
    assert_eq!(
        seen.accepted.load(Ordering::Relaxed),
        1,
        "a stream reset does not cost the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_trickling_its_body_is_cut_at_the_idle_timeout_and_its_streams_cancelled() {
    let idle = Duration::from_millis(200);
    let (report, seen) = under_load(
        Misbehaviour::Trickle(Duration::from_secs(3)),
        "idle_timeout: 0.2s",
        320,
    )
    .await;
    eprintln!(
        "{}",
        report.summary("body trickled (1 byte, then 3 s gaps), idle_timeout 0.2s")
    );
    assert_eq!(report.failures.len(), report.sent, "every request fails");
    for f in &report.failures {
        assert!(f.error.contains("idle"), "{f:?}");
    }
    // Bounded: nobody waits for the next byte.
    let max = report.quantile(1.0);
    assert!(max < idle * 3, "the slowest request took {max:?}");
    // Each abandoned stream is cancelled at the server, on the connection it came on.
    until_at_most(&seen.streaming, 0, "bodies still being sent").await;
    assert_eq!(seen.accepted.load(Ordering::Relaxed), 1);
}
