use super::*;
use crate::build;
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;

pub(super) fn ads(protocol: Protocol) -> Ads {
    Ads::new(Config {
        protocol,
        node: Node {
            id: "n1".into(),
            ..Default::default()
        },
        resource_timeout: Duration::from_secs(15),
        ignore_resource_deletion: false,
        context: Default::default(),
    })
}

pub(super) fn names(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

pub(super) fn sotw(r: &Request) -> &DiscoveryRequest {
    match r {
        Request::Sotw(r) => r,
        other => panic!("expected SotW, got {other:?}"),
    }
}

pub(super) fn delta(r: &Request) -> &DeltaDiscoveryRequest {
    match r {
        Request::Delta(r) => r,
        other => panic!("expected Delta, got {other:?}"),
    }
}

/// A Delta response with EDS cluster `name` at `version`.
pub(super) fn delta_cluster(nonce: &str, name: &str, version: &str) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ResourceType::Cluster.type_url().into(),
        nonce: nonce.into(),
        resources: vec![Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(build::any(&build::eds_cluster(name))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(super) fn response(
    ty: ResourceType,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: ty.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn bad_listener(name: &str) -> Any {
    let l = envoy_types::pb::envoy::config::listener::v3::Listener {
        name: name.into(),
        ..Default::default()
    };
    build::any(&l)
}

fn upserted(out: &Output) -> Vec<String> {
    out.changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(Translated::Listener(l)) => Some(l.name.clone()),
            Change::Upsert(Translated::Cluster(c)) => Some(c.name.clone()),
            Change::Upsert(Translated::RouteConfig(r)) => Some(r.name.clone()),
            Change::Upsert(Translated::Endpoints(e)) => Some(e.cluster_name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn sotw_subscribes_acks_and_nacks_with_the_previous_version() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    assert!(
        a.set_wanted(ResourceType::Listener, names(&["web"]), t0)
            .requests
            .is_empty(),
        "no stream yet"
    );
    let out = a.start_stream(t0);
    let req = sotw(&out.requests[0]);
    assert_eq!(req.resource_names, vec!["web"]);
    assert_eq!(req.node.as_ref().unwrap().id, "n1");
    assert_eq!(
        (req.version_info.as_str(), req.response_nonce.as_str()),
        ("", "")
    );

    let ok = build::any(&build::api_listener_rds("web", "web-routes"));
    let out = a.on_sotw(
        response(ResourceType::Listener, "v1", "n1", vec![ok.clone()]),
        t0,
    );
    assert_eq!(upserted(&out), vec!["web"]);
    let ack = sotw(&out.requests[0]);
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v1", "n1")
    );
    assert!(
        ack.error_detail.is_none() && ack.node.is_none(),
        "node only on the first request"
    );

    let out = a.on_sotw(
        response(
            ResourceType::Listener,
            "v2",
            "n2",
            vec![bad_listener("web")],
        ),
        t0,
    );
    assert!(
        out.changes.is_empty(),
        "the bad copy does not replace the good one"
    );
    let nack = sotw(&out.requests[0]);
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("v1", "n2")
    );
    let detail = &nack.error_detail.as_ref().unwrap().message;
    assert_eq!(
        detail,
        "LDS \"web\": api_listener: field not present (clients use API listeners)"
    );
    let status = &a.status()[&ResourceType::Listener]["web"];
    assert_eq!((status.state, status.version.as_str()), ("acked", "v1"));
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("api_listener")
    );

    // A resource we did not ask for is ignored.
    let extra = build::any(&build::api_listener_rds("other", "r"));
    let out = a.on_sotw(
        response(ResourceType::Listener, "v3", "n3", vec![ok, extra]),
        t0,
    );
    assert_eq!(upserted(&out), vec!["web"]);
    assert_eq!(sotw(&out.requests[0]).version_info, "v3");
    assert_eq!(
        a.status()[&ResourceType::Listener]["web"].last_error,
        None,
        "a good copy clears the error"
    );
}

#[test]
fn a_bad_resource_is_rejected_alone() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Cluster, names(&["good", "web"]), t0);
    a.start_stream(t0);
    let mut bad = build::eds_cluster("web");
    bad.lb_policy =
        envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy::ClusterProvided as i32;
    let out = a.on_sotw(
        response(
            ResourceType::Cluster,
            "1",
            "a",
            vec![build::any(&build::eds_cluster("good")), build::any(&bad)],
        ),
        t0,
    );
    assert_eq!(
        upserted(&out),
        vec!["good"],
        "gRFC A46: valid resources apply"
    );
    let nack = sotw(&out.requests[0]);
    assert_eq!(nack.version_info, "");
    let message = &nack.error_detail.as_ref().unwrap().message;
    assert_eq!(
        message,
        "CDS \"web\": lb_policy: ClusterProvided is not supported yet"
    );
    assert_eq!(a.status()[&ResourceType::Cluster]["web"].state, "nacked");
    // docs/guides/xds.md quotes this NACK: it must be the real text.
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guides/xds.md"),
    )
    .unwrap();
    assert!(
        guide.contains(&format!("(`{message}`)")),
        "xds.md should quote: {message}"
    );
}

