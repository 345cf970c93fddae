//! One shared, multiplexed HTTP/2 connection per endpoint, reopened on demand.

use super::{ConnectTarget, Connector, dial, handshake_error, spawn_connection, upstream_error};
use crate::RequestBody;
use crate::breaker::Limits;
use crate::error::MeshError;
use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared as SharedFuture};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, Mutex};

type Connecting<B> = SharedFuture<BoxFuture<'static, Result<SendRequest<B>, Arc<MeshError>>>>;

pub(crate) struct Shared<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Shared<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B> {
    target: ConnectTarget,
    connector: Connector,
    limits: Arc<Limits>,
    current: ArcSwapOption<SendRequest<B>>,
    connecting: Mutex<Option<Connecting<B>>>,
}

impl<B> Shared<B>
where
    B: RequestBody,
{
    pub(crate) fn new(target: ConnectTarget, connector: Connector, limits: Arc<Limits>) -> Self {
        Self {
            inner: Arc::new(Inner {
                target,
                connector,
                limits,
                current: ArcSwapOption::empty(),
                connecting: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn target(&self) -> &ConnectTarget {
        &self.inner.target
    }

    /// Sends `req`. On a live connection (the common case) the request is queued before
    /// this returns and the future only waits for the answer, so it stays small: the
    /// reconnect path is boxed apart.
    pub(crate) fn send(&self, req: Request<B>) -> super::Sending {
        if let Some(tx) = &*self.inner.current.load()
            && !tx.is_closed()
        {
            let sent = SendRequest::clone(tx).try_send_request(req);
            let this = self.clone();
            return Box::pin(async move {
                match sent.await {
                    Ok(res) => Ok(res),
                    Err(mut e) => match e.take_message() {
                        Some(req) => Box::pin(this.send_connecting(req)).await,
                        None => Err(upstream_error(&this.inner.target, e.into_error())),
                    },
                }
            });
        }
        let this = self.clone();
        Box::pin(async move { this.send_connecting(req).await })
    }

    /// Sends `req` once a connection is up (opening one if needed), retrying once on a fresh
    /// connection if the current one died before the request went out.
    async fn send_connecting(&self, req: Request<B>) -> Result<Response<Incoming>, MeshError> {
        let mut tx = self.sender().await?;
        match tx.try_send_request(req).await {
            Ok(res) => Ok(res),
            Err(mut e) => match e.take_message() {
                // The connection died before our request went out: reconnect once.
                Some(req) => {
                    self.inner.current.rcu(|cur| match cur {
                        Some(c) if c.is_closed() => None,
                        other => other.clone(),
                    });
                    let mut tx = self.sender().await?;
                    tx.send_request(req)
                        .await
                        .map_err(|e| upstream_error(&self.inner.target, e))
                }
                None => Err(upstream_error(&self.inner.target, e.into_error())),
            },
        }
    }

    /// A sender on a live connection: the current one, or a fresh one (single flight).
    async fn sender(&self) -> Result<SendRequest<B>, MeshError> {
        if let Some(tx) = &*self.inner.current.load()
            && !tx.is_closed()
        {
            return Ok(SendRequest::clone(tx));
        }
        // No live connection: this request is pending until one is up.
        let _pending = self.inner.limits.try_pending()?;
        let attempt = {
            let mut connecting = self
                .inner
                .connecting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = &*self.inner.current.load()
                && !tx.is_closed()
            {
                return Ok(SendRequest::clone(tx));
            }
            match &*connecting {
                Some(attempt) => attempt.clone(),
                None => {
                    let attempt = Inner::connect(self.inner.clone()).boxed().shared();
                    *connecting = Some(attempt.clone());
                    attempt
                }
            }
        };
        attempt.await.map_err(|e| clone_error(&e))
    }
}

impl<B> Inner<B>
where
    B: RequestBody,
{
    async fn connect(self: Arc<Self>) -> Result<SendRequest<B>, Arc<MeshError>> {
        let result = self.handshake().await;
        if let Ok(tx) = &result {
            self.current.store(Some(Arc::new(tx.clone())));
        }
        *self.connecting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result.map_err(Arc::new)
    }

    async fn handshake(&self) -> Result<SendRequest<B>, MeshError> {
        let target = &self.target;
        let slot = self.limits.try_connection()?;
        let io = dial(target, &self.connector).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| handshake_error(target, e))?;
        spawn_connection(target, conn, slot);
        tracing::debug!(address = %target.address, cluster = %target.cluster, "HTTP/2 connection opened");
        Ok(tx)
    }
}

/// A shared connect failure, re-stated for each waiting request.
fn clone_error(e: &MeshError) -> MeshError {
    // The message already names cluster and endpoint; keep the fields for programs too.
    let mut out = MeshError::new(e.kind(), e.to_string());
    if let Some(ep) = e.endpoint() {
        out = out.with_endpoint(ep);
    }
    out
}
