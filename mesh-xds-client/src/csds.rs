//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`, gRFC A40): the xDS client's
//! per-resource status as a gRPC service the application mounts on its own tonic server.
//!
//! Why: the tools people already use to debug xDS clients (grpcdebug, `istioctl`-style
//! dashboards, Envoy's admin conventions) ask this service which resources a client
//! subscribed to, which version of each it accepted, and which it rejected and why. With it,
//! a mesh client inside an application is as inspectable as a sidecar, with no extra port of
//! ours: it is one more service on the application's server.
//!
//! What it reports, per resource of every type and control plane: the name, the version of
//! the accepted copy and when it arrived, and a status: `REQUESTED` (asked, nothing yet),
//! `DOES_NOT_EXIST`, `ACKED`, or `NACKED` with the rejection's field-path message in
//! `error_state.details` (also when an earlier copy is still in force, as gRFC A40 says).
//! `xds_config` is the last accepted copy as it came from the control plane (a NACKed copy is
//! not kept: the error says what was wrong with it), as gRPC reports it; `Mesh::config_dump`
//! shows the same config as the mesh holds it. `node_matchers` are ignored, as gRPC does: a
//! client only knows itself.

use crate::client::StatusSource;
use crate::translate::ResourceType;
use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse,
};
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::time::SystemTime;
use tonic::{Request, Response, Status, Streaming};

/// The CSDS service of one xDS client ([`XdsClient::csds`](crate::XdsClient::csds)).
///
/// ```no_run
/// # fn demo(client: &mesh_xds_client::XdsClient) {
/// // A tonic service: `tonic::transport::Server::builder().add_service(csds)`, beside the
/// // application's own services (docs/guides/observability.md shows it whole).
/// let csds = client.csds().into_service();
/// // Or the answer itself:
/// let status = client.csds().status();
/// assert_eq!(status.config.len(), 1);
/// # let _ = csds;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Csds {
    source: StatusSource,
}

impl Csds {
    pub(crate) fn new(source: StatusSource) -> Self {
        Self { source }
    }

    /// As a tonic service, to add to a server.
    pub fn into_service(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The client's status now, as CSDS answers it.
    pub fn status(&self) -> ClientStatusResponse {
        let mut configs = Vec::new();
        for (ty, by_name) in self.source.resource_status() {
            for (name, s) in by_name {
                configs.push(generic(ty, name, s));
            }
        }
        ClientStatusResponse {
            config: vec![ClientConfig {
                node: Some(self.source.node()),
                generic_xds_configs: configs,
                ..ClientConfig::default()
            }],
        }
    }
}

fn generic(ty: ResourceType, name: String, s: crate::ads::ResourceStatus) -> GenericXdsConfig {
    let status = match (s.state, &s.last_error) {
        ("requested", _) => ClientResourceStatus::Requested,
        ("does_not_exist", _) => ClientResourceStatus::DoesNotExist,
        ("nacked", _) | (_, Some(_)) => ClientResourceStatus::Nacked,
        ("acked", None) => ClientResourceStatus::Acked,
        _ => ClientResourceStatus::Unknown,
    };
    GenericXdsConfig {
        type_url: ty.type_url().into(),
        name,
        version_info: s.version,
        last_updated: s.last_updated.map(timestamp),
        client_status: status as i32,
        error_state: s.last_error.map(|details| UpdateFailureState {
            details,
            ..UpdateFailureState::default()
        }),
        xds_config: s.resource.map(|a| Any::clone(&a)),
        ..GenericXdsConfig::default()
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<StatusStream>, Status> {
        let me = self.clone();
        let answers = request.into_inner().map(move |r| r.map(|_| me.status()));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        _request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        Ok(Response::new(self.status()))
    }
}
