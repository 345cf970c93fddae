//! Per-target routing state: the compiled route table for one listener, kept current.
//!
//! The table is rebuilt lazily: each request compares the store's version (one atomic load)
//! with the version the table was built at. Only when they differ does it look at the snapshot,
//! and only when the listener or its route config actually changed (`Arc::ptr_eq`) does it
//! recompile. So a config change applies to the very next request, and unrelated changes
//! (an endpoint update in another cluster) cost one pointer comparison.

use super::table::Table;
use crate::error::{ErrorKind, MeshError};
use arc_swap::ArcSwap;
use http::uri::Authority;
use mesh_core::{Absence, InterestGuard, Listener, ResourceKind, RouteConfig, Snapshot, Store};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A compiled table, or why there is none.
#[derive(Debug)]
pub(crate) struct Compiled {
    listener: Option<Arc<Listener>>,
    rds: Option<Arc<RouteConfig>>,
    pub(crate) table: Result<Table, String>,
    /// The listener's own access log (its `access_log`), opened when the listener changes.
    pub(crate) access_log: Option<crate::stats::AccessLog>,
}

/// Routing state of one target.
#[derive(Debug)]
pub(crate) struct TargetState {
    pub(crate) name: Arc<str>,
    /// Listener names to try, in order.
    candidates: Vec<String>,
    /// Authority put on requests that have none (gRPC's `:authority` is the target name).
    pub(crate) authority: Option<Authority>,
    store: Store,
    seen: AtomicU64,
    compiled: ArcSwap<Compiled>,
    rebuild: Mutex<()>,
    _interest: InterestGuard,
}

impl TargetState {
    pub(crate) fn new(store: Store, name: &str, candidates: Vec<String>) -> Self {
        let interest = store.register_interest(ResourceKind::Listener, &candidates[0]);
        let state = Self {
            name: name.into(),
            authority: Authority::try_from(name).ok(),
            candidates,
            seen: AtomicU64::new(u64::MAX),
            compiled: ArcSwap::from_pointee(Compiled {
                listener: None,
                rds: None,
                table: Err("not resolved yet".into()),
                access_log: None,
            }),
            rebuild: Mutex::new(()),
            store,
            _interest: interest,
        };
        state.refresh();
        state
    }

    /// The current compiled table, rebuilt first if the config changed.
    pub(crate) fn current(&self) -> impl Deref<Target = Arc<Compiled>> + use<> {
        if self.seen.load(Ordering::Acquire) != self.store.version() {
            self.refresh();
        }
        self.compiled.load()
    }

    fn refresh(&self) {
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let snap = self.store.load();
        if self.seen.load(Ordering::Acquire) == snap.version() {
            return;
        }
        let listener = self
            .candidates
            .iter()
            .find_map(|c| snap.listener(c))
            .cloned();
        let rds = listener
            .as_ref()
            .and_then(|l| l.rds.as_deref())
            .and_then(|name| snap.route_config(name))
            .cloned();
        let old = self.compiled.load();
        let same = ptr_eq(&old.listener, &listener) && ptr_eq(&old.rds, &rds);
        // An error state is recompiled on every change so its message stays current.
        if !same || old.table.is_err() {
            let table = self.compile(listener.as_deref(), rds.as_deref(), &snap);
            let access_log = self.access_log(&old, listener.as_deref());
            self.compiled.store(Arc::new(Compiled {
                listener,
                rds,
                table,
                access_log,
            }));
        }
        self.seen.store(snap.version(), Ordering::Release);
    }

    /// The listener's access logs (each request written to all): the ones already open when
    /// their config is unchanged, else opened anew. One that cannot be opened is reported
    /// and left out; with none left, the mesh-wide log is used.
    fn access_log(
        &self,
        old: &Compiled,
        listener: Option<&Listener>,
    ) -> Option<crate::stats::AccessLog> {
        let configs = listener
            .map(|l| l.access_log.as_slice())
            .unwrap_or_default();
        if configs.is_empty() {
            return None;
        }
        let before = old.listener.as_ref().map(|l| l.access_log.as_slice());
        if before == Some(configs) && old.access_log.is_some() {
            return old.access_log.clone();
        }
        let (log, problems) = crate::stats::AccessLog::from_configs(configs);
        for e in problems {
            tracing::warn!(target = %self.name, error = %e, "listener access log not written");
        }
        log
    }

    fn compile(
        &self,
        listener: Option<&Listener>,
        rds: Option<&RouteConfig>,
        snap: &Snapshot,
    ) -> Result<Table, String> {
        let Some(listener) = listener else {
            let name = &self.candidates[0];
            return Err(match snap.absence(ResourceKind::Listener, name) {
                Some(Absence::Pending) => {
                    format!("waiting for listener {name:?} from the control plane")
                }
                Some(Absence::Missing(why)) => format!("listener {name:?} does not exist: {why}"),
                None => format!("no listener named {name:?} in the config"),
            });
        };
        let rc = match (&listener.route_config, &listener.rds) {
            (Some(rc), _) => rc,
            (None, Some(name)) => {
                rds.ok_or_else(|| match snap.absence(ResourceKind::RouteConfig, name) {
                    Some(Absence::Pending) => {
                        format!("waiting for route config {name:?} from the control plane")
                    }
                    Some(Absence::Missing(why)) => {
                        format!("route config {name:?} does not exist: {why}")
                    }
                    None => format!(
                        "route config {name:?} named by listener {:?} is not in the config",
                        listener.name
                    ),
                })?
            }
            (None, None) => return Err("listener has no route config".into()),
        };
        Table::compile(rc, &listener.http_filters)
            .map_err(|e| format!("route config {:?} cannot be used: {e}", rc.name))
    }
}

fn ptr_eq<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Why a target is not one: what a target looks like.
pub(crate) const INVALID_TARGET: &str = "expected xds:///<name> or xds://<authority>/<name>";

/// The listener a target names in the store: `xds:///name` and plain names are `name`; a
/// target with an authority, `xds://authority/name`, is kept whole, for the xDS client to
/// resolve through that authority (gRFC A47 federation).
pub(crate) fn listener_name(target: &str) -> Result<&str, MeshError> {
    let Some(rest) = target.strip_prefix("xds://") else {
        return Ok(target);
    };
    let (authority, name) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return Err(
            MeshError::new(ErrorKind::InvalidTarget, INVALID_TARGET).with_target(target.into())
        );
    }
    Ok(if authority.is_empty() { name } else { target })
}

/// Target states by request authority, for the HTTP client.
#[derive(Debug)]
pub(crate) struct ByAuthority {
    store: Store,
    map: ArcSwap<HashMap<String, Arc<TargetState>>>,
    insert: Mutex<()>,
}

/// Distinct authorities remembered; past this the map starts over (bounds memory when a
/// process talks to arbitrarily many hosts).
const MAX_AUTHORITIES: usize = 4096;

impl ByAuthority {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            map: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
        }
    }

    pub(crate) fn get(&self, authority: &str) -> Arc<TargetState> {
        if let Some(t) = self.map.load().get(authority) {
            return t.clone();
        }
        let _guard = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self.map.load().get(authority) {
            return t.clone();
        }
        let mut candidates = vec![authority.to_owned()];
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                candidates.push(host.to_owned())
            }
            _ => candidates.push(format!("{authority}:80")),
        }
        let state = Arc::new(TargetState::new(self.store.clone(), authority, candidates));
        let mut next = HashMap::clone(&self.map.load());
        if next.len() >= MAX_AUTHORITIES {
            next.clear();
        }
        next.insert(authority.to_owned(), state.clone());
        self.map.store(Arc::new(next));
        state
    }
}