#[test]
fn an_undecodable_resource_rejects_the_whole_response() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Cluster, names(&["good"]), t0);
    a.start_stream(t0);
    let garbage = Any {
        type_url: ResourceType::Cluster.type_url().into(),
        value: vec![0xff; 4],
    };
    let out = a.on_sotw(
        response(
            ResourceType::Cluster,
            "1",
            "a",
            vec![build::any(&build::eds_cluster("good")), garbage],
        ),
        t0,
    );
    assert!(out.changes.is_empty());
    assert!(
        sotw(&out.requests[0])
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .starts_with("resources[1]: cannot decode CDS")
    );
}

#[test]
fn sotw_deletion_rules() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Cluster, names(&["c1", "c2"]), t0);
    a.set_wanted(ResourceType::ClusterLoadAssignment, names(&["c1"]), t0);
    a.start_stream(t0);
    let both = vec![
        build::any(&build::eds_cluster("c1")),
        build::any(&build::eds_cluster("c2")),
    ];
    a.on_sotw(response(ResourceType::Cluster, "1", "a", both), t0);
    a.on_sotw(
        response(
            ResourceType::ClusterLoadAssignment,
            "1",
            "b",
            vec![build::any(&build::assignment(
                "c1",
                &["127.0.0.1:1".parse().unwrap()],
            ))],
        ),
        t0,
    );
    // c2 missing from a CDS response: deleted.
    let out = a.on_sotw(
        response(
            ResourceType::Cluster,
            "2",
            "c",
            vec![build::any(&build::eds_cluster("c1"))],
        ),
        t0,
    );
    assert!(out.changes.contains(&Change::Missing(
        ResourceType::Cluster,
        "c2".into(),
        "not in the control plane's response".into()
    )));
    // A newly wanted cluster absent from a response (which may answer the older subscription)
    // is not deleted: the timer decides.
    a.set_wanted(ResourceType::Cluster, names(&["c1", "c3"]), t0);
    let out = a.on_sotw(
        response(
            ResourceType::Cluster,
            "3",
            "e",
            vec![build::any(&build::eds_cluster("c1"))],
        ),
        t0,
    );
    assert!(
        !out.changes
            .iter()
            .any(|c| matches!(c, Change::Missing(_, n, _) if n == "c3")),
        "{:?}",
        out.changes
    );
    assert_eq!(a.status()[&ResourceType::Cluster]["c3"].state, "requested");
    // An EDS response without c1 deletes nothing.
    let out = a.on_sotw(
        response(ResourceType::ClusterLoadAssignment, "2", "d", vec![]),
        t0,
    );
    assert!(out.changes.is_empty());

    // gRFC A53: with ignore_resource_deletion, a deleted cluster is kept.
    let mut a = ads(Protocol::Sotw);
    a.config.ignore_resource_deletion = true;
    a.set_wanted(ResourceType::Cluster, names(&["c1"]), t0);
    a.start_stream(t0);
    a.on_sotw(
        response(
            ResourceType::Cluster,
            "1",
            "a",
            vec![build::any(&build::eds_cluster("c1"))],
        ),
        t0,
    );
    let out = a.on_sotw(response(ResourceType::Cluster, "2", "b", vec![]), t0);
    assert!(out.changes.is_empty());
}

#[test]
fn unsubscribing_forgets_and_tells_the_server() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Cluster, names(&["a", "b"]), t0);
    a.start_stream(t0);
    let out = a.set_wanted(ResourceType::Cluster, names(&["b"]), t0);
    assert_eq!(
        out.changes,
        vec![Change::Remove(ResourceType::Cluster, "a".into())]
    );
    assert_eq!(sotw(&out.requests[0]).resource_names, vec!["b"]);
    let out = a.set_wanted(ResourceType::Cluster, names(&[]), t0);
    assert_eq!(
        sotw(&out.requests[0]).resource_names,
        Vec::<String>::new(),
        "an explicit empty list after a subscription"
    );
    // Never an initial request with no names (that would be a wildcard subscription).
    let mut b = ads(Protocol::Sotw);
    b.set_wanted(ResourceType::Listener, names(&["x"]), t0);
    assert!(
        b.start_stream(t0)
            .requests
            .iter()
            .all(|r| r.type_url() == ResourceType::Listener.type_url())
    );
}

