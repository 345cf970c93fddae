//! Routes by RDS (gRFC A36): a server naming a route config serves what its routes select,
//! follows changes to that route config without a drain, and serves nothing while it is
//! missing.

use bytes::Bytes;
use http_body_util::Empty;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

/// Server `s` (RBAC allowing `/open` only) whose routes are route config `inbound`'s
/// `routes` (a YAML list).
fn config(routes: &str) -> mesh_core::MeshConfig {
    let rc = format!(
        "route_configs:\n  - name: inbound\n    inbound: {{ virtual_hosts: [{{ name: in, domains: [\"*\"], routes: {routes} }}] }}\n"
    );
    mesh_core::MeshConfig::from_yaml(&format!(
        r#"{rc}
servers:
  - name: s
    rds: inbound
    http_filters:
      - name: authz
        rbac: {{ rules: {{ policies: {{ open: {{ permissions: [{{ url_path: {{ path: {{ exact: /open }} }} }}], principals: [{{ any: true }}] }} }} }} }}
"#
    ))
    .unwrap()
}

async fn status(tx: &mut super::drain_tests::Sender, path: &str) -> u16 {
    let req = http::Request::get(format!("http://s{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    tx.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_server_takes_its_routes_from_the_route_config_it_names() {
    let every = "[{ match: { prefix: / }, typed_per_filter_config: { authz: { rbac: {} } } }]";
    let mesh = crate::Mesh::from_config(config(every)).await.unwrap();
    let server = mesh.server("s").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ok = tower::service_fn(|_req: http::Request<crate::server::Incoming>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            Bytes::from_static(b"ok"),
        )))
    });
    tokio::spawn(server.clone().serve(listener, ok));
    let (mut tx, conn) =
        super::drain_tests::h2_over(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    // The route turns RBAC off: everything is served.
    assert_eq!(status(&mut tx, "/x").await, 200);

    // The route config changes: only /open and /x/… are routed now, RBAC on. The open
    // connection meets the new routes (no drain).
    let some = "[{ match: { prefix: /x/ } }, { match: { path: /open } }]";
    mesh.store().replace(config(some)).unwrap();
    let changed = async {
        while status(&mut tx, "/x").await == 200 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, changed)
        .await
        .expect("the new routes reach the open connection");
    assert_eq!(status(&mut tx, "/x").await, 404, "no route: not served");
    assert_eq!(status(&mut tx, "/x/y").await, 403, "routed, denied by RBAC");
    assert_eq!(status(&mut tx, "/open").await, 200);

    // The route config is gone (as when the control plane deletes it): nothing is served,
    // the connection stays.
    mesh.store().apply(|edit| {
        edit.remove(mesh_core::ResourceKind::RouteConfig, "inbound");
    });
    let gone = async {
        while status(&mut tx, "/open").await == 200 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, gone)
        .await
        .expect("without its route config the server serves nothing");
    assert_eq!(status(&mut tx, "/open").await, 404);
    assert!(!conn.is_finished(), "route changes do not drain");
}

#[test]
fn a_static_server_must_name_a_route_config_with_server_routes() {
    for (yaml, says) in [
        (
            "servers: [{ name: s, rds: nowhere }]",
            "servers[0]: rds \"nowhere\": no route config of that name with inbound routes",
        ),
        (
            "route_configs: [{ name: r, virtual_hosts: [{ name: v, domains: [\"*\"], routes: [{ match: { prefix: / }, route: { cluster: c } }] }] }]\nclusters: [{ name: c, type: STATIC, load_assignment: { cluster_name: c, endpoints: [] } }]\nservers: [{ name: s, rds: r }]",
            "rds \"r\": no route config of that name with inbound routes",
        ),
        (
            "route_configs: [{ name: r, virtual_hosts: [{ name: v, domains: [\"*\"] }], inbound: { virtual_hosts: [] } }]\nservers: [{ name: s, rds: r }]",
            "route_configs[0].virtual_hosts: must be empty in a server's route config",
        ),
        (
            "route_configs: [{ name: r, inbound: { virtual_hosts: [] } }]\nservers: [{ name: s, rds: r, route_config: { virtual_hosts: [] } }]",
            "servers[0].rds: route_config and rds are exclusive",
        ),
    ] {
        let e = mesh_core::MeshConfig::from_yaml(yaml)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{says} in {e}");
    }
}
