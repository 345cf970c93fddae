//! Closed-loop load through a mesh service for the chaos tests: `concurrency` workers each
//! send `GET /` back to back until stopped. Every failure is kept with when it started and
//! ended (so a test can tell the requests in flight at a fault from those sent after it), and
//! the endpoints that answered are counted live (so a test can await traffic returning to one).

use super::PATIENCE;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_tower::{MeshService, ServedBy};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// One failed request: a transport error or a status other than 200.
#[derive(Clone, Debug)]
pub struct Failure {
    pub started: Instant,
    pub ended: Instant,
    pub error: String,
}

/// What a load run saw.
#[derive(Debug)]
pub struct Report {
    /// Requests completed (failed or not).
    pub sent: usize,
    pub failures: Vec<Failure>,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Report {
    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }

    /// One line: what ran, requests, failures and latency quantiles.
    pub fn summary(&self, what: &str) -> String {
        format!(
            "{what}: {} requests, {} failed, p50 {:?}, p99 {:?}, max {:?}",
            self.sent,
            self.failures.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        )
    }

    /// Fails the test, showing the first failures, unless no request failed.
    pub fn assert_none_failed(&self) {
        assert!(
            self.failures.is_empty(),
            "{} requests failed; the first: {:#?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
    }

    /// The failures of requests that started before `at`, and of those that started after.
    pub fn split_at(&self, at: Instant) -> (usize, usize) {
        let before = self.failures.iter().filter(|f| f.started < at).count();
        (before, self.failures.len() - before)
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    sent: AtomicUsize,
    served: Mutex<HashMap<SocketAddr, usize>>,
    /// Woken at every completed request.
    progress: tokio::sync::Notify,
}

/// One `GET /`, its body read whole: status, who served it, body; or what failed (the
/// request or its body).
async fn one(svc: &MeshService<Empty<Bytes>>) -> Result<(u16, ServedBy, Bytes), String> {
    let req = http::Request::get("/").body(Empty::new()).unwrap();
    let res = svc.clone().oneshot(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let served = res.extensions().get::<ServedBy>().cloned();
    let body = res.into_body().collect().await;
    let served = served.ok_or("no ServedBy on an upstream response")?;
    match body {
        Ok(b) => Ok((status, served, b.to_bytes())),
        Err(e) => Err(format!("the body from {} failed: {e}", served.endpoint)),
    }
}

/// A running load.
pub struct Load {
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<(Vec<Failure>, Vec<Duration>)>>,
}

impl Load {
    /// Starts `concurrency` workers sending `GET /` through `svc`.
    pub fn start(svc: MeshService<Empty<Bytes>>, concurrency: usize) -> Load {
        let shared = Arc::new(Shared::default());
        let workers = (0..concurrency)
            .map(|_| {
                let (svc, shared) = (svc.clone(), shared.clone());
                tokio::spawn(async move {
                    let (mut failures, mut latencies) = (Vec::new(), Vec::new());
                    while !shared.stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let outcome = one(&svc).await;
                        let ended = Instant::now();
                        latencies.push(ended - started);
                        match outcome {
                            Ok((200, served, _)) => {
                                *shared
                                    .served
                                    .lock()
                                    .unwrap()
                                    .entry(served.endpoint)
                                    .or_default() += 1;
                            }
                            Ok((status, served, body)) => failures.push(Failure {
                                started,
                                ended,
                                error: format!(
                                    "{status} from {}: {}",
                                    served.endpoint,
                                    String::from_utf8_lossy(&body)
                                ),
                            }),
                            Err(error) => failures.push(Failure {
                                started,
                                ended,
                                error,
                            }),
                        }
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                        shared.progress.notify_waiters();
                    }
                    (failures, latencies)
                })
            })
            .collect();
        Load { shared, workers }
    }

    /// Requests completed so far.
    pub fn sent(&self) -> usize {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Requests answered 200 by `addr` so far.
    pub fn served_by(&self, addr: SocketAddr) -> usize {
        let served = self.shared.served.lock().unwrap();
        served.get(&addr).copied().unwrap_or(0)
    }

    /// Waits until `n` more requests have completed; panics if traffic stalls for `PATIENCE`.
    pub async fn wait_more(&self, n: usize) {
        let target = self.sent() + n;
        self.wait_until(|| self.sent() >= target, "traffic kept flowing")
            .await;
    }

    /// Waits until `addr` has answered `n` more requests.
    pub async fn wait_served(&self, addr: SocketAddr, n: usize) {
        let target = self.served_by(addr) + n;
        self.wait_until(
            || self.served_by(addr) >= target,
            &format!("{addr} answered {n} more"),
        )
        .await;
    }

    async fn wait_until(&self, done: impl Fn() -> bool, what: &str) {
        tokio::time::timeout(PATIENCE * 3, async {
            loop {
                let next = self.shared.progress.notified();
                if done() {
                    return;
                }
                next.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} (after {} requests)", self.sent()));
    }

    /// Stops the workers (each finishes its request) and reports.
    pub async fn stop(self) -> Report {
        self.shared.stop.store(true, Ordering::Relaxed);
        let (mut failures, mut latencies) = (Vec::new(), Vec::new());
        for w in self.workers {
            let (f, l) = tokio::time::timeout(PATIENCE, w)
                .await
                .expect("every request ends")
                .unwrap();
            failures.extend(f);
            latencies.extend(l);
        }
        failures.sort_by_key(|f| f.started);
        latencies.sort();
        Report {
            sent: self.shared.sent.load(Ordering::Relaxed),
            failures,
            latencies,
        }
    }
}
