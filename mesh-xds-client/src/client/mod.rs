//! The xDS client: ADS streams to the control planes, kept alive, feeding a [`Store`].
//!
//! The IO half of the client. The protocol lives in [`crate::ads`]; this module connects,
//! pumps messages between the streams and their state machines, applies config changes to
//! the store atomically (one edit per response), and drives the cascade:
//!
//! ```text
//! store interest (targets in use) ─▶ LDS names ─▶ RDS names (listeners' rds)
//!   ─▶ CDS names (clusters their routes use) ─▶ EDS names (EDS clusters' service names)
//! ```
//!
//! Each name is fetched from the control plane its authority names (gRFC A47, see
//! [`crate::federation`]): old-style names from the bootstrap's top-level server, whose stream
//! starts at once; `xdstp://` names from their authority's server, whose stream starts when
//! the first such name is wanted. One state machine and one stream per distinct server.
//!
//! Names that stop being referenced are unsubscribed and dropped from the store. When a
//! stream breaks, the cached config keeps serving (it is never dropped to "no config") while
//! the client reconnects with exponential backoff and full jitter, then resubscribes.

mod builder;
mod cascade;
mod deliver;
#[cfg(feature = "json")]
pub(crate) use deliver::route_clusters;
#[cfg(feature = "json")]
mod files;
mod lrs;
mod metrics;
#[cfg(feature = "json")]
mod polled;
#[cfg(feature = "json")]
mod rest;
mod servers;
mod stream;

use crate::ads::{self, Ads, Request};
use crate::bootstrap::{Bootstrap, FEATURE_DELTA, FEATURE_IGNORE_RESOURCE_DELETION, XdsServer};
use crate::federation::Routing;
use crate::translate::ResourceType;
use envoy_types::pb::envoy::config::core::v3 as core;
use mesh_core::Store;
use mesh_tower::control::Control;
use servers::Settings;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

pub use builder::{REFRESH_DELAY, UNSUBSCRIBE_DELAY, XdsClientBuilder};

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

/// A running xDS client. Dropping it stops it (the store keeps the last config).
#[derive(Debug)]
pub struct XdsClient {
    shared: Arc<Shared>,
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        let mut tasks = self.shared.tasks();
        tasks.closed = true;
        for t in tasks.handles.drain(..) {
            t.abort();
        }
    }
}

impl XdsClient {
    /// The store it writes to.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Per resource: version, last update, state and last NACK error (the data CSDS serves),
    /// over every control plane's stream.
    pub fn resource_status(&self) -> BTreeMap<ResourceType, BTreeMap<String, ads::ResourceStatus>> {
        StatusSource(self.shared.clone()).resource_status()
    }

    /// The CSDS gRPC service of this client, to mount on the application's tonic server
    /// (see [`Csds`](crate::csds::Csds)). It reads the client's state when asked and does not
    /// keep the client running.
    pub fn csds(&self) -> crate::csds::Csds {
        crate::csds::Csds::new(StatusSource(self.shared.clone()))
    }

    /// Reports the load `reporter` counts (the mesh this client feeds, see
    /// `Mesh::load_reporter`) to the control planes whose clusters ask for it (LRS,
    /// `lrs_server: { self: {} }`): one task per control plane, on the client's control
    /// runtime, stopped with the client. `Mesh::from_xds` calls this.
    pub fn report_load(&self, reporter: mesh_tower::cluster::load::LoadReporter) {
        let mut tasks = self.shared.tasks();
        if tasks.closed {
            return;
        }
        for index in 0..self.shared.streams.len() {
            let task = lrs::run(self.shared.clone(), index, reporter.clone());
            tasks.handles.push(self.shared.control.spawn(task));
        }
    }

