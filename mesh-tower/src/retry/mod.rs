//! Retries, hedging and retry budgets (Envoy's route `retry_policy` and `hedge_policy`).
//!
//! [`Retry`] reads the route's compiled [`RetryPolicy`] from the
//! [`RouteDecision`] and sends the request again when an attempt
//! ends in a retriable way (`retry_on`: 5xx, gateway-error, reset, connect-failure,
//! refused-stream, retriable-4xx, retriable-status-codes, retriable-headers, and the gRPC
//! statuses cancelled, deadline-exceeded, internal, resource-exhausted, unavailable), up to
//! `num_retries`, waiting a fully jittered exponential backoff between attempts. Each attempt may
//! have its own `per_try_timeout`; the route timeout, applied above this layer, bounds them all.
//! With `hedge_on_per_try_timeout` a slow attempt is not cancelled: a new one starts next to
//! it and the first good response wins.
//!
//! **Why budgets.** Retries multiply load exactly when an upstream is failing: with 3 retries, a
//! dead upstream sees 4× its normal traffic from every client, which keeps it dead. Each retry
//! must therefore be admitted by the cluster's circuit breaker — `max_retries` in flight, or a
//! retry budget (a share of the requests in flight) — and a retry that is not admitted is not
//! sent: the caller gets the failed attempt's result. A client can then never push more than
//! `1 + budget` times its normal load onto a failing upstream.
//!
//! The request body is kept for replay in a [`ReplayBody`] up to the route's buffer limit
//! (64 KiB by default); a larger body is streamed once and not retried. Every attempt carries
//! `x-envoy-attempt-count`, and with the previous-hosts predicate each retry avoids the
//! endpoints already tried. Requests whose route has no retry policy (and no mirror) pass
//! through with no buffering and no allocation.

mod body;
pub mod future;
mod layer;
#[cfg(test)]
mod tests;

pub use self::body::ReplayBody;
pub use self::layer::RetryLayer;
pub use crate::policy::retry::RetryPolicy;

use self::future::ResponseFuture;
use crate::body::MeshBody;
use crate::endpoint::{AttemptNote, PreviousHosts, ServedBy};
use crate::error::{ErrorKind, MeshError};
use crate::policy::RouteDecision;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::{HeaderValue, Request, Response};
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

pub use crate::breaker::RetryLimits;

/// Retries requests by their route's policy.
pub struct Retry<S> {
    inner: S,
    limits: Option<Arc<dyn RetryLimits>>,
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Retry<S> {
    /// Wraps `inner`; `limits` admits retries (none: only `num_retries` bounds them).
    pub fn new(inner: S, limits: Option<Arc<dyn RetryLimits>>) -> Self {
        Self { inner, limits }
    }
}

impl<S, B> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<MeshBody>, Error = MeshError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // One extension lookup; routes without a policy clone nothing.
        let (retry, mirror_limit) = match req.extensions().get::<RouteDecision>() {
            Some(d) => match d.route.retry.as_ref().filter(|p| p.is_active()) {
                Some(p) => (Some((p.clone(), d.cluster.clone())), None),
                None => (
                    None,
                    (!d.route.mirrors.is_empty()).then_some(d.route.buffer_limit),
                ),
            },
            None => (None, None),
        };
        let Some((policy, cluster)) = retry else {
            let req = match mirror_limit {
                // Mirrors read the body from the replay record.
                Some(limit) => req.map(|b| ReplayBody::replayable(b, limit)),
                None => req.map(ReplayBody::direct),
            };
            return ResponseFuture::direct(self.inner.call(req));
        };
        let (head, body) = req.into_parts();
        let body = ReplayBody::replayable(body, policy.buffer_limit);
        let svc = self.inner.clone();
        let limits = self.limits.clone();
        ResponseFuture::retrying(Box::pin(run(svc, head, body, policy, limits, cluster)))
    }
}

type Attempt = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, MeshError>> + Send>>;

/// Attempt `n`'s request. With the previous-hosts predicate it carries the hosts to avoid and
/// the attempt's note (returned too), where the cluster records its pick.
fn attempt_request<B>(
    head: &http::request::Parts,
    body: ReplayBody<B>,
    n: u32,
    previous: &[SocketAddr],
    policy: &RetryPolicy,
) -> (Request<ReplayBody<B>>, Option<Arc<AttemptNote>>) {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    *req.extensions_mut() = head.extensions.clone();
    req.headers_mut()
        .insert("x-envoy-attempt-count", HeaderValue::from(n));
    let mut note = None;
    if policy.previous_hosts {
        let shared = Arc::new(AttemptNote::default());
        req.extensions_mut().insert(PreviousHosts {
            hosts: previous.to_vec(),
            attempts: policy.host_attempts,
            note: Some(shared.clone()),
        });
        note = Some(shared);
    }
    (req, note)
}

fn endpoint_of(res: &Result<Response<MeshBody>, MeshError>) -> Option<SocketAddr> {
    match res {
        Ok(r) => r.extensions().get::<ServedBy>().map(|s| s.endpoint),
        Err(e) => e.endpoint(),
    }
}

// A transient value, matched as soon as it is made: boxing would allocate per attempt.
#[allow(clippy::large_enum_variant)]
enum Event {
    Done(Result<Response<MeshBody>, MeshError>),
    PerTryTimeout,
}

