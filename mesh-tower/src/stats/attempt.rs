//! gRPC's per-attempt and retry metrics (gRFC A66, A96), beside the per-call ones.
//!
//! A call may take several attempts (retries, hedges); gRPC's dashboards read each attempt's
//! start, duration, status and message sizes, and per call how many retries and hedges it
//! took and how long it waited between them. (A96's `grpc.client.call.transparent_retries`
//! is never recorded: the mesh makes no transparent retries. A refused stream is retried
//! only under the route's `retry_on: refused-stream`, as Envoy does, and counts as a retry.) The handles of one
//! method on one channel are made once ([`AttemptHandles`], cached by [`AttemptCache`]) and
//! travel with the call in its request's extensions, so an attempt finds them without a
//! lookup. An attempt's record ([`AttemptRecord`]) rides on its response body to the end of
//! its stream, as the call's record does; message sizes are the gRPC messages' lengths
//! (compressed, without the 5-byte prefix), read from the frames as they pass.

use super::META;
use super::grpc::status_name;
use crate::error::Retried;
use metrics::{Counter, Histogram, Key, Label};
use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::time::Instant;

/// `grpc.client.attempt.started`: attempts started (counted as they are sent).
pub const CLIENT_ATTEMPT_STARTED: &str = "grpc.client.attempt.started";
/// `grpc.client.attempt.duration`: from the attempt's start to the end of its answer, seconds.
pub const CLIENT_ATTEMPT_DURATION: &str = "grpc.client.attempt.duration";
/// `grpc.client.attempt.sent_total_compressed_message_size`: request message bytes.
pub const CLIENT_ATTEMPT_SENT: &str = "grpc.client.attempt.sent_total_compressed_message_size";
/// `grpc.client.attempt.rcvd_total_compressed_message_size`: response message bytes.
pub const CLIENT_ATTEMPT_RCVD: &str = "grpc.client.attempt.rcvd_total_compressed_message_size";
/// `grpc.client.call.retries`: retries of a call that had any (A96).
pub const CLIENT_CALL_RETRIES: &str = "grpc.client.call.retries";
/// `grpc.client.call.hedges`: hedged attempts of a call that had any (A96).
pub const CLIENT_CALL_HEDGES: &str = "grpc.client.call.hedges";
/// `grpc.client.call.retry_delay`: time a retried call spent waiting between attempts (A96).
pub const CLIENT_CALL_RETRY_DELAY: &str = "grpc.client.call.retry_delay";

/// A66's buckets for message sizes, bytes (0 B to 4 GiB by powers of four).
pub const SIZE_BUCKETS: [f64; 17] = [
    0.0,
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
    68719476736.0,
    274877906944.0,
];

/// A96's buckets for counts of retries and hedges.
pub const COUNT_BUCKETS: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 10.0];

/// More distinct (method, target) pairs than this (methods are the caller's to name) share
/// the handles of method `other`, as gRPC's OpenTelemetry plugin labels unregistered methods.
const MAX_METHODS: usize = 1024;

/// The handles of one gRPC method on one channel.
#[derive(Debug)]
pub(crate) struct AttemptHandles {
    labels: [Label; 2],
    started: Counter,
    /// By status code (0–16; anything else counts as `UNKNOWN`, 2).
    by_status: [OnceLock<StatusHandles>; 17],
    retries: OnceLock<RetryHandles>,
}

#[derive(Debug)]
struct StatusHandles {
    duration: Histogram,
    sent: Histogram,
    rcvd: Histogram,
}

#[derive(Debug)]
struct RetryHandles {
    retries: Histogram,
    hedges: Histogram,
    delay: Histogram,
}

impl AttemptHandles {
    fn new(method: &str, target: &str) -> Self {
        let labels = [
            Label::new("grpc.method", method.to_owned()),
            Label::new("grpc.target", target.to_owned()),
        ];
        let started = Key::from_parts(CLIENT_ATTEMPT_STARTED, labels.to_vec());
        Self {
            started: metrics::with_recorder(|r| r.register_counter(&started, &META)),
            labels,
            by_status: Default::default(),
            retries: OnceLock::new(),
        }
    }

    /// Counts an attempt as started.
    pub(crate) fn started(&self) {
        self.started.increment(1);
    }

