//! Exact fault scripts from the in-process ADS server that need their own versions, nonces or
//! sizes:
//! - responses back to back (SotW and Delta): the client answers each in order, ends on the
//!   newest nonce, and serves the newest config;
//! - huge responses: 20 MB applies; 70 MB (over the 64 MB receive limit) breaks the stream,
//!   the client keeps serving the last good config, reconnects with backoff, and recovers when
//!   the control plane sends something sane;
//! - calls made before the config is complete wait for it (a gRPC channel that is still
//!   connecting), and a target that does not exist fails with the does-not-exist reason.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_tower::ErrorKind;
use mesh_xds_client::build;
use mesh_xds_client::translate::ResourceType;
use std::net::SocketAddr;
use support::ads::{FakeAds, Resources};
use support::fake::*;

fn cla(addr: SocketAddr) -> envoy_types::pb::google::protobuf::Any {
    build::any(&build::assignment("web", &[addr]))
}

async fn back_to_back(delta: bool) {
    let (b1, b2, b3) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    let (_mesh, web) = ready_mesh(&ads, delta, b1.addr()).await;
    // From here on only the script answers.
    ads.set_silent(true);
    let eds = ResourceType::ClusterLoadAssignment.type_url();
    for (nonce, version, addr) in [("old", "100", b2.addr()), ("new", "101", b3.addr())] {
        if delta {
            ads.push_delta(DeltaDiscoveryResponse {
                type_url: eds.into(),
                nonce: nonce.into(),
                system_version_info: version.into(),
                resources: vec![Resource {
                    name: "web".into(),
                    version: version.into(),
                    resource: Some(cla(addr)),
                    ..Default::default()
                }],
                ..Default::default()
            });
        } else {
            ads.push_sotw(DiscoveryResponse {
                version_info: version.into(),
                resources: vec![cla(addr)],
                type_url: eds.into(),
                nonce: nonce.into(),
                ..Default::default()
            });
        }
    }
    let ack = ads
        .wait_for(|r| r.type_url == eds && r.nonce == "new")
        .await;
    assert_eq!(ack.nack, None, "{ack:?}");
    if !delta {
        assert_eq!(ack.version, "101", "the ACK names the newest version");
    }
    let answered: Vec<String> = ads
        .requests()
        .into_iter()
        .filter(|r| r.type_url == eds && (r.nonce == "old" || r.nonce == "new"))
        .map(|r| r.nonce)
        .collect();
    assert_eq!(
        answered,
        ["old", "new"],
        "each response answered once, in order"
    );
    until_served_by(&web, b3.addr()).await;
    for _ in 0..20 {
        assert_eq!(served_by(&web).await.unwrap(), b3.addr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_back_to_back_responses_end_on_the_newest() {
    back_to_back(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_back_to_back_responses_end_on_the_newest() {
    back_to_back(true).await;
}

/// The standard snapshot whose endpoint carries `pad` bytes of metadata (ignored by the
/// client, but it has to receive and decode them).
fn padded(addr: SocketAddr, pad: usize) -> Resources {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let mut assignment: ClusterLoadAssignment = build::assignment("web", &[addr]);
    let filler = Struct {
        fields: [(
            "filler".to_owned(),
            Value {
                kind: Some(Kind::StringValue("x".repeat(pad))),
            },
        )]
        .into(),
    };
    assignment.endpoints[0].lb_endpoints[0].metadata = Some(Metadata {
        filter_metadata: [("bench".to_owned(), filler)].into(),
        ..Default::default()
    });
    let mut r = snapshot(&[addr]);
    r.get_mut(ResourceType::ClusterLoadAssignment.type_url())
        .unwrap()
        .insert("web".into(), build::any(&assignment));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_responses_apply_under_the_limit_and_keep_the_last_good_config_over_it() {
    let (b1, b2, b3) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let ads = FakeAds::start().await;
    let (_mesh, web) = ready_mesh(&ads, false, b1.addr()).await;

    ads.set(padded(b2.addr(), 20 << 20));
    until_served_by(&web, b2.addr()).await;

    let streams = ads.streams();
    ads.set(padded(b3.addr(), 70 << 20));
    // The response cannot be received: the stream breaks and the client reconnects (with
    // backoff) — and meets the same response again.
    ads.wait_until(|_| ads.streams() >= streams + 2).await;
    for _ in 0..50 {
        assert_eq!(
            served_by(&web).await.unwrap(),
            b2.addr(),
            "the last good config keeps serving"
        );
    }

    ads.set(snapshot(&[b3.addr()]));
    until_served_by(&web, b3.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_the_config_is_complete_wait_for_it() {
    let b1 = Backend::start().await.unwrap();
    let ads = FakeAds::start().await;
    // Everything but the endpoints: the call can route but has nowhere to go yet.
    let mut partial = snapshot(&[b1.addr()]);
    partial.remove(ResourceType::ClusterLoadAssignment.type_url());
    ads.set(partial);
    let mesh = xds_mesh(&ads, false, std::time::Duration::from_secs(15)).await;
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    let call = tokio::spawn(async move { served_by(&web).await });
    let eds = ResourceType::ClusterLoadAssignment.type_url();
    ads.wait_for(|r| r.type_url == eds && !r.names.is_empty())
        .await;
    assert!(
        !call.is_finished(),
        "the call waits while endpoints are pending"
    );
    ads.set(snapshot(&[b1.addr()]));
    let served = tokio::time::timeout(support::PATIENCE, call)
        .await
        .expect("the waiting call completes once the config does")
        .unwrap();
    assert_eq!(served.unwrap(), b1.addr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_exist_fails_after_the_does_not_exist_timeout() {
    let ads = FakeAds::start().await;
    ads.set(Resources::new());
    let mesh = xds_mesh(&ads, false, std::time::Duration::from_millis(300)).await;
    let nowhere = mesh.channel::<Empty<Bytes>>("xds:///nowhere");
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(support::PATIENCE, served_by(&nowhere))
        .await
        .expect("bounded by the does-not-exist timeout")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoConfig, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}