    /// The control planes in use: the top-level server first, then those only authorities
    /// name (each is one ADS stream).
    pub fn servers(&self) -> &[XdsServer] {
        self.shared.routing.servers()
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
    routing: Routing,
    /// Per server (index as in `routing.servers()`).
    streams: Vec<StreamSlot>,
    tasks: Mutex<Tasks>,
    /// Where the tasks run.
    control: Control,
    /// See [`XdsClientBuilder::unsubscribe_delay`].
    linger: Duration,
    /// Woken when a cascade starts a linger, so the coordinator sleeps until it ends.
    linger_started: Notify,
}

/// What one server's stream task needs beside the state.
#[derive(Debug)]
struct StreamSlot {
    /// `[0]`: the server; then its fallbacks in order (gRFC A71).
    servers: Vec<Settings>,
    /// Which of `servers` the stream uses now.
    current: AtomicUsize,
    /// Woken when the cascade changes this server's subscriptions (its timers moved).
    wake: Notify,
}

impl StreamSlot {
    /// The settings of the server in use.
    fn settings(&self) -> &Settings {
        &self.servers[self.current.load(Ordering::Relaxed)]
    }
}

#[derive(Debug)]
struct Tasks {
    handles: Vec<tokio::task::AbortHandle>,
    started: Vec<bool>,
    /// The client was dropped: start nothing more.
    closed: bool,
}

type Tx = mpsc::UnboundedSender<Request>;

#[derive(Debug)]
struct State {
    /// Per server: its state machine, and its stream's queue while one is up.
    ads: Vec<Ads>,
    tx: Vec<Option<Tx>>,
    /// Listener resource name → target name (they differ under a name template).
    listener_targets: BTreeMap<String, String>,
    /// Targets no user holds any more, still subscribed until the instant given (see
    /// [`XdsClientBuilder::unsubscribe_delay`]).
    lingering: BTreeMap<String, Instant>,
    /// The clusters the route configs named at the last cascade.
    route_clusters: BTreeSet<String>,
    /// Clusters routes stopped naming, still subscribed (and in the store) until the instant
    /// given: a request routed by the previous route config may still be on its way to one
    /// (gRPC's xDS resolver keeps such clusters while calls use them).
    lingering_clusters: BTreeMap<String, Instant>,
    /// LDS names that are server listeners (gRFC A36), as the store's interest asks.
    server_listeners: BTreeSet<String>,
    /// Route configs received but not applied yet: some cluster they name (or its endpoints)
    /// has not arrived (gRFC A74; see `deliver::promote`).
    staged_routes: BTreeMap<String, mesh_core::config::route::RouteConfig>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts server `index`'s stream task unless it runs (or the client is gone).
    fn ensure_stream(self: &Arc<Self>, index: usize) {
        let mut tasks = self.tasks();
        if tasks.closed || tasks.started[index] {
            return;
        }
        tasks.started[index] = true;
        let handle = self.control.spawn(stream::run(self.clone(), index));
        tasks.handles.push(handle);
    }
}

/// A client's resource status and node, readable after the client stopped (CSDS holds one).
#[derive(Clone, Debug)]
pub(crate) struct StatusSource(Arc<Shared>);

impl StatusSource {
    /// Per type and name, over every control plane's stream.
    pub(crate) fn resource_status(
        &self,
    ) -> BTreeMap<ResourceType, BTreeMap<String, ads::ResourceStatus>> {
        let st = self.0.lock();
        let mut all: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
        for ads in &st.ads {
            for (ty, by_name) in ads.status() {
                all.entry(ty).or_default().extend(by_name);
            }
        }
        all
    }

    /// The node the client presents.
    pub(crate) fn node(&self) -> core::Node {
        node_proto(&self.0.bootstrap.node)
    }
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
        metadata: n.metadata.as_ref().map(json_struct),
        ..Default::default()
    }
}

/// The bootstrap's node metadata as the `google.protobuf.Struct` the Node carries: istiod reads
/// `GENERATOR`, `NAMESPACE`, `INSTANCE_IPS`, `LABELS` … from it to pick the proxyless generator
/// and the workload's identity.
fn json_struct(
    map: &serde_json::Map<String, serde_json::Value>,
) -> envoy_types::pb::google::protobuf::Struct {
    envoy_types::pb::google::protobuf::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    }
}

fn json_value(v: &serde_json::Value) -> envoy_types::pb::google::protobuf::Value {
    use envoy_types::pb::google::protobuf::{ListValue, Value, value::Kind};
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(json_struct(m)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_metadata_reaches_the_wire_as_a_struct() {
        use envoy_types::pb::google::protobuf::value::Kind;
        let bootstrap = crate::bootstrap::Bootstrap::from_json(
            r#"{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
                "node":{"id":"sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
                        "metadata":{"GENERATOR":"grpc","INSTANCE_IPS":"10.0.0.1",
                                    "LABELS":{"app":"a"},"PORTS":[1,2],"X":null,"B":true}}}"#,
        )
        .unwrap();
        let node = node_proto(&bootstrap.node);
        let fields = node.metadata.expect("metadata sent").fields;
        let kind = |k: &str| fields[k].kind.clone().unwrap();
        assert_eq!(kind("GENERATOR"), Kind::StringValue("grpc".into()));
        assert_eq!(kind("B"), Kind::BoolValue(true));
        assert_eq!(kind("X"), Kind::NullValue(0));
        match kind("LABELS") {
            Kind::StructValue(s) => {
                assert_eq!(s.fields["app"].kind, Some(Kind::StringValue("a".into())))
            }
            other => panic!("LABELS: {other:?}"),
        }
        match kind("PORTS") {
            Kind::ListValue(l) => assert_eq!(l.values.len(), 2),
            other => panic!("PORTS: {other:?}"),
        }
    }
}
