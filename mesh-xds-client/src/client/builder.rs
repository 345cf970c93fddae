//! The builder: a bootstrap, or a server and node, plus the client's settings; `start`
//! wires the per-server state machines, the streams and the cascade together.
//!
//! Why apart: every setting of the client is read here once, so the running client (the
//! parent module) never consults options, only the state they produced.

use super::*;

/// Builds an [`XdsClient`].
#[derive(Debug)]
pub struct XdsClientBuilder {
    bootstrap: Bootstrap,
    protocol: Option<ads::Protocol>,
    resource_timeout: Duration,
    backoff: (Duration, Duration),
    access_token_file: Option<PathBuf>,
    store: Option<Store>,
    control: Option<Control>,
    linger: Duration,
    telemetry: bool,
    refresh: Duration,
}

/// How often REST-JSON control planes are polled and resource files read again (see
/// [`XdsClientBuilder::refresh_delay`]).
pub const REFRESH_DELAY: Duration = Duration::from_secs(1);

/// How long a target stays subscribed after its last user went away (see
/// [`XdsClientBuilder::unsubscribe_delay`]).
pub const UNSUBSCRIBE_DELAY: Duration = Duration::from_secs(2);

impl XdsClientBuilder {
    /// The node this client identifies as (its locality feeds zone-aware routing).
    pub fn node(&self) -> &crate::bootstrap::Node {
        &self.bootstrap.node
    }

    /// Settings from a bootstrap.
    pub fn from_bootstrap(bootstrap: Bootstrap) -> Self {
        Self {
            bootstrap,
            protocol: None,
            resource_timeout: Duration::from_secs(15),
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            access_token_file: None,
            store: None,
            control: None,
            linger: UNSUBSCRIBE_DELAY,
            telemetry: true,
            refresh: REFRESH_DELAY,
        }
    }

    /// Settings for a plaintext control plane at `server_uri` (`host:port`).
    pub fn new(server_uri: impl Into<String>, node_id: impl Into<String>) -> Self {
        let bootstrap = Bootstrap {
            xds_servers: vec![crate::bootstrap::XdsServer {
                server_uri: server_uri.into(),
                channel_creds: vec![crate::bootstrap::ChannelCreds {
                    kind: "insecure".into(),
                    config: None,
                }],
                server_features: vec!["xds_v3".into()],
            }],
            node: crate::bootstrap::Node {
                id: node_id.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        Self::from_bootstrap(bootstrap)
    }

    /// Use Delta ADS (`true`) or SotW (`false`); default: the bootstrap's `delta_ads` feature.
    pub fn delta(mut self, delta: bool) -> Self {
        self.protocol = Some(if delta {
            ads::Protocol::Delta
        } else {
            ads::Protocol::Sotw
        });
        self
    }

    /// How long a subscribed resource may take before it is reported as not existing (15 s).
    pub fn resource_timeout(mut self, timeout: Duration) -> Self {
        self.resource_timeout = timeout;
        self
    }

    /// Poll the bootstrap's top-level servers over REST-JSON (Envoy's `api_type: REST`:
    /// `POST <server_uri>/v3/discovery:<type>`) instead of an ADS stream; the same as the
    /// server feature [`FEATURE_REST_JSON`](crate::bootstrap::FEATURE_REST_JSON). Needs the
    /// `json` feature; SotW only.
    pub fn rest_json(mut self) -> Self {
        for s in &mut self.bootstrap.xds_servers {
            if !s.has_feature(crate::bootstrap::FEATURE_REST_JSON) {
                s.server_features
                    .push(crate::bootstrap::FEATURE_REST_JSON.into());
            }
        }
        self
    }

    /// How often a REST-JSON control plane is polled and resource files are read again
    /// (default [`REFRESH_DELAY`]; Envoy's `refresh_delay`). gRPC streams are pushed to and
    /// do not poll.
    pub fn refresh_delay(mut self, delay: Duration) -> Self {
        self.refresh = delay;
        self
    }

    /// Reconnect backoff: first delay and cap (default 1 s and 30 s; full jitter).
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max);
        self
    }

