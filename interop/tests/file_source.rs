//! Resource files as the config source (Envoy's `path_config_source`), with Envoy 1.40 reading
//! the same files as the oracle.
//!
//! One directory holds listeners, a route config, clusters and an endpoint set in Envoy's
//! YAML (the route config and endpoints named through `path_config_source`, as Envoy's file
//! layouts do). Envoy reads it through its bootstrap's `lds_config`/`cds_config`; the mesh
//! through a `file://` xDS server URI. Files are replaced the way a ConfigMap volume updates
//! them (write aside, rename into place); after each change both must route the same request
//! to the same backend; a broken file is refused by both, the last good config kept, and the
//! mesh names the file and the field.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::envoy::{Envoy, free_port};
use support::fake::served_by;
use support::*;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// Writes `name` in `dir` as a ConfigMap update does: aside first, then renamed into place.
fn replace(dir: &Path, name: &str, text: &str) {
    let aside = dir.join(format!(".{name}.tmp"));
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, dir.join(name)).unwrap();
}

/// The config source naming `file` in `dir` (watched for renames, as Envoy needs).
fn source(dir: &Path, file: &str) -> String {
    format!(
        "{{ path_config_source: {{ path: {}, watched_directory: {{ path: {} }} }} }}",
        dir.join(file).display(),
        dir.display()
    )
}

fn hcm(dir: &Path, prefix: &str) -> String {
    format!(
        r#"{{ "@type": {HCM}, stat_prefix: {prefix},
           rds: {{ route_config_name: routes, config_source: {} }},
           http_filters: [{{ name: router, typed_config: {{ "@type": {ROUTER} }} }}] }}"#,
        source(dir, "routes.yaml")
    )
}

/// Envoy's socket listener (read by Envoy and, unsubscribed, ignored by the mesh).
fn envoy_listeners(dir: &Path, at: SocketAddr) -> String {
    format!(
        r#"resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}
    filter_chains: [{{ filters: [{{ name: hcm, typed_config: {} }}] }}]
"#,
        at.port(),
        hcm(dir, "ingress")
    )
}

/// The mesh's API listener `web` (a file Envoy does not read).
fn mesh_listeners(dir: &Path) -> String {
    format!(
        r#"{{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "web",
  "api_listener": {{"api_listener": {}}}}}"#,
        serde_json::to_string(&yaml_value(&hcm(dir, "web"))).unwrap()
    )
}

fn yaml_value(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap()
}

fn routes(cluster: &str) -> String {
    format!(
        r#"version_info: "{cluster}"
resources:
  - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: routes
    virtual_hosts:
      - {{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: {cluster} }} }}] }}
"#
    )
}

fn endpoint(addr: SocketAddr) -> String {
    format!(
        "{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}",
        addr.port()
    )
}

fn clusters(dir: &Path, two: SocketAddr) -> String {
    format!(
        r#"resources:
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: one
    type: EDS
    connect_timeout: 1s
    eds_cluster_config: {{ eds_config: {} }}
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: two
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{ cluster_name: two, endpoints: [{{ lb_endpoints: [{}] }}] }}
"#,
        source(dir, "endpoints.yaml"),
        endpoint(two)
    )
}

fn endpoints(one: SocketAddr) -> String {
    format!(
        r#"resources:
  - "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
    cluster_name: one
    endpoints: [{{ lb_endpoints: [{}] }}]
"#,
        endpoint(one)
    )
}

async fn via_envoy(envoy: SocketAddr) -> Option<String> {
    let res = envoy_get(envoy, "/", &[]).await?;
    Some(res.headers().get("x-backend")?.to_str().ok()?.to_owned())
}

