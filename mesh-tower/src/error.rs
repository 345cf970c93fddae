//! The mesh's request error: what went wrong, and for which target, route, cluster, endpoint.
//!
//! Errors are built where the failure happens (a connect in the endpoint layer knows the cluster
//! and the address) and completed on the way out (the route layer adds the target and route), so
//! the message a user finally sees names every hop:
//! `target "web", route "canary", cluster "web-canary": connect to 127.0.0.1:9 failed: connection refused`.
//!
//! [`ErrorKind`] is stable for programs (metrics, the probe's `errors` map) and maps to a gRPC
//! status code, used when a gRPC caller gets a local reply.

use mesh_core::BoxError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What kind of failure a [`MeshError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The target string cannot be used.
    InvalidTarget,
    /// The target's listener, or the route config it names, is not in the config.
    NoConfig,
    /// No virtual host or route matches the request.
    NoRoute,
    /// The route names a cluster that is not in the config.
    UnknownCluster,
    /// The cluster has no usable endpoint.
    NoEndpoint,
    /// Connecting to the chosen endpoint failed.
    Connect,
    /// The route timeout elapsed.
    Timeout,
    /// The connection failed after the request was sent (reset, protocol error, closed).
    Upstream,
    /// A circuit breaker refused the request (a cluster's concurrency limit was reached).
    Overflow,
    /// A retry attempt's `per_try_timeout` elapsed (and no attempt was left).
    PerTryTimeout,
}

impl ErrorKind {
    /// A short snake_case name (`no_route`, `connect`, …) for metrics and tools.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidTarget => "invalid_target",
            ErrorKind::NoConfig => "no_config",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::UnknownCluster => "unknown_cluster",
            ErrorKind::NoEndpoint => "no_endpoint",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Overflow => "overflow",
            ErrorKind::PerTryTimeout => "per_try_timeout",
        }
    }

    /// The gRPC status code a gRPC caller sees for this failure. Routing and endpoint failures
    /// are UNAVAILABLE (gRFC A28 for "no route"), a timeout is DEADLINE_EXCEEDED, a bad target
    /// INVALID_ARGUMENT.
    pub fn grpc_code(self) -> u16 {
        match self {
            ErrorKind::InvalidTarget => 3,
            ErrorKind::Timeout | ErrorKind::PerTryTimeout => 4,
            _ => 14,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that the mesh could not complete.
///
/// ```
/// use mesh_tower::{ErrorKind, MeshError};
/// let e = MeshError::new(ErrorKind::NoEndpoint, "no usable endpoint (0 of 3 healthy)")
///     .with_cluster("payments".into())
///     .with_target("payments".into());
/// assert_eq!(e.kind(), ErrorKind::NoEndpoint);
/// assert_eq!(
///     e.to_string(),
///     "target \"payments\", cluster \"payments\": no usable endpoint (0 of 3 healthy)"
/// );
/// ```
///
/// One pointer wide: the details are boxed, so `Result<Response, MeshError>` stays small on the
/// request path and the box is only allocated when something fails.
pub struct MeshError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    detail: String,
    target: Option<Arc<str>>,
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    endpoint: Option<SocketAddr>,
    source: Option<BoxError>,
    /// The call's retries and hedges, when it had any (for gRPC's A96 metrics).
    retried: Option<Retried>,
}

