//! The xDS client: one ADS stream to the control plane, kept alive, feeding a [`Store`].
//!
//! The IO half of the client. The protocol lives in [`crate::ads`]; this module connects,
//! pumps messages between the stream and the state machine, applies config changes to the
//! store atomically (one edit per response), and drives the cascade:
//!
//! ```text
//! store interest (targets in use) ─▶ LDS names ─▶ RDS names (listeners' rds)
//!   ─▶ CDS names (clusters their routes use) ─▶ EDS names (EDS clusters' service names)
//! ```
//!
//! Names that stop being referenced are unsubscribed and dropped from the store. When the
//! stream breaks, the cached config keeps serving (it is never dropped to "no config") while
//! the client reconnects with exponential backoff and full jitter, then resubscribes.

use crate::ads::{self, Ads, Change, Output, Request};
use crate::bootstrap::{Bootstrap, Credentials, FEATURE_DELTA, FEATURE_IGNORE_RESOURCE_DELETION};
use crate::translate::{ResourceType, Translated};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_core::config::listener::RouteSource;
use mesh_core::{Absence, DiscoveryType, ResourceKind, Snapshot, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bootstrap is missing or invalid.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// A setting cannot be used.
    #[error("xDS client: {0}")]
    Config(String),
}

/// Builds an [`XdsClient`].
#[derive(Debug)]
pub struct XdsClientBuilder {
    bootstrap: Bootstrap,
    protocol: Option<ads::Protocol>,
    resource_timeout: Duration,
    backoff: (Duration, Duration),
    access_token_file: Option<PathBuf>,
    store: Option<Store>,
}

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

    /// Write to this store (default: a new one).
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts the client's task (needs a tokio runtime).
    pub fn start(self) -> Result<XdsClient, ClientError> {
        let server = self.bootstrap.xds_servers[0].clone();
        let tls = match server.credentials()? {
            Credentials::Insecure => None,
            Credentials::Tls { ca_file: None } => {
                return Err(ClientError::Config(
                    "tls channel_creds need config.ca_certificate_file (system roots are not used)"
                        .into(),
                ));
            }
            Credentials::Tls {
                ca_file: Some(path),
            } => Some(Tls {
                ca_pem: std::fs::read(&path)
                    .map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?,
                domain: server_host(&server.server_uri),
            }),
        };
        let protocol = self
            .protocol
            .unwrap_or(if server.has_feature(FEATURE_DELTA) {
                ads::Protocol::Delta
            } else {
                ads::Protocol::Sotw
            });
        let node = node_proto(&self.bootstrap.node);
        let store = self.store.unwrap_or_default();
        store.set_source_status(|s| s.source = format!("xds:{} ({protocol:?})", server.server_uri));
        let shared = Arc::new(Shared {
            store: store.clone(),
            state: Mutex::new(State {
                ads: Ads::new(ads::Config {
                    protocol,
                    node,
                    resource_timeout: self.resource_timeout,
                    ignore_resource_deletion: server.has_feature(FEATURE_IGNORE_RESOURCE_DELETION),
                }),
                listener_targets: BTreeMap::new(),
            }),
            bootstrap: self.bootstrap,
        });
        let settings = Settings {
            uri: endpoint_uri(&server.server_uri, tls.is_some()),
            tls,
            backoff: self.backoff,
            token: self.access_token_file,
        };
        let task = tokio::spawn(run(shared.clone(), settings)).abort_handle();
        Ok(XdsClient { shared, task })
    }
}

/// A running xDS client. Dropping it stops it (the store keeps the last config).
#[derive(Debug)]
pub struct XdsClient {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl XdsClient {
    /// The store it writes to.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Per resource: version, last update, state and last NACK error (the data CSDS serves).
    pub fn resource_status(&self) -> BTreeMap<ResourceType, BTreeMap<String, ads::ResourceStatus>> {
        self.shared.lock().ads.status()
    }

    /// The bootstrap in use.
    pub fn bootstrap(&self) -> &Bootstrap {
        &self.shared.bootstrap
    }
}

#[derive(Debug)]
struct Shared {
    store: Store,
    state: Mutex<State>,
    bootstrap: Bootstrap,
}

#[derive(Debug)]
struct State {
    ads: Ads,
    /// Listener resource name → target name (they differ under a name template).
    listener_targets: BTreeMap<String, String>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Settings {
    uri: String,
    tls: Option<Tls>,
    backoff: (Duration, Duration),
    token: Option<PathBuf>,
}

fn node_proto(n: &crate::bootstrap::Node) -> core::Node {
    core::Node {
        id: n.id.clone(),
        cluster: n.cluster.clone(),
        locality: n.locality.as_ref().map(|l| core::Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        }),
        user_agent_name: "mesh-xds-client".into(),
        user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        )),
        client_features: vec!["envoy.lb.does_not_support_overprovisioning".into()],
        ..Default::default()
    }
}

