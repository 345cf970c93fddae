//! The admin endpoint's answers over a static mesh.

use super::*;
use http_body_util::BodyExt;

const YAML: &str = r#"
clusters:
  - name: web
    type: STATIC
    load_assignment:
      cluster_name: web
      endpoints:
        - lb_endpoints:
            - { address: "127.0.0.1:1", health_status: HEALTHY }
            - { address: "127.0.0.1:2", load_balancing_weight: 3 }
  - name: idle
"#;

async fn get(admin: &mut Admin, path: &str) -> (u16, String) {
    let res = admin
        .call(Request::get(path).body(()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn ready_config_dump_clusters_and_metrics() {
    let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(YAML).unwrap())
        .await
        .unwrap();
    let mut admin = Admin::new(mesh.clone());
    assert_eq!(get(&mut admin, "/ready").await, (200, "LIVE\n".into()));
    let (status, dump) = get(&mut admin, "/config_dump").await;
    assert_eq!(status, 200);
    assert!(dump.contains("name: web"), "{dump}");

    // No traffic yet: the clusters are listed as such.
    let (_, clusters) = get(&mut admin, "/clusters").await;
    assert_eq!(clusters, "idle::not_used_yet\nweb::not_used_yet\n");
    // Once used, its endpoints with their state.
    mesh.registry().get(&"web".into());
    let (_, clusters) = get(&mut admin, "/clusters").await;
    for line in [
        "web::127.0.0.1:1::health_flags::healthy",
        "web::127.0.0.1:2::health_flags::unknown",
        "web::127.0.0.1:2::weight::3",
        "web::127.0.0.1:1::rq_active::0",
        "web::127.0.0.1:1::outlier_ejections::0",
        "idle::not_used_yet",
    ] {
        assert!(clusters.lines().any(|l| l == line), "{line} in\n{clusters}");
    }

    assert_eq!(get(&mut admin, "/metrics").await.0, 404, "no exporter");
    let mut admin = admin.with_metrics(|| "istio_requests_total 1\n".into());
    assert_eq!(
        get(&mut admin, "/metrics").await,
        (200, "istio_requests_total 1\n".into())
    );
    let (status, index) = get(&mut admin, "/nope").await;
    assert_eq!(status, 404);
    assert!(index.contains("/clusters"), "{index}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_on_demand_source_is_not_ready_before_its_first_update() {
    let store = mesh_core::Store::new();
    store.set_source_status(|s| s.on_demand = true);
    let mesh = Mesh::builder().store(store.clone()).build().await.unwrap();
    let mut admin = Admin::new(mesh);
    assert_eq!(get(&mut admin, "/ready").await.0, 503);
    store.set_source_status(|s| s.applied += 1);
    assert_eq!(get(&mut admin, "/ready").await.0, 200);
}
