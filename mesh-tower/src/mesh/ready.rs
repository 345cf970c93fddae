//! Wait-for-ready: calls that wait for their target to be able to serve them.
//!
//! By default a call that the mesh cannot send (no endpoint, the cluster or the listener not
//! in the config) fails at once, as a gRPC call does by default while its channel is in
//! TRANSIENT_FAILURE: during a config gap (all endpoints removed, a cluster being replaced)
//! callers see errors at once and decide themselves. gRPC's *wait-for-ready* calls instead wait,
//! bounded by their deadline, until the channel can serve them. [`ChannelOptions::wait_for_ready`]
//! makes that a channel's default; [`WaitForReady`] in a request's extensions decides per call.
//!
//! A waiting call checks again on every config change and every [`RECHECK`] (endpoints also come
//! back without one: an ejection ends, a DNS name resolves). Its deadline is the request's
//! `grpc-timeout`; the time spent waiting is taken off it before the call goes out. Without a
//! deadline it waits as long as its caller does, as in gRPC. Only the config-driven failures
//! wait (`NoConfig`, `UnknownCluster`, `NoEndpoint`); a request no route matches, a full
//! circuit breaker, or a connection that fails after the pick fail as before.

use super::lean::Router;
use crate::error::{ErrorKind, MeshError};
use crate::{RequestBody, timeout};
use http::{HeaderValue, Request};
use mesh_core::Store;
use std::time::Duration;
use tokio::time::Instant;

/// How often a waiting call checks again without a config change.
pub const RECHECK: Duration = Duration::from_millis(250);

/// Per-call wait-for-ready, in a request's extensions: overrides the channel's
/// [`ChannelOptions::wait_for_ready`].
///
/// ```
/// let mut req = http::Request::get("/").body(()).unwrap();
/// req.extensions_mut().insert(mesh_tower::WaitForReady(true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitForReady(pub bool);

/// Options of a channel made with [`Mesh::channel_with`](super::Mesh::channel_with).
///
/// ```no_run
/// # async fn demo(mesh: mesh_tower::Mesh) {
/// use mesh_tower::ChannelOptions;
/// let channel = mesh.channel_with::<http_body_util::Empty<bytes::Bytes>>(
///     "xds:///greeter",
///     ChannelOptions::default().wait_for_ready(true),
/// );
/// # let _ = channel; }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    pub(crate) wait_for_ready: bool,
}

impl ChannelOptions {
    /// Calls wait, bounded by their deadline (`grpc-timeout`, shortened by the wait), for the
    /// target to be able to serve them instead of failing at once with `NoConfig`,
    /// `UnknownCluster` or `NoEndpoint` (default `false`, gRPC's default). A waiting call
    /// checks again on every config change and every [`RECHECK`].
    pub fn wait_for_ready(mut self, on: bool) -> Self {
        self.wait_for_ready = on;
        self
    }
}

/// Whether a failure of this kind waits (the config can end it).
pub(super) fn waits(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::NoConfig | ErrorKind::UnknownCluster | ErrorKind::NoEndpoint
    )
}

/// Waits until `router` can send `req` (or its deadline passes), with the deadline shortened by
/// the wait.
pub(super) async fn until_ready<F, B>(
    router: &Router<F, B>,
    store: &Store,
    mut req: Request<B>,
) -> Result<Request<B>, MeshError>
where
    F: tower_service::Service<
            Request<B>,
            Response = http::Response<crate::MeshBody>,
            Error = MeshError,
        > + Clone,
    B: RequestBody,
{
    let start = Instant::now();
    let deadline = timeout::grpc_timeout(req.headers()).map(|t| start + t);
    let mut changed = store.changed();
    loop {
        changed.borrow_and_update();
        let last = match router.check(&mut req) {
            Ok(()) => break,
            Err(e) if waits(e.kind()) => e,
            // A failure waiting cannot end: the call goes out and fails with it.
            Err(_) => break,
        };
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(MeshError::new(
                ErrorKind::Timeout,
                format!(
                    "the call's deadline passed after {:?} waiting for the target to be ready: {last}",
                    now - start
                ),
            ));
        }
        let wake = deadline.map_or(now + RECHECK, |d| d.min(now + RECHECK));
        // A config change, the recheck interval or the deadline, whichever comes first.
        let _ = tokio::time::timeout_at(wake, changed.changed()).await;
    }
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        // gRPC's unit letters allow 8 digits: milliseconds cover 27 hours.
        let ms = left.as_millis().clamp(1, 99_999_999);
        if let Ok(v) = HeaderValue::from_str(&format!("{ms}m")) {
            req.headers_mut().insert("grpc-timeout", v);
        }
    }
    Ok(req)
}
