//! [`Mesh`]: the user's handle, and [`MeshService`], what it hands out.

mod builder;
mod lean;
mod ready;
mod service;

pub use builder::MeshBuilder;
pub use ready::{ChannelOptions, RECHECK, WaitForReady};
pub use service::{LocalReply, MeshService, ResponseFuture, STARTUP_WAIT};

use crate::RequestBody;
use crate::breaker::RetryLimits;
use crate::cluster::Dispatch;
use crate::cluster::registry::Registry;
use crate::connect::{Connect, Connector};
use crate::control::Control;
use crate::error::MeshError;
use crate::fault::FaultLayer;
use crate::local::LocalAnswersLayer;
use crate::mirror::MirrorLayer;
use crate::ratelimit::RateLimitLayer;
use crate::retry::RetryLayer;
use crate::rewrite::RewriteLayer;
use crate::route::RouteLayer;
use crate::route::target::ByAuthority;
use crate::source::file::{FileError, FileSource, Reload};
use crate::timeout::TimeoutLayer;
use mesh_core::{ConfigError, MeshConfig, SourceStatus, Store};
use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tower_layer::Layer;

/// The mesh: one config store, the connections to every cluster, and the services that route
/// through them. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Empty;
/// use bytes::Bytes;
/// use tower_service::Service;
/// let mesh = mesh_tower::Mesh::from_file("mesh.yaml").await?;
/// // Route plain HTTP by authority…
/// let mut http = mesh.http_client::<Empty<Bytes>>();
/// let res = http.call(http::Request::get("http://web/").body(Empty::new())?).await?;
/// // …or give a tonic client a channel: `GreeterClient::new(mesh.channel("xds:///greeter"))`.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    control: Control,
    /// Every cluster's live state, shared by all services whatever their body type.
    registry: Arc<Registry>,
    providers: Arc<crate::tls::Providers>,
    by_authority: Arc<ByAuthority>,
    file: Option<Arc<FileSource>>,
    tasks: Vec<tokio::task::AbortHandle>,
    extensions: Vec<Box<dyn Any + Send + Sync>>,
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A builder for a mesh over an existing store, a custom connector, or a file.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// A mesh configured from a YAML file, re-read every second. An invalid file is an error
    /// here; later, an invalid edit is rejected and the last good config stays.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Mesh, FileError> {
        Self::builder().file(path).build().await
    }

    /// A mesh with a fixed config.
    pub async fn from_config(config: MeshConfig) -> Result<Mesh, ConfigError> {
        let store = Store::new();
        store.replace(config)?;
        Ok(Self::builder()
            .store(store)
            .build()
            .await
            .expect("no file to read"))
    }

    /// The config store (config sources write to it).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where this mesh's control work runs (see [`Control`]).
    pub fn control(&self) -> &Control {
        &self.inner.control
    }

    /// A service that sends every request to `target` (`xds:///name` or a listener name), for
    /// tonic clients and tower stacks. Virtual hosts match the target name.
    pub fn channel<B>(&self, target: &str) -> MeshService<B>
    where
        B: RequestBody,
    {
        self.channel_with(target, ChannelOptions::default())
    }

    /// [`channel`](Self::channel) with options, e.g. gRPC's wait-for-ready: calls that wait for
    /// the target to be able to serve them (bounded by their deadline) instead of failing at
    /// once while it cannot.
    pub fn channel_with<B>(&self, target: &str, options: ChannelOptions) -> MeshService<B>
    where
        B: RequestBody,
    {
        let startup = crate::route::target::listener_name(target)
            .ok()
            .map(service::Startup::new);
        self.service(
            RouteLayer::for_target(self.inner.store.clone(), target),
            startup,
            options,
            Some(target),
        )
    }

    /// A service that routes each request by its authority (URI or `Host`): the listener named
    /// `host:port` (or `host`) and its virtual hosts.
    pub fn http_client<B>(&self) -> MeshService<B>
    where
        B: RequestBody,
    {
        self.service(
            RouteLayer::shared_by_authority(self.inner.by_authority.clone()),
            None,
            ChannelOptions::default(),
            None,
        )
    }

    fn service<B>(
        &self,
        route: RouteLayer,
        startup: Option<service::Startup>,
        options: ChannelOptions,
        target: Option<&str>,
    ) -> MeshService<B>
    where
        B: RequestBody,
    {
        let registry = self.inner.registry.clone();
        let limits: Arc<dyn RetryLimits> = registry.clone();
        let dispatch = Dispatch::new(registry);
        let lean = dispatch.clone();
        let stack = MirrorLayer::new().layer(dispatch);
        let stack = RetryLayer::with_limits(limits).layer(stack);
        let stack = TimeoutLayer::new(None).layer(stack);
        let stack = RewriteLayer.layer(stack);
        let stack = FaultLayer::new().layer(stack);
        let stack = RateLimitLayer::new().layer(stack);
        let stack = LocalAnswersLayer.layer(stack);
        MeshService::new(
            lean::Router::new(route.into_targets(), stack, lean),
            startup,
            self.clone(),
            options,
            target,
        )
    }

    /// Waits until `target`'s config is complete (listener, route config, every cluster its
    /// routes use, an aggregate's clusters included, and their endpoints) and its DNS
    /// clusters have been looked up once, so the first request does not race the control
    /// plane or the resolver.
    /// Fails at once with [`ErrorKind::NoConfig`](crate::ErrorKind) when the source says a
    /// resource does not exist, and with `Timeout` after `limit`.
    pub async fn wait_ready(&self, target: &str, limit: Duration) -> Result<(), MeshError> {
        use crate::error::ErrorKind;
        let name = crate::route::target::listener_name(target)?.to_owned();
        // Being interested is what makes an on-demand source (xDS) fetch the target.
        let _interest = self
            .inner
            .store
            .register_interest(mesh_core::ResourceKind::Listener, &name);
        let mut changed = self.inner.store.changed();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changed.borrow_and_update();
            let on_demand = self.inner.store.source_status().borrow().on_demand;
            let snap = self.inner.store.load();
            match readiness(&snap, &name, on_demand) {
                Ready::Yes => {
                    // And its DNS clusters looked up once (see `cluster::warm`).
                    let warm = crate::cluster::warm::warm(&self.inner.registry, &snap, &name);
                    return match tokio::time::timeout_at(deadline, warm).await {
                        Ok(()) => Ok(()),
                        Err(_) => Err(MeshError::new(
                            ErrorKind::Timeout,
                            format!("DNS lookups not done after {limit:?}"),
                        )
                        .with_target(name.as_str().into())),
                    };
                }
                Ready::No(why) => {
                    return Err(
                        MeshError::new(ErrorKind::NoConfig, why).with_target(name.as_str().into())
                    );
                }
                Ready::Pending(what) => {
                    if tokio::time::timeout_at(deadline, changed.changed())
                        .await
                        .is_err()
                    {
                        return Err(MeshError::new(
                            ErrorKind::Timeout,
                            format!("config not complete after {limit:?}: {what}"),
                        )
                        .with_target(name.as_str().into()));
                    }
                }
            }
        }
    }

    /// The effective config (the config-dump format; `to_yaml()` renders it).
    pub fn config_dump(&self) -> MeshConfig {
        self.inner.store.load().to_config()
    }

    /// An object attached with [`MeshBuilder::extension`] (e.g. the xDS client feeding this
    /// mesh), by type.
    pub fn extension<T: Any>(&self) -> Option<&T> {
        self.inner
            .extensions
            .iter()
            .find_map(|e| e.downcast_ref::<T>())
    }

    /// What this mesh sent to each cluster's localities since the last look, for a
    /// load-reporting client (LRS; see [`LoadReporter`](crate::cluster::load::LoadReporter)).
    pub fn load_reporter(&self) -> crate::cluster::load::LoadReporter {
        crate::cluster::load::LoadReporter {
            registry: Arc::downgrade(&self.inner.registry),
        }
    }

    /// Every cluster's live state (the admin endpoint reads it).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The request metrics this mesh records (see [`MeshBuilder::telemetry`]).
    pub fn telemetry(&self) -> Option<&crate::telemetry::Telemetry> {
        self.inner.telemetry.as_ref()
    }

    /// The config source's status: applied and rejected updates, the last error.
    pub fn source_status(&self) -> watch::Receiver<SourceStatus> {
        self.inner.store.source_status()
    }

    /// Re-reads the config file now (a no-op without one). Invalid content is rejected and
    /// returned as the error; the last good config stays in force.
    pub async fn reload(&self) -> Result<Reload, FileError> {
        match &self.inner.file {
            Some(f) => f.reload().await,
            None => Ok(Reload::Unchanged),
        }
    }

    fn refresh_all(&self) {
        self.inner
            .providers
            .sync(self.inner.store.load().certificate_providers());
        self.inner.registry.refresh_all();
    }

    /// A certificate provider instance of this mesh's config (for its
    /// [`status`](crate::tls::CertificateProvider::status), or to feed an `external` one).
    pub fn certificate_provider(&self, name: &str) -> Option<crate::tls::CertificateProvider> {
        self.inner.providers.get(name)
    }

    /// Builds server TLS from the providers as the config is when it is called (a server's
    /// config watcher may run before the mesh's own refresh: it syncs the providers first).
    pub(crate) fn server_tls_maker(
        &self,
    ) -> impl Fn(&mesh_core::config::tls::DownstreamTls) -> Result<crate::tls::ServerTls, MeshError>
    + Send
    + 'static {
        let (providers, store) = (self.inner.providers.clone(), self.inner.store.clone());
        move |config| {
            providers.sync(store.load().certificate_providers());
            crate::tls::ServerTls::new(config, |name| providers.get(name)).map_err(|e| {
                MeshError::new(
                    crate::error::ErrorKind::NoConfig,
                    format!("server TLS: {e}"),
                )
            })
        }
    }

    /// TLS for a server of this mesh, from a `DownstreamTlsContext` whose provider instances
    /// are this mesh's.
    pub fn server_tls(
        &self,
        config: &mesh_core::config::tls::DownstreamTls,
    ) -> Result<crate::tls::ServerTls, MeshError> {
        crate::tls::ServerTls::new(config, |name| self.certificate_provider(name)).map_err(|e| {
            MeshError::new(
                crate::error::ErrorKind::NoConfig,
                format!("server TLS: {e}"),
            )
        })
    }
}

