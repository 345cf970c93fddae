//! [`Recording`]: a request's record in progress, carried to the end of its stream.

use super::{Edge, Flags, LogLine, MessageSizes, Outcome, grpc_status};
use http_body::Frame;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// A request's record in progress: carried by its response body and written when the
/// stream ends (its last frame, an error, or the body dropped: `DC`).
pub(crate) struct Recording {
    edge: Arc<Edge>,
    start: Instant,
    outcome: Outcome,
    bytes: u64,
    done: bool,
    /// The access log line to write with the record (only when access logs are on).
    log: Option<Box<LogLine>>,
    /// The request's span (sampled requests of a tracing mesh).
    span: Option<Box<crate::trace::OpenSpan>>,
    /// A gRPC server call's messages: those of the answer, read here, and the count of the
    /// request's, kept by its body (A66's sizes).
    messages: Option<(MessageSizes, Arc<AtomicU64>)>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("outcome", &self.outcome)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// Looks at a response frame: counts data, reads the gRPC status from trailers.
    pub(crate) fn frame<D: bytes::Buf>(&mut self, frame: &Frame<D>) {
        if let Some(d) = frame.data_ref() {
            self.bytes += d.remaining() as u64;
            if let Some((sent, _)) = &mut self.messages {
                sent.feed_buf(d);
            }
        } else if let Some(s) = frame.trailers_ref().and_then(grpc_status) {
            self.outcome.grpc = Some(s);
        }
    }

    /// Writes the record (once), adding `flags`.
    pub(crate) fn finish(&mut self, flags: Flags) {
        if self.done {
            return;
        }
        self.done = true;
        self.outcome.flags = self.outcome.flags.with(flags);
        let millis = self.start.elapsed().as_secs_f64() * 1000.0;
        let messages = (self.messages.as_ref())
            .map(|(sent, rcvd)| (sent.total(), rcvd.load(Ordering::Relaxed)));
        self.edge.record(self.outcome, millis, self.bytes, messages);
        if let Some(line) = self.log.take() {
            line.write(self.outcome, millis, self.bytes, self.span.is_some());
        }
        if let Some(mut span) = self.span.take() {
            let flags = self.outcome.flags.as_str();
            if flags != "-" {
                span.attr(
                    "response_flags",
                    crate::trace::AttrValue::Str(flags.into_owned()),
                );
            }
            span.end(self.outcome.code, self.outcome.grpc, None);
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.finish(Flags::DC);
    }
}

impl Recording {
    /// A record of a request started at `start` on `edge`, ending (so far) in `outcome`.
    pub(crate) fn new(edge: Arc<Edge>, start: Instant, outcome: Outcome) -> Self {
        Self {
            edge,
            start,
            outcome,
            bytes: 0,
            done: false,
            log: None,
            span: None,
            messages: None,
        }
    }

    /// The same, counting the answer's gRPC messages, with the request's counted into
    /// `rcvd` (a gRPC server call).
    pub(crate) fn counting(mut self, rcvd: Option<Arc<AtomicU64>>) -> Self {
        self.messages = rcvd.map(|r| (MessageSizes::default(), r));
        self
    }

    /// The same, writing `log` as its access log line when it ends.
    pub(crate) fn logging(mut self, log: Option<Box<LogLine>>) -> Self {
        self.log = log;
        self
    }

    /// The same, ending `span` when it ends.
    pub(crate) fn tracing(mut self, span: Option<Box<crate::trace::OpenSpan>>) -> Self {
        self.span = span;
        self
    }
}
