//! Serving through the mesh: the inbound half.
//!
//! Why: a mesh has two ends, and without a sidecar the server must itself terminate mTLS with
//! the workload's identity and refuse callers the policy does not allow, before the handler
//! runs. A [`MeshServer`] is built from a `servers:` entry of the config (or by hand) and
//! gives exactly that: its [`ServerTls`] (rotating with the certificate provider), its JWT
//! filter compiled into a [`JwtEngine`] and its RBAC filters into a [`RbacEngine`], both
//! recompiled when the config changes (requests read them lock-free). Use it two ways:
//!
//! - [`MeshServer::serve`]: accept on a listener and serve a hyper/tower service over
//!   HTTP/1.1 and HTTP/2 (by ALPN, or by preface in plaintext), each request carrying the
//!   caller's [`PeerInfo`];
//! - with tonic: `Server::builder().layer(server.jwt_layer()).layer(server.rbac_layer())
//!   .serve_with_incoming(tls.incoming(listener))` (tonic puts the connection's `PeerInfo` in
//!   each request, see [`crate::tls`]).

mod connections;
mod frames;
mod inputs;
mod live;
mod serve;

use crate::error::{ErrorKind, MeshError};
use crate::jwt::{JwtEngine, JwtLayer};
use crate::mesh::Mesh;
use crate::rbac::{RbacEngine, RbacLayer};
use crate::tls::ServerTls;
use arc_swap::ArcSwap;
use connections::{Chain, Connections, DEFAULT_GRACE};
use inputs::{Inputs, inbound, resolved};
use mesh_core::ResourceKind;
use mesh_core::config::server::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::route::inbound::PerRoute;
pub use crate::tls::PeerInfo;

/// A request's body as [`MeshServer::serve`] hands it to the application: hyper's body as it
/// arrived ([`into_inner`](crate::telemetry::InboundRequestBody::into_inner)), its gRPC
/// messages counted on the way for gRPC's server metrics (gRFC A66).
pub type Incoming = crate::telemetry::InboundRequestBody<hyper::body::Incoming>;

/// A server's inbound policy: TLS and authorization. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let config = mesh_core::MeshConfig::from_yaml(r#"
/// servers:
///   - name: echo
///     http_filters:
///       - name: envoy.filters.http.rbac
///         rbac: { rules: { policies: { local: { permissions: [{ any: true }], principals: [{ remote_ip: { address_prefix: 127.0.0.1, prefix_len: 8 } }] } } } }
/// "#).unwrap();
/// let mesh = mesh_tower::Mesh::from_config(config).await.unwrap();
/// let server = mesh.server("echo").unwrap();
/// assert!(server.tls().is_none(), "plaintext: no transport_socket");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let echo = tower::service_fn(|_req: http::Request<mesh_tower::server::Incoming>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
/// });
/// tokio::spawn(server.serve(listener, echo));
/// # }
/// ```
#[derive(Clone)]
pub struct MeshServer {
    name: Arc<str>,
    stats: Arc<ServerStats>,
    serving: tokio::sync::watch::Receiver<Serving>,
    /// Each chain's TLS, limits and checks for new connections, and the drain of old ones.
    conns: Arc<Connections>,
    /// Connections being served now.
    open: Arc<tokio::sync::watch::Sender<usize>>,
    /// The top-level chain's compiled filters, swapped as the config changes.
    checks: live::Checks,
    /// Keeps the config watcher running while any clone lives.
    _watch: Option<Arc<WatchGuard>>,
    /// Keeps the server's config subscribed (xDS) while any clone lives.
    _interest: Option<Arc<mesh_core::InterestGuard>>,
    /// Istio's request metrics (`reporter="destination"`), when the mesh records them.
    telemetry: Option<crate::telemetry::Telemetry>,
}

/// A server's serving mode (gRFC A36).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// Accepting connections.
    Serving,
    /// Its config is gone (removed, or the control plane says it does not exist, and why):
    /// new connections are closed at once; those already open drain (requests in flight
    /// finish, no new ones start).
    NotServing(String),
}

/// Counters of refusals by the server's limits.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub(crate) headers_too_large: AtomicU64,
    pub(crate) header_timeouts: AtomicU64,
    pub(crate) http2_errors: AtomicU64,
    pub(crate) other_errors: AtomicU64,
    pub(crate) drain_expired: AtomicU64,
    pub(crate) unmatched: AtomicU64,
    pub(crate) refused_streams: AtomicU64,
}

