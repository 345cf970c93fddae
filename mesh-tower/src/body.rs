//! The response body the mesh hands back: the upstream's body, or a local reply's.
//!
//! An enum rather than a boxed body, so the common case (streaming the upstream's bytes) costs
//! no allocation and no dynamic dispatch.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use mesh_core::BoxError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::balance::EndpointStats;
use crate::balance::weighted_round_robin::ReportSettings;
use crate::connect::Upstream;
use crate::stats::{Flags, Recording};

/// State of an upstream body under an idle timeout.
#[derive(Debug)]
struct IdleBody {
    body: Upstream,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

/// An upstream body watched for a load report in its trailers.
#[derive(Debug)]
struct Reported {
    body: MeshBody,
    settings: Arc<ReportSettings>,
    stats: Arc<EndpointStats>,
}

/// Body of responses returned by mesh services.
#[derive(Debug, Default)]
pub struct MeshBody {
    kind: Kind,
    /// What counts the request as active until its stream ends (see [`Hold`]).
    hold: Option<Hold>,
    /// The request's metrics, written when its stream ends (see [`crate::telemetry`]).
    record: Option<Recording>,
    /// The attempt's gRPC metrics (A66), written when its stream ends.
    attempt: Option<Box<crate::stats::AttemptRecord>>,
}

/// A request's place in its endpoint's in-flight count (least request, peak EWMA), in its
/// cluster's `max_requests` and, over HTTP/2, under the peer's stream limit, held by the
/// response body until the stream ends (its last frame, an error, or the body dropped), as
/// Envoy counts a stream until it completes: a long gRPC stream or a slow download is active
/// for as long as it runs. One end-of-stream check serves all three.
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) _in_flight: crate::balance::InFlight,
    pub(crate) _admitted: crate::breaker::Guard,
    /// The HTTP/2 stream's place under the peer's stream limit (HTTP/2 only).
    pub(crate) _stream: Option<crate::connect::StreamSlot>,
}

#[derive(Debug, Default)]
enum Kind {
    Upstream(Upstream),
    /// An upstream body that fails when no frame arrives within the idle timeout.
    Idle(Box<IdleBody>),
    Local(Option<Bytes>),
    /// A body whose trailers may carry the endpoint's load report (gRPC sends it there).
    Reported(Box<Reported>),
    #[default]
    Empty,
}

impl MeshBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A body with fixed content (local replies).
    pub fn full(data: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Local(Some(data.into())),
            hold: None,
            record: None,
            attempt: None,
        }
    }

    pub(crate) fn upstream(body: Upstream) -> Self {
        Self {
            kind: Kind::Upstream(body),
            hold: None,
            record: None,
            attempt: None,
        }
    }

    /// Feeds a load report found in this body's trailers into `stats` (client-side weighted
    /// round robin).
    pub(crate) fn reporting_to(
        self,
        settings: Arc<ReportSettings>,
        stats: Arc<EndpointStats>,
    ) -> Self {
        Self {
            kind: Kind::Reported(Box::new(Reported {
                body: self,
                settings,
                stats,
            })),
            hold: None,
            record: None,
            attempt: None,
        }
    }

    /// An upstream body under the route's idle timeout.
    pub(crate) fn upstream_idle(body: Upstream, idle: Duration) -> Self {
        Self {
            kind: Kind::Idle(Box::new(IdleBody {
                body,
                idle,
                sleep: Box::pin(tokio::time::sleep(idle)),
            })),
            hold: None,
            record: None,
            attempt: None,
        }
    }

    /// Writes the request's metrics when this body's stream ends (at once if it already
    /// has).
    pub(crate) fn recording(mut self, mut record: Recording) -> Self {
        if self.is_end_stream() {
            record.finish(Flags::NONE);
        } else {
            self.record = Some(record);
        }
        self
    }

    /// Writes the attempt's gRPC metrics when this body's stream ends (at once if it already
    /// has).
    pub(crate) fn attempt(mut self, attempt: Box<crate::stats::AttemptRecord>) -> Self {
        if !self.is_end_stream() {
            self.attempt = Some(attempt);
        }
        self
    }

    /// Counts the request as active until this body's stream ends (at once if it already
    /// has).
    pub(crate) fn holding(mut self, hold: Hold) -> Self {
        if !self.is_end_stream() {
            self.hold = Some(hold);
        }
        self
    }
}

impl Body for MeshBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = std::task::ready!(self.as_mut().poll_kind(cx));
        if self.record.is_some() {
            let ended = match &frame {
                None => Some(Flags::NONE),
                Some(Err(_)) => Some(Flags::UC),
                Some(Ok(f)) => (f.is_trailers() || self.is_end_stream()).then_some(Flags::NONE),
            };
            if let Some(record) = &mut self.record {
                if let Some(Ok(f)) = &frame {
                    record.frame(f);
                }
                if let Some(flags) = ended {
                    record.finish(flags);
                    self.record = None;
                }
            }
        }
        if self.attempt.is_some() {
            let ended = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(f)) => f.is_trailers() || self.kind_end_stream(),
            };
            if let Some(attempt) = &mut self.attempt {
                match &frame {
                    Some(Ok(f)) => attempt.frame(f),
                    Some(Err(_)) => attempt.broken(),
                    None => {}
                }
            }
            if ended {
                self.attempt = None;
            }
        }
        if self.hold.is_some() {
            let ended = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(f)) => f.is_trailers() || self.is_end_stream(),
            };
            if ended {
                self.hold = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.kind_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Idle(i) => i.body.size_hint(),
            Kind::Local(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Reported(r) => r.body.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}

impl MeshBody {
    fn poll_kind(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx),
            Kind::Idle(i) => {
                if let Poll::Ready(frame) = Pin::new(&mut i.body).poll_frame(cx) {
                    let deadline = tokio::time::Instant::now() + i.idle;
                    i.sleep.as_mut().reset(deadline);
                    return Poll::Ready(frame);
                }
                match i.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "stream idle timeout: no response data for {:?}",
                        i.idle
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Kind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Reported(r) => {
                let frame = std::task::ready!(Pin::new(&mut r.body).poll_frame(cx));
                if let Some(Ok(f)) = &frame
                    && let Some(trailers) = f.trailers_ref()
                    && let Err(e) = r.settings.observe(trailers, &r.stats)
                {
                    tracing::debug!(error = %e, "ignoring a malformed load report in trailers");
                }
                Poll::Ready(frame)
            }
            Kind::Empty => Poll::Ready(None),
        }
    }

    fn kind_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Idle(i) => i.body.is_end_stream(),
            Kind::Local(data) => data.is_none(),
            Kind::Reported(r) => r.body.is_end_stream(),
            Kind::Empty => true,
        }
    }
}
