//! The large snapshot the xDS benches share: one listener, one route config with a route per
//! cluster, `clusters` EDS clusters of `per` endpoints each — the shape a control plane pushes
//! to a client that may call every service of a big mesh.

use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::build;
use mesh_xds_client::translate::ResourceType;
use std::net::SocketAddr;

/// Which listener the snapshot carries: what a proxyless client subscribes to, or what a proxy
/// binds.
#[derive(Clone, Copy, Debug)]
pub enum ListenerKind {
    /// An API listener named `web` (ours, gRPC): the target `xds:///web`.
    Api,
    /// A socket listener named `web` on this address (Envoy).
    Socket(SocketAddr),
}

/// The snapshot's resources, each with its type and name. Cluster `c{i}` is routed by the
/// prefix `/c{i}/`; its endpoints are `endpoint(i, j)`.
pub fn snapshot(
    clusters: usize,
    per: usize,
    listener: ListenerKind,
    endpoint: impl Fn(usize, usize) -> SocketAddr,
) -> Vec<(ResourceType, String, Any)> {
    let mut out = Vec::with_capacity(2 * clusters + 2);
    let l = match listener {
        ListenerKind::Api => build::api_listener_rds("web", "routes"),
        ListenerKind::Socket(addr) => build::socket_listener("web", addr, "routes"),
    };
    out.push((ResourceType::Listener, "web".to_owned(), build::any(&l)));
    let routes = (0..clusters)
        .map(|i| build::route(&format!("/c{i}/"), &format!("c{i}")))
        .collect();
    out.push((
        ResourceType::RouteConfiguration,
        "routes".to_owned(),
        build::any(&build::route_config("routes", &["*"], routes)),
    ));
    for i in 0..clusters {
        let name = format!("c{i}");
        let eps: Vec<SocketAddr> = (0..per).map(|j| endpoint(i, j)).collect();
        out.push((
            ResourceType::Cluster,
            name.clone(),
            build::any(&build::eds_cluster(&name)),
        ));
        out.push((
            ResourceType::ClusterLoadAssignment,
            name.clone(),
            build::any(&build::assignment(&name, &eps)),
        ));
    }
    out
}

/// A process's peak resident memory (`VmHWM`), MiB; 0 if it cannot be read.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