/// What a server's limits refused, by limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStatsSnapshot {
    /// HTTP/1.1 requests whose headers exceeded `max_request_headers_kb` (answered 431).
    pub headers_too_large: u64,
    /// Connections closed because headers did not arrive within `request_headers_timeout`.
    pub header_timeouts: u64,
    /// HTTP/2 connections closed for a protocol violation, including rapid resets beyond
    /// `max_pending_accept_reset_streams` (GOAWAY `ENHANCE_YOUR_CALM`).
    pub http2_errors: u64,
    /// Other connection errors (resets, malformed requests).
    pub other_errors: u64,
    /// Draining connections closed at the end of the drain grace period with requests still
    /// in flight.
    pub drain_expired: u64,
    /// Connections closed unanswered because no filter chain matched them and the server
    /// has no default chain (`close_unmatched`).
    pub unmatched: u64,
    /// HTTP/2 streams refused (`RST_STREAM REFUSED_STREAM`) because the caller opened more
    /// than `max_concurrent_streams` at once.
    pub refused_streams: u64,
}

impl ServerStats {
    fn snapshot(&self) -> ServerStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStatsSnapshot {
            headers_too_large: g(&self.headers_too_large),
            header_timeouts: g(&self.header_timeouts),
            http2_errors: g(&self.http2_errors),
            other_errors: g(&self.other_errors),
            drain_expired: g(&self.drain_expired),
            unmatched: g(&self.unmatched),
            refused_streams: g(&self.refused_streams),
        }
    }
}

struct WatchGuard(tokio::task::AbortHandle);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for MeshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshServer")
            .field("name", &self.name)
            .field("tls", &self.conns.settings().top().tls.is_some())
            .finish_non_exhaustive()
    }
}

impl MeshServer {
    /// A server with this TLS (none: plaintext) and RBAC engine, outside any config.
    pub fn new(tls: Option<ServerTls>, rbac: RbacEngine) -> Self {
        let checks = live::Checks {
            rbac: Arc::new(ArcSwap::from_pointee(rbac)),
            ..Default::default()
        };
        let top = Chain::new(tls.map(Arc::new), &Limits::default(), checks.clone());
        Self {
            name: Arc::from("server"),
            stats: Arc::default(),
            serving: tokio::sync::watch::channel(Serving::Serving).1,
            conns: Arc::new(Connections::new(
                vec![top],
                Default::default(),
                false,
                DEFAULT_GRACE,
            )),
            open: Arc::default(),
            checks,
            _watch: None,
            _interest: None,
            telemetry: None,
        }
    }

    /// The name it serves under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TLS acceptor a connection accepted now gets (`None`: plaintext). It changes with
    /// the config; [`serve`](Self::serve) follows it, an accept loop of the application's
    /// own (tonic's `serve_with_incoming`) keeps the acceptor it took.
    ///
    /// With `filter_chains` this and the `*_layer` methods are the top-level (default)
    /// chain's; only [`serve`](Self::serve) chooses a chain per connection.
    pub fn tls(&self) -> Option<ServerTls> {
        self.conns.settings().top().tls.as_deref().cloned()
    }

    /// The RBAC layer enforcing this server's current policy (for tonic or a tower stack).
    pub fn rbac_layer(&self) -> RbacLayer {
        RbacLayer::live(self.checks.rbac.clone())
    }

    /// The JWT layer verifying tokens as this server's current `jwt_authn` filter says (for
    /// tonic or a tower stack). Put it before [`rbac_layer`](Self::rbac_layer): RBAC
    /// principals read the claims it verified.
    pub fn jwt_layer(&self) -> JwtLayer {
        JwtLayer::live(self.checks.jwt.clone())
    }

    /// The local rate limit layer of this server's `local_ratelimit` filter (for tonic or a
    /// tower stack; put it first). Without the filter it passes everything.
    pub fn ratelimit_layer(&self) -> crate::ratelimit::InboundRateLimitLayer {
        crate::ratelimit::InboundRateLimitLayer::live(self.checks.ratelimit.clone())
    }

    /// The fault layer of this server's `fault` filter (for tonic or a tower stack; put it
    /// last, right before the service). Without the filter it passes everything.
    pub fn fault_layer(&self) -> crate::fault::InboundFaultLayer {
        crate::fault::InboundFaultLayer::live(self.checks.fault.clone())
    }

    /// This server verifying tokens with `engine` (a server from [`Mesh::server`] takes its
    /// engine from the config).
    pub fn with_jwt(self, engine: JwtEngine) -> Self {
        self.checks.jwt.store(Arc::new(engine));
        self
    }

