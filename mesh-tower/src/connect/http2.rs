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
use crate::tls::PeerIdentity;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared as SharedFuture};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, Response, header};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

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
    /// The verified peer of a TLS connection, for its responses.
    peer: Option<PeerIdentity>,
}

impl Live {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Admits one more stream on this connection (see [`Streams`]).
    fn admit(&self, limits: &Limits) -> Result<StreamSlot, MeshError> {
        self.streams
            .admit(self.tx.current_max_send_streams(), limits)
    }
}

/// A connection's streams, counted against the peer's `max_concurrent_streams`.
///
/// Streams over the peer's limit wait in h2's own queue, which is first come, first served
/// and opens the next stream from the connection task the moment one closes (a queue of our
/// own would need a task wake-up per handoff, which cost a fifth of the throughput at
/// c=256). What h2 does not do is bound that queue: so a stream admitted over the limit is a
/// *pending* request under the cluster's `max_pending_requests` until its response head
/// arrives, and past that threshold a request fails fast with `Overflow`.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    /// Streams admitted and not ended (open, or queued in h2).
    active: AtomicUsize,
}

impl Streams {
    fn admit(self: &Arc<Self>, peer_max: usize, limits: &Limits) -> Result<StreamSlot, MeshError> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        let mut slot = StreamSlot {
            streams: self.clone(),
            pending: None,
        };
        if before >= peer_max {
            // Queued behind the peer's limit: pending until answered (or refused now).
            slot.pending = Some(limits.try_pending()?);
        }
        Ok(slot)
    }
}

/// One admitted stream, held until the stream ends (the response body's end or drop, or the
/// failure of the request).
#[derive(Debug)]
pub(crate) struct StreamSlot {
    streams: Arc<Streams>,
    /// The `max_pending_requests` place of a stream queued over the peer's limit.
    pending: Option<crate::breaker::Guard>,
}

impl StreamSlot {
    /// The response head arrived: the stream is no longer waiting.
    pub(crate) fn answered(&mut self) {
        self.pending = None;
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.active.fetch_sub(1, Ordering::AcqRel);
    }
}

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
        {
            let mut tx = live.tx.clone();
            // Readiness without a waker: not ready is handled on the slow path, which waits.
            match tx.poll_ready(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Ok(())) => {
                    return match live.admit(&self.inner.limits) {
                        Ok(slot) => start(&self.inner.target, tx, req, slot, live.peer.as_ref()),
                        Err(e) => Sending::failed(e),
                    };
                }
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
        loop {
            let live = self.sender().await?;
            match live.tx.clone().ready().await {
                Ok(tx) => {
                    let slot = live.admit(&self.inner.limits)?;
                    return start(&self.inner.target, tx, req, slot, live.peer.as_ref()).await;
                }
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
    peer: Option<&PeerIdentity>,
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
    // A gRPC attempt with metrics on counts its request's message bytes.
    let sent = (!end)
        .then(|| head.extensions.get::<crate::stats::SentMessages>())
        .flatten()
        .map(|s| super::pump::Sent::new(s.0.clone()));
    match tx.send_request(Request::from_parts(head, ()), end) {
        Ok((answer, stream)) => {
            if !end {
                super::pump::feed(stream, body, sent);
            }
            Sending::h2(answer, slot, peer.cloned())
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
        let (io, peer) = dial(target, &self.connector).await?;
        let io = io.into_inner();
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
        let streams = Arc::new(Streams::default());
        let ended = closed.clone();
        let conn = async move {
            let result = conn.await;
            ended.store(true, Ordering::Release);
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
                Ok(Ok(_)) => {}
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
            peer,
        })
    }
}

/// A shared connect failure, re-stated for each waiting request.
fn clone_error(e: &MeshError) -> MeshError {
    e.restate()
}
