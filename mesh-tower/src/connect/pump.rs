//! Feeding a request body into its HTTP/2 stream.
//!
//! Why not always a task: most requests (every unary gRPC call, every request with a
//! `Full` body) are one chunk that is ready at once. Such a body is sent inline when the
//! request goes out, so the request costs no task. A body that is not complete at once gets a
//! task that sends as the peer's flow-control window allows and stops when the peer resets
//! the stream.

use crate::RequestBody;
use bytes::{Buf, Bytes};
use h2::{Reason, SendStream};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Sends `body` on `stream`: at once when it is one ready chunk, else from a task.
///
/// A chunk is held until the next look says whether the body ends there, so a body that only
/// learns it is finished when polled again (tonic's, for a unary call) still goes as one DATA
/// frame ending the stream. h2 holds what the window does not yet allow and sends it as the
/// window opens; a body with more than one chunk ready goes to the task, which keeps to the
/// window.
///
/// `sent`, for a gRPC attempt whose metrics are on, counts the request's message bytes.
pub(super) fn feed<B: RequestBody>(
    mut stream: SendStream<Bytes>,
    mut body: B,
    mut sent: Option<Sent>,
) {
    // Looks without a waker: a body that is not ready is polled again (with one) by the task.
    let mut cx = Context::from_waker(Waker::noop());
    let mut held: Option<Bytes> = None;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    if let Some(sent) = &mut sent {
                        sent.count(&data);
                    }
                    if held.is_none() && body.is_end_stream() {
                        let _ = stream.send_data(data, true);
                        return;
                    }
                    if let Some(first) = held.replace(data) {
                        let _ = stream.send_data(first, false);
                        if body.is_end_stream() {
                            let _ = stream.send_data(held.unwrap_or_default(), true);
                        } else {
                            // More than two chunks: the rest may be large, so the task
                            // takes over and keeps to the window.
                            tokio::spawn(pump(stream, body, held, sent));
                        }
                        return;
                    }
                }
                Err(frame) => {
                    if let Some(data) = held {
                        let _ = stream.send_data(data, false);
                    }
                    return finish(&mut stream, frame);
                }
            },
            Poll::Ready(None) => {
                let _ = stream.send_data(held.unwrap_or_default(), true);
                return;
            }
            Poll::Ready(Some(Err(e))) => return fail(&mut stream, e.into()),
            Poll::Pending => {
                tokio::spawn(pump(stream, body, held, sent));
                return;
            }
        }
    }
}

/// Sends the rest of `body` (after `first`), within the stream's flow-control window.
async fn pump<B: RequestBody>(
    mut stream: SendStream<Bytes>,
    mut body: B,
    first: Option<Bytes>,
    mut sent: Option<Sent>,
) {
    if let Some(data) = first
        && send_all(&mut stream, data, false).await.is_err()
    {
        return;
    }
    loop {
        let next = poll_fn(|cx| {
            // The peer reset the stream (or the connection ended): stop reading the body.
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut body)
                .poll_frame(cx)
                .map(|frame| Some(frame.map(|f| f.map_err(Into::into))))
        })
        .await;
        match next {
            None => return,
            Some(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(e))) => return fail(&mut stream, e),
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let end = body.is_end_stream();
                    let data = data.copy_to_bytes(data.remaining());
                    if let Some(sent) = &mut sent {
                        sent.count(&data);
                    }
                    if send_all(&mut stream, data, end).await.is_err() || end {
                        return;
                    }
                }
                Err(frame) => return finish(&mut stream, frame),
            },
        }
    }
}

/// A gRPC attempt's request message bytes, counted as the body is read (see
/// [`crate::stats::MessageSizes`]) and published for the attempt's record.
#[derive(Debug)]
pub(super) struct Sent {
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sizes: crate::stats::MessageSizes,
}

impl Sent {
    pub(super) fn new(total: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            total,
            sizes: crate::stats::MessageSizes::default(),
        }
    }

    fn count(&mut self, data: &[u8]) {
        self.sizes.feed(data);
        self.total
            .store(self.sizes.total(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends `data` as the window opens, in pieces if it must.
async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), ()> {
    if data.is_empty() {
        return match end {
            true => stream.send_data(data, true).map_err(drop),
            false => Ok(()),
        };
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let capacity = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(_)) | None => return Err(()),
        };
        if capacity == 0 {
            continue;
        }
        let piece = data.split_to(capacity.min(data.len()));
        stream
            .send_data(piece, end && data.is_empty())
            .map_err(drop)?;
    }
    Ok(())
}

/// A frame that is not data: trailers end the stream; anything else ends it empty.
fn finish<T>(stream: &mut SendStream<Bytes>, frame: http_body::Frame<T>) {
    match frame.into_trailers() {
        Ok(trailers) => {
            let _ = stream.send_trailers(trailers);
        }
        Err(_) => {
            let _ = stream.send_data(Bytes::new(), true);
        }
    }
}

/// The body failed: the upstream must not take a truncated request for a whole one.
fn fail(stream: &mut SendStream<Bytes>, error: mesh_core::BoxError) {
    tracing::debug!(%error, "request body failed; resetting the stream");
    stream.send_reset(Reason::CANCEL);
}
