//! DNS clusters (`STRICT_DNS`, `LOGICAL_DNS`): endpoints are what names resolve to, kept
//! current by a background task per cluster.
//!
//! An external service (a database, a SaaS API, a ServiceEntry in Istio terms) has no EDS; its
//! endpoints are whatever DNS says. The task resolves every `dns_endpoints` name with
//! hickory-resolver, re-resolving at `dns_refresh_rate` (5 s by default) or, with
//! `respect_dns_ttl`, when the records expire. `STRICT_DNS` uses every address; `LOGICAL_DNS`
//! only the first, as one logical host. `dns_lookup_family` picks the family (AUTO: IPv6 when
//! the name has any, else IPv4). A failed lookup keeps the last good addresses. A change marks
//! the cluster dirty; its next request rebuilds the endpoint set, keeping the connections and
//! stats of addresses that stay.

use arc_swap::ArcSwapOption;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use mesh_core::Cluster;
use mesh_core::config::cluster::{DEFAULT_DNS_REFRESH_RATE, DiscoveryType, DnsLookupFamily};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Where DNS clusters resolve names: the system's resolver config, or one name server (tests,
/// or a mesh that must not trust `/etc/resolv.conf`).
#[derive(Clone, Debug, Default)]
pub struct DnsResolver {
    nameserver: Option<SocketAddr>,
    resolver: Arc<OnceCell<Result<TokioResolver, String>>>,
}

impl DnsResolver {
    /// The system's configuration (`/etc/resolv.conf`, hosts file).
    pub fn system() -> Self {
        Self::default()
    }

    /// One name server (UDP and TCP) at `addr`.
    pub fn with_nameserver(addr: SocketAddr) -> Self {
        Self {
            nameserver: Some(addr),
            resolver: Arc::default(),
        }
    }

    async fn resolver(&self) -> Result<&TokioResolver, String> {
        let built = self
            .resolver
            .get_or_init(|| async {
                let mut opts = ResolverOpts::default();
                opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                let builder = match self.nameserver {
                    Some(addr) => {
                        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                        let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                        udp.port = addr.port();
                        tcp.port = addr.port();
                        ns.connections = vec![udp, tcp];
                        TokioResolver::builder_with_config(
                            ResolverConfig::from_name_servers(vec![ns]),
                            TokioRuntimeProvider::default(),
                        )
                    }
                    None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
                };
                builder
                    .with_options(opts)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .await;
        built.as_ref().map_err(Clone::clone)
    }

    /// The addresses of `host` for `family`, and how long they are valid.
    async fn lookup(
        &self,
        host: &str,
        family: DnsLookupFamily,
    ) -> Result<(Vec<IpAddr>, Duration), String> {
        let resolver = self.resolver().await?;
        let found = resolver
            .lookup_ip(host)
            .await
            .map_err(|e| format!("resolving {host:?}: {e}"))?;
        let ttl = found
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        let all: Vec<IpAddr> = found.iter().collect();
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = all.iter().partition(|ip| ip.is_ipv4());
        let picked = match family {
            DnsLookupFamily::V4Only => v4,
            DnsLookupFamily::V6Only => v6,
            DnsLookupFamily::Auto => {
                if v6.is_empty() {
                    v4
                } else {
                    v6
                }
            }
            DnsLookupFamily::V4Preferred => {
                if v4.is_empty() {
                    v6
                } else {
                    v4
                }
            }
            DnsLookupFamily::All => all,
        };
        if picked.is_empty() {
            return Err(format!(
                "resolving {host:?}: no address of family {family:?}"
            ));
        }
        Ok((picked, ttl))
    }
}

/// The latest resolution of a cluster's names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Resolved addresses with their weight, in name order.
    pub(crate) addrs: Vec<(SocketAddr, u32)>,
    /// The last failure, if the latest round failed (the addresses are then the last good).
    pub(crate) error: Option<String>,
}

/// What a running watch resolves; a different key restarts it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    names: Vec<(String, u16, u32)>,
    logical: bool,
    family: DnsLookupFamily,
    every: Duration,
    respect_ttl: bool,
}