/// TLS to the control plane: the CA to trust and the name to verify (and send as SNI).
#[derive(Debug)]
struct Tls {
    ca_pem: Vec<u8>,
    domain: String,
}

fn endpoint_uri(server_uri: &str, tls: bool) -> String {
    let s = server_uri.strip_prefix("dns:///").unwrap_or(server_uri);
    if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("unix:") {
        s.to_owned()
    } else if tls {
        format!("https://{s}")
    } else {
        format!("http://{s}")
    }
}

/// The host part of a server URI (`dns:///istiod.istio-system.svc:15012` → `istiod.istio-system.svc`).
fn server_host(server_uri: &str) -> String {
    let s = server_uri.strip_prefix("dns:///").unwrap_or(server_uri);
    let s = s.split("://").nth(1).unwrap_or(s);
    let authority = s.split('/').next().unwrap_or(s);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_matches(['[', ']']).to_owned()
        }
        _ => authority.to_owned(),
    }
}

// ===== the stream loop =====

async fn run(shared: Arc<Shared>, settings: Settings) {
    let (initial, max) = settings.backoff;
    let mut failures: u32 = 0;
    loop {
        match stream_once(&shared, &settings).await {
            Ok(true) => failures = 0,
            Ok(false) => failures += 1,
            Err(e) => {
                failures += 1;
                tracing::warn!(uri = %settings.uri, error = %e, "xDS stream failed; serving the cached config");
            }
        }
        shared.lock().ads.stream_ended();
        let cap = initial.saturating_mul(1u32 << failures.min(16)).min(max);
        tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
    }
}

type Tx = mpsc::UnboundedSender<Request>;

/// One stream: returns whether any response arrived (to reset the backoff).
async fn stream_once(shared: &Arc<Shared>, settings: &Settings) -> Result<bool, BoxError> {
    let channel = connect(&settings.uri, settings.tls.as_ref()).await?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let mut interest = shared.store.interest();
    interest.mark_changed();
    // Queue the first requests before the call: servers may not answer before they see them.
    {
        let mut st = shared.lock();
        let out = st.ads.start_stream(Instant::now().into_std());
        drop(st);
        deliver(shared, out, &tx);
        cascade(shared, &tx);
    }
    let protocol = shared.lock().ads.protocol();
    let token = match &settings.token {
        Some(path) => Some(tokio::fs::read_to_string(path).await?.trim().to_owned()),
        None => None,
    };
    match protocol {
        ads::Protocol::Sotw => {
            let (otx, orx) = mpsc::unbounded_channel();
            tokio::spawn(forward(rx, otx, |r| match r {
                Request::Sotw(r) => Some(r),
                Request::Delta(_) => None,
            }));
            let call = client.stream_aggregated_resources(with_token(
                UnboundedReceiverStream::new(orx),
                &token,
            )?);
            pump(shared, &tx, &mut interest, call, Ads::on_sotw).await
        }
        ads::Protocol::Delta => {
            let (otx, orx) = mpsc::unbounded_channel();
            tokio::spawn(forward(rx, otx, |r| match r {
                Request::Delta(r) => Some(r),
                Request::Sotw(_) => None,
            }));
            let call = client
                .delta_aggregated_resources(with_token(UnboundedReceiverStream::new(orx), &token)?);
            pump(shared, &tx, &mut interest, call, Ads::on_delta).await
        }
    }
}

