//! Server listeners (gRFC A36) from xDS: Istio's inbound shape translates; what A36 and A41
//! refuse is NACKed with its field path.

use super::{Context, ResourceType, Translated, decode_in};
use crate::build::{any, downstream_mtls, rbac_filter, server_listener};
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;

pub(super) const NAME: &str = "xds.istio.io/grpc/lds/inbound/10.0.0.7:8080";

pub(super) fn ctx() -> Context {
    Context {
        certificate_providers: ["default".to_owned()].into(),
        ..Context::default()
    }
}

pub(super) fn istio() -> lds::Listener {
    server_listener(
        NAME,
        "10.0.0.7:8080".parse().unwrap(),
        Some(downstream_mtls("default")),
        vec![
            rbac_filter("envoy.filters.http.rbac.DENY", &Rbac::default()),
            rbac_filter("envoy.filters.http.rbac", &Rbac::default()),
        ],
    )
}

pub(super) fn translated(l: &lds::Listener) -> Result<mesh_core::config::server::Server, String> {
    let d = decode_in(ResourceType::Listener, &any(l), &ctx()).unwrap();
    d.result.map(|t| match t {
        Translated::Server(s) => *s,
        other => panic!("not a server: {other:?}"),
    })
}

/// The chain's HCM, to edit it.
pub(super) fn edit_hcm(l: &mut lds::Listener, f: impl FnOnce(&mut hcm::HttpConnectionManager)) {
    let filter = &mut l.filter_chains[0].filters[0];
    let Some(lds::filter::ConfigType::TypedConfig(a)) = &mut filter.config_type else {
        unreachable!()
    };
    let mut m = hcm::HttpConnectionManager::decode(&*a.value).unwrap();
    f(&mut m);
    *a = any(&m);
}

#[test]
fn istio_inbound_listener_is_a_server() {
    let s = translated(&istio()).unwrap();
    assert_eq!(s.name, NAME);
    assert_eq!(s.address.as_deref(), Some("10.0.0.7:8080"));
    let tls = s.transport_socket.unwrap();
    assert!(tls.require_client_certificate);
    let names: Vec<&str> = s.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.rbac.DENY", "envoy.filters.http.rbac"]
    );
    assert_eq!(s.limits, mesh_core::config::server::Limits::default());
    // Envoy's limits on callers carry over.
    let mut l = istio();
    edit_hcm(&mut l, |m| {
        m.max_request_headers_kb =
            Some(envoy_types::pb::google::protobuf::UInt32Value { value: 16 });
        m.request_headers_timeout = Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 3,
            nanos: 0,
        });
    });
    let limits = translated(&l).unwrap().limits;
    assert_eq!(limits.max_request_headers_kb, 16);
    assert_eq!(
        limits.request_headers_timeout,
        std::time::Duration::from_secs(3)
    );
    // Plaintext (PERMISSIVE for proxyless): no transport socket.
    let plain = server_listener(NAME, "10.0.0.7:8080".parse().unwrap(), None, vec![]);
    assert!(translated(&plain).unwrap().transport_socket.is_none());
}

