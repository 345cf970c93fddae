//! Counting the streams HTTP/2 refuses on its own.
//!
//! A caller that opens more streams than `max_concurrent_streams` announces gets each extra
//! stream reset with `REFUSED_STREAM` inside h2, which has no hook to say so: the handler never
//! hears of it and hyper reports nothing. What a server writes on an HTTP/2 connection is
//! frames and nothing else, so a scanner over the written bytes sees every `RST_STREAM` and its
//! code. It reads frame headers only and skips payloads by their length: a few comparisons per
//! frame, no copy, no allocation. An HTTP/1.1 connection's first written byte is `H` (of
//! `HTTP/1.1`), an HTTP/2 server's is the high byte of its SETTINGS frame's length (0), so the
//! scanner turns itself off on HTTP/1.1 at the first write.

use super::ServerStats;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const RST_STREAM: u8 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

/// Where the scanner is in the stream of written frames.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    mode: Mode,
    head: [u8; 9],
    /// Bytes of the current frame header seen; 9: in its payload.
    head_len: usize,
    /// Payload bytes left in the current frame.
    left: usize,
    /// In an `RST_STREAM` payload: its error code so far and how many of its bytes.
    rst: Option<(u32, u8)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Unknown,
    Http1,
    Http2,
}

impl Scan {
    /// Reads `buf`, the next bytes written; how many `REFUSED_STREAM` resets ended in it.
    pub(crate) fn feed(&mut self, mut buf: &[u8]) -> u32 {
        if self.mode == Mode::Unknown {
            self.mode = match buf.first() {
                None => return 0,
                Some(0) => Mode::Http2,
                Some(_) => Mode::Http1,
            };
        }
        if self.mode == Mode::Http1 {
            return 0;
        }
        let mut refused = 0;
        while !buf.is_empty() {
            if self.head_len < 9 {
                let take = (9 - self.head_len).min(buf.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&buf[..take]);
                self.head_len += take;
                buf = &buf[take..];
                if self.head_len == 9 {
                    let h = self.head;
                    self.left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    self.rst = (h[3] == RST_STREAM).then_some((0, 0));
                    if self.left == 0 {
                        self.head_len = 0;
                    }
                }
                continue;
            }
            let take = self.left.min(buf.len());
            if let Some((code, seen)) = &mut self.rst {
                for &b in buf[..take].iter().take(usize::from(4 - *seen)) {
                    *code = *code << 8 | u32::from(b);
                    *seen += 1;
                }
            }
            self.left -= take;
            buf = &buf[take..];
            if self.left == 0 {
                if self.rst == Some((REFUSED_STREAM, 4)) {
                    refused += 1;
                }
                self.rst = None;
                self.head_len = 0;
            }
        }
        refused
    }
}

/// A server connection's IO with its written frames scanned (see the module doc).
#[derive(Debug)]
pub(crate) struct Frames<T> {
    inner: T,
    scan: Scan,
    stats: Arc<ServerStats>,
}

impl<T> Frames<T> {
    pub(crate) fn new(inner: T, stats: Arc<ServerStats>) -> Self {
        Self {
            inner,
            scan: Scan::default(),
            stats,
        }
    }

    fn written(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        let mut refused = 0;
        for b in bufs {
            if n == 0 {
                break;
            }
            let part = n.min(b.len());
            refused += self.scan.feed(&b[..part]);
            n -= part;
        }
        if refused > 0 {
            self.stats
                .refused_streams
                .fetch_add(u64::from(refused), Ordering::Relaxed);
            tracing::debug!(
                refused,
                "HTTP/2 streams refused (REFUSED_STREAM): beyond max_concurrent_streams"
            );
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Frames<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Frames<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written(&[IoSlice::new(buf)], n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written(bufs, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A server's bytes: SETTINGS, HEADERS, DATA, two refusals, a CANCEL reset, GOAWAY.
    fn written() -> Vec<u8> {
        let mut out = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
        out.extend(frame(0x1, 1, &[0x88]));
        out.extend(frame(0x0, 1, &[7u8; 300]));
        out.extend(frame(RST_STREAM, 3, &7u32.to_be_bytes()));
        out.extend(frame(RST_STREAM, 5, &8u32.to_be_bytes()));
        out.extend(frame(RST_STREAM, 7, &7u32.to_be_bytes()));
        out.extend(frame(0x7, 0, &[0, 0, 0, 7, 0, 0, 0, 7]));
        out
    }

    #[test]
    fn refused_streams_are_counted_however_the_writes_split() {
        let bytes = written();
        assert_eq!(Scan::default().feed(&bytes), 2, "one write");
        // Every split point, and byte by byte: frame headers and codes cut anywhere.
        for cut in 0..bytes.len() {
            let mut scan = Scan::default();
            let n = scan.feed(&bytes[..cut]) + scan.feed(&bytes[cut..]);
            assert_eq!(n, 2, "cut at {cut}");
        }
        let mut scan = Scan::default();
        let n: u32 = bytes
            .iter()
            .map(|b| scan.feed(std::slice::from_ref(b)))
            .sum();
        assert_eq!(n, 2, "byte by byte");
    }

    #[test]
    fn http1_connections_are_not_scanned() {
        let mut scan = Scan::default();
        assert_eq!(
            scan.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"),
            0
        );
        // Even bytes that would read as a refusal after it.
        assert_eq!(scan.feed(&frame(RST_STREAM, 1, &7u32.to_be_bytes())), 0);
        assert_eq!(scan.mode, Mode::Http1);
    }

    #[test]
    fn a_goaway_with_the_refused_code_is_not_a_refused_stream() {
        let mut scan = Scan::default();
        let mut bytes = frame(0x4, 0, &[]);
        bytes.extend(frame(0x7, 0, &[0, 0, 0, 7, 0, 0, 0, 7]));
        assert_eq!(scan.feed(&bytes), 0);
    }

    /// Any bytes a connection writes, cut anywhere: no panic, the same count as in one write.
    #[test]
    fn any_bytes_cut_anywhere_count_as_in_one_write() {
        let mut rng = fastrand::Rng::with_seed(0x6832_7363);
        for _ in 0..5_000 {
            // Mostly frames with small lengths (so many fit), some RST_STREAMs, any bytes.
            let mut bytes = Vec::new();
            for _ in 0..rng.usize(0..12) {
                let payload: Vec<u8> = (0..rng.usize(0..8)).map(|_| rng.u8(0..9)).collect();
                let kind = if rng.bool() { RST_STREAM } else { rng.u8(..) };
                bytes.extend(frame(kind, rng.u32(..), &payload));
                if rng.u8(0..4) == 0 {
                    bytes.push(rng.u8(..));
                }
            }
            let whole = Scan::default().feed(&bytes);
            let mut scan = Scan::default();
            let mut rest = &bytes[..];
            let mut parts = 0;
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                parts += scan.feed(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(whole, parts, "{bytes:?}");
        }
    }
}
