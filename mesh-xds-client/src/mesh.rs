//! Building a [`Mesh`] fed by an xDS client.

use crate::bootstrap::Bootstrap;
use crate::client::{ClientError, XdsClient, XdsClientBuilder};
use mesh_tower::Mesh;
use mesh_tower::telemetry::{AccessLog, Telemetry, Workload};
use std::future::Future;
use std::path::Path;

/// xDS constructors and accessors for [`Mesh`]. With the trait in scope:
///
/// ```no_run
/// use mesh_tower::Mesh;
/// use mesh_xds_client::XdsMesh;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::from_bootstrap_env().await?;      // GRPC_XDS_BOOTSTRAP(_CONFIG)
/// let channel = mesh.channel::<tonic::body::Body>("xds:///greeter:50051");
/// # Ok(()) }
/// ```
pub trait XdsMesh: Sized {
    /// A mesh configured by the control plane named in `GRPC_XDS_BOOTSTRAP` (a file) or
    /// `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON).
    fn from_bootstrap_env() -> impl Future<Output = Result<Self, ClientError>> + Send;

    /// A mesh configured by the control plane named in a bootstrap file.
    fn from_bootstrap(
        path: impl AsRef<Path> + Send,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send;

    /// A mesh fed by a client built in code. It records Istio's request metrics
    /// ([`mesh_tower::telemetry`]) as the workload the bootstrap's node metadata describes, and
    /// writes access logs when `MESH_ACCESS_LOG` is `stdout` or a file path (as Istio's
    /// `accessLogFile`).
    fn from_xds(
        builder: XdsClientBuilder,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send;

    /// The xDS client feeding this mesh, if any.
    fn xds_client(&self) -> Option<&XdsClient>;

    /// An xDS-enabled server (gRFC A36) for `addr`: the listener named by the bootstrap's
    /// `server_listener_resource_name_template`, awaited for at most `patience` (its TLS and
    /// RBAC then follow the control plane).
    fn xds_server(
        &self,
        addr: std::net::SocketAddr,
        patience: std::time::Duration,
    ) -> impl Future<Output = Result<mesh_tower::server::MeshServer, ClientError>> + Send;

    /// The effective config plus, per xDS resource, its version, last update, state and last
    /// NACK error (the data CSDS serves), as JSON.
    fn xds_config_dump(&self) -> serde_json::Value;
}

impl XdsMesh for Mesh {
    async fn from_bootstrap_env() -> Result<Self, ClientError> {
        Self::from_xds(XdsClientBuilder::from_bootstrap(Bootstrap::from_env()?)).await
    }

    async fn from_bootstrap(path: impl AsRef<Path> + Send) -> Result<Self, ClientError> {
        Self::from_xds(XdsClientBuilder::from_bootstrap(Bootstrap::from_file(
            path,
        )?))
        .await
    }

    async fn from_xds(builder: XdsClientBuilder) -> Result<Self, ClientError> {
        // The node's zone (and its cluster, as Envoy's local cluster) drive zone-aware routing.
        let node = builder.node().clone();
        let builder_telemetry = builder.records_telemetry();
        // The client and the mesh's own control work share one control runtime.
        let control = builder.control_runtime();
        let client = builder.control(control.clone()).start()?;
        let store = client.store().clone();
        let telemetry = if builder_telemetry {
            Some(telemetry(&node)?)
        } else {
            None
        };
        let mut mesh = Mesh::builder()
            .store(store)
            .control(control)
            .extension(client);
        if let Some(t) = telemetry {
            mesh = mesh.telemetry(t);
        }
        if let Some(zone) = node
            .locality
            .as_ref()
            .map(|l| l.zone.clone())
            .filter(|z| !z.is_empty())
        {
            let cluster = (!node.cluster.is_empty()).then_some(node.cluster.as_str());
            mesh = mesh.local_zone(zone, cluster);
        }
        mesh.build()
            .await
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    fn xds_client(&self) -> Option<&XdsClient> {
        self.extension::<XdsClient>()
    }

    async fn xds_server(
        &self,
        addr: std::net::SocketAddr,
        patience: std::time::Duration,
    ) -> Result<mesh_tower::server::MeshServer, ClientError> {
        let client = self
            .xds_client()
            .ok_or_else(|| ClientError::Config("this mesh has no xDS client".into()))?;
        let name = client
            .bootstrap()
            .server_listener_name(addr)
            .map_err(ClientError::Config)?;
        self.server_when_ready(&name, patience)
            .await
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    fn xds_config_dump(&self) -> serde_json::Value {
        let config = serde_json::to_value(self.config_dump()).unwrap_or_default();
        let resources: serde_json::Map<String, serde_json::Value> = self
            .xds_client()
            .map(|c| c.resource_status())
            .unwrap_or_default()
            .into_iter()
            .map(|(ty, by_name)| {
                (
                    ty.short().to_owned(),
                    serde_json::to_value(by_name).unwrap_or_default(),
                )
            })
            .collect();
        let status = self.source_status().borrow().clone();
        serde_json::json!({
            "config": config,
            "xds": resources,
            "source": {
                "source": status.source,
                "applied": status.applied,
                "rejected": status.rejected,
                "last_error": status.last_error,
            },
        })
    }
}

/// Istio's request metrics, labelled with the workload the node metadata describes (Istio's
/// agent writes WORKLOAD_NAME, NAMESPACE, LABELS, … there); access logs as Istio's
/// `accessLogFile`: `MESH_ACCESS_LOG=stdout` or a file path.
fn telemetry(node: &crate::bootstrap::Node) -> Result<Telemetry, ClientError> {
    let meta = serde_json::Value::Object(node.metadata.clone().unwrap_or_default());
    let telemetry = Telemetry::new(Workload::from_node_metadata(&meta));
    Ok(
        match std::env::var("MESH_ACCESS_LOG")
            .ok()
            .filter(|v| !v.is_empty())
        {
            None => telemetry,
            Some(v) if v == "stdout" || v == "/dev/stdout" => {
                telemetry.with_access_log(AccessLog::stdout())
            }
            Some(path) => {
                let log = AccessLog::file(&path)
                    .map_err(|e| ClientError::Config(format!("MESH_ACCESS_LOG {path:?}: {e}")))?;
                telemetry.with_access_log(log)
            }
        },
    )
}
