use super::{ServedBy, grpc_aware_status};
use crate::balance::weighted_round_robin::ReportSettings;
use crate::balance::{EndpointStats, InFlight};
use crate::body::{Hold, MeshBody};
use crate::breaker::Guard;
use crate::connect::Sending;
use crate::connect::Upstream;
use crate::error::{ErrorKind, MeshError};
use crate::outlier::{Detector, Outcome};
use http::Response;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

/// Response future of [`Dispatch`](super::Dispatch).
///
/// The connection's send future is boxed (hyper's cannot be named) and kept small: on a live
/// HTTP/2 connection the request is already queued and the box holds only the wait for the
/// answer. What happens when the answer arrives (in-flight and breaker accounting, latency,
/// outlier detection, load reports, [`ServedBy`]) lives here, unboxed. Failures before
/// sending (no endpoint, overflow) allocate nothing.
pub struct ResponseFuture {
    state: State,
}

// Boxing the large variant would allocate for every request; the small one is the rare path.
#[allow(clippy::large_enum_variant)]
enum State {
    Sending(Sending, Option<After>),
    Failed(Option<MeshError>),
}

/// The bookkeeping of one sent request, done when its answer (or failure) arrives.
pub(crate) struct After {
    /// Counts the request in the endpoint's in-flight number until its stream ends (the
    /// response body holds it from the head on).
    pub(crate) in_flight: InFlight,
    /// Holds the cluster's request slot (circuit breaker) as long.
    pub(crate) admitted: Guard,
    pub(crate) stats: Arc<EndpointStats>,
    pub(crate) detector: Option<Arc<Detector>>,
    /// The route's idle timeout, applied to the response body.
    pub(crate) idle: Option<Duration>,
    /// Peak EWMA: the decay and when the request was sent.
    pub(crate) ewma: Option<(Duration, Instant)>,
    /// Client-side weighted round robin: how load reports become weights.
    pub(crate) reports: Option<Arc<ReportSettings>>,
    pub(crate) served: ServedBy,
    /// The attempt's span (sampled calls of a tracing mesh).
    pub(crate) span: Option<Box<crate::trace::OpenSpan>>,
    /// The attempt's gRPC metrics (A66), for gRPC calls with metrics on.
    pub(crate) attempt: Option<Box<crate::stats::AttemptRecord>>,
    /// Whether the cluster reports its load (LRS): the outcome is counted.
    pub(crate) report_load: bool,
}

impl After {
    fn finish(
        self,
        res: Result<Response<Upstream>, MeshError>,
    ) -> Result<Response<MeshBody>, MeshError> {
        let After {
            in_flight,
            admitted,
            stats,
            detector,
            idle,
            ewma,
            reports,
            served,
            span,
            attempt,
            report_load,
        } = self;
        if report_load {
            let ok = match &res {
                Ok(r) => {
                    r.status().as_u16() < 500
                        && crate::stats::grpc_status(r.headers()).is_none_or(|s| s == 0)
                }
                Err(_) => false,
            };
            stats.load.finished(ok);
        }
        if let Some((decay, sent)) = ewma {
            // Failures count too: a fast error is not a fast endpoint, so they record the time
            // they took like any answer.
            stats.ewma.observe(sent.elapsed(), decay);
        }
        if let Some(d) = &detector {
            let outcome = match &res {
                Ok(r) => Outcome::Status(grpc_aware_status(r)),
                Err(_) => Outcome::LocalFailure,
            };
            d.report(&stats, outcome);
        }
        // h2's errors name no cluster or endpoint yet.
        let res = res.map_err(|e| match e.endpoint() {
            Some(_) => e,
            None => e
                .with_cluster(served.cluster.clone())
                .with_endpoint(served.endpoint),
        });
        if let Some(span) = span {
            // The attempt ends with its answer's head (the call's span covers the stream).
            match &res {
                Ok(r) => span.end(
                    r.status().as_u16(),
                    crate::stats::grpc_status(r.headers()),
                    None,
                ),
                Err(e) => span.end(0, None, Some(e.to_string())),
            }
        }
        let mut attempt = attempt;
        if let Some(a) = &mut attempt {
            match &res {
                Ok(r) => match crate::stats::grpc_status(r.headers()) {
                    Some(code) => a.set_status(code),
                    None if r.status() != http::StatusCode::OK => {
                        a.set_status(crate::grpc::http_to_grpc(r.status().as_u16()));
                    }
                    // The status comes in the trailers.
                    None => {}
                },
                Err(e) => a.set_status(e.kind().grpc_code()),
            }
        }
        let mut res = res?;
        // One hold, released when the response stream ends (see `body.rs`).
        let hold = Hold {
            _in_flight: in_flight,
            _admitted: admitted,
            _stream: res.body_mut().take_slot(),
        };
        let mut res = match idle {
            Some(d) => res.map(|b| MeshBody::upstream_idle(b, d)),
            None => res.map(MeshBody::upstream),
        };
        if let Some(settings) = reports {
            match settings.observe(res.headers(), &stats) {
                Ok(false) if settings.watch_trailers(res.headers()) => {
                    res = res.map(|b| b.reporting_to(settings, stats))
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(
                    endpoint = %served.endpoint,
                    error = %e,
                    "ignoring a malformed load report"
                ),
            }
        }
        res.extensions_mut().insert(served);
        let res = match attempt {
            Some(a) => res.map(|b| b.attempt(a)),
            None => res,
        };
        Ok(res.map(|b| b.holding(hold)))
    }
}

impl ResponseFuture {
    pub(crate) fn sending(send: Sending, after: After) -> Self {
        Self {
            state: State::Sending(send, Some(after)),
        }
    }

    pub(crate) fn failed(e: MeshError) -> Self {
        Self {
            state: State::Failed(Some(e)),
        }
    }
}

impl Drop for ResponseFuture {
    /// A request dropped unanswered because a timeout passed (the route's or its per-try
    /// timeout) failed at its endpoint: outlier detection counts it, as Envoy counts a
    /// timeout. Any other drop (the caller gave up) says nothing about the endpoint.
    fn drop(&mut self) {
        if let State::Sending(_, Some(after)) = &self.state
            && let Some(detector) = &after.detector
            && crate::endpoint::is_dropping_timed_out()
        {
            detector.report(&after.stats, Outcome::LocalFailure);
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn polled_after_completion() -> MeshError {
    MeshError::new(ErrorKind::NoEndpoint, "polled after completion")
}

impl Future for ResponseFuture {
    type Output = Result<Response<MeshBody>, MeshError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Sending(send, after) => {
                let res = ready!(Pin::new(send).poll(cx));
                Poll::Ready(match after.take() {
                    Some(after) => after.finish(res),
                    None => Err(polled_after_completion()),
                })
            }
            State::Failed(e) => Poll::Ready(Err(e.take().unwrap_or_else(polled_after_completion))),
        }
    }
}
