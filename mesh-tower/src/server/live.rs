//! What a server's config watcher keeps current: each chain's compiled checks (all of them
//! or none) and, through [`Connections`], the settings of new connections.

use super::connections::{Chain, Connections};
use crate::error::{ErrorKind, MeshError};
use crate::jwt::JwtEngine;
use crate::policy::fault::FaultPolicy;
use crate::ratelimit::RateLimiter;
use crate::rbac::RbacEngine;
use crate::route::inbound::PerRoute;
use crate::stats::AccessLog;
use crate::tls::ServerTls;
use arc_swap::{ArcSwap, ArcSwapOption};
use mesh_core::config::filter_chain::{ChainSelector, FilterChainMatch};
use mesh_core::config::server::Server;
use mesh_core::config::tls::DownstreamTls;
use std::sync::{Arc, Weak};

/// One chain's checks as its requests read them, each swapped whole when the config changes.
#[derive(Clone, Default)]
pub(crate) struct Checks {
    pub(super) rbac: Arc<ArcSwap<RbacEngine>>,
    pub(super) jwt: Arc<ArcSwap<JwtEngine>>,
    pub(super) ratelimit: Arc<ArcSwap<PerRoute<RateLimiter>>>,
    pub(super) fault: Arc<ArcSwap<PerRoute<FaultPolicy>>>,
    /// The chain's own access log (none: the mesh-wide one).
    pub(super) access_log: Arc<ArcSwapOption<AccessLog>>,
}

impl Checks {
    fn from(c: Compiled) -> Self {
        Self {
            rbac: Arc::new(ArcSwap::from_pointee(c.rbac)),
            jwt: Arc::new(ArcSwap::from_pointee(c.jwt)),
            ratelimit: Arc::new(ArcSwap::from_pointee(c.limiter)),
            fault: Arc::new(ArcSwap::from_pointee(c.fault)),
            access_log: Arc::new(ArcSwapOption::new(c.access_log.map(Arc::new))),
        }
    }

    /// The chain's layers: rate limit, JWT, RBAC, fault.
    pub(super) fn layers(
        &self,
    ) -> (
        crate::ratelimit::InboundRateLimitLayer,
        crate::jwt::JwtLayer,
        crate::rbac::RbacLayer,
        crate::fault::InboundFaultLayer,
    ) {
        (
            crate::ratelimit::InboundRateLimitLayer::live(self.ratelimit.clone()),
            crate::jwt::JwtLayer::live(self.jwt.clone()),
            crate::rbac::RbacLayer::live(self.rbac.clone()),
            crate::fault::InboundFaultLayer::live(self.fault.clone()),
        )
    }

    /// Puts `c` in force for every request from now on.
    fn store(&self, c: Compiled) {
        // A config change starts a new bucket (as on the client side).
        self.ratelimit.store(Arc::new(c.limiter));
        self.fault.store(Arc::new(c.fault));
        // JWT first: a request between the two stores meets the new token rules and, at
        // worst, the old authorization.
        self.jwt.store(Arc::new(c.jwt));
        self.rbac.store(Arc::new(c.rbac));
        self.access_log.store(c.access_log.map(Arc::new));
    }
}

/// `config`'s chains (the top-level one first), their checks compiled and TLS made.
pub(super) fn chains(
    config: &Server,
    make_tls: &impl Fn(&DownstreamTls) -> Result<ServerTls, MeshError>,
) -> Result<Vec<Chain>, MeshError> {
    check(config)?;
    let views = config.chains();
    let compiled = compile(&views)?;
    views
        .iter()
        .zip(compiled)
        .map(|(v, c)| {
            let tls = v.transport_socket.as_ref().map(make_tls).transpose()?;
            Ok(Chain::new(tls.map(Arc::new), &v.limits, Checks::from(c)))
        })
        .collect()
}

/// The chain selector of `config`.
pub(super) fn selector(config: &Server) -> ChainSelector {
    ChainSelector::new(&matches(config))
}

fn matches(config: &Server) -> Vec<FilterChainMatch> {
    (config.filter_chains.iter())
        .map(|c| c.filter_chain_match.clone())
        .collect()
}

/// Checks `config` whole: its routes from RDS meet its filters only here (an override of a
/// filter the server does not have is refused, and the last config stays).
fn check(config: &Server) -> Result<(), MeshError> {
    let mut errors = mesh_core::error::Errors::new();
    config.validate(&mesh_core::error::FieldPath::root(), &mut errors);
    errors.into_result().map_err(|e| {
        MeshError::new(
            ErrorKind::NoConfig,
            format!("server {:?}: {e}", config.name),
        )
    })
}

fn compile(views: &[Server]) -> Result<Vec<Compiled>, MeshError> {
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Compiled::new(v).map_err(|e| match i {
                0 => e,
                i => MeshError::new(e.kind(), format!("filter_chains[{}]: {e}", i - 1)),
            })
        })
        .collect()
}

