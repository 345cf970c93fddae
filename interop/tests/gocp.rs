//! Interop with go-control-plane, the reference Go xDS server (snapshot cache; SotW and Delta
//! ADS), through our own small program `interop/gocp`. Each scenario runs in both protocols:
//! initial config reaches the right endpoints; endpoints added and removed; a route changes
//! cluster; a cluster removed; an invalid resource NACKed with its field path while the last
//! good config serves (and CSDS, read by a grpc-go client, reports it NACKED with the message);
//! the control plane killed and restarted under traffic; load reports (LRS) received with
//! the exact per-locality counts.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::google::protobuf::Any;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{ErrorKind, Mesh, MeshService};
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::net::SocketAddr;
use std::time::Duration;
use support::gocp::GoControlPlane;
use support::*;

const NODE: &str = "mesh-client";

/// Listener `web` → route config `web-routes` → `/` to `cluster` → EDS endpoints, plus any
/// extra clusters (with endpoints) given.
fn resources(
    route_cluster: &str,
    clusters: &[(
        envoy_types::pb::envoy::config::cluster::v3::Cluster,
        &[SocketAddr],
    )],
) -> Vec<Any> {
    let mut out = vec![
        build::any(&build::api_listener_rds("web", "web-routes")),
        build::any(&build::route_config(
            "web-routes",
            &["*"],
            vec![build::route("/", route_cluster)],
        )),
    ];
    for (cluster, endpoints) in clusters {
        out.push(build::any(cluster));
        out.push(build::any(&build::assignment(&cluster.name, endpoints)));
    }
    out
}

async fn mesh(cp: &GoControlPlane, delta: bool) -> Mesh {
    use mesh_xds_client::XdsMesh;
    let builder = XdsClientBuilder::new(cp.ads.to_string(), NODE)
        .delta(delta)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    Mesh::from_xds(builder).await.unwrap()
}

/// Snapshot "1" (route `/` → cluster `web` → `first`), a mesh on it, and a ready channel.
async fn ready_mesh(
    cp: &GoControlPlane,
    delta: bool,
    first: SocketAddr,
) -> (Mesh, MeshService<Empty<Bytes>>) {
    cp.set(
        NODE,
        "1",
        &resources("web", &[(build::eds_cluster("web"), &[first])]),
    )
    .await;
    let mesh = mesh(cp, delta).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    (mesh, web)
}

async fn endpoint(
    svc: &MeshService<Empty<Bytes>>,
) -> Result<(String, SocketAddr), mesh_tower::MeshError> {
    get(svc, "/")
        .await
        .map(|(_, s, _)| (s.cluster.to_string(), s.endpoint))
}

async fn until(svc: &MeshService<Empty<Bytes>>, want: (&str, SocketAddr)) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok((c, e)) = endpoint(svc).await
                && c == want.0
                && e == want.1
            {
                return;
            }
            // Failed requests complete without waiting; let the timeout and the client run.
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("traffic never reached {want:?}"));
}

