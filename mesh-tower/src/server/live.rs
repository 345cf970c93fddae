//! What a server's config watcher keeps current: its compiled checks (all of them or none)
//! and, through [`Connections`], the settings of new connections.

use super::connections::Connections;
use crate::error::{ErrorKind, MeshError};
use crate::jwt::JwtEngine;
use crate::policy::fault::FaultPolicy;
use crate::ratelimit::RateLimiter;
use crate::rbac::RbacEngine;
use crate::route::inbound::PerRoute;
use crate::tls::ServerTls;
use arc_swap::ArcSwap;
use mesh_core::config::server::Server;
use mesh_core::config::tls::DownstreamTls;
use std::sync::{Arc, Weak};

/// A server's checks as its requests read them, each swapped whole when the config changes.
#[derive(Clone, Default)]
pub(super) struct Checks {
    pub(super) rbac: Arc<ArcSwap<RbacEngine>>,
    pub(super) jwt: Arc<ArcSwap<JwtEngine>>,
    pub(super) ratelimit: Arc<ArcSwap<PerRoute<RateLimiter>>>,
    pub(super) fault: Arc<ArcSwap<PerRoute<FaultPolicy>>>,
}

impl Checks {
    /// `config`'s checks compiled.
    pub(super) fn new(config: &Server) -> Result<Self, MeshError> {
        let c = Compiled::new(config)?;
        Ok(Self {
            rbac: Arc::new(ArcSwap::from_pointee(c.rbac)),
            jwt: Arc::new(ArcSwap::from_pointee(c.jwt)),
            ratelimit: Arc::new(ArcSwap::from_pointee(c.limiter)),
            fault: Arc::new(ArcSwap::from_pointee(c.fault)),
        })
    }

    /// The watcher's weak hold on these and on `conns`.
    pub(super) fn live(&self, conns: &Arc<Connections>) -> Live {
        Live {
            rbac: Arc::downgrade(&self.rbac),
            jwt: Arc::downgrade(&self.jwt),
            ratelimit: Arc::downgrade(&self.ratelimit),
            fault: Arc::downgrade(&self.fault),
            conns: Arc::downgrade(conns),
        }
    }
}

/// What a server's config watcher updates, held weakly: the server's clones own it.
pub(super) struct Live {
    rbac: Weak<ArcSwap<RbacEngine>>,
    jwt: Weak<ArcSwap<JwtEngine>>,
    ratelimit: Weak<ArcSwap<PerRoute<RateLimiter>>>,
    fault: Weak<ArcSwap<PerRoute<FaultPolicy>>>,
    pub(super) conns: Weak<Connections>,
}

impl Live {
    /// Applies `next` (all of it or, on error, none of it). `Ok(false)`: the server is gone.
    pub(super) fn apply(
        &self,
        last: &Server,
        next: &Server,
        make_tls: &impl Fn(&DownstreamTls) -> Result<ServerTls, MeshError>,
    ) -> Result<bool, MeshError> {
        let (Some(rbac), Some(jwt), Some(rl), Some(fault), Some(conns)) = (
            self.rbac.upgrade(),
            self.jwt.upgrade(),
            self.ratelimit.upgrade(),
            self.fault.upgrade(),
            self.conns.upgrade(),
        ) else {
            return Ok(false);
        };
        let c = Compiled::new(next)?;
        let new_tls = next.transport_socket != last.transport_socket;
        let tls = match &next.transport_socket {
            Some(t) if new_tls => Some(Arc::new(make_tls(t)?)),
            _ if new_tls => None,
            _ => conns.settings().tls.clone(),
        };
        // A config change starts a new bucket (as on the client side).
        rl.store(Arc::new(c.limiter));
        fault.store(Arc::new(c.fault));
        // JWT first: a request between the two stores meets the new token rules and, at
        // worst, the old authorization.
        jwt.store(Arc::new(c.jwt));
        rbac.store(Arc::new(c.rbac));
        if let Some(g) = next.drain_grace_period {
            conns.set_grace(g);
        }
        if new_tls || next.limits != last.limits {
            tracing::info!(server = %next.name, tls = new_tls, "new connection settings: older connections drain");
            conns.replace(tls, &next.limits);
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
        Ok(Self {
            rbac,
            jwt,
            limiter,
            fault,
        })
    }
}
