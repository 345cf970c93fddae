//! What an inbound check (JWT, RBAC) answers: the handler's response, or its own refusal.
//!
//! Why shared: every check before the handler has the same two outcomes, and a server stacks
//! several; one body and one future type keep those stacks' types short and the allowed path
//! free of boxing.

use crate::body::MeshBody;
use crate::matcher::metadata::DynamicMetadata;
use bytes::Bytes;
use futures_util::ready;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use mesh_core::BoxError;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The handler's body, or the refusal's (no boxing on the allowed path).
    #[project = Proj]
    #[derive(Debug)]
    pub struct RefusalBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Local { #[pin] body: MeshBody },
    }
}

impl<B> RefusalBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn local(body: MeshBody) -> Self {
        Self {
            kind: Kind::Local { body },
        }
    }
}

impl<B> Body for RefusalBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Local { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The handler's response, or the refusal.
    #[derive(Debug)]
    pub struct RefusalFuture<F> {
        #[pin]
        kind: FutureKind<F>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    #[derive(Debug)]
    enum FutureKind<F> {
        Inner { #[pin] future: F, attach: Option<DynamicMetadata> },
        Denied { response: Option<Response<MeshBody>> },
    }
}

impl<F> RefusalFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: FutureKind::Inner {
                future,
                attach: None,
            },
        }
    }

    /// Puts `stored` (what a check stored as dynamic metadata) on the handler's answer.
    pub(crate) fn attaching(mut self, stored: Option<DynamicMetadata>) -> Self {
        if let FutureKind::Inner { attach, .. } = &mut self.kind {
            *attach = stored;
        }
        self
    }

    pub(crate) fn denied(response: Response<MeshBody>) -> Self {
        Self {
            kind: FutureKind::Denied {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for RefusalFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RefusalBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { future, attach } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(stored) = attach.take() {
                    res.extensions_mut().insert(stored);
                }
                Poll::Ready(Ok(res.map(RefusalBody::inner)))
            }
            FutureKindProj::Denied { response } => {
                let res = response.take().expect("polled after completion");
                Poll::Ready(Ok(res.map(RefusalBody::local)))
            }
        }
    }
}
