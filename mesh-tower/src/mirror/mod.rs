//! Request mirroring (Envoy's `request_mirror_policies`): a fire-and-forget copy of a share of
//! requests to a shadow cluster.
//!
//! Shadow traffic lets a new version see production requests without serving them. The copy
//! must never affect the primary: it is sent from its own task, its response and errors are
//! discarded, and it reads the request body from the replay record (see
//! [`ReplayBody`]) so the primary's body is not held back. A body too
//! large for the record is not mirrored (counted in [`Mirror::skipped`]). As in Envoy, the
//! copy's authority gets a `-shadow` suffix, and only the first attempt of a retried request is
//! mirrored.

mod layer;
#[cfg(test)]
mod tests;

pub use self::layer::MirrorLayer;

use crate::body::MeshBody;
use crate::error::MeshError;
use crate::policy::RouteDecision;
pub use crate::policy::mirror::{MirrorPolicy, MirrorStats};
use crate::retry::ReplayBody;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri, header};
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tower_service::Service;

/// Sends shadow copies of requests whose route mirrors them.
#[derive(Clone, Debug)]
pub struct Mirror<S> {
    inner: S,
    rng: crate::draw::Draw,
    stats: Arc<MirrorStats>,
}

impl<S> Mirror<S> {
    /// Wraps `inner` (which also sends the copies); `seed` pins the fraction draws of this
    /// instance (tests), `None` draws from the thread's generator.
    pub fn new(inner: S, seed: Option<u64>, stats: Arc<MirrorStats>) -> Self {
        Self {
            inner,
            rng: crate::draw::Draw::new(seed),
            stats,
        }
    }

    /// Copies sent so far.
    pub fn sent(&self) -> u64 {
        self.stats.sent.load(Ordering::Relaxed)
    }

    /// Copies not sent because the body could not be replayed.
    pub fn skipped(&self) -> u64 {
        self.stats.skipped.load(Ordering::Relaxed)
    }
}

fn shadow_authority(a: &Authority) -> Option<Authority> {
    let shadow = match a.port() {
        Some(p) => format!("{}-shadow:{}", a.host(), p.as_str()),
        None => format!("{}-shadow", a.host()),
    };
    Authority::try_from(shadow).ok()
}

impl<S, B> Service<Request<ReplayBody<B>>> for Mirror<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<MeshBody>, Error = MeshError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MeshError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody<B>>) -> Self::Future {
        // Only the first attempt is mirrored (the header lookup is skipped without mirrors).
        let first_attempt = || {
            req.headers()
                .get("x-envoy-attempt-count")
                .is_none_or(|v| v.as_bytes() == b"1")
        };
        if let Some(decision) = req.extensions().get::<RouteDecision>()
            && !decision.route.mirrors.is_empty()
            && first_attempt()
        {
            for m in decision.route.mirrors.iter() {
                if !m.fraction.is_none_or(|f| f.hits(self.rng.u64())) {
                    continue;
                }
                let Some(body) = req.body().try_clone() else {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut copy = Request::new(body);
                *copy.method_mut() = req.method().clone();
                *copy.version_mut() = req.version();
                *copy.headers_mut() = req.headers().clone();
                *copy.extensions_mut() = req.extensions().clone();
                let mut parts = req.uri().clone().into_parts();
                if let Some(a) = parts.authority.as_ref().and_then(shadow_authority) {
                    if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                        copy.headers_mut().insert(header::HOST, v);
                    }
                    parts.authority = Some(a);
                }
                *copy.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
                let mut d = decision.clone();
                d.cluster = m.cluster.clone();
                d.cluster_headers = None;
                copy.extensions_mut().insert(d);
                let mut svc = self.inner.clone();
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if poll_fn(|cx| svc.poll_ready(cx)).await.is_ok()
                        && let Err(e) = svc.call(copy).await
                    {
                        tracing::debug!(error = %e, "mirrored request failed (ignored)");
                    }
                });
            }
        }
        self.inner.call(req)
    }
}