#[test]
fn delta_subscribes_by_difference_and_resumes_with_versions() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Delta);
    a.set_wanted(ResourceType::Cluster, names(&["a", "b"]), t0);
    let out = a.start_stream(t0);
    assert_eq!(
        delta(&out.requests[0]).resource_names_subscribe,
        vec!["a", "b"]
    );
    let out = a.on_delta(delta_cluster("n1", "a", "va"), t0);
    assert_eq!(upserted(&out), vec!["a"]);
    let ack = delta(&out.requests[0]);
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.resource_names_subscribe.is_empty() && ack.error_detail.is_none());

    let out = a.set_wanted(ResourceType::Cluster, names(&["b", "c"]), t0);
    let req = delta(&out.requests[0]);
    assert_eq!(
        (
            req.resource_names_subscribe.clone(),
            req.resource_names_unsubscribe.clone()
        ),
        // Clusters are restated in full (istiod needs it); other types send the difference.
        (
            vec!["b".to_string(), "c".to_string()],
            vec!["a".to_string()]
        )
    );

    let removed = DeltaDiscoveryResponse {
        type_url: ResourceType::Cluster.type_url().into(),
        nonce: "n2".into(),
        removed_resources: vec!["b".into()],
        ..Default::default()
    };
    let out = a.on_delta(removed, t0);
    assert_eq!(
        out.changes,
        vec![Change::Missing(
            ResourceType::Cluster,
            "b".into(),
            "removed by the control plane".into()
        )]
    );

    // Reconnect: resubscribe everything, telling the server what we hold.
    a.set_wanted(ResourceType::Cluster, names(&["c", "d"]), t0);
    let resp = DeltaDiscoveryResponse {
        type_url: ResourceType::Cluster.type_url().into(),
        nonce: "n3".into(),
        resources: vec![Resource {
            name: "c".into(),
            version: "vc".into(),
            resource: Some(build::any(&build::eds_cluster("c"))),
            ..Default::default()
        }],
        ..Default::default()
    };
    a.on_delta(resp, t0);
    a.stream_ended();
    let out = a.start_stream(t0);
    let req = delta(&out.requests[0]);
    assert_eq!(req.resource_names_subscribe, vec!["c", "d"]);
    assert_eq!(
        req.initial_resource_versions.get("c").map(String::as_str),
        Some("vc")
    );
    assert!(req.node.is_some(), "node again on the new stream");
}

#[test]
fn delta_restates_wildcard_types_sends_differences_otherwise_and_lingers_on_empty() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Delta);
    a.start_stream(t0);
    let sub = |out: &Output| {
        let r = delta(&out.requests[0]);
        (
            r.resource_names_subscribe.clone(),
            r.resource_names_unsubscribe.clone(),
        )
    };
    a.set_wanted(ResourceType::RouteConfiguration, names(&["r1"]), t0);
    let out = a.set_wanted(ResourceType::RouteConfiguration, names(&["r1", "r2"]), t0);
    assert_eq!(
        sub(&out),
        (vec!["r2".to_string()], vec![]),
        "RDS: the difference"
    );
    a.set_wanted(ResourceType::Listener, names(&["l1"]), t0);
    let out = a.set_wanted(ResourceType::Listener, names(&["l1", "l2"]), t0);
    assert_eq!(
        sub(&out),
        (vec!["l1".to_string(), "l2".to_string()], vec![]),
        "LDS: restated"
    );
    let out = a.set_wanted(ResourceType::Listener, names(&["l2"]), t0);
    assert_eq!(sub(&out), (vec!["l2".to_string()], vec!["l1".to_string()]));
    // Nothing wants a listener: the last one stays subscribed (and in the store).
    let out = a.set_wanted(ResourceType::Listener, BTreeSet::new(), t0);
    assert!(out.requests.is_empty() && out.changes.is_empty(), "{out:?}");
    assert_eq!(a.wanted(ResourceType::Listener), &names(&["l2"]));
    // RDS, not a wildcard type, is unsubscribed.
    let out = a.set_wanted(ResourceType::RouteConfiguration, BTreeSet::new(), t0);
    assert_eq!(sub(&out).1, vec!["r1".to_string(), "r2".to_string()]);
}

