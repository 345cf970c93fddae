//! The live store: atomic edits, identity of unchanged resources, per-name watches, interest.

use mesh_core::config::route::RouteConfig;
use mesh_core::{Cluster, MeshConfig, ResourceKind, Store};
use std::sync::Arc;

fn config(timeout_ms: u64) -> MeshConfig {
    MeshConfig::from_yaml(&format!(
        r#"
clusters:
  - {{ name: a, connect_timeout: {timeout_ms}ms }}
  - {{ name: b }}
route_configs:
  - name: r
    virtual_hosts: [{{ name: v, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: a }} }}] }}]
"#
    ))
    .unwrap()
}

#[test]
fn replace_keeps_unchanged_resources_and_notifies_only_changed_names() {
    let store = Store::new();
    store.replace(config(100)).unwrap();
    let before = store.load();
    let b_before = Arc::clone(before.cluster("b").unwrap());
    let watch_a = store.watch(ResourceKind::Cluster, "a");
    let watch_b = store.watch(ResourceKind::Cluster, "b");
    let mut any = store.changed();

    let v = store.replace(config(200)).unwrap();
    assert_eq!(v, 2);
    let after = store.load();
    assert!(
        Arc::ptr_eq(&b_before, after.cluster("b").unwrap()),
        "b is equal, so kept"
    );
    assert_eq!(after.cluster("a").unwrap().connect_timeout.as_millis(), 200);
    assert!(watch_a.has_changed().unwrap());
    assert!(!watch_b.has_changed().unwrap());
    assert!(any.has_changed().unwrap());
    assert_eq!(*any.borrow_and_update(), 2);
    // Old readers still hold the old snapshot intact.
    assert_eq!(
        before.cluster("a").unwrap().connect_timeout.as_millis(),
        100
    );
}

#[test]
fn an_edit_that_changes_nothing_keeps_the_version() {
    let store = Store::new();
    store.replace(config(100)).unwrap();
    assert_eq!(store.replace(config(100)).unwrap(), 1);
    assert_eq!(store.apply(|e| e.upsert_cluster(Cluster::new("b"))), 1);
}

#[test]
fn invalid_replace_changes_nothing() {
    let store = Store::new();
    store.replace(config(100)).unwrap();
    let mut bad = config(100);
    bad.clusters.clear();
    assert!(store.replace(bad).is_err());
    assert_eq!(store.version(), 1);
    assert!(store.load().cluster("a").is_some());
}

#[test]
fn removal_is_a_change_and_rds_is_resolved() {
    let store = Store::new();
    store.replace(config(100)).unwrap();
    let watch = store.watch(ResourceKind::RouteConfig, "r");
    store.apply(|e| {
        assert!(e.remove(ResourceKind::RouteConfig, "r"));
        assert!(!e.remove(ResourceKind::RouteConfig, "r"));
    });
    assert!(watch.has_changed().unwrap());
    assert!(store.load().route_config("r").is_none());
    store.apply(|e| {
        e.upsert_route_config(RouteConfig {
            name: "r".into(),
            ..RouteConfig::default()
        })
    });
    assert!(
        store
            .load()
            .route_config("r")
            .unwrap()
            .virtual_hosts
            .is_empty()
    );
}

#[test]
fn interest_is_reference_counted() {
    let store = Store::new();
    let mut interest = store.interest();
    let g1 = store.register_interest(ResourceKind::Listener, "web");
    assert!(interest.has_changed().unwrap());
    assert!(
        interest
            .borrow_and_update()
            .contains(ResourceKind::Listener, "web")
    );
    let g2 = store.register_interest(ResourceKind::Listener, "web");
    assert!(!interest.has_changed().unwrap(), "second user is not news");
    drop(g1);
    assert!(!interest.has_changed().unwrap());
    drop(g2);
    assert!(interest.has_changed().unwrap());
    assert_eq!(
        interest
            .borrow_and_update()
            .names(ResourceKind::Listener)
            .count(),
        0
    );
}

#[test]
fn absence_marks_are_changes_and_upserts_clear_them() {
    use mesh_core::Absence;
    let store = Store::new();
    let watch = store.watch(ResourceKind::Cluster, "c");
    let v = store.apply(|e| e.set_absence(ResourceKind::Cluster, "c", Some(Absence::Pending)));
    assert_eq!(v, 1, "an absence-only edit is a change");
    assert!(watch.has_changed().unwrap());
    assert_eq!(
        store.load().absence(ResourceKind::Cluster, "c"),
        Some(&Absence::Pending)
    );
    store.apply(|e| {
        e.set_absence(
            ResourceKind::Cluster,
            "c",
            Some(Absence::Missing("gone".into())),
        )
    });
    assert_eq!(
        store.load().absence(ResourceKind::Cluster, "c"),
        Some(&Absence::Missing("gone".into()))
    );
    store.apply(|e| e.upsert_cluster(Cluster::new("c")));
    assert_eq!(
        store.load().absence(ResourceKind::Cluster, "c"),
        None,
        "arrival clears the mark"
    );
    assert_eq!(store.version(), 3);
}

/// Envoy's `tls_certificates` / `trusted_ca` become provider instances when a cluster enters
/// the store: equal material shares one instance, which lives while a resource names it.
#[test]
fn tls_data_sources_become_shared_provider_instances_while_named() {
    let tls = r#"
    transport_socket:
      common_tls_context:
        tls_certificates:
          - certificate_chain: { filename: /certs/chain.pem }
            private_key: { filename: /certs/key.pem }
        validation_context:
          trusted_ca: { inline_string: "-----BEGIN CERTIFICATE-----" }
          match_subject_alt_names: [{ exact: spiffe://cluster.local/ns/a/sa/b }]"#;
    let yaml = format!(
        "clusters:\n  - name: a\n    type: STATIC\n    load_assignment: {{ cluster_name: a, endpoints: [] }}{tls}\n  - name: b\n    type: STATIC\n    load_assignment: {{ cluster_name: b, endpoints: [] }}{tls}\n"
    );
    let config = MeshConfig::from_yaml(&yaml).unwrap();
    let store = Store::new();
    store.replace(config).unwrap();
    let snap = store.load();
    let a = snap.cluster("a").unwrap();
    let names: Vec<String> = a
        .transport_socket
        .as_ref()
        .unwrap()
        .provider_names()
        .map(str::to_owned)
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.iter().all(|n| n.starts_with("inline:")), "{names:?}");
    let mut providers: Vec<&String> = snap.certificate_providers().keys().collect();
    let mut expected = vec![&names[0], &names[1]];
    providers.sort();
    expected.sort();
    assert_eq!(providers, expected, "one pair, shared by a and b");
    let fw = snap.certificate_providers()[&names[0]]
        .file_watcher
        .clone()
        .unwrap();
    assert_eq!(fw.certificate_file.as_deref(), Some("/certs/chain.pem"));
    // The dump names the instances and round-trips.
    let dump = snap.to_config();
    assert!(dump.validate().is_ok());

    store.apply(|e| {
        e.remove(ResourceKind::Cluster, "a");
    });
    assert_eq!(
        store.load().certificate_providers().len(),
        2,
        "b still names them"
    );
    store.apply(|e| {
        e.set_certificate_providers(Default::default());
    });
    assert_eq!(
        store.load().certificate_providers().len(),
        2,
        "kept across a provider reset"
    );
    store.apply(|e| {
        e.remove(ResourceKind::Cluster, "b");
    });
    assert!(
        store.load().certificate_providers().is_empty(),
        "unused: dropped"
    );
}