async fn lifecycle(delta: bool) {
    let (b1, b2, b3) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let cp = GoControlPlane::start();
    let (mesh, web) = ready_mesh(&cp, delta, b1.addr()).await;
    assert_eq!(
        endpoint(&web).await.unwrap(),
        ("web".into(), b1.addr()),
        "initial config"
    );
    let first = cp
        .wait_for(|e| e.type_url == ResourceType::Listener.type_url())
        .await;
    assert_eq!((first.node.as_str(), first.delta), (NODE, delta));

    // Endpoint added: both serve.
    cp.set(
        NODE,
        "2",
        &resources(
            "web",
            &[(build::eds_cluster("web"), &[b1.addr(), b2.addr()])],
        ),
    )
    .await;
    until(&web, ("web", b2.addr())).await;
    // Endpoint removed: only b2.
    cp.set(
        NODE,
        "3",
        &resources("web", &[(build::eds_cluster("web"), &[b2.addr()])]),
    )
    .await;
    until_config(&mesh, |s| endpoints_of(s, "web") == [b2.addr()]).await;
    for _ in 0..6 {
        assert_eq!(
            endpoint(&web).await.unwrap().1,
            b2.addr(),
            "removed endpoint gets no traffic"
        );
    }

    // The route changes cluster.
    let both = [
        (build::eds_cluster("web"), &[b2.addr()][..]),
        (build::eds_cluster("web-v2"), &[b3.addr()][..]),
    ];
    cp.set(NODE, "4", &resources("web-v2", &both)).await;
    until(&web, ("web-v2", b3.addr())).await;

    // The cluster is removed while the route still points at it: a clear error.
    cp.set(
        NODE,
        "5",
        &resources("web-v2", &[(build::eds_cluster("web"), &[b2.addr()])]),
    )
    .await;
    // (The endpoint set may go first; either way requests fail clearly. Wait for the cluster.)
    until_config(&mesh, |s| s.cluster("web-v2").is_none()).await;
    let err = endpoint(&web).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownCluster, "{err}");
    assert!(err.to_string().contains("cluster \"web-v2\""), "{err}");
    // SotW: absent from a CDS response; Delta: in removed_resources.
    assert!(err.to_string().contains("cluster does not exist"), "{err}");
    assert!(
        cp.events().await.iter().all(|e| e.nack.is_none()),
        "nothing NACKed so far"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_lifecycle() {
    lifecycle(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_lifecycle() {
    lifecycle(true).await;
}

async fn nack(delta: bool) {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let cp = GoControlPlane::start();
    let (mesh, web) = ready_mesh(&cp, delta, b1.addr()).await;

    let mut bad = build::eds_cluster("web");
    bad.lb_policy = LbPolicy::ClusterProvided as i32;
    cp.set(NODE, "2", &resources("web", &[(bad, &[b2.addr()])]))
        .await;
    let nack = cp.wait_for(|e| e.nack.is_some()).await;
    assert_eq!(nack.type_url, ResourceType::Cluster.type_url());
    assert_eq!(
        nack.nack.as_deref(),
        Some("CDS \"web\": lb_policy: ClusterProvided is not supported yet")
    );
    if !delta {
        assert_eq!(
            nack.version, "1",
            "the NACK carries the last accepted version"
        );
    }
    // The endpoint update in the same snapshot applies; the cluster keeps its last good config.
    until(&web, ("web", b2.addr())).await;
    assert_eq!(
        mesh.config_dump().clusters[0].lb_policy,
        mesh_core::LbPolicy::RoundRobin
    );

    // CSDS (gRFC A40), mounted on a tonic server and read by grpc-go's generated client: the
    // listener accepted at version 2, the cluster NACKED with our message (its version-1 copy
    // still in force), a listener asked for and not (yet) sent REQUESTED.
    let _missing = mesh.channel::<Empty<Bytes>>("xds:///missing");
    cp.wait_for(|e| {
        e.type_url == ResourceType::Listener.type_url()
            && e.names
                .as_ref()
                .is_some_and(|n| n.iter().any(|n| n == "missing"))
    })
    .await;
    let status = csds(&mesh).await;
    let config = &status["config"][0];
    assert_eq!(config["node"]["id"], NODE);
    let find = |ty: ResourceType, name: &str| {
        config["genericXdsConfigs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["typeUrl"] == ty.type_url() && c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name:?} in {config}"))
    };
    let web = find(ResourceType::Listener, "web");
    assert_eq!(web["clientStatus"], "ACKED", "{web}");
    if !delta {
        assert_eq!(web["versionInfo"], "2", "{web}");
    }
    assert!(web["lastUpdated"].is_string(), "{web}");
    // The accepted copy itself, as the control plane sent it.
    assert_eq!(
        web["xdsConfig"]["@type"],
        ResourceType::Listener.type_url(),
        "{web}"
    );
    assert_eq!(web["xdsConfig"]["name"], "web", "{web}");
    let cluster = find(ResourceType::Cluster, "web");
    assert_eq!(cluster["clientStatus"], "NACKED", "{cluster}");
    // The copy in force is the last accepted one, not the rejected one.
    assert_eq!(cluster["xdsConfig"]["name"], "web", "{cluster}");
    assert!(
        cluster["xdsConfig"]["lbPolicy"].is_null(),
        "the version-1 copy (round robin, the default): {cluster}"
    );
    assert_eq!(
        cluster["errorState"]["details"],
        "lb_policy: ClusterProvided is not supported yet"
    );
    assert_eq!(
        find(ResourceType::Listener, "missing")["clientStatus"],
        "REQUESTED"
    );
}

/// Serves `mesh`'s CSDS on a loopback tonic server and asks it with `grpcpeer csds` (grpc-go
/// and go-control-plane's generated CSDS client); the answer as protobuf JSON.
async fn csds(mesh: &Mesh) -> serde_json::Value {
    let service = mesh
        .xds_client()
        .expect("an xDS mesh")
        .csds()
        .into_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let out = tokio::process::Command::new(support::gocp::grpc_go_peer_binary())
        .args(["csds", "-server", &addr.to_string()])
        .output()
        .await
        .expect("grpcpeer csds");
    server.abort();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("CSDS "))
        .unwrap_or_else(|| panic!("no CSDS line in {text}"));
    serde_json::from_str(json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_invalid_resource_is_nacked_with_its_field_path() {
    nack(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_invalid_resource_is_nacked_with_its_field_path() {
    nack(true).await;
}

async fn restart(delta: bool) {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let cp = GoControlPlane::start();
    let (_mesh, web) = ready_mesh(&cp, delta, b1.addr()).await;

    let traffic = Traffic::start(web.clone());
    let port = cp.kill();
    traffic.wait_more(100).await;

    // A new control plane on the same port, with new endpoints: resubscription applies them.
    // The version must differ from the one the client last ACKed: a SotW client resends it on
    // the new stream (as Envoy and gRPC do), and go-control-plane answers an open watch only
    // when the snapshot version differs from the request's.
    // Waiting for the resubscription first makes the order deterministic: the watch is open
    // before the snapshot exists.
    let cp = GoControlPlane::start_on(port);
    cp.wait_for(|e| e.type_url == ResourceType::Listener.type_url())
        .await;
    cp.set(
        NODE,
        "2",
        &resources("web", &[(build::eds_cluster("web"), &[b2.addr()])]),
    )
    .await;
    until(&web, ("web", b2.addr())).await;
    assert_eq!(
        traffic.stop().await,
        0,
        "no failed request across the restart"
    );
    let events = cp.events().await;
    // Every type in use (no TLS cluster here, so no SDS secret).
    for ty in ResourceType::ALL
        .into_iter()
        .filter(|t| *t != ResourceType::Secret)
    {
        assert!(
            events.iter().any(|e| e.type_url == ty.type_url()),
            "{ty:?} resubscribed: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_control_plane_restart_under_traffic() {
    restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_control_plane_restart_under_traffic() {
    restart(true).await;
}

/// go-control-plane's ADS consistency mode, with snapshots holding exactly what is referenced
/// (how Envoy-oriented control planes run it): initial config and an endpoint change.
async fn consistent_mode(delta: bool) {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let cp = GoControlPlane::start_consistent();
    let (mesh, web) = ready_mesh(&cp, delta, b1.addr()).await;
    assert_eq!(endpoint(&web).await.unwrap(), ("web".into(), b1.addr()));
    cp.set(
        NODE,
        "2",
        &resources("web", &[(build::eds_cluster("web"), &[b2.addr()])]),
    )
    .await;
    until_config(&mesh, |s| endpoints_of(s, "web") == [b2.addr()]).await;
    assert_eq!(endpoint(&web).await.unwrap(), ("web".into(), b2.addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_ads_consistency_mode() {
    consistent_mode(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_ads_consistency_mode() {
    consistent_mode(true).await;
}

/// LRS: a cluster with `lrs_server: {self: {}}` over two localities, one of whose endpoints
/// fails every request: go-control-plane's LRS stream (our fixture asks for all clusters every
/// 200 ms) receives, summed over its reports, exactly what was sent, and the named ORCA
/// metric the healthy endpoint reports on its answers (gRFC A64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_reach_the_control_plane_per_locality() {
    use envoy_types::pb::envoy::config::core::v3 as core;
    // The healthy endpoint attaches an ORCA report with a named metric to each answer.
    let ok = Backend::start_with(mesh_examples::backend::Mode {
        report: Some(mesh_examples::backend::LoadReport {
            cpu_utilization: 0.5,
            rps_fractional: 10.0,
            in_trailers: false,
            named: Some(("queue", 2.5)),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let failing = Backend::start_with(mesh_examples::backend::Mode {
        fail_percent: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut web = build::eds_cluster("web");
    web.lrs_server = Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Self_(
            Default::default(),
        )),
        ..Default::default()
    });
    let mut cla = build::assignment("web", &[]);
    cla.endpoints = vec![
        build::locality("a", 0, 1, &[ok.addr()], &[true]),
        build::locality("b", 0, 1, &[failing.addr()], &[true]),
    ];
    let cp = GoControlPlane::start();
    let mut resources = resources("web", &[]);
    resources.extend([build::any(&web), build::any(&cla)]);
    cp.set(NODE, "1", &resources).await;
    let mesh = mesh(&cp, false).await;
    let svc = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    // Round robin over the two: 20 each.
    for _ in 0..40 {
        let _ = get(&svc, "/").await;
    }
    let totals = |entries: &[support::gocp::LrsEntry], zone: &str| {
        entries
            .iter()
            .filter(|e| e.node == NODE && e.cluster == "web" && e.zone == zone)
            .fold((0, 0, 0), |(i, s, f), e| {
                (i + e.issued, s + e.successful, f + e.errors)
            })
    };
    // gRFC A64: zone a's reports carry the named metric of its 20 answers (2.5 each, summed
    // over the reports); zone b's endpoint sent none.
    let named = |entries: &[support::gocp::LrsEntry], zone: &str| {
        entries
            .iter()
            .filter(|e| e.node == NODE && e.zone == zone)
            .flat_map(|e| &e.metrics)
            .fold((0, 0.0), |(n, t), m| {
                assert_eq!(m.name, "queue");
                (n + m.requests, t + m.total)
            })
    };
    let want = [("a", (20, 20, 0)), ("b", (20, 0, 20))];
    let entries = tokio::time::timeout(PATIENCE, async {
        loop {
            let entries = cp.lrs().await;
            if want.iter().all(|(zone, t)| totals(&entries, zone) == *t)
                && named(&entries, "a") == (20, 50.0)
            {
                return entries;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("reports never added up"));
    assert!(
        entries.iter().all(|e| e.dropped == 0),
        "nothing was dropped"
    );
    assert_eq!(named(&entries, "b"), (0, 0.0));
    assert_eq!(
        entries.last().map(|e| e.in_progress),
        Some(0),
        "nothing in flight at the end"
    );
}