    /// This server recording Istio's request metrics as `telemetry`'s workload (a server
    /// from [`Mesh::server`] records as the mesh's [`Mesh::telemetry`]).
    pub fn with_telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The metrics layer [`serve`](Self::serve) puts outside the RBAC check, for tonic or a
    /// tower stack (it records nothing when this server records no metrics, and has the
    /// same type either way). Put it before [`rbac_layer`](Self::rbac_layer) so denied
    /// requests are counted too.
    pub fn metrics_layer(&self) -> crate::telemetry::InboundMetricsLayer {
        let log = self.checks.access_log.clone();
        match self.telemetry.clone() {
            Some(t) => crate::telemetry::InboundMetricsLayer::new(t).with_listener_log(Some(log)),
            None => crate::telemetry::InboundMetricsLayer::none(),
        }
    }

    /// Whether the server serves now, and changes to it (gRFC A36's serving mode: the
    /// application can watch it, e.g. to report readiness).
    pub fn serving(&self) -> tokio::sync::watch::Receiver<Serving> {
        self.serving.clone()
    }

    /// This server with other limits on callers (for connections accepted from now on,
    /// until the config's limits change).
    pub fn with_limits(self, limits: Limits) -> Self {
        self.conns.set_limits(&limits);
        self
    }

    /// How long a draining connection may go on serving the requests it has (default: ten
    /// minutes, as gRPC Java's `drainGraceTime` and Envoy's `--drain-time-s`; a server from
    /// the config takes its `drain_grace_period`). Then it is closed.
    ///
    /// ```
    /// use mesh_tower::rbac::RbacEngine;
    /// use mesh_tower::server::MeshServer;
    /// let server = MeshServer::new(None, RbacEngine::default())
    ///     .with_drain_grace(std::time::Duration::from_secs(30));
    /// assert_eq!(server.drain_grace(), std::time::Duration::from_secs(30));
    /// ```
    pub fn with_drain_grace(self, grace: std::time::Duration) -> Self {
        self.conns.set_grace(grace);
        self
    }

    /// The drain grace period in force.
    pub fn drain_grace(&self) -> std::time::Duration {
        self.conns.grace()
    }

    /// Drains every connection [`serve`](Self::serve) has accepted so far: HTTP/2 callers
    /// get a GOAWAY, HTTP/1.1 callers lose keep-alive, requests in flight finish (within
    /// the grace period). For a graceful shutdown: stop accepting (drop the `serve` future),
    /// drain, then wait for [`open_connections`](Self::open_connections) to reach 0.
    pub fn drain(&self) {
        self.conns.drain();
    }

    /// The number of connections [`serve`](Self::serve) serves now, and its changes.
    pub fn open_connections(&self) -> tokio::sync::watch::Receiver<usize> {
        self.open.subscribe()
    }

    /// The limits a connection accepted now gets.
    pub fn limits(&self) -> Limits {
        (*self.conns.settings().top().limits).clone()
    }

    /// What the limits refused so far.
    pub fn stats(&self) -> ServerStatsSnapshot {
        self.stats.snapshot()
    }

    /// The engine in force now.
    pub fn rbac(&self) -> Arc<RbacEngine> {
        self.checks.rbac.load_full()
    }
}