    fn status(&self, code: u16) -> &StatusHandles {
        let code = if code > 16 { 2 } else { code };
        self.by_status[usize::from(code)].get_or_init(|| {
            let mut labels = self.labels.to_vec();
            labels.push(Label::new("grpc.status", status_name(Some(code))));
            let key = |name: &'static str| Key::from_parts(name, labels.clone());
            metrics::with_recorder(|r| StatusHandles {
                duration: r.register_histogram(&key(CLIENT_ATTEMPT_DURATION), &META),
                sent: r.register_histogram(&key(CLIENT_ATTEMPT_SENT), &META),
                rcvd: r.register_histogram(&key(CLIENT_ATTEMPT_RCVD), &META),
            })
        })
    }

    /// Records a call's retries and hedges (each only when not zero, as A96 says) and, when
    /// it was retried, its total delay between attempts.
    pub(crate) fn retried(&self, r: &Retried) {
        let h = self.retries.get_or_init(|| {
            let key = |name: &'static str| Key::from_parts(name, self.labels.to_vec());
            metrics::with_recorder(|m| RetryHandles {
                retries: m.register_histogram(&key(CLIENT_CALL_RETRIES), &META),
                hedges: m.register_histogram(&key(CLIENT_CALL_HEDGES), &META),
                delay: m.register_histogram(&key(CLIENT_CALL_RETRY_DELAY), &META),
            })
        });
        if r.retries > 0 {
            h.retries.record(f64::from(r.retries));
            h.delay.record(r.delay.as_secs_f64());
        }
        if r.hedges > 0 {
            h.hedges.record(f64::from(r.hedges));
        }
    }
}

/// The handles of each (method, target) seen, made once, by a hash of the two.
#[derive(Debug, Default)]
pub(crate) struct AttemptCache {
    by_call: RwLock<HashMap<u64, Arc<AttemptHandles>>>,
}

impl AttemptCache {
    /// The handles of calls to `path` (`/pkg.Service/Method`) on a channel to `target`.
    pub(crate) fn get(&self, path: &str, target: &str) -> Arc<AttemptHandles> {
        let method = path.strip_prefix('/').unwrap_or(path);
        let key = key(method, target);
        let is =
            |a: &AttemptHandles| a.labels[0].value() == method && a.labels[1].value() == target;
        {
            let map = self.by_call.read().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(a) if is(a) => return a.clone(),
                // A hash collision: handles of its own, uncached.
                Some(_) => return Arc::new(AttemptHandles::new(method, target)),
                None => {}
            }
        }
        let mut map = self.by_call.write().unwrap_or_else(|e| e.into_inner());
        // Beyond the bound, one shared `other` per target (cached like the rest).
        let (method, key) = if map.len() >= MAX_METHODS {
            ("other", self::key("other", target))
        } else {
            (method, key)
        };
        map.entry(key)
            .or_insert_with(|| Arc::new(AttemptHandles::new(method, target)))
            .clone()
    }
}

fn key(method: &str, target: &str) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    h.write(method.as_bytes());
    h.write_u8(0xff);
    h.write(target.as_bytes());
    h.finish()
}

/// A call's attempt handles, in its request's extensions for each attempt to find.
#[derive(Clone, Debug)]
pub(crate) struct CallAttempts(pub(crate) Arc<AttemptHandles>);

/// The message bytes an attempt's request sent so far (the HTTP/2 pump counts them).
#[derive(Clone, Debug)]
pub(crate) struct SentMessages(pub(crate) Arc<AtomicU64>);

/// gRPC message lengths in a stream of body bytes: each message is a 1-byte flag, a 4-byte
/// big-endian length and that many bytes; the total of the lengths is A66's message size.
#[derive(Debug, Default)]
pub(crate) struct MessageSizes {
    /// Bytes of the current prefix read (5: in the message).
    prefix: u8,
    len: u32,
    /// Bytes of the current message still to come.
    left: u64,
    total: u64,
}

impl MessageSizes {
    /// Reads the next `data` bytes of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.prefix < 5 {
                if self.prefix > 0 {
                    self.len = self.len << 8 | u32::from(data[0]);
                }
                self.prefix += 1;
                data = &data[1..];
                if self.prefix == 5 {
                    self.total += u64::from(self.len);
                    self.left = u64::from(self.len);
                    if self.left == 0 {
                        self.prefix = 0;
                    }
                }
                continue;
            }
            let take = self.left.min(data.len() as u64);
            self.left -= take;
            data = &data[take as usize..];
            if self.left == 0 {
                self.prefix = 0;
                self.len = 0;
            }
        }
    }

    /// Reads the bytes of a data frame (a frame of more than 8 chunks is read by its first 8;
    /// bodies' frames are one chunk).
    pub(crate) fn feed_buf(&mut self, data: &impl bytes::Buf) {
        let mut chunks = [std::io::IoSlice::new(&[]); 8];
        let n = data.chunks_vectored(&mut chunks);
        for c in &chunks[..n] {
            self.feed(c);
        }
    }

    /// The message bytes announced so far.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// One attempt in progress: written when its answer's stream ends, or when the attempt is
