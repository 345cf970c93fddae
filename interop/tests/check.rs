//! The `check` example as users run it: a YAML config, a bootstrap offline, and what a real
//! control plane (go-control-plane) serves; each problem printed with its place and a hint,
//! and the exit status CI can act on.

mod support;

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use mesh_xds_client::build;
use std::process::Command;

/// Runs `check` with `args`: exit code and stdout.
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(support::example_binary("check"))
        .args(args)
        .output()
        .expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn a_config_is_checked_field_by_field() {
    let good = support::config_file(&support::web_config(
        &["127.0.0.1:8080".parse().unwrap()],
        "HTTP2",
    ));
    let (code, out) = check(&["--config", good.path().to_str().unwrap()]);
    assert_eq!((code, out.trim()), (0, "ok: nothing to fix"));

    let bad = support::config_file(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - { name: web, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: nowhere } }] }
servers:
  - name: s
    address: localhost:80
    filter_chains:
      - filter_chain_match: { source_type: EXTERNAL }
      - filter_chain_match: { source_type: EXTERNAL }
"#,
    );
    let (code, out) = check(&["--config", bad.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "listeners[0].route_config.virtual_hosts[0].routes[0].route.cluster",
        "servers[0].address: \"localhost:80\" is not ip:port",
        "  hint: addresses are written ip:port",
        "servers[0].filter_chains[1].filter_chain_match: matches the same connections as servers[0].filter_chains[0]",
        "  hint: two filter chains match the same connections",
        "3 problem(s)",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
}

#[test]
fn a_bootstrap_is_checked_offline_with_the_files_it_names() {
    let bootstrap = support::config_file(
        r#"{
  "xds_servers": [{"server_uri": "127.0.0.1:1", "channel_creds": [{"type": "insecure"}]}],
  "node": {"id": "n"},
  "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
    "certificate_file": "/nonexistent/cert.pem", "private_key_file": "/nonexistent/key.pem",
    "ca_certificate_file": "/nonexistent/ca.pem"}}}
}"#,
    );
    let (code, out) = check(&["--bootstrap", bootstrap.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("certificate_providers.default.config.certificate_file: \"/nonexistent/cert.pem\": no such file"),
        "{out}"
    );
    assert!(
        out.contains("  hint: the path is read by the process"),
        "{out}"
    );
    let (code, out) = check(&["--bootstrap", "/nonexistent/bootstrap.json"]);
    assert_eq!(code, 1, "{out}");
    let (code, _) = check(&["--config", "a.yaml", "--bootstrap", "b.json"]);
    assert_eq!(code, 2, "bad usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_control_plane_serves_is_listed_with_its_nacks() {
    let cp = support::gocp::GoControlPlane::start();
    let backend = "127.0.0.1:9".parse().unwrap();
    let resources = |cluster| support::web_resources(cluster, &[backend]);
    let bootstrap = support::config_file(
        &serde_json::json!({
            "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
            "node": {"id": "checked"},
        })
        .to_string(),
    );
    let path = bootstrap.path().to_str().unwrap().to_owned();
    let run = move || {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            check(&[
                "--bootstrap",
                &path,
                "--target",
                "xds:///web",
                "--wait",
                "3",
            ])
        })
    };

    cp.set("checked", "1", &resources(build::eds_cluster("web")))
        .await;
    let (code, out) = run().await.unwrap();
    assert_eq!(code, 0, "{out}");
    for want in [
        "LDS \"web\": acked",
        "RDS \"web-routes\": acked",
        "CDS \"web\": acked",
        "EDS \"web\": acked",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }

    let mut bad = build::eds_cluster("web");
    bad.lb_policy = LbPolicy::ClusterProvided as i32;
    cp.set("checked", "2", &resources(bad)).await;
    let (code, out) = run().await.unwrap();
    assert_eq!(code, 1, "{out}");
    for want in [
        "CDS \"web\": NACKed: lb_policy: ClusterProvided is not supported yet",
        "  hint: the mesh does not implement this field",
        "target xds:///web: ",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
}

#[test]
fn resource_files_are_checked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let path = dir.path().to_str().unwrap();
    // A listener, its route config and an EDS cluster with its endpoints: clean.
    write(
        "listener.yaml",
        r#"
resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: web
    api_listener:
      api_listener:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: web
        rds: { route_config_name: routes, config_source: { path_config_source: { path: routes.yaml } } }
        http_filters: [{ name: router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
"#,
    );
    let routes = r#"{"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "routes",
  "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "api"}}]}]}"#;
    write("routes.json", routes);
    write(
        "cluster.yaml",
        r#"
resources:
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: api
    type: EDS
    eds_cluster_config: { eds_config: { ads: {} } }
  - "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
    cluster_name: api
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } } } }] }]
"#,
    );
    let (code, out) = check(&["--resources", path]);
    assert_eq!((code, out.trim()), (0, "ok: nothing to fix"));

    // A misspelt field (JSON: with its line), and a route to a cluster no file defines.
    write(
        "routes.json",
        &routes
            .replace("\"domains\"", "\"domain\"")
            .replace("\"api\"", "\"apj\""),
    );
    let (code, out) = check(&["--resources", path]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "routes.json: unrecognized field name 'domain' at line 2",
        "  hint: a misspelt or unsupported field",
        // The file that does not parse leaves the listener's route config undefined.
        "LDS \"web\": names RDS \"routes\", which no file defines",
        "2 problem(s)",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    write("routes.json", &routes.replace("\"api\"", "\"apj\""));
    let (code, out) = check(&["--resources", path]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "RDS \"routes\": names CDS \"apj\", which no file defines",
        "  hint: add the resource to the files",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
}