impl Mesh {
    /// The server `name` of this mesh's config (`servers:`): its TLS from the mesh's
    /// certificate providers, its filters compiled, and a watcher that follows the config:
    /// new policy applies to every request from then on; new TLS settings or limits apply to
    /// new connections while the older ones drain; without its config the server does not
    /// serve (gRFC A36).
    pub fn server(&self, name: &str) -> Result<MeshServer, MeshError> {
        let store = self.store().clone();
        let snap = store.load();
        let Some(config) = snap.server(name).map(|s| resolved(&snap, s)) else {
            return Err(MeshError::new(
                ErrorKind::NoConfig,
                format!("no server named {name:?} in the config"),
            ));
        };
        let make_tls = self.server_tls_maker();
        let chains = live::chains(&config, &make_tls)?;
        let checks = chains[0].checks.clone();
        let conns = Arc::new(Connections::new(
            chains,
            live::selector(&config),
            config.close_unmatched,
            config.drain_grace_period.unwrap_or(DEFAULT_GRACE),
        ));
        let live = live::Live::new(&conns);
        // Any change: the server, or a route config it names through RDS.
        let mut changes = store.changed();
        let owned = name.to_owned();
        let (serving_tx, serving) = tokio::sync::watch::channel(Serving::Serving);
        let mut last = config;
        let mut inputs = snap.server(name).map(|s| Inputs::of(&snap, s));
        let task = self.control().spawn(async move {
            while changes.changed().await.is_ok() {
                let snap = store.load();
                let serving_now = matches!(*serving_tx.borrow(), Serving::Serving);
                // Most store changes are other resources': with the server and its routes
                // the same as last applied, there is nothing to resolve or compare. (After a
                // failed apply every change retries: a certificate provider may have come.)
                let now = snap.server(&owned).map(|s| Inputs::of(&snap, s));
                if serving_now && now.is_some() && now == inputs {
                    continue;
                }
                inputs = now;
                let Some(config) = snap.server(&owned).map(|s| resolved(&snap, s)) else {
                    if !serving_now {
                        continue;
                    }
                    // A36: without its listener the server does not serve; the connections it
                    // holds drain, new ones are closed, until the listener is back.
                    let why = match snap.absence(ResourceKind::Server, &owned) {
                        Some(mesh_core::Absence::Missing(why)) => why.clone(),
                        _ => "removed from the config".to_owned(),
                    };
                    tracing::warn!(server = %owned, %why, "not serving");
                    serving_tx.send_replace(Serving::NotServing(why));
                    let Some(conns) = live.conns.upgrade() else {
                        break;
                    };
                    conns.drain();
                    continue;
                };
                if config == last && serving_now {
                    continue;
                }
                match live.apply(&last, &config, &make_tls) {
                    Ok(true) => last = config,
                    Ok(false) => break,
                    Err(e) => {
                        inputs = None;
                        tracing::warn!(server = %owned, error = %e, "keeping the last config")
                    }
                }
                if !serving_now {
                    tracing::info!(server = %owned, "serving again");
                    serving_tx.send_replace(Serving::Serving);
                }
            }
        });
        Ok(MeshServer {
            name: Arc::from(name),
            stats: Arc::default(),
            serving,
            conns,
            open: Arc::default(),
            checks,
            _watch: Some(Arc::new(WatchGuard(task))),
            _interest: None,
            telemetry: self.telemetry().cloned(),
        })
    }

    /// [`server`](Self::server), once its config is here: the name is subscribed (a config
    /// source fetching on demand, such as the xDS client, asks for it) and awaited, with the
    /// SDS secrets its TLS names, for at most `patience`. Fails at once when the source says
    /// the server does not exist.
    pub async fn server_when_ready(
        &self,
        name: &str,
        patience: std::time::Duration,
    ) -> Result<MeshServer, MeshError> {
        let store = self.store().clone();
        let interest = store.register_interest(ResourceKind::Server, name);
        // Any change: the listener, or an SDS secret its TLS waits for.
        let mut changes = store.changed();
        let arrived = tokio::time::timeout(patience, async {
            loop {
                let snap = store.load();
                if let Some(server) = snap.server(name) {
                    // As Envoy warms a listener: its SDS secrets and RDS routes first.
                    let secret = server
                        .transport_sockets()
                        .flat_map(|t| t.provider_names())
                        .find(|p| {
                            p.starts_with(mesh_core::config::tls::SDS_PREFIX)
                                && snap.certificate_provider(p).is_none()
                        });
                    let routes = server.rds_names().find(|n| inbound(&snap, n).is_none());
                    match (secret, routes) {
                        (None, None) => return Ok(()),
                        (Some(p), _) => {
                            tracing::debug!(server = %name, secret = %p, "waiting for a secret")
                        }
                        (_, Some(r)) => {
                            tracing::debug!(server = %name, rds = %r, "waiting for its routes")
                        }
                    }
                }
                if let Some(mesh_core::Absence::Missing(why)) =
                    snap.absence(ResourceKind::Server, name)
                {
                    return Err(MeshError::new(
                        ErrorKind::NoConfig,
                        format!("server {name:?} does not exist: {why}"),
                    ));
                }
                if changes.changed().await.is_err() {
                    return Err(MeshError::new(ErrorKind::NoConfig, "the store is gone"));
                }
            }
        });
        match arrived.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(MeshError::new(
                    ErrorKind::NoConfig,
                    format!("server {name:?}: no config after {patience:?}"),
                ));
            }
        }
        let mut server = self.server(name)?;
        server._interest = Some(Arc::new(interest));
        Ok(server)
    }
}

#[cfg(test)]
mod chains_tests;
#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod rds_tests;
#[cfg(test)]
mod tests;
