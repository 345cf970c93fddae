//! Server listeners from xDS, continued: filter chains chosen per connection, and routes by
//! RDS.

use super::server_tests::{NAME, ctx, edit_hcm, istio, translated};
use super::{ResourceType, Translated, decode_in};
use crate::build::{any, downstream_mtls, rbac_filter, server_listener};
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

fn cidr(a: &str, len: u32) -> envoy_types::pb::envoy::config::core::v3::CidrRange {
    envoy_types::pb::envoy::config::core::v3::CidrRange {
        address_prefix: a.into(),
        prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value { value: len }),
    }
}

#[test]
fn chains_chosen_per_connection_keep_their_matches_and_settings() {
    use mesh_core::config::filter_chain::SourceType;
    let mut l = istio();
    let mut local = server_listener(NAME, "10.0.0.7:8080".parse().unwrap(), None, vec![])
        .filter_chains
        .remove(0);
    local.name = "node-local".into();
    local.filter_chain_match = Some(lds::FilterChainMatch {
        source_type: 1,
        source_prefix_ranges: vec![cidr("127.0.0.0", 8)],
        source_ports: vec![9000],
        transport_protocol: "raw_buffer".into(),
        ..Default::default()
    });
    let mut partner = l.filter_chains[0].clone();
    partner.filter_chain_match = Some(lds::FilterChainMatch {
        prefix_ranges: vec![cidr("10.0.0.7", 32)],
        source_prefix_ranges: vec![cidr("192.168.0.0", 16)],
        ..Default::default()
    });
    l.filter_chains = vec![local, partner];
    // No default chain: unmatched connections are closed.
    let s = translated(&l).unwrap();
    assert!(s.close_unmatched);
    assert!(s.transport_socket.is_none() && s.http_filters.is_empty());
    assert_eq!(s.filter_chains.len(), 2);
    let (a, b) = (&s.filter_chains[0], &s.filter_chains[1]);
    assert_eq!(a.name, "node-local");
    assert!(a.transport_socket.is_none());
    assert_eq!(
        a.filter_chain_match.source_type,
        SourceType::SameIpOrLoopback
    );
    assert_eq!(a.filter_chain_match.source_ports, [9000]);
    assert_eq!(a.filter_chain_match.transport_protocol, "raw_buffer");
    assert_eq!(a.filter_chain_match.source_prefix_ranges[0].prefix_len, 8);
    assert!(
        b.transport_socket
            .as_ref()
            .unwrap()
            .require_client_certificate
    );
    assert_eq!(b.http_filters.len(), 2);
    assert_eq!(
        b.filter_chain_match.prefix_ranges[0].address_prefix,
        "10.0.0.7"
    );
    // With a default chain, it is the top-level settings.
    l.default_filter_chain = Some(istio().filter_chains.remove(0));
    let s = translated(&l).unwrap();
    assert!(!s.close_unmatched);
    assert!(s.transport_socket.is_some());
    assert_eq!(s.http_filters.len(), 2);

    // What cannot be matched in-process, or is not a match, is NACKed with its place.
    let mut l = istio();
    let mut bad = l.filter_chains[0].clone();
    bad.filter_chain_match = Some(lds::FilterChainMatch {
        direct_source_prefix_ranges: vec![cidr("10.0.0.0", 8)],
        source_prefix_ranges: vec![cidr("10.0.0.0", 33)],
        source_ports: vec![70000],
        source_type: 7,
        ..Default::default()
    });
    l.filter_chains.push(bad);
    let e = translated(&l).unwrap_err();
    for want in [
        "filter_chains[1].filter_chain_match.direct_source_prefix_ranges: is not supported",
        "filter_chains[1].filter_chain_match.source_ports[0]: 70000 is not a port",
        "filter_chains[1].filter_chain_match.source_type: unknown source type 7",
    ] {
        assert!(e.contains(want), "{want} in {e}");
    }
    l.filter_chains[1].filter_chain_match = Some(lds::FilterChainMatch {
        source_prefix_ranges: vec![cidr("10.0.0.0", 33)],
        ..Default::default()
    });
    let e = translated(&l).unwrap_err();
    assert!(
        e.contains("filter_chains[1].filter_chain_match.source_prefix_ranges[0]: 10.0.0.0/33 is not an IP range"),
        "{e}"
    );
}

#[test]
fn routes_by_rds_are_named_and_their_route_config_translates_in_server_form() {
    use crate::build::{inbound_route_config, server_listener_with_rds};
    use envoy_types::pb::envoy::config::route::v3 as rds;
    let l = server_listener_with_rds(
        NAME,
        "10.0.0.7:8080".parse().unwrap(),
        Some(downstream_mtls("default")),
        vec![rbac_filter("envoy.filters.http.rbac", &Rbac::default())],
        "inbound-routes",
    );
    let s = translated(&l).unwrap();
    assert_eq!(s.rds.as_deref(), Some("inbound-routes"));
    assert!(s.route_config.is_none());
    assert_eq!(s.rds_names().collect::<Vec<_>>(), ["inbound-routes"]);

    // The route config, with a non-forwarding route and an RBAC override.
    let mut serve = crate::build::route("/", "");
    serve.action = Some(rds::route::Action::NonForwardingAction(Default::default()));
    serve.typed_per_filter_config = [(
        "envoy.filters.http.rbac".to_owned(),
        any(&envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute::default()),
    )]
    .into();
    let rc = any(&inbound_route_config("inbound-routes", vec![serve]));
    let mut ctx = ctx();
    ctx.inbound_route_configs.insert("inbound-routes".into());
    let d = decode_in(ResourceType::RouteConfiguration, &rc, &ctx).unwrap();
    let Ok(Translated::RouteConfig(rc_out)) = d.result else {
        panic!("{:?}", d.result)
    };
    let inbound = rc_out.inbound.expect("server form");
    assert!(rc_out.virtual_hosts.is_empty());
    let route = &inbound.virtual_hosts[0].routes[0];
    assert!(!route.forwarding);
    assert!(
        route
            .typed_per_filter_config
            .contains_key("envoy.filters.http.rbac")
    );
    // Not named by a server: the client's form, which has no non-forwarding routes.
    let d = decode_in(
        ResourceType::RouteConfiguration,
        &rc,
        &super::Context::default(),
    )
    .unwrap();
    assert!(!matches!(d.result, Ok(Translated::RouteConfig(ref r)) if r.inbound.is_some()));

    // RDS from elsewhere than ADS is NACKed.
    let mut l = l;
    edit_hcm(&mut l, |m| {
        if let Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) = &mut m.route_specifier {
            r.config_source = Some(Default::default());
        }
    });
    let e = translated(&l).unwrap_err();
    assert!(e.contains("rds.config_source: only ads and self"), "{e}");
}