/// Runs one stream: waits for the call to be answered and then for responses, while serving
/// interest changes and timers all along. (Servers such as grpc-go send response headers only
/// with their first response, so subscriptions must keep flowing before the call completes.)
async fn pump<M, C>(
    shared: &Arc<Shared>,
    tx: &Tx,
    interest: &mut tokio::sync::watch::Receiver<Arc<mesh_core::Interest>>,
    call: C,
    on_message: fn(&mut Ads, M, std::time::Instant) -> Output,
) -> Result<bool, BoxError>
where
    C: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
{
    tokio::pin!(call);
    let mut inbound = loop {
        tokio::select! {
            res = &mut call => break res?.into_inner(),
            _ = interest.changed() => cascade(shared, tx),
            _ = deadline(shared) => tick(shared, tx),
        }
    };
    let mut got_response = false;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg? {
                Some(resp) => {
                    got_response = true;
                    let out = on_message(&mut shared.lock().ads, resp, Instant::now().into_std());
                    deliver(shared, out, tx);
                    cascade(shared, tx);
                }
                None => return Ok(got_response),
            },
            _ = interest.changed() => cascade(shared, tx),
            _ = deadline(shared) => tick(shared, tx),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The streaming request, with the bearer token when one is configured.
fn with_token<T>(stream: T, token: &Option<String>) -> Result<tonic::Request<T>, BoxError> {
    let mut req = tonic::Request::new(stream);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(req)
}

/// Moves requests of one protocol from the state machine's queue to the gRPC stream.
async fn forward<T>(
    mut rx: mpsc::UnboundedReceiver<Request>,
    tx: mpsc::UnboundedSender<T>,
    f: impl Fn(Request) -> Option<T>,
) {
    while let Some(r) = rx.recv().await {
        if let Some(m) = f(r)
            && tx.send(m).is_err()
        {
            break;
        }
    }
}

async fn connect(uri: &str, tls: Option<&Tls>) -> Result<tonic::transport::Channel, BoxError> {
    if let Some(path) = uri
        .strip_prefix("unix://")
        .or_else(|| uri.strip_prefix("unix:"))
    {
        let path = PathBuf::from(path);
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return Ok(tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await?);
    }
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri.to_owned())?;
    if let Some(tls) = tls {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
            .domain_name(tls.domain.clone());
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

async fn deadline(shared: &Shared) {
    let next = shared.lock().ads.next_deadline();
    match next {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn tick(shared: &Arc<Shared>, tx: &Tx) {
    let out = shared.lock().ads.on_tick(Instant::now().into_std());
    deliver(shared, out, tx);
    cascade(shared, tx);
}

/// Applies an output: changes to the store (one atomic edit), requests to the stream.
fn deliver(shared: &Arc<Shared>, out: Output, tx: &Tx) {
    let nack = out.requests.iter().find_map(|r| match r {
        Request::Sotw(r) => r.error_detail.as_ref().map(|e| e.message.clone()),
        Request::Delta(r) => r.error_detail.as_ref().map(|e| e.message.clone()),
    });
    let applied = out.changes.iter().any(|c| matches!(c, Change::Upsert(_)));
    if nack.is_some() || applied {
        shared.store.set_source_status(|s| {
            if applied {
                s.applied += 1;
                s.last_applied = Some(std::time::SystemTime::now());
            }
            if let Some(e) = nack {
                s.rejected += 1;
                s.last_error = Some(e);
            }
        });
    }
    if !out.changes.is_empty() {
        let targets = shared.lock().listener_targets.clone();
        shared.store.apply(|edit| {
            for change in out.changes {
                match change {
                    Change::Upsert(Translated::Listener(mut l)) => {
                        if let Some(t) = targets.get(&l.name) {
                            l.name = t.clone();
                        }
                        edit.upsert_listener(l)
                    }
                    Change::Upsert(Translated::RouteConfig(rc)) => edit.upsert_route_config(rc),
                    Change::Upsert(Translated::Cluster(c)) => edit.upsert_cluster(*c),
                    Change::Upsert(Translated::Endpoints(e)) => edit.upsert_endpoints(e),
                    Change::Remove(ty, name) => {
                        let name = store_name(&targets, ty, name);
                        edit.remove(ty.kind(), &name);
                        edit.set_absence(ty.kind(), &name, None);
                    }
                    Change::Missing(ty, name, why) => {
                        let name = store_name(&targets, ty, name);
                        edit.remove(ty.kind(), &name);
                        edit.set_absence(ty.kind(), &name, Some(Absence::Missing(why)));
                    }
                }
            }
        });
    }
    if out.requests.is_empty() {
        return;
    }
    match out.delay {
        None => {
            for r in out.requests {
                let _ = tx.send(r);
            }
        }
        Some(delay) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for r in out.requests {
                    let _ = tx.send(r);
                }
            });
        }
    }
}

fn store_name(targets: &BTreeMap<String, String>, ty: ResourceType, name: String) -> String {
    match ty {
        ResourceType::Listener => targets.get(&name).cloned().unwrap_or(name),
        _ => name,
    }
}

/// Recomputes what to subscribe to from the store's interest and content, until stable.
fn cascade(shared: &Arc<Shared>, tx: &Tx) {
    for _ in 0..5 {
        let interest = shared.store.interest().borrow().clone();
        let snap = shared.store.load();
        let mut st = shared.lock();
        // Targets → listener resource names (by the bootstrap's template).
        let mut targets = BTreeMap::new();
        for target in interest.names(ResourceKind::Listener) {
            targets.insert(shared.bootstrap.listener_name(target), target.to_owned());
        }
        let wanted = wanted(&snap, &targets);
        st.listener_targets = targets;
        let now = Instant::now().into_std();
        let mut outputs = Vec::new();
        for ty in ResourceType::ALL {
            let out = st.ads.set_wanted(ty, wanted[ty.index()].clone(), now);
            if !out.requests.is_empty() || !out.changes.is_empty() {
                outputs.push(out);
            }
        }
        // Wanted but not here yet: pending, so the data plane can say so.
        let mut pending = Vec::new();
        for ty in ResourceType::ALL {
            for (name, status) in st.ads.status().remove(&ty).unwrap_or_default() {
                if status.state == "requested" {
                    pending.push((ty, store_name(&st.listener_targets, ty, name)));
                }
            }
        }
        drop(st);
        let stable = outputs.is_empty();
        for out in outputs {
            deliver(shared, out, tx);
        }
        let snap = shared.store.load();
        let to_mark: Vec<_> = pending
            .into_iter()
            .filter(|(ty, n)| snap.absence(ty.kind(), n).is_none() && !present(&snap, *ty, n))
            .collect();
        if !to_mark.is_empty() {
            shared.store.apply(|edit| {
                for (ty, n) in &to_mark {
                    edit.set_absence(ty.kind(), n, Some(Absence::Pending));
                }
            });
        }
        if stable {
            return;
        }
    }
}

fn present(snap: &Snapshot, ty: ResourceType, name: &str) -> bool {
    match ty {
        ResourceType::Listener => snap.listener(name).is_some(),
        ResourceType::RouteConfiguration => snap.route_config(name).is_some(),
        ResourceType::Cluster => snap.cluster(name).is_some(),
        ResourceType::ClusterLoadAssignment => snap.endpoints(name).is_some(),
    }
}

/// The names each type needs, given the listener targets and what the store holds.
fn wanted(snap: &Snapshot, targets: &BTreeMap<String, String>) -> [BTreeSet<String>; 4] {
    let mut out: [BTreeSet<String>; 4] = Default::default();
    let mut clusters = BTreeSet::new();
    for (resource, target) in targets {
        out[ResourceType::Listener.index()].insert(resource.clone());
        let Some(listener) = snap.listener(target) else {
            continue;
        };
        let rc = match listener.route_source() {
            Some(RouteSource::Rds(name)) => {
                out[ResourceType::RouteConfiguration.index()].insert(name.to_owned());
                snap.route_config(name).map(|rc| &**rc)
            }
            Some(RouteSource::Inline(rc)) => Some(rc),
            None => None,
        };
        for vh in rc.iter().flat_map(|rc| &rc.virtual_hosts) {
            for route in &vh.routes {
                if let Some(action) = &route.route {
                    clusters.extend(action.cluster_names().map(str::to_owned));
                }
            }
        }
    }
    for name in &clusters {
        if let Some(c) = snap.cluster(name)
            && c.discovery == DiscoveryType::Eds
        {
            out[ResourceType::ClusterLoadAssignment.index()].insert(c.endpoints_name().to_owned());
        }
    }
    out[ResourceType::Cluster.index()] = clusters;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_uris_become_endpoints_and_tls_names() {
        assert_eq!(
            endpoint_uri("127.0.0.1:18000", false),
            "http://127.0.0.1:18000"
        );
        assert_eq!(
            endpoint_uri("dns:///istiod.istio-system.svc:15012", true),
            "https://istiod.istio-system.svc:15012"
        );
        assert_eq!(
            endpoint_uri("unix:///etc/istio/proxy/XDS", false),
            "unix:///etc/istio/proxy/XDS"
        );
        assert_eq!(
            server_host("dns:///istiod.istio-system.svc:15012"),
            "istiod.istio-system.svc"
        );
        assert_eq!(server_host("https://cp.example:443/x"), "cp.example");
        assert_eq!(server_host("[::1]:18000"), "::1");
    }
}