/// What a server's config watcher updates, held weakly: the server's clones own it.
pub(super) struct Live {
    pub(super) conns: Weak<Connections>,
}

impl Live {
    pub(super) fn new(conns: &Arc<Connections>) -> Self {
        Self {
            conns: Arc::downgrade(conns),
        }
    }

    /// Applies `next` (all of it or, on error, none of it). `Ok(false)`: the server is gone.
    pub(super) fn apply(
        &self,
        last: &Server,
        next: &Server,
        make_tls: &impl Fn(&DownstreamTls) -> Result<ServerTls, MeshError>,
    ) -> Result<bool, MeshError> {
        let Some(conns) = self.conns.upgrade() else {
            return Ok(false);
        };
        check(next)?;
        let (old_views, views) = (last.chains(), next.chains());
        let compiled = compile(&views)?;
        let same_chains =
            matches(last) == matches(next) && last.close_unmatched == next.close_unmatched;
        let conn_settings = |v: &Server| (v.transport_socket.clone(), v.limits.clone());
        let same_conns = same_chains
            && old_views
                .iter()
                .zip(&views)
                .all(|(a, b)| conn_settings(a) == conn_settings(b));
        // TLS first (it can fail), reusing what did not change.
        let current = conns.settings();
        let mut tls = Vec::with_capacity(views.len());
        for (i, v) in views.iter().enumerate() {
            let kept =
                (same_chains || i == 0) && old_views[i].transport_socket == v.transport_socket;
            tls.push(match &v.transport_socket {
                _ if kept => current.chains[i].tls.clone(),
                Some(t) => Some(Arc::new(make_tls(t)?)),
                None => None,
            });
        }
        if let Some(g) = next.drain_grace_period {
            conns.set_grace(g);
        }
        // The top-level chain's checks are the server's own (its layers for tonic read them):
        // always updated in place. Other chains' too while the chains stay the same; new
        // chains get new checks, and the old connections drain.
        let mut chains = Vec::with_capacity(views.len());
        for (i, ((v, c), tls)) in views.iter().zip(compiled).zip(tls).enumerate() {
            let checks = if same_chains || i == 0 {
                let checks = current.chains[i].checks.clone();
                checks.store(c);
                checks
            } else {
                Checks::from(c)
            };
            chains.push(Chain::new(tls, &v.limits, checks));
        }
        if !same_conns {
            tracing::info!(server = %next.name, "new connection settings: older connections drain");
            conns.replace(chains, selector(next), next.close_unmatched);
        }
        Ok(true)
    }
}

/// All of a server's checks, or none: a policy is never half applied.
struct Compiled {
    rbac: RbacEngine,
    jwt: JwtEngine,
    limiter: PerRoute<RateLimiter>,
    fault: PerRoute<FaultPolicy>,
    access_log: Option<AccessLog>,
}

impl Compiled {
    fn new(config: &Server) -> Result<Self, MeshError> {
        let err = |e: String| {
            MeshError::new(
                ErrorKind::NoConfig,
                format!("server {:?}: {e}", config.name),
            )
        };
        let rbac = RbacEngine::for_server(config).map_err(err)?;
        let jwt = JwtEngine::for_server(config).map_err(|e| err(format!("jwt_authn: {e}")))?;
        // The filters' own configs, and each route's override of them.
        let name = |has: fn(&mesh_core::config::server::ServerHttpFilter) -> bool| {
            config
                .http_filters
                .iter()
                .find(|f| has(f))
                .map(|f| f.name.as_str())
        };
        fn limiter_of(
            l: &mesh_core::policy::LocalRateLimit,
        ) -> Result<Option<RateLimiter>, String> {
            RateLimiter::new(l).map_err(|e| format!("local_ratelimit: {e}"))
        }
        fn fault_of(f: &mesh_core::policy::HttpFault) -> Result<FaultPolicy, String> {
            FaultPolicy::new(f).map_err(|e| format!("fault: {e}"))
        }
        let limiter = PerRoute::for_server(
            config,
            name(|f| f.local_ratelimit.is_some()),
            config
                .local_ratelimit()
                .map(limiter_of)
                .transpose()
                .map_err(err)?
                .flatten(),
            |o| {
                o.local_ratelimit
                    .as_ref()
                    .map(limiter_of)
                    .transpose()
                    .map(Option::flatten)
            },
        )
        .map_err(err)?;
        let fault = PerRoute::for_server(
            config,
            name(|f| f.fault.is_some()),
            config.fault().map(fault_of).transpose().map_err(err)?,
            |o| o.fault.as_ref().map(fault_of).transpose(),
        )
        .map_err(err)?;
        // A log that cannot be opened is reported, and the mesh-wide one is used: how a
        // request is logged never stops it being served.
        let (access_log, problems) = AccessLog::from_configs(&config.access_log);
        for e in problems {
            tracing::warn!(server = %config.name, error = %e, "server access log not written");
        }
        Ok(Self {
            rbac,
            jwt,
            limiter,
            fault,
            access_log,
        })
    }
}
