//! CDS aggregate clusters (gRFC A37): the config decoded, and what is refused with its path.

use super::*;
use crate::build;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::google::protobuf::Any;

fn translated(c: &cds::Cluster) -> Result<mesh_core::Cluster, String> {
    match decode(ResourceType::Cluster, &build::any(c))
        .unwrap()
        .result
    {
        Ok(Translated::Cluster(c)) => Ok(*c),
        Ok(other) => panic!("a cluster, not {other:?}"),
        Err(e) => Err(e),
    }
}

#[test]
fn an_aggregate_translates_to_its_clusters_in_order() {
    let c = translated(&build::aggregate_cluster("agg", &["primary", "dns"])).unwrap();
    assert_eq!(
        c.aggregate(),
        Some(&["primary".to_owned(), "dns".to_owned()][..])
    );
    assert_eq!(c.eds_service_name, None);
}

#[test]
fn other_custom_types_and_bad_configs_are_refused_with_their_paths() {
    let mut c = build::aggregate_cluster("agg", &["a"]);
    let set = |c: &mut cds::Cluster, name: &str, any: Option<Any>| {
        c.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::ClusterType(
            cds::cluster::CustomClusterType {
                name: name.into(),
                typed_config: any,
            },
        ));
    };
    set(&mut c, "envoy.clusters.redis", None);
    assert!(translated(&c).unwrap_err().contains(
        "cluster_type.name: custom cluster type \"envoy.clusters.redis\" is not supported"
    ),);
    set(&mut c, "envoy.clusters.aggregate", None);
    assert!(
        translated(&c)
            .unwrap_err()
            .contains("cluster_type.typed_config: field not present")
    );
    let wrong = Any {
        type_url: "type.googleapis.com/google.protobuf.Empty".into(),
        value: Vec::new(),
    };
    set(&mut c, "envoy.clusters.aggregate", Some(wrong));
    assert!(
        translated(&c)
            .unwrap_err()
            .contains("cluster_type.typed_config.type_url")
    );
    let garbage = Any {
        type_url: mesh_core::config::cluster::AGGREGATE_CONFIG_TYPE.into(),
        value: vec![0x0a, 0x05, b'a'],
    };
    set(&mut c, "envoy.clusters.aggregate", Some(garbage));
    assert!(translated(&c).unwrap_err().contains("does not decode"));
    // Validation after translation: no cluster, itself.
    let none = build::aggregate_cluster("agg", &[]);
    assert!(
        translated(&none)
            .unwrap_err()
            .contains("must name at least one cluster")
    );
    let own = build::aggregate_cluster("agg", &["agg"]);
    assert!(
        translated(&own)
            .unwrap_err()
            .contains("cannot contain itself")
    );
}