pub(super) enum Ready {
    Yes,
    Pending(String),
    No(String),
}

/// Whether everything `listener` needs is in the snapshot.
pub(super) fn readiness(snap: &mesh_core::Snapshot, listener: &str, on_demand: bool) -> Ready {
    use mesh_core::config::listener::RouteSource;
    use mesh_core::config::tls::SDS_PREFIX;
    use mesh_core::{Absence, DiscoveryType, ResourceKind as K};
    let absent = |kind: K, name: &str, what: &str| match snap.absence(kind, name) {
        Some(Absence::Missing(why)) => Ready::No(format!("{what} {name:?} does not exist: {why}")),
        Some(Absence::Pending) => Ready::Pending(format!("waiting for {what} {name:?}")),
        None if on_demand => Ready::Pending(format!("waiting for {what} {name:?}")),
        None => Ready::No(format!("no {what} named {name:?} in the config")),
    };
    let Some(l) = snap.listener(listener) else {
        return absent(K::Listener, listener, "listener");
    };
    let rc = match l.route_source() {
        Some(RouteSource::Inline(rc)) => rc,
        Some(RouteSource::Rds(name)) => match snap.route_config(name) {
            Some(rc) => rc,
            None => return absent(K::RouteConfig, name, "route config"),
        },
        None => return Ready::No("listener has no route config".into()),
    };
    // What one cluster needs; `None`: nothing more.
    let needs = |cluster: &str| -> Option<Ready> {
        let Some(c) = snap.cluster(cluster) else {
            return Some(absent(K::Cluster, cluster, "cluster"));
        };
        if c.discovery == DiscoveryType::Eds
            && c.aggregate().is_none()
            && snap.endpoints(c.endpoints_name()).is_none()
        {
            return Some(absent(K::Endpoints, c.endpoints_name(), "endpoints"));
        }
        // SDS secrets the cluster's TLS names (Envoy warms such a cluster until they come).
        for provider in c.transport_socket.iter().flat_map(|t| t.provider_names()) {
            if let Some(secret) = provider.strip_prefix(SDS_PREFIX)
                && snap.certificate_provider(provider).is_none()
            {
                return Some(absent(K::Secret, secret, "secret"));
            }
        }
        None
    };
    for action in rc
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter_map(|r| r.route.as_ref())
    {
        for cluster in action.cluster_names() {
            if let Some(missing) = needs(cluster) {
                return missing;
            }
            // An aggregate (gRFC A37) needs every cluster of its flattened graph (one not
            // here yet, aggregate or not, is in the list as a leaf).
            if let Some(Ok(leaves)) = snap.aggregate_leaves(cluster) {
                for leaf in &leaves {
                    if let Some(missing) = needs(leaf) {
                        return missing;
                    }
                }
            }
        }
    }
    Ready::Yes
}

#[cfg(test)]
mod tests;
