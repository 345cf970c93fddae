//! Reading resource files: the forms a file may take, and errors that name the file.

use super::*;

pub(crate) const LISTENER: &str = r#"
version_info: "1"
resources:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: web
    api_listener:
      api_listener:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: web
        rds: { route_config_name: web, config_source: { path_config_source: { path: routes.yaml } } }
        http_filters: [{ name: router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
    name: web
    type: STATIC
    load_assignment: { cluster_name: web, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } } } }] }] }
"#;

const ROUTES: &str = r#"{"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
  "name": "web", "virtual_hosts": [{"name": "web", "domains": ["*"],
  "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}]}"#;

fn file(name: &str, text: &str) -> (PathBuf, Vec<u8>) {
    (PathBuf::from(name), text.as_bytes().to_vec())
}

#[test]
fn responses_and_single_resources_in_yaml_and_json_group_by_type() {
    let by_type = parse(&[file("a.yaml", LISTENER), file("b.json", ROUTES)]).unwrap();
    let names = |ty: ResourceType| by_type[ty.index()].len();
    assert_eq!(names(ResourceType::Listener), 1);
    assert_eq!(names(ResourceType::RouteConfiguration), 1);
    assert_eq!(names(ResourceType::Cluster), 1);
    assert_eq!(names(ResourceType::ClusterLoadAssignment), 0);
    // They translate as a control plane's would; the listener's RDS names a file, which
    // is this same set only for resources read from files.
    let files = crate::translate::Context {
        files: true,
        ..Default::default()
    };
    let listener = &by_type[ResourceType::Listener.index()][0];
    let decoded = crate::translate::decode_in(ResourceType::Listener, listener, &files).unwrap();
    assert!(decoded.result.is_ok(), "{:?}", decoded.result);
    let from_ads = crate::translate::decode(ResourceType::Listener, listener).unwrap();
    let refused = from_ads.result.unwrap_err();
    assert!(refused.contains("rds.config_source"), "{refused}");
}

#[test]
fn a_bad_file_is_named_with_where_and_what() {
    let typo = LISTENER.replace("stat_prefix", "stats_prefix");
    let e = parse(&[file("ok.json", ROUTES), file("l.yaml", &typo)]).unwrap_err();
    assert!(
        e.starts_with("l.yaml: ") && e.contains("stats_prefix"),
        "{e}"
    );
    let e = parse(&[file(
        "r.json",
        &ROUTES.replace("virtual_hosts", "virtual_host"),
    )])
    .unwrap_err();
    assert!(e.starts_with("r.json: ") && e.contains("line 2"), "{e}");
    let e = parse(&[file(
        "x.yaml",
        "resources: [{\"@type\": type.googleapis.com/envoy.config.core.v3.Node, id: node1}]",
    )])
    .unwrap_err();
    assert!(e.contains("not an xDS resource type"), "{e}");
    let e = parse(&[file("y.yaml", "resources: [")]).unwrap_err();
    assert!(e.starts_with("y.yaml: "), "{e}");
}

#[test]
fn check_finds_parse_errors_refusals_and_dangling_references() {
    let dir = tempfile_dir("check");
    // The listener and the cluster, no route config; a route config in a second file that
    // names a missing cluster and has an empty one; a third file that does not parse.
    std::fs::write(dir.join("a.yaml"), LISTENER).unwrap();
    std::fs::write(
        dir.join("b.json"),
        ROUTES
            .replace(
                "\"name\": \"web\", \"virtual_hosts\"",
                "\"name\": \"other\", \"virtual_hosts\"",
            )
            .replace("\"cluster\": \"web\"", "\"cluster\": \"gone\""),
    )
    .unwrap();
    std::fs::write(dir.join("c.yaml"), "resources: [").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "not read").unwrap();
    std::fs::write(dir.join("notes.txt"), "not read").unwrap();
    let got: Vec<String> = super::check(&dir)
        .into_iter()
        .map(|p| format!("{} | {}", p.place, p.what))
        .collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    let has = |prefix: &str| got.iter().any(|p| p.starts_with(prefix));
    assert!(has("LDS \"web\" | names RDS \"web\""), "{got:#?}");
    assert!(has("RDS \"other\" | names CDS \"gone\""), "{got:#?}");
    assert!(
        got.iter()
            .any(|p| p.contains("c.yaml | ") && p.contains("line 1")),
        "{got:#?}"
    );

    // A resource the client refuses: its field path; and a name defined twice.
    std::fs::remove_file(dir.join("c.yaml")).unwrap();
    std::fs::write(
        dir.join("b.json"),
        ROUTES.replace("\"cluster\": \"web\"", "\"cluster\": \"\""),
    )
    .unwrap();
    std::fs::write(dir.join("d.json"), ROUTES).unwrap();
    let got: Vec<String> = super::check(&dir)
        .into_iter()
        .map(|p| format!("{} | {}", p.place, p.what))
        .collect();
    assert!(
        got.iter()
            .any(|p| p.starts_with("RDS \"web\" | ") && p.contains("route")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|p| p.ends_with("| defined twice")),
        "{got:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-files-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