impl MeshError {
    /// A new error of `kind`, with a human reason.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            detail: detail.into(),
            target: None,
            route: None,
            cluster: None,
            endpoint: None,
            source: None,
            retried: None,
        }))
    }

    /// The route timeout elapsed.
    pub fn timeout(after: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("route timeout of {after:?} elapsed"),
        )
    }

    /// Sets the target, if not already set.
    pub fn with_target(mut self, target: Arc<str>) -> Self {
        self.0.target.get_or_insert(target);
        self
    }

    /// Sets the route, if not already set.
    pub fn with_route(mut self, route: Arc<str>) -> Self {
        self.0.route.get_or_insert(route);
        self
    }

    /// Sets the cluster, if not already set.
    pub fn with_cluster(mut self, cluster: Arc<str>) -> Self {
        self.0.cluster.get_or_insert(cluster);
        self
    }

    /// Sets the endpoint.
    pub fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.0.endpoint = Some(endpoint);
        self
    }

    /// Sets the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// The same failure again, for each of several waiters on one attempt (the cause is kept
    /// as text: error sources cannot be cloned).
    pub(crate) fn restate(&self) -> MeshError {
        let i = &self.0;
        MeshError(Box::new(Inner {
            kind: i.kind,
            detail: i.detail.clone(),
            target: i.target.clone(),
            route: i.route.clone(),
            cluster: i.cluster.clone(),
            endpoint: i.endpoint,
            source: i.source.as_ref().map(|s| s.to_string().into()),
            retried: i.retried,
        }))
    }

    /// Notes the call's retries and hedges.
    pub(crate) fn with_retried(mut self, retried: Retried) -> Self {
        self.0.retried = Some(retried);
        self
    }

    /// The call's retries and hedges, when it had any.
    pub(crate) fn retried(&self) -> Option<&Retried> {
        self.0.retried.as_ref()
    }

    /// Whether the upstream refused the HTTP/2 stream, so that it was never processed and is
    /// safe to retry: a REFUSED_STREAM reset, or a stream the peer's GOAWAY left out (its id
    /// above the GOAWAY's last-stream-id, which RFC 9113 §6.8 guarantees went unprocessed; h2
    /// fails exactly those streams with the peer's GOAWAY). Envoy reports both as a refused
    /// stream (`retry_on: refused-stream`); judged from the error chain hyper and h2 report.
    pub fn is_refused_stream(&self) -> bool {
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            if let Some(h2) = e.downcast_ref::<h2::Error>()
                && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (h2.is_go_away() && h2.is_remote()))
            {
                return true;
            }
            if e.to_string().contains("refused stream")
                || format!("{e:?}").contains("REFUSED_STREAM")
            {
                return true;
            }
            source = e.source();
        }
        false
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The target the request was sent to.
    pub fn target(&self) -> Option<&str> {
        self.0.target.as_deref()
    }

    /// The route that matched.
    pub fn route(&self) -> Option<&str> {
        self.0.route.as_deref()
    }

    /// The cluster chosen.
    pub fn cluster(&self) -> Option<&str> {
        self.0.cluster.as_deref()
    }

    /// The endpoint chosen.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.0.endpoint
    }

    /// Finds a `MeshError` in a boxed error or its source chain.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a MeshError> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(m) = e.downcast_ref::<MeshError>() {
                return Some(m);
            }
            cur = e.source();
        }
        None
    }

    /// Adds context to any error coming out of an inner service: a `MeshError` keeps its kind,
    /// anything else becomes [`ErrorKind::Upstream`].
    pub fn from_inner(err: impl Into<BoxError>) -> Self {
        match err.into().downcast::<MeshError>() {
            Ok(m) => *m,
            Err(other) => MeshError::new(ErrorKind::Upstream, "request failed").with_source(other),
        }
    }
}

impl fmt::Debug for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut part = |f: &mut fmt::Formatter<'_>, name: &str, v: &dyn fmt::Display| {
            let r = write!(f, "{sep}{name} \"{v}\"");
            sep = ", ";
            r
        };
        if let Some(t) = &self.0.target {
            part(f, "target", t)?;
        }
        if let Some(r) = &self.0.route {
            part(f, "route", r)?;
        }
        if let Some(c) = &self.0.cluster {
            part(f, "cluster", c)?;
        }
        if let Some(e) = &self.0.endpoint {
            part(f, "endpoint", e)?;
        }
        if !sep.is_empty() {
            f.write_str(": ")?;
        }
        f.write_str(&self.0.detail)?;
        if let Some(src) = &self.0.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MeshError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source.as_deref().map(|e| e as _)
    }
}

/// What a call's attempts beyond the first were: the retry layer's account, in the response
/// extensions of a call that was retried or hedged (gRPC's A96 metrics read it there). It
/// lives here, below the layers that use it, so that errors can carry it too.
///
/// ```
/// use mesh_tower::telemetry::Retried;
///
/// fn retries<B>(res: &http::Response<B>) -> u32 {
///     res.extensions().get::<Retried>().map_or(0, |r| r.retries)
/// }
/// assert_eq!(retries(&http::Response::new(())), 0, "not retried: nothing to read");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retried {
    /// Attempts started after a failed one.
    pub retries: u32,
    /// Attempts started beside a slow one (hedging).
    pub hedges: u32,
    /// Time spent waiting in backoff between attempts.
    pub delay: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(source: h2::Error) -> MeshError {
        MeshError::new(ErrorKind::Upstream, "request to endpoint failed").with_source(source)
    }

    #[test]
    fn a_refused_stream_is_recognised_from_h2s_reason_and_other_resets_are_not() {
        assert!(upstream(h2::Error::from(h2::Reason::REFUSED_STREAM)).is_refused_stream());
        for reason in [
            h2::Reason::INTERNAL_ERROR,
            h2::Reason::CANCEL,
            h2::Reason::NO_ERROR,
        ] {
            assert!(
                !upstream(h2::Error::from(reason)).is_refused_stream(),
                "{reason:?}"
            );
        }
        assert!(!MeshError::new(ErrorKind::Upstream, "x").is_refused_stream());
    }
}