/// dropped (a hedge that lost, a caller that went away: `CANCELLED`).
#[derive(Debug)]
pub(crate) struct AttemptRecord {
    handles: Arc<AttemptHandles>,
    start: Instant,
    sent: Arc<AtomicU64>,
    rcvd: MessageSizes,
    status: Option<u16>,
    done: bool,
}

/// `CANCELLED`: an attempt whose answer nobody read to the end.
const CANCELLED: u16 = 1;

impl AttemptRecord {
    /// An attempt of a call with `handles`, starting now; its request's message bytes are
    /// counted into `sent`.
    pub(crate) fn start(handles: Arc<AttemptHandles>, sent: Arc<AtomicU64>) -> Self {
        handles.started();
        Self {
            handles,
            start: Instant::now(),
            sent,
            rcvd: MessageSizes::default(),
            status: None,
            done: false,
        }
    }

    /// Looks at a response frame: message bytes, the status in trailers.
    pub(crate) fn frame(&mut self, frame: &http_body::Frame<bytes::Bytes>) {
        if let Some(d) = frame.data_ref() {
            self.rcvd.feed(d);
        } else if let Some(s) = frame.trailers_ref().and_then(super::grpc_status) {
            self.status = Some(s);
        }
    }

    /// Sets the status the attempt ended with (from a head or an error).
    pub(crate) fn set_status(&mut self, code: u16) {
        self.status = Some(code);
    }

    /// The answer's stream broke before a status: `INTERNAL`, as gRPC reports a stream that
    /// ends without one.
    pub(crate) fn broken(&mut self) {
        self.status.get_or_insert(13);
    }

    /// Writes the record (once).
    pub(crate) fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let h = self.handles.status(self.status.unwrap_or(CANCELLED));
        h.duration.record(self.start.elapsed().as_secs_f64());
        h.sent.record(self.sent.load(Ordering::Relaxed) as f64);
        h.rcvd.record(self.rcvd.total() as f64);
    }
}

impl Drop for AttemptRecord {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(lens: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &n in lens {
            out.push(0);
            out.extend_from_slice(&(n as u32).to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, n));
        }
        out
    }

    #[test]
    fn message_sizes_leave_out_the_prefixes_however_the_bytes_split() {
        let bytes = messages(&[3, 0, 300, 70000]);
        let want = 3 + 300 + 70000;
        let mut whole = MessageSizes::default();
        whole.feed(&bytes);
        assert_eq!(whole.total(), want);
        for cut in [1, 2, 4, 5, 6, 8, 9, 13, 14, 200, 320, 5000] {
            let mut m = MessageSizes::default();
            m.feed(&bytes[..cut]);
            m.feed(&bytes[cut..]);
            assert_eq!(m.total(), want, "cut at {cut}");
        }
        let mut m = MessageSizes::default();
        for b in &bytes[..400] {
            m.feed(std::slice::from_ref(b));
        }
        assert_eq!(
            m.total(),
            303 + 70000,
            "byte by byte: the fourth's length is announced"
        );
    }

    /// Untrusted bytes (an upstream's response body), cut anywhere: no panic, and the same
    /// count as when read whole (seeded; zeros are frequent so prefixes announce short
    /// messages and many of them fit).
    #[test]
    fn any_bytes_cut_anywhere_count_as_when_read_whole() {
        let mut rng = fastrand::Rng::with_seed(0x6772_7063);
        for _ in 0..5_000 {
            let len = rng.usize(0..300);
            let bytes: Vec<u8> = (0..len)
                .map(|_| if rng.bool() { 0 } else { rng.u8(..) })
                .collect();
            let mut whole = MessageSizes::default();
            whole.feed(&bytes);
            let mut parts = MessageSizes::default();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                parts.feed(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(whole.total(), parts.total(), "{bytes:?}");
        }
    }
}
