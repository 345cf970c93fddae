//! [`ReplayBody`]: a request body that retries, hedges and mirrors can read again.
//!
//! A retry must resend the request body, but a body is a stream that can be read once. The
//! first reader pulls from the caller's body and records each chunk, up to a limit (Envoy's
//! `per_request_buffer_limit_bytes`, 64 KiB by default); every other copy replays the record and
//! then continues from the caller's body where it stands. Copies may read concurrently (a hedged
//! attempt or a mirror next to the primary): whoever polls the caller's body first appends to
//! the record, the others find the chunk there, and every waiting copy is woken when the caller's
//! body makes progress, so no copy can steal another's wakeup.
//!
//! Past the limit the record is dropped: the *first* copy (the primary attempt) keeps streaming,
//! every other copy fails, and [`ReplayBody::is_replayable`] turns false so no new attempt
//! starts. A body that fits (a unary gRPC message, a JSON request) never pays more than one
//! `Bytes` clone per chunk per attempt. Requests without retries, hedges or mirrors use
//! [`ReplayBody::direct`], which is the caller's body and nothing else.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use mesh_core::BoxError;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

/// A request body that can be cloned for another attempt (see the module doc).
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Direct(B),
    Shared {
        shared: Arc<Shared<B>>,
        /// Index of the next recorded chunk to hand out.
        pos: usize,
        /// The first copy: it may read past the limit.
        owner: bool,
        trailers_sent: bool,
    },
}

struct Shared<B> {
    state: Mutex<State<B>>,
    wake_all: Arc<WakeAll>,
    limit: usize,
}

struct State<B> {
    inner: B,
    chunks: Vec<Bytes>,
    /// Chunks read from the caller's body so far (recorded or not).
    read: usize,
    bytes: usize,
    trailers: Option<HeaderMap>,
    complete: bool,
    overflow: bool,
    error: Option<String>,
}

/// Wakes every copy waiting on the caller's body.
#[derive(Default)]
struct WakeAll(Mutex<Vec<Waker>>);

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiting = std::mem::take(&mut *lock(&self.0));
        for w in waiting {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B> ReplayBody<B> {
    /// The caller's body, unbuffered: cannot be cloned.
    pub fn direct(body: B) -> Self {
        Self {
            kind: Kind::Direct(body),
        }
    }

    /// A body recorded up to `limit` bytes so [`try_clone`](Self::try_clone) can replay it.
    pub fn replayable(body: B, limit: usize) -> Self
    where
        B: Body,
    {
        let complete = body.is_end_stream();
        Self {
            kind: Kind::Shared {
                shared: Arc::new(Shared {
                    state: Mutex::new(State {
                        inner: body,
                        chunks: Vec::new(),
                        read: 0,
                        bytes: 0,
                        trailers: None,
                        complete,
                        overflow: false,
                        error: None,
                    }),
                    wake_all: Arc::default(),
                    limit,
                }),
                pos: 0,
                owner: true,
                trailers_sent: false,
            },
        }
    }

    /// Whether another copy could still read the whole body (recorded, or recordable).
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Direct(_) => false,
            Kind::Shared { shared, .. } => {
                let s = lock(&shared.state);
                !s.overflow && s.error.is_none()
            }
        }
    }

    /// Whether the caller's body has been read to its end (and fit the record).
    pub fn is_complete(&self) -> bool {
        match &self.kind {
            Kind::Direct(b) => {
                let _ = b;
                false
            }
            Kind::Shared { shared, .. } => {
                let s = lock(&shared.state);
                s.complete && !s.overflow
            }
        }
    }

    /// A copy that reads the body from its start, or `None` when it cannot be replayed.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Shared { shared, .. } if self.is_replayable() => Some(Self {
                kind: Kind::Shared {
                    shared: shared.clone(),
                    pos: 0,
                    owner: false,
                    trailers_sent: false,
                },
            }),
            _ => None,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (shared, pos, owner, trailers_sent) = match &mut self.kind {
            Kind::Direct(b) => {
                return Pin::new(b).poll_frame(cx).map(|f| {
                    f.map(|r| {
                        r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                            .map_err(Into::into)
                    })
                });
            }
            Kind::Shared {
                shared,
                pos,
                owner,
                trailers_sent,
            } => (shared, pos, *owner, trailers_sent),
        };
        let mut s = lock(&shared.state);
        if let Some(e) = &s.error {
            return Poll::Ready(Some(Err(e.clone().into())));
        }
        // Replay what is recorded.
        if !s.overflow && *pos < s.chunks.len() {
            let chunk = s.chunks[*pos].clone();
            *pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if *pos < s.read && !owner {
            return Poll::Ready(Some(Err(
                "request body exceeded the retry buffer and cannot be replayed".into(),
            )));
        }
        if s.complete {
            if !*trailers_sent && let Some(t) = &s.trailers {
                *trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
            }
            return Poll::Ready(None);
        }
        // Read on from the caller's body, waking every waiting copy on progress.
        lock(&shared.wake_all.0).push(cx.waker().clone());
        let waker = Waker::from(shared.wake_all.clone());
        let mut inner_cx = Context::from_waker(&waker);
        let state = &mut *s;
        match Pin::new(&mut state.inner).poll_frame(&mut inner_cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.complete = true;
                shared.wake_all.wake_by_ref();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                state.error = Some(e.to_string());
                shared.wake_all.wake_by_ref();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                shared.wake_all.wake_by_ref();
                match frame.into_data() {
                    Ok(mut data) => {
                        let chunk = data.copy_to_bytes(data.remaining());
                        state.read += 1;
                        *pos += 1;
                        if !state.overflow && state.bytes + chunk.len() <= shared.limit {
                            state.bytes += chunk.len();
                            state.chunks.push(chunk.clone());
                        } else if !state.overflow {
                            state.overflow = true;
                            state.chunks = Vec::new();
                        }
                        if state.overflow && !owner {
                            return Poll::Ready(Some(Err(
                                "request body exceeded the retry buffer and cannot be replayed"
                                    .into(),
                            )));
                        }
                        state.complete = state.inner.is_end_stream();
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        state.complete = true;
                        state.trailers = trailers.clone();
                        *trailers_sent = true;
                        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Direct(b) => b.is_end_stream(),
            Kind::Shared {
                shared,
                pos,
                trailers_sent,
                ..
            } => {
                let s = lock(&shared.state);
                s.complete
                    && s.error.is_none()
                    && *pos >= s.read
                    && (s.trailers.is_none() || *trailers_sent)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Direct(b) => b.size_hint(),
            Kind::Shared { shared, pos, .. } => {
                let s = lock(&shared.state);
                if *pos == 0 && s.read == 0 {
                    s.inner.size_hint()
                } else if s.complete && !s.overflow {
                    let rest: usize = s.chunks[(*pos).min(s.chunks.len())..]
                        .iter()
                        .map(Bytes::len)
                        .sum();
                    SizeHint::with_exact(rest as u64)
                } else {
                    SizeHint::default()
                }
            }
        }
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Direct(_) => f.write_str("ReplayBody::Direct"),
            Kind::Shared { pos, owner, .. } => f
                .debug_struct("ReplayBody")
                .field("pos", pos)
                .field("owner", owner)
                .finish_non_exhaustive(),
        }
    }
}