#[test]
fn what_a36_refuses_is_nacked_with_field_paths() {
    let mut l = istio();
    l.listener_filters.push(Default::default());
    l.use_original_dst = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
    let e = translated(&l).unwrap_err();
    assert!(
        e.contains("listener_filters: must be empty (gRFC A36)"),
        "{e}"
    );
    assert!(e.contains("use_original_dst: is not supported"), "{e}");

    // Two chains that both match every connection tie (after a dropped one: the paths are
    // the listener's).
    let mut l = istio();
    let mut sni = l.filter_chains[0].clone();
    sni.filter_chain_match = Some(lds::FilterChainMatch {
        server_names: vec!["a.example".into()],
        ..Default::default()
    });
    l.filter_chains.insert(0, sni);
    l.filter_chains.push(l.filter_chains[1].clone());
    let e = translated(&l).unwrap_err();
    assert!(
        e.contains(
            "filter_chains[2].filter_chain_match: matches the same connections as filter_chains[1]"
        ),
        "{e}"
    );

    // A chain for a server name never matches in-process: the default chain is used.
    let mut l = istio();
    let mut only_sni = l.filter_chains[0].clone();
    only_sni.filter_chain_match = Some(lds::FilterChainMatch {
        server_names: vec!["a.example".into()],
        ..Default::default()
    });
    l.default_filter_chain = Some(l.filter_chains[0].clone());
    l.filter_chains = vec![only_sni];
    assert!(translated(&l).is_ok());

    // The router must be last; other filters are refused unless optional; A41's HCM rules.
    let mut l = istio();
    edit_hcm(&mut l, |m| {
        m.http_filters.reverse();
        m.xff_num_trusted_hops = 1;
    });
    let e = translated(&l).unwrap_err();
    let p = "filter_chains[0].filters[0].typed_config";
    assert!(
        e.contains(&format!(
            "{p}.http_filters[0]: the router filter must be last"
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("{p}.xff_num_trusted_hops: must be 0 (gRFC A41)")),
        "{e}"
    );

    // An RBAC filter that breaks A41 names its place in the listener.
    let mut l = istio();
    let bad = Rbac {
        rules: Some(envoy_types::pb::envoy::config::rbac::v3::Rbac {
            policies: [(
                "p".to_owned(),
                envoy_types::pb::envoy::config::rbac::v3::Policy {
                    condition: Some(Default::default()),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    edit_hcm(&mut l, |m| {
        m.http_filters[1] = rbac_filter("envoy.filters.http.rbac", &bad)
    });
    let e = translated(&l).unwrap_err();
    assert!(
        e.contains(&format!(
            "{p}.http_filters[1].typed_config.rules.policies.p.condition: CEL"
        )),
        "{e}"
    );
}

#[test]
fn inbound_routes_and_their_overrides_translate() {
    use crate::build::server_listener_with_routes;
    use envoy_types::pb::envoy::config::route::v3 as rds;
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute;
    let route =
        |prefix: &str,
         action: rds::route::Action,
         per_filter: Vec<(&str, envoy_types::pb::google::protobuf::Any)>| rds::Route {
            r#match: Some(rds::RouteMatch {
                path_specifier: Some(rds::route_match::PathSpecifier::Prefix(prefix.into())),
                ..Default::default()
            }),
            action: Some(action),
            typed_per_filter_config: per_filter
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..Default::default()
        };
    let nf = || rds::route::Action::NonForwardingAction(Default::default());
    let disabled = any(&rds::FilterConfig {
        disabled: true,
        ..Default::default()
    });
    let listener = |extra: Vec<rds::Route>| {
        let mut routes = vec![
            route(
                "/open",
                nf(),
                vec![("envoy.filters.http.rbac", disabled.clone())],
            ),
            route(
                "/health",
                nf(),
                vec![("envoy.filters.http.rbac", any(&RbacPerRoute::default()))],
            ),
            route(
                "/fwd",
                rds::route::Action::Route(rds::RouteAction {
                    cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(
                        "c".into(),
                    )),
                    ..Default::default()
                }),
                vec![],
            ),
            route("/", nf(), vec![]),
        ];
        routes.extend(extra);
        server_listener_with_routes(
            NAME,
            "10.0.0.7:8080".parse().unwrap(),
            Some(downstream_mtls("default")),
            vec![rbac_filter("envoy.filters.http.rbac", &Rbac::default())],
            routes,
        )
    };
    let s = translated(&listener(vec![])).unwrap();
    let want: mesh_core::config::inbound::InboundRoutes = serde_saphyr::from_str(
        r#"
virtual_hosts:
  - name: inbound
    domains: ["*"]
    routes:
      - match: { prefix: /open }
        typed_per_filter_config: { envoy.filters.http.rbac: { disabled: true } }
      - match: { prefix: /health }
        typed_per_filter_config: { envoy.filters.http.rbac: { rbac: {} } }
      - match: { prefix: /fwd }
        forwarding: true
      - match: { prefix: / }
"#,
    )
    .unwrap();
    assert_eq!(s.route_config, Some(want));

    // An override of a filter type servers do not run is NACKed with its path.
    let bad = listener(vec![route(
        "/x",
        nf(),
        vec![("envoy.filters.http.fault", any(&Rbac::default()))],
    )]);
    let e = translated(&bad).unwrap_err();
    assert!(
        e.contains("routes[4].typed_per_filter_config.envoy.filters.http.fault: unsupported per-route config"),
        "{e}"
    );
}

#[test]
fn a_local_rate_limit_filter_translates_for_servers() {
    use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
    use envoy_types::pb::envoy::r#type::v3::TokenBucket;
    let rl = LocalRateLimit {
        stat_prefix: "inbound".into(),
        token_bucket: Some(TokenBucket {
            max_tokens: 5,
            tokens_per_fill: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 5 }),
            fill_interval: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 1,
                nanos: 0,
            }),
        }),
        ..Default::default()
    };
    let filter = hcm::HttpFilter {
        name: "envoy.filters.http.local_ratelimit".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(&rl))),
        ..Default::default()
    };
    let l = server_listener(
        NAME,
        "10.0.0.7:8080".parse().unwrap(),
        Some(downstream_mtls("default")),
        vec![
            filter,
            rbac_filter("envoy.filters.http.rbac", &Rbac::default()),
        ],
    );
    let s = translated(&l).unwrap();
    let got = s.local_ratelimit().expect("translated");
    assert_eq!(got.token_bucket.as_ref().unwrap().max_tokens, 5);
    assert_eq!(s.http_filters[0].name, "envoy.filters.http.local_ratelimit");
}

