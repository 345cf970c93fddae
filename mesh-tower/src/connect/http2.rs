//! One shared, multiplexed HTTP/2 connection per endpoint, reopened on demand, driven on the
//! `h2` crate directly.
//!
//! Why not hyper's HTTP/2 client: per request it sends the request through a channel to the
//! connection task, spawns a task to stream the body (and one for the answer), answers through
//! a oneshot channel, and its send future cannot be named, so a caller boxes it. In the
//! side-by-side profile that machinery cost more than all the rest of the mesh together (the
//! figures are in `docs/benchmarks.md`). Here a request on a live connection opens its
//! stream at call time, a ready one-chunk body is sent at once (`pump.rs`), and the answer is
//! h2's own, named, response future: no channel, no task, no allocation of ours.
//!
//! What hyper did that is now done here: connection-specific headers are dropped (HTTP/2
//! forbids them), `content-length` is set for bodies of known size, a connection that can
//! take no new stream (GOAWAY, or closed) is replaced, and a request waits (in h2's own queue)
//! for a stream slot when the peer's concurrency limit is reached.

use super::upstream::Upstream;
use super::{
    ConnectTarget, Connector, Sending, dial, handshake_error, spawn_connection, upstream_error,
};
use crate::RequestBody;
use crate::breaker::Limits;
use crate::error::MeshError;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared as SharedFuture};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, Response, header};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The stream window we offer (hyper's default, which the mesh used before).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The connection window we offer (hyper's default).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// How much request data h2 may buffer per stream beyond the peer's window (hyper's default).
const SEND_BUFFER: usize = 1024 * 1024;

type Connecting = SharedFuture<BoxFuture<'static, Result<Live, Arc<MeshError>>>>;

/// An open connection: its sender, and whether its task has ended.
#[derive(Clone)]
struct Live {
    tx: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    streams: Arc<Streams>,
}

impl Live {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A stream slot under the peer's current limit, if one is free and nobody waits for one.
    fn try_open(&self) -> Option<StreamSlot> {
        self.streams.follow(self.tx.current_max_send_streams());
        self.streams
            .slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(StreamSlot)
    }
}

/// A connection's open streams, counted against the peer's `max_concurrent_streams`.
///
/// h2 would queue streams over the limit itself, without bound and outside the cluster's
/// `max_pending_requests`; counting them here lets a request that must wait for a slot be a
/// pending request like one waiting for a connection (bounded, and failing fast over the
/// limit). The slots are a fair (first come, first served) semaphore: a freed slot goes to the
/// longest waiter, never to a newcomer, so no request waits for ever behind a busy loop.
#[derive(Debug)]
pub(crate) struct Streams {
    slots: Arc<Semaphore>,
    /// The peer's limit the semaphore was sized for.
    limit: Mutex<usize>,
}

impl Streams {
    fn new(limit: usize) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit: Mutex::new(limit),
        }
    }

    /// Resizes to the peer's current limit when its SETTINGS changed it (rare). Slots in use
    /// over a lowered limit are given back as they free.
    fn follow(&self, peer: usize) {
        let peer = peer.min(Semaphore::MAX_PERMITS);
        let mut limit = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if peer > *limit {
            self.slots.add_permits(peer - *limit);
        } else if peer < *limit {
            let forgotten = self.slots.forget_permits(*limit - peer);
            *limit -= forgotten;
            return;
        }
        *limit = peer;
    }
}

/// One open stream's place under the peer's limit, held until the stream ends (the response
/// body's end or drop, or the failure of the request).
#[derive(Debug)]
pub(crate) struct StreamSlot(
    #[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit,
);

/// The connection to one endpoint. Not typed by request body: h2's streams take `Bytes`, so
/// only sending is generic.
#[derive(Clone)]
pub(crate) struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    target: ConnectTarget,
    connector: Connector,
    limits: Arc<Limits>,
    current: ArcSwapOption<Live>,
    connecting: Mutex<Option<Connecting>>,
}

impl Shared {
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

