//! The in-process ADS fixture's standard snapshot (listener `web` → routes → EDS cluster
//! `web`) and the client helpers the xDS tests share.

use super::{PATIENCE, get};
use bytes::Bytes;
use http_body_util::Empty;
use mesh_interop::ads::{FakeAds, Resources};
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::Duration;

pub fn snapshot(endpoints: &[SocketAddr]) -> Resources {
    snapshot_with(endpoints, build::eds_cluster("web"))
}

pub fn snapshot_with(
    endpoints: &[SocketAddr],
    cluster: envoy_types::pb::envoy::config::cluster::v3::Cluster,
) -> Resources {
    let mut r = Resources::new();
    let mut put = |ty: ResourceType, name: &str, any| {
        r.entry(ty.type_url().to_owned())
            .or_default()
            .insert(name.to_owned(), any);
    };
    put(
        ResourceType::Listener,
        "web",
        build::any(&build::api_listener_rds("web", "web-routes")),
    );
    put(
        ResourceType::RouteConfiguration,
        "web-routes",
        build::any(&build::route_config(
            "web-routes",
            &["*"],
            vec![build::route("/", "web")],
        )),
    );
    put(ResourceType::Cluster, "web", build::any(&cluster));
    put(
        ResourceType::ClusterLoadAssignment,
        "web",
        build::any(&build::assignment("web", endpoints)),
    );
    r
}

pub async fn xds_mesh(ads: &FakeAds, delta: bool, timeout: Duration) -> Mesh {
    let builder = XdsClientBuilder::new(ads.addr.to_string(), "node-1")
        .delta(delta)
        .resource_timeout(timeout)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    Mesh::from_xds(builder).await.unwrap()
}

/// The snapshot for `first`, a mesh on it, and a ready channel.
pub async fn ready_mesh(
    ads: &FakeAds,
    delta: bool,
    first: SocketAddr,
) -> (Mesh, MeshService<Empty<Bytes>>) {
    ads.set(snapshot(&[first]));
    let mesh = xds_mesh(ads, delta, Duration::from_secs(15)).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    (mesh, web)
}

pub async fn served_by(
    svc: &MeshService<Empty<Bytes>>,
) -> Result<SocketAddr, mesh_tower::MeshError> {
    get(svc, "/").await.map(|(_, s, _)| s.endpoint)
}

/// Sends requests until one is served by `want` (an event), failing on any error.
pub async fn until_served_by(svc: &MeshService<Empty<Bytes>>, want: SocketAddr) {
    until_served_at(svc, "/", want).await;
}

/// [`until_served_by`] for requests to `uri` (an absolute URI for the HTTP client).
pub async fn until_served_at(svc: &MeshService<Empty<Bytes>>, uri: &str, want: SocketAddr) {
    tokio::time::timeout(PATIENCE, async {
        while get(svc, uri).await.unwrap().1.endpoint != want {}
    })
    .await
    .expect("traffic moved to the new endpoint");
}
