//! [`MeshService`]: what [`Mesh::channel`](super::Mesh::channel) and
//! [`Mesh::http_client`](super::Mesh::http_client) hand out.
//!
//! A channel made before its config has arrived behaves as a gRPC channel that is still
//! connecting: calls wait for the config instead of failing. With a control plane the listener,
//! route config, clusters and endpoints arrive one after the other, and a service that calls
//! right after start-up would otherwise see `NoConfig` or `NoEndpoint` for the first few
//! milliseconds. The wait ends when the target's config is complete, when the source says a
//! resource does not exist (the xDS client's does-not-exist timeout, 15 s by default), or after
//! [`STARTUP_WAIT`]. Once a target has been complete, calls never wait again: later gaps are
//! real errors and are reported at once.

use super::lean::Router;
use super::ready::{self, ChannelOptions, WaitForReady};
use super::{Mesh, Ready, readiness};
use crate::RequestBody;
use crate::body::MeshBody;
use crate::cluster::Dispatch;
use crate::error::MeshError;
use crate::fault::Fault;
use crate::grpc;
use crate::local::LocalAnswers;
use crate::mirror::Mirror;
use crate::ratelimit::RateLimit;
use crate::retry::{ReplayBody, Retry};
use crate::rewrite::RewriteService;
use crate::stats::Flags;
use crate::telemetry::ClientCall;
use crate::timeout::Timeout;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// The longest a call waits for its target's first complete config.
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// A service routing through the mesh: what [`Mesh::channel`] and [`Mesh::http_client`]
/// return. It is `Clone` (a clone is one reference count), always ready, and keeps its
/// [`Mesh`]'s background work alive as long as it lives.
///
/// - gRPC requests (content-type `application/grpc*`) that the mesh itself fails get a
///   trailers-only gRPC response (`grpc-status` UNAVAILABLE, DEADLINE_EXCEEDED, … and the
///   message; [`LocalReply`] in its extensions); other callers get the [`MeshError`].
/// - A channel's calls made before its target's config is first complete wait for it (at most
///   [`STARTUP_WAIT`], or until the config source says a resource does not exist); after that,
///   a call the config cannot serve fails at once, unless it is wait-for-ready
///   ([`ChannelOptions::wait_for_ready`], [`WaitForReady`]).
///
/// ```no_run
/// # async fn demo(mesh: mesh_tower::Mesh) {
/// use tower_service::Service;
/// let mut web = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///web");
/// // Right after start-up: waits for the listener, routes, cluster and endpoints.
/// let res = web.call(http::Request::get("/").body(Default::default()).unwrap()).await;
/// # let _ = res;
/// # }
/// ```
pub struct MeshService<B> {
    // Shared by all clones: tower callers clone a service per request (`oneshot`, tonic's
    // generated clients). A clone of the whole stack took and released seven reference
    // counts; this is one.
    shared: Arc<Shared<B>>,
}

struct Shared<B> {
    router: Router<Stack<B>, B>,
    startup: Option<Startup>,
    /// The mesh it was made from: its background work (the config source, the refresher)
    /// lives as long as any service made from it, as a tonic `Channel`'s does.
    mesh: Mesh,
    /// The channel's default for calls without [`WaitForReady`].
    wait_for_ready: bool,
    /// Istio's request metrics, when the mesh records them.
    telemetry: Option<crate::telemetry::Telemetry>,
    /// The channel's target (`None`: the HTTP client), for gRPC's call metrics.
    target: Option<Arc<str>>,
}

impl<B> MeshService<B> {
    pub(super) fn new(
        router: Router<Stack<B>, B>,
        startup: Option<Startup>,
        mesh: Mesh,
        options: ChannelOptions,
        target: Option<&str>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                router,
                startup,
                telemetry: mesh.telemetry().cloned(),
                target: target.map(Arc::from),
                mesh,
                wait_for_ready: options.wait_for_ready,
            }),
        }
    }
}

/// The policy stack behind the route layer, outermost first: local answers, rate limit,
/// faults, rewrites, the route timeout, retries, mirrors, and the cluster dispatch.
pub(super) type Stack<B> =
    LocalAnswers<RateLimit<Fault<RewriteService<Timeout<Retry<Mirror<Dispatch<ReplayBody<B>>>>>>>>>;

