//! What gRFC A71's fallback asks of the state machine: telling whether a wanted resource has
//! no copy, and starting a stream to another server without the last one's versions.

use super::tests::{ads, delta, delta_cluster, names, response, sotw};
use super::*;
use crate::build;

#[test]
fn uncached_means_wanted_with_neither_a_copy_nor_a_verdict() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    assert!(!a.has_uncached(), "nothing wanted");
    a.set_wanted(ResourceType::Listener, names(&["web", "api"]), t0);
    assert!(a.has_uncached());
    a.start_stream(t0);
    let web = build::any(&build::api_listener_rds("web", "web-routes"));
    a.on_sotw(response(ResourceType::Listener, "v1", "n1", vec![web]), t0);
    assert!(a.has_uncached(), "`api` has had no answer");
    // Its does-not-exist timer fires: a verdict as good as a copy.
    a.on_tick(t0 + Duration::from_secs(16));
    assert!(!a.has_uncached(), "{:?}", a.status());
    a.set_wanted(ResourceType::Listener, names(&["web", "api", "new"]), t0);
    assert!(a.has_uncached(), "a new name has nothing yet");
}

#[test]
fn a_stream_to_another_server_states_no_versions() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Listener, names(&["web"]), t0);
    a.start_stream(t0);
    let web = build::any(&build::api_listener_rds("web", "web-routes"));
    a.on_sotw(response(ResourceType::Listener, "v1", "n1", vec![web]), t0);
    a.stream_ended();
    // The same server again: the version it gave is stated.
    let again = a.start_stream(t0);
    assert_eq!(sotw(&again.requests[0]).version_info, "v1");
    a.stream_ended();
    a.server_changed();
    let other = a.start_stream(t0);
    assert_eq!(sotw(&other.requests[0]).version_info, "", "another server");

    let mut d = ads(Protocol::Delta);
    d.set_wanted(ResourceType::Cluster, names(&["a"]), t0);
    d.start_stream(t0);
    d.on_delta(delta_cluster("n1", "a", "va"), t0);
    d.stream_ended();
    let again = d.start_stream(t0);
    let initial = &delta(&again.requests[0]).initial_resource_versions;
    assert_eq!(initial.get("a").map(String::as_str), Some("va"));
    d.stream_ended();
    d.server_changed();
    let other = d.start_stream(t0);
    assert!(
        delta(&other.requests[0])
            .initial_resource_versions
            .is_empty()
    );
}
