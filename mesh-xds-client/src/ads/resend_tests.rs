//! A copy that comes again byte for byte is recognised without being decoded or applied
//! again (`TypeState::by_content`), and never when that would hide a real change.

use super::tests::{ads, delta, names, response, sotw};
use super::*;
use crate::build;
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use std::net::SocketAddr;

const EDS: ResourceType = ResourceType::ClusterLoadAssignment;

fn eds(name: &str, port: u16) -> Any {
    build::any(&build::assignment(
        name,
        &[SocketAddr::from(([10, 0, 0, 1], port))],
    ))
}

fn endpoints_upserted(out: &Output) -> Vec<String> {
    (out.changes.iter())
        .filter_map(|c| match c {
            Change::Upsert(Translated::Endpoints(e)) => Some(e.cluster_name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn sotw_applies_only_what_changed_and_acks_the_new_version() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(EDS, names(&["a", "b"]), t0);
    a.start_stream(t0);
    let out = a.on_sotw(
        response(EDS, "v1", "n1", vec![eds("a", 1), eds("b", 1)]),
        t0,
    );
    assert_eq!(endpoints_upserted(&out), ["a", "b"]);
    let first_update = a.status()[&EDS]["a"].last_updated;

    let out = a.on_sotw(
        response(EDS, "v2", "n2", vec![eds("a", 1), eds("b", 2)]),
        t0,
    );
    assert_eq!(endpoints_upserted(&out), ["b"], "a came back byte for byte");
    let ack = sotw(&out.requests[0]);
    assert_eq!(
        (ack.version_info.as_str(), ack.error_detail.is_none()),
        ("v2", true)
    );
    let a_status = &a.status()[&EDS]["a"];
    assert_eq!(
        a_status.version, "v2",
        "the unchanged copy is at the response's version"
    );
    assert_eq!(
        a_status.last_updated, first_update,
        "but it was not updated"
    );

    // b goes back to its first copy: that is a change, although those bytes were seen before.
    let out = a.on_sotw(
        response(EDS, "v3", "n3", vec![eds("a", 1), eds("b", 1)]),
        t0,
    );
    assert_eq!(endpoints_upserted(&out), ["b"]);
}

#[test]
fn a_resource_dropped_and_wanted_again_is_applied_again() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(EDS, names(&["a", "b"]), t0);
    a.start_stream(t0);
    a.on_sotw(
        response(EDS, "v1", "n1", vec![eds("a", 1), eds("b", 1)]),
        t0,
    );
    let out = a.set_wanted(EDS, names(&["b"]), t0);
    assert!(matches!(&out.changes[..], [Change::Remove(EDS, n)] if n == "a"));
    a.set_wanted(EDS, names(&["a", "b"]), t0);
    let out = a.on_sotw(
        response(EDS, "v2", "n2", vec![eds("a", 1), eds("b", 1)]),
        t0,
    );
    assert_eq!(
        endpoints_upserted(&out),
        ["a"],
        "the store no longer holds a"
    );
}

#[test]
fn a_rejected_copy_is_not_masked_by_the_last_good_bytes() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Cluster, names(&["c"]), t0);
    a.start_stream(t0);
    let good = build::any(&build::eds_cluster("c"));
    a.on_sotw(
        response(ResourceType::Cluster, "v1", "n1", vec![good.clone()]),
        t0,
    );
    let mut bad = build::eds_cluster("c");
    bad.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: -1,
        nanos: 0,
    });
    let out = a.on_sotw(
        response(ResourceType::Cluster, "v2", "n2", vec![build::any(&bad)]),
        t0,
    );
    assert!(
        sotw(&out.requests[0]).error_detail.is_some(),
        "the bad copy is NACKed"
    );
    // The good bytes again: decoded and validated again, clearing the error.
    let out = a.on_sotw(response(ResourceType::Cluster, "v3", "n3", vec![good]), t0);
    assert!(sotw(&out.requests[0]).error_detail.is_none());
    assert_eq!(a.status()[&ResourceType::Cluster]["c"].last_error, None);
    assert_eq!(
        out.changes.len(),
        1,
        "re-applied (the store keeps it if equal)"
    );
}

#[test]
fn delta_resends_after_a_reconnect_change_nothing() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Delta);
    a.set_wanted(EDS, names(&["a"]), t0);
    a.start_stream(t0);
    let resp = |nonce: &str, port| DeltaDiscoveryResponse {
        type_url: EDS.type_url().into(),
        nonce: nonce.into(),
        resources: vec![Resource {
            name: "a".into(),
            version: format!("r{port}"),
            resource: Some(eds("a", port)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(endpoints_upserted(&a.on_delta(resp("n1", 1), t0)), ["a"]);
    a.start_stream(t0);
    let out = a.on_delta(resp("n2", 1), t0);
    assert!(out.changes.is_empty(), "{:?}", out.changes);
    assert!(
        delta(&out.requests[0]).error_detail.is_none(),
        "still ACKed"
    );
    assert_eq!(endpoints_upserted(&a.on_delta(resp("n3", 2), t0)), ["a"]);
}