    /// Sends `req`. On a live connection with a free stream slot (the common case) the stream
    /// is opened before this returns and the future is h2's wait for the answer; otherwise
    /// the wait for a connection or a slot is boxed apart.
    pub(crate) fn send<B: RequestBody>(&self, req: Request<B>) -> Sending {
        if let Some(live) = &*self.inner.current.load()
            && !live.is_closed()
            && let Some(slot) = live.try_open()
        {
            let mut tx = live.tx.clone();
            // Readiness without a waker: not ready is handled on the slow path, which waits.
            match tx.poll_ready(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Ok(())) => return start(&self.inner.target, tx, req, slot),
                Poll::Ready(Err(_)) => self.inner.forget(live),
                Poll::Pending => {}
            }
        }
        let this = self.clone();
        Sending::boxed(async move { this.send_slow(req).await })
    }

    /// Sends `req` once a connection is up and has a stream slot, opening a connection if
    /// needed; a connection found unable to take new streams is replaced once.
    async fn send_slow<B: RequestBody>(
        &self,
        req: Request<B>,
    ) -> Result<Response<Upstream>, MeshError> {
        let mut replaced = false;
        // Held while this request waits for a stream slot (max_pending_requests).
        let mut pending = None;
        loop {
            let live = self.sender().await?;
            let slot = match live.try_open() {
                Some(slot) => Some(slot),
                None if live.is_closed() => None,
                None => {
                    if pending.is_none() {
                        pending = Some(self.inner.limits.try_pending()?);
                    }
                    // In line for a slot; closed with the connection.
                    live.streams
                        .slots
                        .clone()
                        .acquire_owned()
                        .await
                        .ok()
                        .map(StreamSlot)
                }
            };
            let ready = match slot {
                Some(slot) => live.tx.clone().ready().await.map(|tx| (tx, slot)),
                None => Err(h2::Error::from(h2::Reason::CANCEL)),
            };
            match ready {
                Ok((tx, slot)) => return start(&self.inner.target, tx, req, slot).await,
                Err(e) if replaced => return Err(upstream_error(&self.inner.target, e)),
                Err(_) => {
                    self.inner.forget(&live);
                    replaced = true;
                }
            }
        }
    }

    /// A live connection: the current one, or a fresh one (single flight).
    async fn sender(&self) -> Result<Live, MeshError> {
        if let Some(live) = &*self.inner.current.load()
            && !live.is_closed()
        {
            return Ok(Live::clone(live));
        }
        // No live connection: this request is pending until one is up.
        let _pending = self.inner.limits.try_pending()?;
        let attempt = {
            let mut connecting = self
                .inner
                .connecting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(live) = &*self.inner.current.load()
                && !live.is_closed()
            {
                return Ok(Live::clone(live));
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

/// Opens `req`'s stream on `tx` (ready) and sends its body; the answer comes through h2's
/// response future.
fn start<B: RequestBody>(
    target: &ConnectTarget,
    mut tx: SendRequest<Bytes>,
    req: Request<B>,
    slot: StreamSlot,
) -> Sending {
    let (mut head, body) = req.into_parts();
    strip_connection_headers(&mut head.headers);
    let end = body.is_end_stream();
    if let Some(len) = body.size_hint().exact()
        && (len != 0 || has_payload_semantics(&head.method))
        && !head.headers.contains_key(header::CONTENT_LENGTH)
    {
        head.headers.insert(header::CONTENT_LENGTH, len.into());
    }
    match tx.send_request(Request::from_parts(head, ()), end) {
        Ok((answer, stream)) => {
            if !end {
                super::pump::feed(stream, body);
            }
            Sending::h2(answer, slot)
        }
        Err(e) => Sending::failed(upstream_error(target, e)),
    }
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2); h2 refuses a request carrying them, hyper
/// dropped them, and so does the mesh.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(&name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Methods whose empty body still says "length 0" (hyper's rule for setting it).
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::CONNECT
            | Method::TRACE
    )
}

impl Inner {
    /// Drops `live` as the current connection (it can take no new stream), unless another
    /// request already replaced it.
    fn forget(&self, live: &Live) {
        self.current.rcu(|cur| match cur {
            Some(c) if Arc::ptr_eq(&c.closed, &live.closed) => None,
            other => other.clone(),
        });
    }

    async fn connect(self: Arc<Self>) -> Result<Live, Arc<MeshError>> {
        let result = self.handshake().await;
        if let Ok(live) = &result {
            self.current.store(Some(Arc::new(live.clone())));
        }
        *self.connecting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result.map_err(Arc::new)
    }

    async fn handshake(&self) -> Result<Live, MeshError> {
        let target = &self.target;
        let slot = self.limits.try_connection()?;
        let io = dial(target, &self.connector).await?.into_inner();
        let (tx, mut conn) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| handshake_error(target, e))?;
        let mut ping = conn.ping_pong();
        let closed = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Streams::new(usize::MAX));
        let (ended, waiting) = (closed.clone(), streams.clone());
        let conn = async move {
            let result = conn.await;
            ended.store(true, Ordering::Release);
            // Requests waiting for a slot on this connection go find another.
            waiting.slots.close();
            result
        };
        spawn_connection(target, conn, slot);
        // Streams wait for the server's SETTINGS, as gRPC's transports do: before them the
        // client does not know the server's stream limit, and a burst on a new connection
        // would be partly refused (REFUSED_STREAM). The server's preface is its SETTINGS
        // frame, so by the time our PING is answered they have been applied.
        if let Some(ping) = ping.as_mut() {
            let answered =
                tokio::time::timeout(target.connect_timeout, ping.ping(h2::Ping::opaque()));
            match answered.await {
                Ok(Ok(_)) => streams.follow(tx.current_max_send_streams()),
                Ok(Err(e)) => return Err(handshake_error(target, e)),
                Err(_) => {
                    return Err(MeshError::new(
                        crate::error::ErrorKind::Connect,
                        format!(
                            "connect to {} failed: no HTTP/2 SETTINGS within the connect timeout ({:?})",
                            target.address, target.connect_timeout
                        ),
                    ));
                }
            }
        }
        tracing::debug!(address = %target.address, cluster = %target.cluster, "HTTP/2 connection opened");
        Ok(Live {
            tx,
            closed,
            streams,
        })
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