/// The state of one request's attempts.
struct Attempts<S, B> {
    svc: S,
    head: http::request::Parts,
    template: Option<ReplayBody<B>>,
    first: Option<ReplayBody<B>>,
    policy: Arc<RetryPolicy>,
    limits: Option<Arc<dyn RetryLimits>>,
    cluster: Arc<str>,
    pending: FuturesUnordered<Attempt>,
    previous: Vec<SocketAddr>,
    /// Each attempt's note (with the previous-hosts predicate).
    notes: Vec<Arc<AttemptNote>>,
    started: u32,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Retries and hedges so far (gRPC's A96 metrics read them from the answer).
    retried: crate::stats::Retried,
}

impl<S, B> Attempts<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<MeshBody>, Error = MeshError>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
{
    /// Starts the next attempt: `Ok(false)` when the body cannot be replayed, `Err` when the
    /// cluster refuses the retry.
    async fn start(&mut self) -> Result<bool, MeshError> {
        let body = match self.first.take() {
            Some(b) => b,
            None => match self.template.as_ref().and_then(ReplayBody::try_clone) {
                Some(b) => b,
                None => return Ok(false),
            },
        };
        // A retry holds its slot in the cluster's retry limit while it is in flight.
        let guard = match &self.limits {
            Some(l) if self.started > 0 => Some(l.try_retry(&self.cluster)?),
            _ => None,
        };
        poll_fn(|cx| self.svc.poll_ready(cx)).await?;
        self.started += 1;
        // Every host an earlier attempt was sent to is avoided, answered or not.
        for host in self.notes.iter().filter_map(|n| n.endpoint()) {
            if !self.previous.contains(&host) {
                self.previous.push(host);
            }
        }
        let (req, note) =
            attempt_request(&self.head, body, self.started, &self.previous, &self.policy);
        self.notes.extend(note);
        let fut = self.svc.call(req);
        self.pending.push(Box::pin(async move {
            let res = fut.await;
            drop(guard);
            res
        }));
        self.deadline = self
            .policy
            .per_try_timeout
            .map(|t| Box::pin(tokio::time::sleep_until(Instant::now() + t)));
        Ok(true)
    }

    async fn next_event(&mut self) -> Event {
        poll_fn(|cx| {
            if let Poll::Ready(Some(res)) = self.pending.poll_next_unpin(cx) {
                return Poll::Ready(Event::Done(res));
            }
            if let Some(d) = self.deadline.as_mut()
                && d.as_mut().poll(cx).is_ready()
            {
                self.deadline = None;
                return Poll::Ready(Event::PerTryTimeout);
            }
            Poll::Pending
        })
        .await
    }

    /// The attempts of one request until one is the answer.
    async fn drive(&mut self) -> Result<Response<MeshBody>, MeshError> {
        let a = self;
        let policy = a.policy.clone();
        let mut last: Option<Result<Response<MeshBody>, MeshError>> = None;
        a.start().await?;
        loop {
            let outcome = match a.next_event().await {
                Event::Done(res) => {
                    if let Some(ep) = endpoint_of(&res)
                        && !a.previous.contains(&ep)
                    {
                        a.previous.push(ep);
                    }
                    let retriable = match &res {
                        Ok(r) => policy.retriable_response(r),
                        Err(e) => policy.retriable_error(e),
                    };
                    if !retriable {
                        return res;
                    }
                    if !a.pending.is_empty() {
                        // A hedged sibling is still running: its answer may yet be good.
                        last = Some(res);
                        continue;
                    }
                    res
                }
                Event::PerTryTimeout => {
                    let timed_out = Err(MeshError::new(
                        ErrorKind::PerTryTimeout,
                        format!(
                            "attempt {} got no response within per_try_timeout {:?}",
                            a.started,
                            policy.per_try_timeout.unwrap_or_default()
                        ),
                    )
                    .with_cluster(a.cluster.clone()));
                    if policy.hedge_on_per_try_timeout {
                        if a.started <= policy.max_retries && a.start().await.unwrap_or(false) {
                            a.retried.hedges += 1;
                            continue;
                        }
                        if !a.pending.is_empty() {
                            continue; // no more hedges: wait for the ones in flight
                        }
                    } else {
                        // Cancel the slow attempt; the cluster counts the timeout against
                        // its endpoint as it drops it.
                        crate::endpoint::dropping_timed_out(|| {
                            a.pending = FuturesUnordered::new();
                        });
                    }
                    if let Err(e) = &timed_out
                        && !policy.retriable_error(e)
                    {
                        return timed_out;
                    }
                    timed_out
                }
            };
            let last_outcome = last.take().unwrap_or(outcome);
            if a.started > policy.max_retries {
                return last_outcome;
            }
            let wait = policy.backoff(a.started, fastrand::u64(..));
            a.retried.delay += wait;
            tokio::time::sleep(wait).await;
            match a.start().await {
                Ok(true) => a.retried.retries += 1,
                Ok(false) => return last_outcome,
                Err(refused) => {
                    tracing::debug!(error = %refused, "retry not admitted");
                    return last_outcome;
                }
            }
        }
    }
}

/// The retry loop of one request; the answer (or error) notes its retries and hedges.
async fn run<S, B>(
    svc: S,
    head: http::request::Parts,
    body: ReplayBody<B>,
    policy: Arc<RetryPolicy>,
    limits: Option<Arc<dyn RetryLimits>>,
    cluster: Arc<str>,
) -> Result<Response<MeshBody>, MeshError>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<MeshBody>, Error = MeshError>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
{
    let mut a = Attempts {
        svc,
        head,
        template: body.try_clone(),
        first: Some(body),
        policy,
        limits,
        cluster,
        pending: FuturesUnordered::new(),
        previous: Vec::new(),
        notes: Vec::new(),
        started: 0,
        deadline: None,
        retried: crate::stats::Retried::default(),
    };
    let res = a.drive().await;
    let retried = a.retried;
    if retried == crate::stats::Retried::default() {
        return res;
    }
    match res {
        Ok(mut r) => {
            r.extensions_mut().insert(retried);
            Ok(r)
        }
        Err(e) => Err(e.with_retried(retried)),
    }
}
