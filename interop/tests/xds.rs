//! The xDS client end to end against an in-process ADS server (exact scripts), in SotW and
//! Delta: cascade to traffic, updates, NACKs with field paths, restarts, silence, NACK storms.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{ErrorKind, Mesh};
use mesh_xds_client::translate::ResourceType;
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::time::Duration;
use support::ads::FakeAds;
use support::fake::*;
use support::*;

async fn cascade_and_updates(delta: bool) {
    let (b1, b2, b3) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    ads.set(snapshot(&[b1.addr(), b2.addr()]));
    let mesh = xds_mesh(&ads, delta, Duration::from_secs(15)).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(served_by(&web).await.unwrap());
    }
    assert_eq!(
        seen,
        [b1.addr(), b2.addr()].into_iter().collect(),
        "round robin over the EDS endpoints"
    );

    // The cascade asked for exactly what is in use, with our node id first.
    let reqs = ads.requests();
    assert_eq!(reqs[0].node_id.as_deref(), Some("node-1"));
    for (ty, name) in [
        (ResourceType::Listener, "web"),
        (ResourceType::RouteConfiguration, "web-routes"),
        (ResourceType::Cluster, "web"),
        (ResourceType::ClusterLoadAssignment, "web"),
    ] {
        assert!(
            reqs.iter()
                .any(|r| r.type_url == ty.type_url() && r.names == [name]),
            "{ty:?} {name}: {reqs:?}"
        );
    }
    assert!(reqs.iter().all(|r| r.nack.is_none()), "everything ACKed");

    // An endpoint change: traffic follows.
    ads.set(snapshot(&[b3.addr()]));
    until_served_by(&web, b3.addr()).await;
    for _ in 0..5 {
        assert_eq!(served_by(&web).await.unwrap(), b3.addr());
    }

    // The route moves to another cluster.
    let mut moved = snapshot(&[b3.addr()]);
    moved
        .get_mut(ResourceType::RouteConfiguration.type_url())
        .unwrap()
        .insert(
            "web-routes".into(),
            build::any(&build::route_config(
                "web-routes",
                &["*"],
                vec![build::route("/", "web-v2")],
            )),
        );
    moved
        .get_mut(ResourceType::Cluster.type_url())
        .unwrap()
        .insert("web-v2".into(), build::any(&build::eds_cluster("web-v2")));
    moved
        .get_mut(ResourceType::ClusterLoadAssignment.type_url())
        .unwrap()
        .insert(
            "web-v2".into(),
            build::any(&build::assignment("web-v2", &[b1.addr()])),
        );
    ads.set(moved);
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok((_, s, _)) = get(&web, "/").await
                && &*s.cluster == "web-v2"
            {
                break;
            }
        }
    })
    .await
    .expect("route switched cluster");
    // A request routed by the old route may still be on its way to the old cluster: it stays
    // for the unsubscribe delay (2 s) before it is dropped.
    assert!(
        mesh.config_dump().clusters.iter().any(|c| c.name == "web"),
        "the old cluster lingers"
    );
    assert_eq!(served_by(&web).await.unwrap(), b1.addr());
    // Then the unused cluster is unsubscribed and dropped.
    tokio::time::timeout(PATIENCE, async {
        while mesh.config_dump().clusters.iter().any(|c| c.name == "web") {
            mesh.store().changed().changed().await.unwrap();
        }
    })
    .await
    .expect("unreferenced cluster dropped");

    let dump = mesh.xds_config_dump();
    assert_eq!(dump["xds"]["CDS"]["web-v2"]["state"], "acked", "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_cascade_and_updates() {
    cascade_and_updates(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_cascade_and_updates() {
    cascade_and_updates(true).await;
}

async fn invalid_resource_is_nacked(delta: bool) {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    let (mesh, web) = ready_mesh(&ads, delta, b1.addr()).await;

    let mut bad = build::eds_cluster("web");
    bad.lb_policy = LbPolicy::ClusterProvided as i32;
    ads.set(snapshot_with(&[b2.addr()], bad));
    let nack = ads.wait_for(|r| r.nack.is_some()).await;
    assert_eq!(nack.type_url, ResourceType::Cluster.type_url());
    assert_eq!(
        nack.nack.as_deref(),
        Some("CDS \"web\": lb_policy: ClusterProvided is not supported yet")
    );
    // The valid EDS update of the same push applies; the cluster keeps its last good config.
    until_served_by(&web, b2.addr()).await;
    let dump = mesh.xds_config_dump();
    assert_eq!(dump["xds"]["CDS"]["web"]["state"], "acked");
    assert!(
        dump["xds"]["CDS"]["web"]["last_error"]
            .as_str()
            .unwrap()
            .contains("ClusterProvided"),
        "{dump}"
    );
    assert_eq!(dump["source"]["rejected"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_invalid_resource_is_nacked_and_last_good_serves() {
    invalid_resource_is_nacked(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_invalid_resource_is_nacked_and_last_good_serves() {
    invalid_resource_is_nacked(true).await;
}

async fn control_plane_restart(delta: bool) {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    let (_mesh, web) = ready_mesh(&ads, delta, b1.addr()).await;

    // Traffic runs throughout; any failure is recorded.
    let traffic = Traffic::start(web.clone());
    let addr = ads.addr;
    ads.kill();
    traffic.wait_more(50).await;

    let again = FakeAds::start_on(addr).await;
    again.set(snapshot(&[b2.addr()]));
    again
        .wait_for(|r| r.type_url == ResourceType::Listener.type_url())
        .await;
    until_served_by(&web, b2.addr()).await;
    assert_eq!(
        traffic.stop().await,
        0,
        "no request failed across the restart"
    );
    assert!(again.streams() >= 1);
    // Resubscribed everything in use (no TLS cluster here, so no SDS secret).
    for ty in ResourceType::ALL
        .into_iter()
        .filter(|t| *t != ResourceType::Secret)
    {
        assert!(
            again.requests().iter().any(|r| r.type_url == ty.type_url()),
            "{ty:?} resubscribed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_control_plane_restart_under_traffic() {
    control_plane_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_control_plane_restart_under_traffic() {
    control_plane_restart(true).await;
}

#[tokio::test]
async fn a_silent_control_plane_ends_in_a_clear_error() {
    let ads = FakeAds::start().await;
    ads.set_silent(true);
    let mesh = xds_mesh(&ads, false, Duration::from_millis(300)).await;
    let err = mesh.wait_ready("xds:///web", PATIENCE).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoConfig);
    assert!(
        err.to_string().contains(
            "listener \"web\" does not exist: no response from the control plane within 300ms"
        ),
        "{err}"
    );
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    let err = served_by(&web).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoConfig);
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_nack_storm_is_met_with_backoff() {
    let ads = FakeAds::start().await;
    let mut r = snapshot(&[]);
    let bad = envoy_types::pb::envoy::config::listener::v3::Listener {
        name: "web".into(),
        ..Default::default()
    };
    r.get_mut(ResourceType::Listener.type_url())
        .unwrap()
        .insert("web".into(), build::any(&bad));
    ads.set(r);
    ads.set_storm(true);
    let mesh = xds_mesh(&ads, false, Duration::from_secs(15)).await;
    let _web = mesh.channel::<Empty<Bytes>>("xds:///web");
    let start = std::time::Instant::now();
    ads.wait_for(|r| r.nack.is_some()).await;
    tokio::time::timeout(PATIENCE, async {
        ads.wait_until(|all| all.iter().filter(|r| r.nack.is_some()).count() >= 5)
            .await;
    })
    .await
    .expect("NACKs keep coming, slowly");
    // NACKs 2..5 wait at least 50 + 100 + 200 + 400 ms: a client without backoff would have
    // sent thousands by now.
    assert!(
        start.elapsed() >= Duration::from_millis(750),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn bootstrap_file_selects_the_server_and_delta() {
    let b1 = Backend::start().await.unwrap();
    let ads = FakeAds::start().await;
    ads.set(snapshot(&[b1.addr()]));
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": ads.addr.to_string(), "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3", "delta_ads"]}],
        "node": {"id": "from-bootstrap", "cluster": "c", "locality": {"zone": "z"}}
    });
    let file = config_file(&json.to_string());
    let mesh = Mesh::from_bootstrap(file.path()).await.unwrap();
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    assert_eq!(
        served_by(&mesh.channel("xds:///web")).await.unwrap(),
        b1.addr()
    );
    assert_eq!(ads.requests()[0].node_id.as_deref(), Some("from-bootstrap"));
    assert!(mesh.source_status().borrow().source.contains("Delta"));
}

#[tokio::test]
async fn a_malformed_payload_is_nacked_whole_and_the_last_good_config_serves() {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    let (mesh, web) = ready_mesh(&ads, false, b1.addr()).await;

    // Endpoints move to b2, but the cluster's payload is garbage: the CDS response is
    // rejected whole (its resources cannot even be named), EDS applies.
    let mut bad = snapshot(&[b2.addr()]);
    bad.get_mut(ResourceType::Cluster.type_url())
        .unwrap()
        .insert(
            "web".into(),
            envoy_types::pb::google::protobuf::Any {
                type_url: ResourceType::Cluster.type_url().into(),
                value: vec![0x0a, 0xff, 0xff, 0xff, 0xff],
            },
        );
    ads.set(bad);
    let nack = ads.wait_for(|r| r.nack.is_some()).await;
    assert_eq!(nack.type_url, ResourceType::Cluster.type_url());
    assert!(
        nack.nack
            .as_deref()
            .unwrap()
            .starts_with("resources[0]: cannot decode CDS"),
        "{nack:?}"
    );
    until_served_by(&web, b2.addr()).await;
    assert_eq!(
        mesh.config_dump().clusters.len(),
        1,
        "the last good cluster stays"
    );
}

#[tokio::test]
async fn tls_channel_credentials_from_the_bootstrap() {
    let b1 = Backend::start().await.unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ads = FakeAds::start_tls(cert.cert.pem(), cert.signing_key.serialize_pem()).await;
    ads.set(snapshot(&[b1.addr()]));
    let ca = config_file(&cert.cert.pem());
    let bootstrap = |ca_path: &std::path::Path, node: &str| {
        serde_json::json!({
            "xds_servers": [{"server_uri": format!("localhost:{}", ads.addr.port()),
                             "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": ca_path}}]}],
            "node": {"id": node}
        })
        .to_string()
    };
    let file = config_file(&bootstrap(ca.path(), "tls-node"));
    let mesh = Mesh::from_bootstrap(file.path()).await.unwrap();
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    assert_eq!(
        served_by(&mesh.channel("xds:///web")).await.unwrap(),
        b1.addr()
    );
    assert_eq!(ads.requests()[0].node_id.as_deref(), Some("tls-node"));

    // A CA that did not sign the server's certificate: no config, ever (the handshake fails).
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong_ca = config_file(&other.cert.pem());
    let file = config_file(&bootstrap(wrong_ca.path(), "untrusting"));
    let builder = XdsClientBuilder::from_bootstrap(
        mesh_xds_client::bootstrap::Bootstrap::from_file(file.path()).unwrap(),
    )
    .resource_timeout(Duration::from_millis(300));
    let mesh = Mesh::from_xds(builder).await.unwrap();
    let err = mesh
        .wait_ready("xds:///web", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        ads.requests()
            .iter()
            .all(|r| r.node_id.as_deref() != Some("untrusting")),
        "a client that does not trust the server never gets a stream"
    );
}

/// A mesh from an xDS bootstrap records Istio's metrics as the workload its node metadata
/// describes (as Istio's agent writes it), unless told not to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xds_mesh_records_as_its_node_unless_told_not_to() {
    let ads = FakeAds::start().await;
    let bootstrap = |ads: &FakeAds| {
        mesh_xds_client::bootstrap::Bootstrap::from_json(&format!(
            r#"{{"xds_servers": [{{"server_uri": "{}", "channel_creds": [{{"type": "insecure"}}]}}],
                "node": {{"id": "n", "metadata": {{"WORKLOAD_NAME": "reviews-v2", "NAMESPACE": "bookinfo",
                  "SERVICE_ACCOUNT": "reviews", "LABELS": {{"app": "reviews", "version": "v2"}}}}}}}}"#,
            ads.addr
        ))
        .unwrap()
    };
    let mesh = Mesh::from_xds(XdsClientBuilder::from_bootstrap(bootstrap(&ads)))
        .await
        .unwrap();
    let w = mesh.telemetry().expect("records by default").workload();
    assert_eq!(
        (
            w.name.as_str(),
            w.namespace.as_str(),
            w.canonical_revision()
        ),
        ("reviews-v2", "bookinfo", "v2")
    );
    assert_eq!(
        w.principal.as_deref(),
        Some("spiffe://cluster.local/ns/bookinfo/sa/reviews")
    );
    let off = Mesh::from_xds(XdsClientBuilder::from_bootstrap(bootstrap(&ads)).telemetry(false))
        .await
        .unwrap();
    assert!(off.telemetry().is_none());
}
