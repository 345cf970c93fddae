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
//!
//! A server with `filter_chains` has settings per chain; a connection's chain is chosen when
//! it is accepted and kept for its life, as in Envoy and gRPC. A change to any chain's TLS or
//! limits, or to which chains there are and what they match, drains every connection (Envoy
//! drains only the changed chains' connections: simpler here, and only slower to converge).

use super::live::Checks;
use crate::tls::ServerTls;
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_core::config::filter_chain::ChainSelector;
use mesh_core::config::server::Limits;
use std::net::SocketAddr;
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

/// What a connection accepted now is set up with: its chain, chosen by its addresses. The
/// generation is part of it, so a connection never pairs old settings with a generation that
/// a drain would not reach.
pub(crate) struct Settings {
    /// Index 0: the top-level (default) chain; then the config's `filter_chains`.
    pub(crate) chains: Arc<[Chain]>,
    pub(crate) selector: Arc<ChainSelector>,
    /// No default chain: a connection no chain matches is closed.
    pub(crate) close_unmatched: bool,
    generation: u64,
}

/// One filter chain as its connections are served: TLS, limits, and the checks every
/// request on them passes.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) tls: Option<Arc<ServerTls>>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) builder: Arc<auto::Builder<TokioExecutor>>,
    pub(crate) checks: Checks,
}

impl Chain {
    pub(crate) fn new(tls: Option<Arc<ServerTls>>, limits: &Limits, checks: Checks) -> Self {
        Self {
            tls,
            limits: Arc::new(limits.clone()),
            builder: Arc::new(builder(limits)),
            checks,
        }
    }
}

impl Settings {
    /// The top-level chain (the default one).
    pub(crate) fn top(&self) -> &Chain {
        &self.chains[0]
    }

    /// The chain a connection from `remote` to our `local` address takes (gRFC A36's
    /// most specific match); `None`: none matches and there is no default, so it is closed.
    pub(crate) fn chain_for(
        &self,
        local: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> Option<&Chain> {
        if self.selector.is_empty() {
            return Some(self.top());
        }
        match local.and_then(|l| self.selector.select(l, remote)) {
            Some(i) => self.chains.get(i + 1),
            None if self.close_unmatched => None,
            None => Some(self.top()),
        }
    }
}

impl Connections {
    /// `chains` (at least the top-level one), chosen among by `selector`.
    pub(crate) fn new(
        chains: Vec<Chain>,
        selector: ChainSelector,
        close_unmatched: bool,
        grace: Duration,
    ) -> Self {
        assert!(!chains.is_empty(), "a server has its top-level chain");
        Self {
            settings: ArcSwap::from_pointee(Settings {
                chains: chains.into(),
                selector: Arc::new(selector),
                close_unmatched,
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

    /// New chains for new connections; the old connections drain.
    pub(crate) fn replace(&self, chains: Vec<Chain>, selector: ChainSelector, close: bool) {
        assert!(!chains.is_empty(), "a server has its top-level chain");
        self.update(true, |s| {
            s.chains = chains.into();
            s.selector = Arc::new(selector);
            s.close_unmatched = close;
        });
    }

    /// New limits for the top-level chain's new connections (the old ones keep theirs until
    /// they close).
    pub(crate) fn set_limits(&self, limits: &Limits) {
        self.update(false, |s| {
            let mut chains = s.chains.to_vec();
            let top = chains[0].clone();
            chains[0] = Chain::new(top.tls, limits, top.checks);
            s.chains = chains.into();
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
            chains: old.chains.clone(),
            selector: old.selector.clone(),
            close_unmatched: old.close_unmatched,
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
