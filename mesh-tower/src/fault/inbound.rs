//! The same faults on the server side: a `servers:` entry's `fault` filter delays or aborts
//! a share of the requests its other filters let through, before the handler sees them.
//!
//! Why: a service owner tests how callers cope with a slow or failing instance without
//! touching the callers' config (Envoy's fault filter on an inbound listener does this). The
//! decision is the client side's [`FaultPolicy`] (percentages, header-controlled faults,
//! `headers` conditions, `max_active_faults`); an abort answers locally with the configured
//! HTTP or gRPC status and never reaches the handler; a delay holds the request, then calls
//! the handler. A route of the server's inbound routes may have its own faults (a per-route
//! `HTTPFault`, as Envoy's) or none (`disabled`).

use super::future::{AfterDelay, Delay};
use crate::breaker::Guard;
use crate::policy::fault::{FaultPolicy, abort_response};
use crate::refusal::{RefusalBody, RefusalFuture};
use crate::route::inbound::PerRoute;
use arc_swap::ArcSwap;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// Injects the server's faults, then calls `S`.
#[derive(Clone, Debug)]
pub struct InboundFault<S> {
    inner: S,
    policy: Arc<ArcSwap<PerRoute<FaultPolicy>>>,
    rng: crate::draw::Draw,
}

/// Applies [`InboundFault`] with whatever policies the handle holds at each request (none for
/// the request's route: no faults), swapped by the owner when the config changes.
#[derive(Clone, Debug)]
pub struct InboundFaultLayer {
    policy: Arc<ArcSwap<PerRoute<FaultPolicy>>>,
}

impl InboundFaultLayer {
    /// A layer reading `policy`.
    pub fn live(policy: Arc<ArcSwap<PerRoute<FaultPolicy>>>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for InboundFaultLayer {
    type Service = InboundFault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundFault {
            inner,
            policy: self.policy.clone(),
            rng: crate::draw::Draw::new(None),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for InboundFault<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<RefusalBody<ResBody>>;
    type Error = S::Error;
    type Future = InboundFaultFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A lock-free read, no reference count taken: the policy is only used in this call.
        let policies = self.policy.load();
        let Some(policy) = policies.get(&req) else {
            return InboundFaultFuture::now(RefusalFuture::inner(self.inner.call(req)), None);
        };
        let d = policy.decide(req.headers(), &mut self.rng);
        let grpc = crate::grpc::is_grpc(req.headers());
        let abort = d.abort.map(|(s, g)| abort_response(grpc, s, g));
        match (d.delay, abort) {
            (None, None) => {
                InboundFaultFuture::now(RefusalFuture::inner(self.inner.call(req)), None)
            }
            (None, Some(res)) => InboundFaultFuture::now(RefusalFuture::denied(res), d.guard),
            (Some(t), abort) => {
                // Call a clone after the delay; this one stays ready for the next request.
                let svc = self.inner.clone();
                let svc = std::mem::replace(&mut self.inner, svc);
                InboundFaultFuture {
                    state: State::Delaying {
                        delay: Delay::new(t, svc, req, abort),
                    },
                    guard: d.guard,
                }
            }
        }
    }
}

pin_project! {
    /// Response future of [`InboundFault`]: the handler's answer or the abort, possibly
    /// after a delay.
    pub struct InboundFaultFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // Counts the fault as active (`max_active_faults`) until the answer is here.
        guard: Option<Guard>,
    }
}

pin_project! {
    #[project = Proj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Answering { #[pin] fut: RefusalFuture<S::Future> },
        Delaying { #[pin] delay: Delay<S, B> },
    }
}

impl<S, B> InboundFaultFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn now(fut: RefusalFuture<S::Future>, guard: Option<Guard>) -> Self {
        Self {
            state: State::Answering { fut },
            guard,
        }
    }
}

impl<S, B, ResBody> Future for InboundFaultFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<RefusalBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                Proj::Answering { fut } => {
                    let out = ready!(fut.poll(cx));
                    *this.guard = None;
                    return Poll::Ready(out);
                }
                Proj::Delaying { delay } => match ready!(delay.poll(cx))? {
                    AfterDelay::Call(fut) => RefusalFuture::inner(fut),
                    AfterDelay::Abort(res) => RefusalFuture::denied(*res),
                },
            };
            this.state.set(State::Answering { fut: next });
        }
    }
}
