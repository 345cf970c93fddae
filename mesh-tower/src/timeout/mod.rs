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
use crate::route::RouteDecision;
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
            None => self.default,
        };
        ResponseFuture::new(self.inner.call(req), limit)
    }
}

/// The limit a request on `route` runs under: the route's timeout or, when the route honours
/// it, the caller's `grpc-timeout`; shortened to the idle timeout, which before the response
/// head is a timeout too. gRPC requests follow gRFC A31 instead: the caller's deadline always
/// (less the route's offset), capped by `grpc_timeout_header_max` or else
/// `max_stream_duration`; the HTTP route timeout does not apply to them.
pub(crate) fn limit(
    route: &crate::route::RouteInfo,
    headers: &http::HeaderMap,
) -> Option<Duration> {
    let limit = if crate::grpc::is_grpc(headers) {
        let offset = route.grpc_timeout.map_or(Duration::ZERO, |(_, o)| o);
        let caller = grpc_timeout(headers).map(|t| t.saturating_sub(offset));
        match (caller, route.grpc_limit) {
            (Some(c), Some(l)) => Some(c.min(l)),
            (c, l) => c.or(l),
        }
    } else {
        http_limit(route, headers)
    };
    match (limit, route.idle_timeout) {
        (Some(l), Some(i)) => Some(l.min(i)),
        (l, i) => l.or(i),
    }
}

/// The limit of a plain HTTP request: the route timeout, or the caller's `grpc-timeout` where
/// the route honours it (Envoy's `grpc_timeout_header_max`).
fn http_limit(route: &crate::route::RouteInfo, headers: &http::HeaderMap) -> Option<Duration> {
    match route.grpc_timeout {
        Some((cap, offset)) => match grpc_timeout(headers) {
            // gRFC A31: the caller's deadline, less the offset, capped by the max.
            Some(t) => {
                let t = t.saturating_sub(offset);
                Some(cap.map_or(t, |c| t.min(c)))
            }
            None => route.timeout,
        },
        None => route.timeout,
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