/// The DNS side of one cluster handle.
#[derive(Debug)]
pub(crate) struct DnsState {
    resolver: DnsResolver,
    control: crate::control::Control,
    dirty: Arc<AtomicBool>,
    resolved: Arc<ArcSwapOption<Resolved>>,
    /// Woken after each lookup round that changed the resolution.
    settled: Arc<tokio::sync::Notify>,
    running: Mutex<Option<(Key, tokio::task::AbortHandle)>>,
}

impl DnsState {
    pub(crate) fn new(resolver: DnsResolver, control: crate::control::Control) -> Self {
        Self {
            resolver,
            control,
            dirty: Arc::default(),
            resolved: Arc::default(),
            settled: Arc::default(),
            running: Mutex::new(None),
        }
    }

    /// Whether a resolution changed since the last call (and clears it).
    pub(crate) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Whether a resolution changed (without clearing it).
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// The latest resolution.
    pub(crate) fn resolved(&self) -> Option<Arc<Resolved>> {
        self.resolved.load_full()
    }

    /// Returns once the names have been looked up at least once (addresses, or an error).
    pub(crate) async fn first_lookup(&self) {
        loop {
            let woken = self.settled.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.resolved().is_some() {
                return;
            }
            woken.await;
        }
    }

    /// Starts (or restarts, or stops) the watch for `cluster`'s current config.
    pub(crate) fn ensure(&self, cluster: Option<&Cluster>) {
        let key = cluster.filter(|c| c.discovery.is_dns()).map(|c| Key {
            names: c
                .dns_endpoints
                .iter()
                .map(|d| {
                    (
                        d.hostname.clone(),
                        d.port,
                        d.load_balancing_weight.unwrap_or(1),
                    )
                })
                .collect(),
            logical: c.discovery == DiscoveryType::LogicalDns,
            family: c.dns_lookup_family,
            every: c.dns_refresh_rate.unwrap_or(DEFAULT_DNS_REFRESH_RATE),
            respect_ttl: c.respect_dns_ttl,
        });
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.as_ref().map(|r| &r.0) == key.as_ref() {
            return;
        }
        if let Some((_, task)) = running.take() {
            task.abort();
        }
        self.resolved.store(None);
        let Some(key) = key else { return };
        // Refreshing is control work: it runs on the control runtime, never starved by callers.
        let task = self.control.spawn(watch(
            key.clone(),
            self.resolver.clone(),
            self.resolved.clone(),
            self.dirty.clone(),
            self.settled.clone(),
        ));
        *running = Some((key, task));
    }
}

impl Drop for DnsState {
    fn drop(&mut self) {
        if let Some((_, task)) = self
            .running
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

async fn watch(
    key: Key,
    resolver: DnsResolver,
    out: Arc<ArcSwapOption<Resolved>>,
    dirty: Arc<AtomicBool>,
    settled: Arc<tokio::sync::Notify>,
) {
    loop {
        let mut addrs = Vec::new();
        let mut error = None;
        let mut next = key.every;
        for (host, port, weight) in &key.names {
            match resolver.lookup(host, key.family).await {
                Ok((ips, ttl)) => {
                    if key.respect_ttl {
                        next = next.min(ttl.max(Duration::from_millis(100)));
                    }
                    let take = if key.logical { 1 } else { ips.len() };
                    addrs.extend(
                        ips.into_iter()
                            .take(take)
                            .map(|ip| (SocketAddr::new(ip, *port), *weight)),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DNS resolution failed; keeping the last addresses");
                    error = Some(e);
                }
            }
            if key.logical {
                break;
            }
        }
        if key.respect_ttl && error.is_some() {
            next = key.every;
        }
        let previous = out.load_full();
        let resolved = match (&error, previous.as_deref()) {
            // A failed round keeps the last good addresses.
            (Some(_), Some(prev)) if addrs.is_empty() => Resolved {
                addrs: prev.addrs.clone(),
                error,
            },
            _ => Resolved { addrs, error },
        };
        if previous.as_deref() != Some(&resolved) {
            out.store(Some(Arc::new(resolved)));
            dirty.store(true, Ordering::Release);
            settled.notify_waiters();
        }
        tokio::time::sleep(next).await;
    }
}
