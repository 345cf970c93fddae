//! What a server's config watcher keeps current: its compiled checks (all of them or none)
//! and, through [`Connections`], the settings of new connections.

use super::connections::Connections;
use crate::error::{ErrorKind, MeshError};
use crate::jwt::JwtEngine;
use crate::policy::fault::FaultPolicy;
use crate::rbac::RbacEngine;
use crate::tls::ServerTls;
use arc_swap::{ArcSwap, ArcSwapOption};
use mesh_core::config::server::Server;
use mesh_core::config::tls::DownstreamTls;
use std::sync::{Arc, Weak};

/// A server's checks as its requests read them, each swapped whole when the config changes.
#[derive(Clone, Default)]
pub(super) struct Checks {
    pub(super) rbac: Arc<ArcSwap<RbacEngine>>,
    pub(super) jwt: Arc<ArcSwap<JwtEngine>>,
    pub(super) ratelimit: Arc<ArcSwapOption<crate::ratelimit::RateLimiter>>,
    pub(super) fault: Arc<ArcSwapOption<FaultPolicy>>,
}

impl Checks {
    /// `config`'s checks compiled.
    pub(super) fn new(config: &Server) -> Result<Self, MeshError> {
        let c = Compiled::new(config)?;
        Ok(Self {
            rbac: Arc::new(ArcSwap::from_pointee(c.rbac)),
            jwt: Arc::new(ArcSwap::from_pointee(c.jwt)),
            ratelimit: Arc::new(ArcSwapOption::new(c.limiter)),
            fault: Arc::new(ArcSwapOption::new(c.fault)),
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
    ratelimit: Weak<ArcSwapOption<crate::ratelimit::RateLimiter>>,
    fault: Weak<ArcSwapOption<FaultPolicy>>,
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
        rl.store(c.limiter);
        fault.store(c.fault);
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
    limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    fault: Option<Arc<FaultPolicy>>,
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
        let limiter = match config.local_ratelimit() {
            Some(l) => crate::ratelimit::RateLimiter::new(l)
                .map_err(|e| err(format!("local_ratelimit: {e}")))?
                .map(Arc::new),
            None => None,
        };
        let fault = match config.fault() {
            Some(f) => Some(Arc::new(
                FaultPolicy::new(f).map_err(|e| err(format!("fault: {e}")))?,
            )),
            None => None,
        };
        Ok(Self {
            rbac,
            jwt,
            limiter,
            fault,
        })
    }
}
