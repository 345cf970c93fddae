//! Route timeout: fail a request whose response has not started within the route's limit.
//!
//! Envoy's route `timeout` (default 15 s, `0s` disables it) bounds the whole exchange, retries
//! included; it is the outermost per-request policy. This layer reads the limit from the
//! [`RouteDecision`] the route layer left in the request, falling
//! back to its own default, so it works both inside the mesh stack and on its own.
//!
//! The limit covers the wait for the response head. Streaming bodies (gRPC server streams,
//! downloads) are not cut off once the head has arrived: that keeps long gRPC streams working
//! under Envoy's 15 s default, where Envoy users must otherwise remember to set `timeout: 0s`.
//!
//! ```
//! use std::time::Duration;
//! use mesh_tower::timeout::TimeoutLayer;
//! use tower_layer::Layer;
//! # #[derive(Clone)] struct Svc;
//! let layer = TimeoutLayer::new(Some(Duration::from_secs(2)));
//! let _svc = layer.layer(Svc);
//! ```

pub mod future;
mod layer;

pub use self::layer::TimeoutLayer;

use self::future::ResponseFuture;
use crate::error::MeshError;
use crate::policy::RouteDecision;
use http::Request;
use mesh_core::BoxError;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// Applies the route timeout to each request.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    default: Option<Duration>,
}

// ===== impl Timeout =====

impl<S> Timeout<S> {
    /// Wraps `inner`; `default` applies to requests without a route decision.
    pub const fn new(inner: S, default: Option<Duration>) -> Self {
        Self { inner, default }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = MeshError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(MeshError::from_inner)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = match req.extensions().get::<RouteDecision>() {
            Some(decision) => limit(&decision.route, req.headers()),
            None => self.default.map(|d| Limit::new(d, LimitSource::Route)),
        };
        ResponseFuture::new(self.inner.call(req), limit)
    }
}

/// A time limit on a request, and where it comes from (the error says which fired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    /// How long the request may take.
    pub(crate) after: Duration,
    /// Where the limit comes from.
    pub(crate) source: LimitSource,
}

/// Where a request's time limit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LimitSource {
    /// The route's `timeout` (Envoy's 15 s by default) or the layer's default.
    Route,
    /// The caller's own deadline (`grpc-timeout`).
    Deadline,
    /// The route's limit on gRPC calls (`max_stream_duration` or `grpc_timeout_header_max`).
    StreamDuration,
    /// The route's `idle_timeout`: no response head within it.
    Idle,
}

impl Limit {
    fn new(after: Duration, source: LimitSource) -> Self {
        Self { after, source }
    }

    /// The error a request gets when this limit passes.
    pub(crate) fn error(&self) -> MeshError {
        let after = self.after;
        match self.source {
            LimitSource::Route => MeshError::timeout(after),
            LimitSource::Deadline => MeshError::new(
                crate::ErrorKind::Timeout,
                format!("the caller's deadline passed (grpc-timeout of {after:?})"),
            ),
            LimitSource::StreamDuration => MeshError::new(
                crate::ErrorKind::Timeout,
                format!("the route's max_stream_duration of {after:?} elapsed"),
            ),
            LimitSource::Idle => MeshError::new(
                crate::ErrorKind::Timeout,
                format!("stream idle timeout: no response within {after:?}"),
            ),
        }
    }
}

/// The earlier of two limits.
fn earlier(a: Option<Limit>, b: Option<Limit>) -> Option<Limit> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.after < a.after { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The limit a request on `route` runs under: the route's timeout or, when the route honours
/// it, the caller's `grpc-timeout`; shortened to the idle timeout, which before the response
/// head is a timeout too. gRPC requests follow gRFC A31 instead: the caller's deadline always
/// (less the route's offset), capped by `grpc_timeout_header_max` or else
/// `max_stream_duration`; the HTTP route timeout does not apply to them.
pub(crate) fn limit(route: &crate::route::RoutePolicy, headers: &http::HeaderMap) -> Option<Limit> {
    let limit = if crate::grpc::is_grpc(headers) {
        let offset = route.grpc_timeout.map_or(Duration::ZERO, |(_, o)| o);
        let caller = grpc_timeout(headers)
            .map(|t| Limit::new(t.saturating_sub(offset), LimitSource::Deadline));
        let cap = route
            .grpc_limit
            .map(|d| Limit::new(d, LimitSource::StreamDuration));
        earlier(caller, cap)
    } else {
        http_limit(route, headers)
    };
    let idle = route.idle_timeout.map(|d| Limit::new(d, LimitSource::Idle));
    earlier(limit, idle)
}

/// The limit of a plain HTTP request: the route timeout, or the caller's `grpc-timeout` where
/// the route honours it (Envoy's `grpc_timeout_header_max`).
fn http_limit(route: &crate::route::RoutePolicy, headers: &http::HeaderMap) -> Option<Limit> {
    let route_limit = route.timeout.map(|d| Limit::new(d, LimitSource::Route));
    match route.grpc_timeout {
        Some((cap, offset)) => match grpc_timeout(headers) {
            // gRFC A31: the caller's deadline, less the offset, capped by the max.
            Some(t) => {
                let caller = Limit::new(t.saturating_sub(offset), LimitSource::Deadline);
                earlier(
                    Some(caller),
                    cap.map(|c| Limit::new(c, LimitSource::StreamDuration)),
                )
            }
            None => route_limit,
        },
        None => route_limit,
    }
}

/// Parses gRPC's `grpc-timeout` header: up to 8 digits and a unit (`H M S m u n`).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