/// A channel's start-up state: its listener, and whether its config has been complete yet.
pub(super) struct Startup {
    pub(super) listener: String,
    pub(super) ready: AtomicBool,
    /// The store version at which the config was found unable to serve this target (a
    /// resource that does not exist): until the config changes, calls route at once without
    /// walking the config again.
    pub(super) refused_at: AtomicU64,
}

impl Startup {
    pub(super) fn new(listener: &str) -> Self {
        Self {
            listener: listener.to_owned(),
            ready: AtomicBool::new(false),
            refused_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether `mesh`'s config is still incomplete for this target (`false`: route now).
    fn pending(&self, mesh: &Mesh) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return false;
        }
        let store = mesh.store();
        let version = store.version();
        if self.refused_at.load(Ordering::Relaxed) == version {
            return false;
        }
        let on_demand = store.source_status().borrow().on_demand;
        match readiness(&store.load(), &self.listener, on_demand) {
            Ready::Pending(_) => true,
            Ready::Yes => {
                self.ready.store(true, Ordering::Relaxed);
                false
            }
            // The route layer reports what is missing.
            Ready::No(_) => {
                self.refused_at.store(version, Ordering::Relaxed);
                false
            }
        }
    }

    /// The version of the last refusal (tests).
    #[cfg(test)]
    pub(super) fn refused_at(&self) -> u64 {
        self.refused_at.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
impl<B> MeshService<B> {
    pub(super) fn startup(&self) -> Option<&Startup> {
        self.shared.startup.as_ref()
    }
}

impl<B> Clone for MeshService<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B> fmt::Debug for MeshService<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for MeshService<B>
where
    B: RequestBody,
{
    type Response = Response<MeshBody>;
    type Error = MeshError;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let grpc = grpc::is_grpc(req.headers());
        let call = self.shared.telemetry.as_ref().map(|t| {
            let log = self.shared.router.listener_log(&req);
            ClientCall::start(t, &mut req, self.shared.target.as_ref(), log.as_ref())
        });
        let wait = req
            .extensions()
            .get::<WaitForReady>()
            .map_or(self.shared.wait_for_ready, |w| w.0);
        let shared = &self.shared;
        let starting = shared
            .startup
            .as_ref()
            .is_some_and(|s| s.pending(&shared.mesh));
        // Rare paths (boxed): before the target's first complete config, and wait-for-ready
        // calls that cannot be sent now.
        if starting
            || (wait
                && self
                    .shared
                    .router
                    .check(&mut req)
                    .is_err_and(|e| ready::waits(e.kind())))
        {
            let shared = self.shared.clone();
            let wait = async move {
                let mut req = req;
                if let (true, Some(startup)) = (starting, &shared.startup) {
                    shared
                        .mesh
                        .wait_ready(&startup.listener, STARTUP_WAIT)
                        .await?;
                    startup.ready.store(true, Ordering::Relaxed);
                }
                if wait {
                    req = ready::until_ready(&shared.router, shared.mesh.store(), req).await?;
                }
                shared.router.route(req).await
            };
            return ResponseFuture::waiting(Box::pin(wait), grpc, call);
        }
        let inner = if self.shared.startup.is_some() {
            self.shared.router.route(req)
        } else {
            // The HTTP client: an authority whose config is still on its way (first use, or
            // subscribed again after nothing used it) waits for it, as a channel's first calls
            // do; any other failure is reported at once.
            match self.shared.router.try_route(req) {
                Ok(routed) => routed,
                Err((req, e)) => match pending_target(&self.shared.mesh, &e) {
                    Some(target) => {
                        let shared = self.shared.clone();
                        let wait = async move {
                            shared.mesh.wait_ready(&target, STARTUP_WAIT).await?;
                            shared.router.route(req).await
                        };
                        return ResponseFuture::waiting(Box::pin(wait), grpc, call);
                    }
                    None => crate::route::future::ResponseFuture::failed(e),
                },
            }
        };
        ResponseFuture {
            state: State::Routed { inner },
            grpc,
            polled: false,
            call,
        }
    }
}

/// The target of a `NoConfig` failure whose config has been asked for and not come yet.
fn pending_target(mesh: &Mesh, e: &MeshError) -> Option<String> {
    if e.kind() != crate::error::ErrorKind::NoConfig {
        return None;
    }
    let target = e.target()?;
    let store = mesh.store();
    let on_demand = store.source_status().borrow().on_demand;
    matches!(
        readiness(&store.load(), target, on_demand),
        Ready::Pending(_)
    )
    .then(|| target.to_owned())
}

type InnerFuture<B> = super::lean::RouterFuture<Stack<B>, B>;

type Waiting = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, MeshError>> + Send>>;

pin_project! {
    /// Response future of [`MeshService`].
    pub struct ResponseFuture<B>
    where
        B: RequestBody,
    {
        #[pin]
        state: State<B>,
        grpc: bool,
        // Whether the call has been polled once (see `poll`).
        polled: bool,
        // The call's metrics (see `crate::telemetry`), when the mesh records them.
        call: Option<ClientCall>,
    }

    impl<B> PinnedDrop for ResponseFuture<B>
    where
        B: RequestBody,
    {
        // A call dropped before its answer (the caller gave up) is counted, as Envoy counts
        // a downstream disconnect: no response code, `DC`.
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.cancelled();
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B>
    where
        B: RequestBody,
    {
        Routed { #[pin] inner: InnerFuture<B> },
        // Before the target's first complete config (rare: boxed).
        Waiting { wait: Waiting },
    }
}

impl<B> ResponseFuture<B>
where
    B: RequestBody,
{
    fn waiting(wait: Waiting, grpc: bool, call: Option<ClientCall>) -> Self {
        Self {
            state: State::Waiting { wait },
            grpc,
            polled: false,
            call,
        }
    }
}

impl<B> fmt::Debug for ResponseFuture<B>
where
    B: RequestBody,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: RequestBody,
{
    type Output = Result<Response<MeshBody>, MeshError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // A call that completes on its first poll (no endpoint, unknown cluster, overflow, a
        // local answer, an injected abort, a rate limit) awaits nothing of tokio's, so a caller
        // looping over such calls would never yield and could starve every task that shares
        // its worker. Such a call spends a unit of the task's cooperative budget, as a tokio
        // resource that is ready does; with the budget spent, it yields first. A call that
        // waits gives the unit back: its I/O is budgeted by tokio itself.
        let coop = if *this.polled {
            None
        } else {
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            *this.polled = true;
            Some(coop)
        };
        let out = match this.state.project() {
            StateProj::Routed { inner } => inner.poll(cx),
            StateProj::Waiting { wait } => wait.as_mut().poll(cx),
        };
        if let (Some(coop), Poll::Ready(_)) = (&coop, &out) {
            coop.made_progress();
        }
        let call = match &out {
            Poll::Ready(_) => this.call.take(),
            Poll::Pending => None,
        };
        match out {
            Poll::Ready(Err(e)) if *this.grpc => {
                tracing::debug!(error = %e, "gRPC request failed in the mesh; answering with a status");
                let mut res = grpc::local_reply(&e);
                res.extensions_mut().insert(LocalReply(e.kind()));
                if let Some(call) = call {
                    if let Some(ctx) = call.context() {
                        res.extensions_mut().insert(ctx.clone());
                    }
                    let record = call.failed(&e);
                    return Poll::Ready(Ok(res.map(|b| b.recording(record))));
                }
                Poll::Ready(Ok(res))
            }
            Poll::Ready(Ok(mut res)) => Poll::Ready(Ok(match call {
                Some(call) => {
                    if let Some(ctx) = call.context() {
                        res.extensions_mut().insert(ctx.clone());
                    }
                    let record = call.response(&res);
                    res.map(|b| b.recording(record))
                }
                None => res,
            })),
            Poll::Ready(Err(e)) => {
                if let Some(call) = call {
                    call.failed(&e).finish(Flags::NONE);
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// In the extensions of a response the mesh produced itself (a gRPC status for a mesh error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalReply(pub crate::ErrorKind);
