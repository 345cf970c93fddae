//! What each new connection is set up with, and the draining of old ones (gRFC A36).
//!
//! Why: TLS settings and the HTTP limits are fixed when a connection is accepted (a TLS
//! session cannot change its certificate policy halfway), while the config changes under a
//! running server. Each connection remembers the *generation* it was accepted under; when the
//! server stops serving, or its TLS or limits change, the generation moves on and every older
//! connection is shut down gracefully: HTTP/2 gets a GOAWAY, HTTP/1.1 loses keep-alive, the
//! requests already in flight run to completion, and whatever still runs after the drain grace
//! period is closed. New connections meet the new settings at once. (The RBAC, JWT, route and
//! rate-limit policy is read per request, so it applies to old connections too without a drain.)

use crate::tls::ServerTls;
use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_core::config::server::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// gRPC Java's and Envoy's default (`drainGraceTime`, `--drain-time-s`): ten minutes.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// A server's connection settings, shared by its clones and its config watcher.
pub(crate) struct Connections {
    tls: ArcSwapOption<ServerTls>,
    limits: ArcSwap<Limits>,
    builder: ArcSwap<auto::Builder<TokioExecutor>>,
    grace_ms: AtomicU64,
    generation: watch::Sender<u64>,
}

impl Connections {
    pub(crate) fn new(tls: Option<ServerTls>, limits: &Limits, grace: Duration) -> Self {
        Self {
            tls: ArcSwapOption::new(tls.map(Arc::new)),
            limits: ArcSwap::from_pointee(limits.clone()),
            builder: ArcSwap::from_pointee(builder(limits)),
            grace_ms: AtomicU64::new(millis(grace)),
            generation: watch::channel(0).0,
        }
    }

    /// The TLS a connection accepted now gets (`None`: plaintext).
    pub(crate) fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.load_full()
    }

    pub(crate) fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }

    /// hyper's server for a connection accepted now.
    pub(crate) fn builder(&self) -> Arc<auto::Builder<TokioExecutor>> {
        self.builder.load_full()
    }

    pub(crate) fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_grace(&self, grace: Duration) {
        self.grace_ms.store(millis(grace), Ordering::Relaxed);
    }

    /// New settings for new connections; the old ones drain.
    pub(crate) fn replace(&self, tls: Option<ServerTls>, limits: &Limits) {
        self.tls.store(tls.map(Arc::new));
        self.set_limits(limits);
        self.drain();
    }

    /// New limits for new connections (the old ones keep theirs until they close).
    pub(crate) fn set_limits(&self, limits: &Limits) {
        self.limits.store(Arc::new(limits.clone()));
        self.builder.store(Arc::new(builder(limits)));
    }

    /// Every connection accepted so far drains.
    pub(crate) fn drain(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// The generation a connection accepted now belongs to, and a way to learn its end.
    pub(crate) fn enlist(&self) -> Enlisted {
        let rx = self.generation.subscribe();
        let mine = *rx.borrow();
        Enlisted { rx, mine }
    }
}

/// One connection's place in the generations.
pub(crate) struct Enlisted {
    rx: watch::Receiver<u64>,
    mine: u64,
}

impl Enlisted {
    /// Resolves when this connection's generation is drained (never, if the server is gone:
    /// then the connection lives until it closes by itself).
    pub(crate) async fn drained(&mut self) {
        let mine = self.mine;
        if self.rx.wait_for(|g| *g > mine).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// hyper's HTTP/1.1 + HTTP/2 server with `limits` applied.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    let header_bytes = limits.max_request_headers_kb as usize * 1024;
    let timeout = Some(limits.request_headers_timeout).filter(|t| !t.is_zero());
    b.http1()
        .timer(TokioTimer::new())
        .max_buf_size(header_bytes.max(8192))
        .header_read_timeout(timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams as usize);
    b
}