/// Waits until both Envoy and the mesh send `/` to `backend`.
async fn both_route_to(envoy: SocketAddr, web: &MeshService<Empty<Bytes>>, backend: SocketAddr) {
    let want = backend.to_string();
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let (theirs, ours) = (via_envoy(envoy).await, served_by(web).await.unwrap());
        if theirs.as_deref() == Some(want.as_str()) && ours == backend {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {want}: Envoy {theirs:?}, mesh {ours}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_the_mesh_read_the_same_files_and_follow_their_changes() {
    let (a, b, c) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (listener, admin) = (free_port(), free_port());
    replace(&dir, "listeners.yaml", &envoy_listeners(&dir, listener));
    replace(&dir, "mesh.json", &mesh_listeners(&dir));
    replace(&dir, "routes.yaml", &routes("one"));
    replace(&dir, "clusters.yaml", &clusters(&dir, b.addr()));
    replace(&dir, "endpoints.yaml", &endpoints(a.addr()));
    let bootstrap = format!(
        r#"node: {{ id: envoy, cluster: files }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
dynamic_resources:
  lds_config: {}
  cds_config: {}
"#,
        admin.port(),
        source(&dir, "listeners.yaml"),
        source(&dir, "clusters.yaml")
    );
    let envoy = Envoy::start_static(&bootstrap, listener);
    let mesh = Mesh::from_xds(
        XdsClientBuilder::new(format!("file://{}", dir.display()), "mesh")
            .refresh_delay(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    assert!(
        envoy_routes(envoy.listener, "/").await,
        "Envoy read the files"
    );
    both_route_to(envoy.listener, &web, a.addr()).await;

    // A new endpoint set (EDS through its file), then a new route (RDS through its file).
    replace(&dir, "endpoints.yaml", &endpoints(c.addr()));
    both_route_to(envoy.listener, &web, c.addr()).await;
    replace(&dir, "routes.yaml", &routes("two"));
    both_route_to(envoy.listener, &web, b.addr()).await;

    // A misspelt field. The mesh refuses the file, names it and the field, and keeps the
    // last good config. Envoy (without --reject-unknown-dynamic-fields, its default) drops
    // the unknown field and applies a route config with no virtual hosts: it answers 404.
    let mut status = mesh.store().source_status();
    let error = rejected_after(&mut status, || {
        replace(
            &dir,
            "routes.yaml",
            &routes("one").replace("virtual_hosts", "virtual_hostz"),
        )
    })
    .await;
    assert!(
        error.contains("routes.yaml") && error.contains("virtual_hostz"),
        "{error}"
    );
    assert_eq!(served_by(&web).await.unwrap(), b.addr());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while envoy_get(envoy.listener, "/", &[])
        .await
        .is_none_or(|r| r.status() != http::StatusCode::NOT_FOUND)
    {
        assert!(tokio::time::Instant::now() < deadline, "Envoy kept routing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Back to good, then a value that fails validation (an empty cluster name): both refuse
    // it and keep routing to the same backend.
    replace(&dir, "routes.yaml", &routes("two"));
    both_route_to(envoy.listener, &web, b.addr()).await;
    let error = rejected_after(&mut status, || {
        replace(
            &dir,
            "routes.yaml",
            &routes("two").replace("cluster: two", "cluster: \"\""),
        )
    })
    .await;
    assert!(
        error.contains("routes") && error.contains("cluster"),
        "{error}"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !Envoy::stats(admin, "rds.routes.update_rejected")
        .await
        .contains("update_rejected: 1")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Envoy never rejected the file: {}",
            Envoy::stats(admin, "rds").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(via_envoy(envoy.listener).await, Some(b.addr().to_string()));
    assert_eq!(served_by(&web).await.unwrap(), b.addr());
}

/// Runs `change`, then waits for the mesh to reject an update; returns the error it gives.
async fn rejected_after(
    status: &mut tokio::sync::watch::Receiver<mesh_core::SourceStatus>,
    change: impl FnOnce(),
) -> String {
    let rejected = status.borrow_and_update().rejected;
    change();
    tokio::time::timeout(PATIENCE, async {
        loop {
            status.changed().await.unwrap();
            let s = status.borrow_and_update();
            if s.rejected > rejected {
                return s.last_error.clone().unwrap_or_default();
            }
        }
    })
    .await
    .expect("the broken file was reported")
}