#[test]
fn resources_that_never_arrive_do_not_exist_after_the_timeout() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::RouteConfiguration, names(&["r"]), t0);
    assert_eq!(
        a.next_deadline(),
        None,
        "no timer before the request is sent"
    );
    a.start_stream(t0);
    assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(15)));
    assert!(a.on_tick(t0 + Duration::from_secs(14)).changes.is_empty());
    // The stream breaks and comes back: the timer restarts from the new request.
    a.stream_ended();
    assert_eq!(a.next_deadline(), None);
    let t1 = t0 + Duration::from_secs(14);
    a.start_stream(t1);
    assert!(a.on_tick(t0 + Duration::from_secs(16)).changes.is_empty());
    let out = a.on_tick(t1 + Duration::from_secs(15));
    assert!(
        matches!(&out.changes[..], [Change::Missing(ResourceType::RouteConfiguration, n, why)] if n == "r" && why.contains("15s"))
    );
    assert_eq!(
        a.status()[&ResourceType::RouteConfiguration]["r"].state,
        "does_not_exist"
    );
    assert_eq!(a.next_deadline(), None);
}

#[test]
fn repeated_nacks_back_off() {
    let t0 = Instant::now();
    let mut a = ads(Protocol::Sotw);
    a.set_wanted(ResourceType::Listener, names(&["web"]), t0);
    a.start_stream(t0);
    let mut delays = Vec::new();
    for i in 0..5 {
        let out = a.on_sotw(
            response(
                ResourceType::Listener,
                "bad",
                &format!("n{i}"),
                vec![bad_listener("web")],
            ),
            t0,
        );
        assert!(out.requests[0].is_nack());
        delays.push(out.delay);
    }
    assert_eq!(delays[0], None, "the first NACK goes at once");
    let ms: Vec<u128> = delays[1..].iter().map(|d| d.unwrap().as_millis()).collect();
    for (i, (lo, hi)) in [(50, 100), (100, 200), (200, 400), (400, 800)]
        .into_iter()
        .enumerate()
    {
        assert!(
            (lo..=hi).contains(&ms[i]),
            "NACK {} delayed {}ms, expected {lo}..={hi}",
            i + 2,
            ms[i]
        );
    }
    let ok = build::any(&build::api_listener_rds("web", "r"));
    assert_eq!(
        a.on_sotw(response(ResourceType::Listener, "good", "ok", vec![ok]), t0)
            .delay,
        None
    );
    let out = a.on_sotw(
        response(
            ResourceType::Listener,
            "bad",
            "x",
            vec![bad_listener("web")],
        ),
        t0,
    );
    assert_eq!(out.delay, None, "an ACK resets the backoff");
}

#[test]
fn xdstp_names_match_whatever_the_order_of_their_context_params() {
    let t0 = Instant::now();
    let asked = "xdstp://b/envoy.config.cluster.v3.Cluster/web?a=1&b=2";
    let echoed = "xdstp://b/envoy.config.cluster.v3.Cluster/web?b=2&a=1";
    let cluster = || {
        let mut c = build::eds_cluster(echoed);
        c.eds_cluster_config.as_mut().unwrap().service_name =
            "xdstp://b/envoy.config.endpoint.v3.ClusterLoadAssignment/web".into();
        build::any(&c)
    };
    for protocol in [Protocol::Sotw, Protocol::Delta] {
        let mut a = ads(protocol);
        a.set_wanted(ResourceType::Cluster, names(&[asked]), t0);
        a.start_stream(t0);
        let any = cluster();
        let out = match protocol {
            Protocol::Sotw => a.on_sotw(response(ResourceType::Cluster, "1", "a", vec![any]), t0),
            Protocol::Delta => a.on_delta(
                DeltaDiscoveryResponse {
                    type_url: ResourceType::Cluster.type_url().into(),
                    resources: vec![Resource {
                        name: echoed.into(),
                        version: "1".into(),
                        resource: Some(any),
                        ..Default::default()
                    }],
                    nonce: "a".into(),
                    ..Default::default()
                },
                t0,
            ),
        };
        assert_eq!(upserted(&out), [asked], "{protocol:?}: stored as asked");
        assert_eq!(a.status()[&ResourceType::Cluster][asked].state, "acked");
        // The same cluster again, still echoed in the other order: not a deletion (SotW).
        if protocol == Protocol::Sotw {
            let any = cluster();
            let out = a.on_sotw(response(ResourceType::Cluster, "2", "b", vec![any]), t0);
            assert!(
                !out.changes.iter().any(|c| matches!(c, Change::Missing(..))),
                "{:?}",
                out.changes
            );
        } else {
            let out = a.on_delta(
                DeltaDiscoveryResponse {
                    type_url: ResourceType::Cluster.type_url().into(),
                    removed_resources: vec![echoed.into()],
                    nonce: "b".into(),
                    ..Default::default()
                },
                t0,
            );
            assert!(
                out.changes.iter().any(
                    |c| matches!(c, Change::Missing(ResourceType::Cluster, n, _) if n == asked)
                ),
                "removal under the other spelling: {:?}",
                out.changes
            );
        }
    }
}