#[test]
fn a_fault_filter_translates_for_servers_after_rbac_only() {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
    let fault = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(
                envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier::FixedDelay(
                    envoy_types::pb::google::protobuf::Duration { seconds: 2, nanos: 0 },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let filter = hcm::HttpFilter {
        name: "envoy.filters.http.fault".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(&fault))),
        ..Default::default()
    };
    let rbac = rbac_filter("envoy.filters.http.rbac", &Rbac::default());
    let at = "10.0.0.7:8080".parse().unwrap();
    let l = server_listener(
        NAME,
        at,
        Some(downstream_mtls("default")),
        vec![rbac.clone(), filter.clone()],
    );
    let s = translated(&l).unwrap();
    let got = s.fault().expect("translated");
    assert_eq!(
        got.delay.as_ref().unwrap().fixed_delay,
        Some(std::time::Duration::from_secs(2))
    );
    // Before RBAC it would delay requests RBAC then refuses: NACKed, with the reason.
    let l = server_listener(
        NAME,
        at,
        Some(downstream_mtls("default")),
        vec![filter.clone(), rbac.clone()],
    );
    let e = translated(&l).unwrap_err().to_string();
    assert!(
        e.contains("the RBAC filters must come before the fault filter"),
        "{e}"
    );

    // A route's own HTTPFault (Envoy's per-route config of the fault filter) overrides the
    // filter's config on that route.
    use envoy_types::pb::envoy::config::route::v3 as rds;
    let mut own = fault.clone();
    own.delay = None;
    own.abort = Some(envoy_types::pb::envoy::extensions::filters::http::fault::v3::FaultAbort {
        error_type: Some(
            envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType::HttpStatus(503),
        ),
        ..Default::default()
    });
    let route = rds::Route {
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/flaky".into())),
            ..Default::default()
        }),
        action: Some(rds::route::Action::NonForwardingAction(Default::default())),
        typed_per_filter_config: [("envoy.filters.http.fault".to_owned(), any(&own))].into(),
        ..Default::default()
    };
    let l = crate::build::server_listener_with_routes(
        NAME,
        at,
        Some(downstream_mtls("default")),
        vec![rbac, filter],
        vec![route],
    );
    let s = translated(&l).unwrap();
    let routes = s.route_config.unwrap();
    let o = &routes.virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.fault"];
    let abort = o.fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(abort.http_status, Some(503));
}