    /// Send `authorization: Bearer <file content>` on each stream (re-read every connect, so
    /// rotated tokens are picked up), as istiod on port 15012 expects.
    pub fn access_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.access_token_file = Some(path.into());
        self
    }

    /// How long a target's config stays subscribed and cached after the last channel or
    /// HTTP client using it went away (default [`UNSUBSCRIBE_DELAY`]). A target used again
    /// meanwhile (a channel made per call, or a channel dropped and an HTTP client taking
    /// over) keeps its config: no round trip to the control plane, and no request routed by
    /// the old config while its clusters are being removed. Zero unsubscribes at once.
    pub fn unsubscribe_delay(mut self, delay: Duration) -> Self {
        self.linger = delay;
        self
    }

    /// Whether a mesh built from this client records Istio's request metrics and access logs
    /// (default `true`; see `mesh_tower::telemetry`). Without an exporter installed the
    /// metrics go nowhere but still cost about 0.3 µs a request; `false` saves that.
    pub fn telemetry(mut self, on: bool) -> Self {
        self.telemetry = on;
        self
    }

    /// Whether a mesh built from this client records telemetry.
    pub fn records_telemetry(&self) -> bool {
        self.telemetry
    }

    /// Write to this store (default: a new one).
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Where the client's tasks run: default [`Control::dedicated`], the mesh's control
    /// thread, so that no application task can starve the config (see [`mesh_tower::control`]).
    pub fn control(mut self, control: Control) -> Self {
        self.control = Some(control);
        self
    }

    /// The runtime the client's tasks will run on.
    pub fn control_runtime(&self) -> Control {
        self.control.clone().unwrap_or_default()
    }

    /// Starts the client's tasks: the stream to the top-level server at once, the streams to
    /// other authorities' servers when first needed. They run on [`control`](Self::control).
    pub fn start(self) -> Result<XdsClient, ClientError> {
        let control = self.control_runtime();
        let routing = Routing::new(&self.bootstrap);
        let node = node_proto(&self.bootstrap.node);
        let providers = self.bootstrap.mesh_certificate_providers()?;
        let context = crate::translate::Context {
            certificate_providers: providers.keys().cloned().collect(),
            inbound_route_configs: Default::default(),
            files: false,
        };
        let mut machines = Vec::new();
        let mut streams = Vec::new();
        let mut sources = Vec::new();
        for server in routing.servers() {
            let transport = servers::transport_of(server)?;
            let sotw_only = transport.sotw_only();
            let protocol = match self.protocol {
                Some(ads::Protocol::Delta) if sotw_only => {
                    return Err(ClientError::Config(format!(
                        "{}: REST-JSON and resource files speak SotW, not Delta",
                        server.server_uri
                    )));
                }
                Some(p) => p,
                None if server.has_feature(FEATURE_DELTA) && !sotw_only => ads::Protocol::Delta,
                None => ads::Protocol::Sotw,
            };
            let fallbacks = routing.fallbacks(machines.len());
            let mut source = format!("{} ({protocol:?})", server.server_uri);
            if !fallbacks.is_empty() {
                let uris: Vec<&str> = fallbacks.iter().map(|f| f.server_uri.as_str()).collect();
                source.push_str(&format!(" [fallback: {}]", uris.join(", ")));
            }
            sources.push(source);
            machines.push(Ads::new(ads::Config {
                protocol,
                node: node.clone(),
                resource_timeout: self.resource_timeout,
                ignore_resource_deletion: server.has_feature(FEATURE_IGNORE_RESOURCE_DELETION),
                context: crate::translate::Context {
                    files: transport.is_files(),
                    ..context.clone()
                },
            }));
            let settings = |server: &XdsServer| {
                Settings::new(
                    server,
                    self.backoff,
                    self.access_token_file.clone(),
                    self.refresh,
                )
            };
            let mut servers = vec![settings(server)?];
            for f in fallbacks {
                servers.push(settings(f)?);
            }
            streams.push(StreamSlot {
                servers,
                current: AtomicUsize::new(0),
                wake: Notify::new(),
            });
        }
        let store = self.store.unwrap_or_default();
        store.apply(|edit| edit.set_certificate_providers(providers));
        store.set_source_status(|s| {
            s.source = format!("xds:{}", sources.join(", "));
            s.on_demand = true;
        });
        let n = streams.len();
        let shared = Arc::new(Shared {
            store,
            state: Mutex::new(State {
                ads: machines,
                tx: vec![None; n],
                listener_targets: BTreeMap::new(),
                lingering: BTreeMap::new(),
                route_clusters: BTreeSet::new(),
                lingering_clusters: BTreeMap::new(),
                server_listeners: BTreeSet::new(),
                staged_routes: BTreeMap::new(),
            }),
            bootstrap: self.bootstrap,
            routing,
            streams,
            tasks: Mutex::new(Tasks {
                handles: Vec::new(),
                started: vec![false; n],
                closed: false,
            }),
            control,
            linger: self.linger,
            linger_started: Notify::new(),
        });
        let coordinator = shared.control.spawn(cascade::coordinate(shared.clone()));
        shared.tasks().handles.push(coordinator);
        shared.ensure_stream(0);
        Ok(XdsClient { shared })
    }
}
