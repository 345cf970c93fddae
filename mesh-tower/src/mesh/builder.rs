//! The builder: a store (or a config file, polled), a connector, telemetry, certificate
//! providers and extensions; `build` starts the control runtime's tasks (the file poller,
//! the refresher that rebuilds per-target stacks when the config changes).
//!
//! Why apart: the running mesh (the parent module) only serves channels from what the builder
//! assembled; every option is read here once.

use super::*;

/// Builds a [`Mesh`].
#[derive(Debug)]
pub struct MeshBuilder {
    store: Option<Store>,
    connector: Connector,
    file: Option<PathBuf>,
    poll: Duration,
    extensions: Vec<Box<dyn Any + Send + Sync>>,
    dns: crate::cluster::DnsResolver,
    local: Option<crate::cluster::plan::LocalZone>,
    control: Option<Control>,
    certificate_providers: std::collections::HashMap<String, crate::tls::CertificateProvider>,
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            telemetry: None,
            certificate_providers: Default::default(),
            store: None,
            control: None,
            dns: crate::cluster::DnsResolver::system(),
            local: None,
            connector: Connector::default(),
            file: None,
            poll: Duration::from_secs(1),
            extensions: Vec::new(),
        }
    }
}

impl MeshBuilder {
    /// Record Istio's request metrics ([`crate::telemetry`]) as this workload: every channel
    /// and HTTP client of the mesh as the source, its servers as the destination.
    pub fn telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Use this store (e.g. one an xDS client writes to).
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Open connections with this connector (TLS, proxies, test doubles).
    pub fn connector(mut self, connect: impl Connect) -> Self {
        self.connector = Connector::new(connect);
        self
    }

    /// The zone this process runs in, and the cluster it belongs to (if the config has one),
    /// for clusters with `zone_aware_lb_config`. Without the cluster, the caller counts as 100%
    /// of callers in its zone, which (as in Envoy) leaves routing unchanged.
    pub fn local_zone(mut self, zone: impl Into<String>, cluster: Option<&str>) -> Self {
        self.local = Some(crate::cluster::plan::LocalZone {
            zone: zone.into(),
            cluster: cluster.map(str::to_owned),
        });
        self
    }

    /// Where DNS clusters resolve names (default: the system's resolver configuration).
    pub fn dns_resolver(mut self, dns: crate::cluster::DnsResolver) -> Self {
        self.dns = dns;
        self
    }

    /// Where control work runs (file polling, cluster refresh, DNS, and the config source's
    /// own work where it asks the mesh): default [`Control::dedicated`], a thread of its own
    /// that callers' tasks cannot starve.
    pub fn control(mut self, control: Control) -> Self {
        self.control = Some(control);
        self
    }

    /// Supplies the material of the config's `external` certificate provider instance of the
    /// same name (`certificate_providers: { NAME: { external: {} } }`).
    pub fn certificate_provider(mut self, provider: crate::tls::CertificateProvider) -> Self {
        self.certificate_providers
            .insert(provider.name().to_owned(), provider);
        self
    }

    /// Load config from this YAML file and keep it hot-reloaded.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_owned());
        self
    }

    /// Keeps `value` alive as long as the mesh, retrievable with [`Mesh::extension`] (config
    /// sources attach themselves this way).
    pub fn extension<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.extensions.push(Box::new(value));
        self
    }

    /// How often the file is re-read (default 1 s).
    pub fn file_poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Builds the mesh. Loads the file first, if any: an unreadable or invalid file is an error.
    /// Must run inside a tokio runtime (background tasks: file polling, cleanup of idle
    /// connections to removed endpoints).
    pub async fn build(self) -> Result<Mesh, FileError> {
        let store = self.store.unwrap_or_default();
        let control = self.control.unwrap_or_default();
        let mut tasks = Vec::new();
        let file = match &self.file {
            Some(path) => {
                let source = Arc::new(FileSource::new(path, store.clone()));
                source.reload().await?;
                tasks.push(source.spawn_poller(self.poll, &control));
                Some(source)
            }
            None => None,
        };
        let providers = Arc::new(crate::tls::Providers::new(
            control.clone(),
            self.certificate_providers,
        ));
        providers.sync(store.load().certificate_providers());
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            tasks.push(spawn_refresher(weak.clone(), store.changed(), &control));
            Inner {
                registry: Arc::new(
                    Registry::new(
                        store.clone(),
                        self.connector,
                        self.dns,
                        control.clone(),
                        self.local,
                        providers.clone(),
                    )
                    .with_exchange(self.telemetry.as_ref().and_then(|t| t.exchange_headers())),
                ),
                providers,
                control,
                by_authority: Arc::new(ByAuthority::new(store.clone())),
                store,
                file,
                tasks,
                extensions: self.extensions,
                telemetry: self.telemetry,
            }
        });
        Ok(Mesh { inner })
    }
}

fn spawn_refresher(
    mesh: Weak<Inner>,
    mut changed: watch::Receiver<u64>,
    control: &Control,
) -> tokio::task::AbortHandle {
    control.spawn(async move {
        while changed.changed().await.is_ok() {
            let Some(inner) = mesh.upgrade() else { break };
            Mesh { inner }.refresh_all();
        }
    })
}
