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
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_core::config::server::Limits;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// gRPC Java's and Envoy's default (`drainGraceTime`, `--drain-time-s`): ten minutes.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// A server's connection settings, shared by its clones and its config watcher.
pub(crate) struct Connections {
    settings: ArcSwap<Settings>,
    grace_ms: AtomicU64,
    generation: watch::Sender<u64>,
    /// Serialises writers (the config watcher, the application's `drain`).
    write: Mutex<()>,
}

/// What a connection accepted now is set up with. The generation is part of it, so a
/// connection never pairs old settings with a generation that a drain would not reach.
pub(crate) struct Settings {
    pub(crate) tls: Option<Arc<ServerTls>>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) builder: Arc<auto::Builder<TokioExecutor>>,
    generation: u64,
}

impl Connections {
    pub(crate) fn new(tls: Option<ServerTls>, limits: &Limits, grace: Duration) -> Self {
        Self {
            settings: ArcSwap::from_pointee(Settings {
                tls: tls.map(Arc::new),
                limits: Arc::new(limits.clone()),
                builder: Arc::new(builder(limits)),
                generation: 0,
            }),
            grace_ms: AtomicU64::new(millis(grace)),
            generation: watch::channel(0).0,
            write: Mutex::new(()),
        }
    }

    /// The settings for a connection accepted now.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    pub(crate) fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_grace(&self, grace: Duration) {
        self.grace_ms.store(millis(grace), Ordering::Relaxed);
    }

    /// New settings for new connections; the old ones drain.
    pub(crate) fn replace(&self, tls: Option<Arc<ServerTls>>, limits: &Limits) {
        self.update(true, |s| {
            s.tls = tls;
            s.limits = Arc::new(limits.clone());
            s.builder = Arc::new(builder(limits));
        });
    }

    /// New limits for new connections (the old ones keep theirs until they close).
    pub(crate) fn set_limits(&self, limits: &Limits) {
        self.update(false, |s| {
            s.limits = Arc::new(limits.clone());
            s.builder = Arc::new(builder(limits));
        });
    }

    /// Every connection accepted so far drains.
    pub(crate) fn drain(&self) {
        self.update(true, |_| {});
    }

    fn update(&self, drain: bool, change: impl FnOnce(&mut Settings)) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.settings.load();
        let mut next = Settings {
            tls: old.tls.clone(),
            limits: old.limits.clone(),
            builder: old.builder.clone(),
            generation: old.generation + u64::from(drain),
        };
        change(&mut next);
        let generation = next.generation;
        // Settings first: a connection that sees the new generation has the new settings.
        self.settings.store(Arc::new(next));
        if drain {
            self.generation.send_replace(generation);
        }
    }

    /// A connection accepted with `settings` joins their generation.
    pub(crate) fn enlist(&self, settings: &Settings) -> Enlisted {
        Enlisted {
            rx: self.generation.subscribe(),
            mine: settings.generation,
        }
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
