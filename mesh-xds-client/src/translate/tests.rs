//! Translation of hand-built protos: accepted shapes and rejected ones with their field paths.

use super::*;
use crate::build::{self, any};
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_core::{LbPolicy, Protocol};

fn listener(
    name: &str,
    spec: hcm::http_connection_manager::RouteSpecifier,
    filters: Vec<hcm::HttpFilter>,
) -> lds::Listener {
    let manager = hcm::HttpConnectionManager {
        route_specifier: Some(spec),
        http_filters: filters,
        ..Default::default()
    };
    lds::Listener {
        name: name.into(),
        api_listener: Some(lds::ApiListener {
            api_listener: Some(any(&manager)),
        }),
        ..Default::default()
    }
}

fn rds_spec(name: &str) -> hcm::http_connection_manager::RouteSpecifier {
    hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
        config_source: Some(core::ConfigSource {
            config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                Default::default(),
            )),
            ..Default::default()
        }),
        route_config_name: name.into(),
    })
}

fn rejected(ty: ResourceType, a: &Any) -> String {
    match decode(ty, a).unwrap().result {
        Ok(t) => panic!("expected a rejection, got {t:?}"),
        Err(e) => e,
    }
}

#[test]
fn api_listener_with_rds_and_inline_routes() {
    let l = listener(
        "greeter",
        rds_spec("greeter-routes"),
        vec![build::router_filter()],
    );
    let d = decode(ResourceType::Listener, &any(&l)).unwrap();
    assert_eq!(d.name, "greeter");
    let Ok(Translated::Listener(out)) = d.result else {
        panic!("{:?}", d.result)
    };
    assert_eq!(out.rds.as_deref(), Some("greeter-routes"));

    let inline = hcm::http_connection_manager::RouteSpecifier::RouteConfig(build::route_config(
        "",
        &["*"],
        vec![build::route("/", "c")],
    ));
    let l = listener("inline", inline, vec![build::router_filter()]);
    let Ok(Translated::Listener(out)) = decode(ResourceType::Listener, &any(&l)).unwrap().result
    else {
        panic!()
    };
    assert_eq!(
        out.route_config.unwrap().virtual_hosts[0].routes[0]
            .route
            .as_ref()
            .unwrap()
            .cluster
            .as_deref(),
        Some("c")
    );
}

#[test]
fn listener_rules_name_the_field() {
    let no_api = lds::Listener {
        name: "x".into(),
        ..Default::default()
    };
    assert_eq!(
        rejected(ResourceType::Listener, &any(&no_api)),
        "api_listener: field not present (clients use API listeners)"
    );

    let no_router = listener("x", rds_spec("r"), vec![]);
    assert_eq!(
        rejected(ResourceType::Listener, &any(&no_router)),
        "api_listener.api_listener.http_filters: must not be empty (the router filter is required)"
    );
    let unknown = hcm::HttpFilter {
        name: "envoy.filters.http.lua".into(),
        ..Default::default()
    };
    let l = listener(
        "x",
        rds_spec("r"),
        vec![unknown.clone(), build::router_filter()],
    );
    assert!(
        rejected(ResourceType::Listener, &any(&l))
            .starts_with("api_listener.api_listener.http_filters[0]: unsupported HTTP filter")
    );
    let optional = hcm::HttpFilter {
        is_optional: true,
        ..unknown
    };
    let l = listener("x", rds_spec("r"), vec![optional, build::router_filter()]);
    assert!(
        decode(ResourceType::Listener, &any(&l))
            .unwrap()
            .result
            .is_ok(),
        "optional filters are skipped"
    );
    let l = listener(
        "x",
        rds_spec("r"),
        vec![build::router_filter(), build::router_filter()],
    );
    assert_eq!(
        rejected(ResourceType::Listener, &any(&l)),
        "api_listener.api_listener.http_filters[0]: the router filter must be last"
    );
}

#[test]
fn route_errors_carry_paths_relative_to_the_resource() {
    let mut bad = build::route("/", "c");
    bad.r#match = Some(rds::RouteMatch {
        path_specifier: Some(rds::route_match::PathSpecifier::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "(".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    let rc = build::route_config("r", &["*"], vec![build::route("/ok", "c"), bad]);
    let err = rejected(ResourceType::RouteConfiguration, &any(&rc));
    assert!(
        err.starts_with("virtual_hosts[0].routes[1].match.safe_regex.regex: invalid regex \"(\""),
        "{err}"
    );

    let mut redirect = build::route("/", "c");
    redirect.action = Some(rds::route::Action::Redirect(rds::RedirectAction {
        port_redirect: 70000,
        ..Default::default()
    }));
    let err = rejected(
        ResourceType::RouteConfiguration,
        &any(&build::route_config("r", &["*"], vec![redirect])),
    );
    assert_eq!(
        err,
        "virtual_hosts[0].routes[0].redirect.port_redirect: must be a port"
    );
}

#[test]
#[allow(deprecated)]
fn weighted_clusters_and_header_matchers_translate() {
    let mut r = build::route("/", "c");
    r.r#match.as_mut().unwrap().headers = vec![rds::HeaderMatcher {
        name: "X-Canary".into(),
        header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::ExactMatch(
            "1".into(),
        )),
        ..Default::default()
    }];
    r.action = Some(rds::route::Action::Route(rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::WeightedClusters(
            rds::WeightedCluster {
                clusters: vec![
                    rds::weighted_cluster::ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: 9 }),
                        ..Default::default()
                    },
                    rds::weighted_cluster::ClusterWeight {
                        name: "b".into(),
                        weight: Some(UInt32Value { value: 1 }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        )),
        timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        ..Default::default()
    }));
    let Ok(Translated::RouteConfig(rc)) = decode(
        ResourceType::RouteConfiguration,
        &any(&build::route_config("r", &["*"], vec![r])),
    )
    .unwrap()
    .result
    else {
        panic!()
    };
    let route = &rc.virtual_hosts[0].routes[0];
    assert_eq!(route.matcher.headers[0].name, "x-canary");
    assert_eq!(route.matcher.headers[0].exact_match.as_deref(), Some("1"));
    let action = route.route.as_ref().unwrap();
    assert_eq!(action.weighted_clusters.as_ref().unwrap().clusters.len(), 2);
    assert_eq!(action.timeout, Some(std::time::Duration::from_millis(1500)));
}

fn eds_cluster(name: &str) -> cds::Cluster {
    cds::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            service_name: format!("{name}-eds"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
#[allow(deprecated)]
fn clusters_translate_and_unsupported_values_are_refused() {
    let mut c = eds_cluster("web");
    c.http2_protocol_options = Some(Default::default());
    c.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 0,
        nanos: 250_000_000,
    });
    let Ok(Translated::Cluster(out)) = decode(ResourceType::Cluster, &any(&c)).unwrap().result
    else {
        panic!()
    };
    assert_eq!(out.eds_service_name.as_deref(), Some("web-eds"));
    assert_eq!(out.protocol, Protocol::Http2);
    assert_eq!(out.connect_timeout.as_millis(), 250);

    let mut ring = eds_cluster("ring");
    ring.lb_policy = cds::cluster::LbPolicy::ClusterProvided as i32;
    assert_eq!(
        rejected(ResourceType::Cluster, &any(&ring)),
        "lb_policy: ClusterProvided is not supported yet"
    );

    let mut dns = eds_cluster("dns");
    dns.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::Type(
        cds::cluster::DiscoveryType::StrictDns as i32,
    ));
    assert_eq!(
        rejected(ResourceType::Cluster, &any(&dns)),
        "load_assignment: field not present (required for DNS clusters)"
    );
    let mut named = build::assignment("dns", &["127.0.0.1:8443".parse().unwrap()]);
    if let Some(eds::lb_endpoint::HostIdentifier::Endpoint(e)) =
        &mut named.endpoints[0].lb_endpoints[0].host_identifier
        && let Some(core::address::Address::SocketAddress(sa)) =
            e.address.as_mut().and_then(|a| a.address.as_mut())
    {
        sa.address = "api.example.com".into();
    }
    dns.load_assignment = Some(named);
    dns.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::Type(
        cds::cluster::DiscoveryType::LogicalDns as i32,
    ));
    let Ok(Translated::Cluster(out)) = decode(ResourceType::Cluster, &any(&dns)).unwrap().result
    else {
        panic!()
    };
    assert_eq!(out.discovery, mesh_core::DiscoveryType::LogicalDns);
    assert_eq!(
        (
            out.dns_endpoints[0].hostname.as_str(),
            out.dns_endpoints[0].port
        ),
        ("api.example.com", 8443)
    );

    let mut tls = eds_cluster("tls");
    tls.transport_socket = Some(Default::default());
    assert_eq!(
        rejected(ResourceType::Cluster, &any(&tls)),
        "transport_socket.typed_config: must be set (the TLS context)"
    );

    // gRFC A47: an xdstp: cluster names its endpoint resource.
    let mut fed = eds_cluster("xdstp://b/envoy.config.cluster.v3.Cluster/web");
    fed.eds_cluster_config
        .as_mut()
        .unwrap()
        .service_name
        .clear();
    assert_eq!(
        rejected(ResourceType::Cluster, &any(&fed)),
        "eds_cluster_config.service_name: must be set when the cluster has an xdstp: name"
    );
}

fn endpoint(addr: &str, port: u32) -> eds::LbEndpoint {
    eds::LbEndpoint {
        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: addr.into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: core::HealthStatus::Healthy as i32,
        load_balancing_weight: Some(UInt32Value { value: 3 }),
        ..Default::default()
    }
}

/// An endpoint as istiod sends it: `filter_metadata.istio.workload`, and a non-string value
/// beside it.
fn istio_endpoint() -> eds::LbEndpoint {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let value = |kind| Value { kind: Some(kind) };
    let fields = [
        (
            "workload".to_owned(),
            value(Kind::StringValue(
                "echo-v1;default;echo;v1;Kubernetes".into(),
            )),
        ),
        ("weight".to_owned(), value(Kind::NumberValue(1.0))),
    ];
    eds::LbEndpoint {
        metadata: Some(core::Metadata {
            filter_metadata: [(
                "istio".to_owned(),
                Struct {
                    fields: fields.into_iter().collect(),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        ..endpoint("127.0.0.1", 8080)
    }
}

#[test]
fn endpoints_translate_with_health_weights_and_localities() {
    let cla = eds::ClusterLoadAssignment {
        cluster_name: "web".into(),
        endpoints: vec![eds::LocalityLbEndpoints {
            locality: Some(core::Locality {
                region: "r".into(),
                zone: "z".into(),
                ..Default::default()
            }),
            lb_endpoints: vec![istio_endpoint(), endpoint("::1", 9090)],
            load_balancing_weight: Some(UInt32Value { value: 5 }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let Ok(Translated::Endpoints(out)) = decode(ResourceType::ClusterLoadAssignment, &any(&cla))
        .unwrap()
        .result
    else {
        panic!()
    };
    let loc = &out.endpoints[0];
    assert_eq!(
        (loc.locality.zone.as_str(), loc.load_balancing_weight),
        ("z", Some(5))
    );
    assert_eq!(loc.lb_endpoints[1].address, "[::1]:9090".parse().unwrap());
    assert_eq!(
        loc.lb_endpoints[0].health_status,
        mesh_core::HealthStatus::Healthy
    );
    assert_eq!(loc.lb_endpoints[0].load_balancing_weight, Some(3));
    // Istio's workload descriptor is kept (string values only), for metric labels.
    assert_eq!(
        loc.lb_endpoints[0].metadata.istio_workload(),
        Some("echo-v1;default;echo;v1;Kubernetes")
    );
    assert_eq!(
        loc.lb_endpoints[0].metadata.filter_metadata["istio"].len(),
        1
    );
    assert!(loc.lb_endpoints[1].metadata.is_empty());

    let bad = eds::ClusterLoadAssignment {
        cluster_name: "web".into(),
        endpoints: vec![eds::LocalityLbEndpoints {
            lb_endpoints: vec![endpoint("web.internal", 80)],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        rejected(ResourceType::ClusterLoadAssignment, &any(&bad)),
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"web.internal\" is not an IP address (DNS names are not supported yet)"
    );
}

#[test]
fn undecodable_or_mistyped_resources_are_top_level_errors() {
    let garbage = Any {
        type_url: ResourceType::Cluster.type_url().into(),
        value: vec![0xff, 0xff, 0xff],
    };
    assert!(decode(ResourceType::Cluster, &garbage).is_err());
    let mistyped = any(&eds_cluster("c"));
    assert!(
        decode(ResourceType::Listener, &mistyped)
            .unwrap_err()
            .0
            .contains("in a LDS response")
    );
    let unnamed = cds::Cluster::default();
    assert!(decode(ResourceType::Cluster, &any(&unnamed)).is_err());
}

#[test]
fn traffic_policy_translates_from_rds_lds_and_cds() {
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;
    let mut r = build::route("/", "c");
    let Some(rds::route::Action::Route(a)) = &mut r.action else {
        panic!()
    };
    a.retry_policy = Some(rds::RetryPolicy {
        retry_on: "5xx,unavailable".into(),
        num_retries: Some(UInt32Value { value: 4 }),
        per_try_timeout: Some(PbDuration {
            seconds: 0,
            nanos: 250_000_000,
        }),
        retriable_status_codes: vec![409],
        ..Default::default()
    });
    a.hedge_policy = Some(rds::HedgePolicy {
        hedge_on_per_try_timeout: true,
        ..Default::default()
    });
    a.prefix_rewrite = "/v2".into();
    a.request_mirror_policies = vec![rds::route_action::RequestMirrorPolicy {
        cluster: "shadow".into(),
        ..Default::default()
    }];
    let abort = fault::HttpFault {
        abort: Some(fault::FaultAbort {
            percentage: Some(FractionalPercent {
                numerator: 5,
                denominator: 1,
            }),
            error_type: Some(fault::fault_abort::ErrorType::GrpcStatus(14)),
            ..Default::default()
        }),
        ..Default::default()
    };
    r.typed_per_filter_config = [
        ("envoy.filters.http.fault".to_owned(), any(&abort)),
        (
            "disabled".to_owned(),
            any(&rds::FilterConfig {
                disabled: true,
                ..Default::default()
            }),
        ),
        (
            "unknown-optional".to_owned(),
            any(&rds::FilterConfig {
                config: Some(any(&cds::Cluster::default())),
                is_optional: true,
                ..Default::default()
            }),
        ),
    ]
    .into();
    let rc = build::route_config("r", &["*"], vec![r]);
    let Ok(Translated::RouteConfig(out)) = decode(ResourceType::RouteConfiguration, &any(&rc))
        .unwrap()
        .result
    else {
        panic!()
    };
    let route = &out.virtual_hosts[0].routes[0];
    let action = route.route.as_ref().unwrap();
    let retry = action.retry_policy.as_ref().unwrap();
    assert_eq!(
        (
            retry.retry_on.as_str(),
            retry.max_retries(),
            retry.per_try_timeout
        ),
        (
            "5xx,unavailable",
            4,
            Some(std::time::Duration::from_millis(250))
        )
    );
    assert!(
        action
            .hedge_policy
            .as_ref()
            .unwrap()
            .hedge_on_per_try_timeout
    );
    assert_eq!(action.prefix_rewrite.as_deref(), Some("/v2"));
    assert_eq!(action.request_mirror_policies[0].cluster, "shadow");
    let f = route.typed_per_filter_config["envoy.filters.http.fault"]
        .fault
        .as_ref()
        .unwrap();
    let a = f.abort.as_ref().unwrap();
    assert_eq!(
        (a.grpc_status, a.percentage.unwrap().numerator),
        (Some(14), 5)
    );
    assert_eq!(
        a.percentage.unwrap().denominator,
        mesh_core::policy::DenominatorType::TenThousand
    );
    assert!(route.typed_per_filter_config["disabled"].disabled);
    assert!(
        !route
            .typed_per_filter_config
            .contains_key("unknown-optional")
    );

    // Cluster: circuit breakers and outlier detection.
    let mut c = build::eds_cluster("c");
    c.circuit_breakers = Some(cds::CircuitBreakers {
        thresholds: vec![cds::circuit_breakers::Thresholds {
            max_requests: Some(UInt32Value { value: 7 }),
            ..Default::default()
        }],
        ..Default::default()
    });
    c.outlier_detection = Some(cds::OutlierDetection {
        consecutive_5xx: Some(UInt32Value { value: 3 }),
        ..Default::default()
    });
    let Ok(Translated::Cluster(out)) = decode(ResourceType::Cluster, &any(&c)).unwrap().result
    else {
        panic!()
    };
    let cb = out.circuit_breakers.unwrap();
    assert_eq!(cb.default_priority().unwrap().max_requests, Some(7));
    assert_eq!(out.outlier_detection.unwrap().consecutive_5xx(), 3);
}

#[test]
fn unsupported_policy_shapes_are_refused_with_paths() {
    let mut r = build::route("/", "c");
    r.typed_per_filter_config = [("mystery".to_owned(), any(&cds::Cluster::default()))].into();
    let Some(rds::route::Action::Route(a)) = &mut r.action else {
        panic!()
    };
    a.retry_policy = Some(rds::RetryPolicy {
        retry_on: "5xx,sometimes".into(),
        ..Default::default()
    });
    let err = rejected(
        ResourceType::RouteConfiguration,
        &any(&build::route_config("r", &["*"], vec![r])),
    );
    assert!(
        err.contains("virtual_hosts[0].routes[0].typed_per_filter_config.mystery: unsupported filter config type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        "{err}"
    );

    // A CORS policy on a route (istiod's VirtualService corsPolicy) is accepted and ignored,
    // as Envoy does for a filter its chain lacks; one that does not decode is refused.
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    let mut r = build::route("/", "c");
    r.typed_per_filter_config = [(
        "envoy.filters.http.cors".to_owned(),
        any(&CorsPolicy::default()),
    )]
    .into();
    let rc = any(&build::route_config("r", &["*"], vec![r.clone()]));
    assert!(
        decode(ResourceType::RouteConfiguration, &rc)
            .unwrap()
            .result
            .is_ok()
    );
    r.typed_per_filter_config
        .get_mut("envoy.filters.http.cors")
        .unwrap()
        .value = vec![0xff];
    let err = rejected(
        ResourceType::RouteConfiguration,
        &any(&build::route_config("r", &["*"], vec![r])),
    );
    assert!(
        err.contains("typed_per_filter_config.envoy.filters.http.cors: cannot decode CorsPolicy"),
        "{err}"
    );

    // A fault filter in the listener is translated; an unknown required filter is refused.
    let mut l = build::api_listener_rds("l", "r");
    build::set_http_filters(
        &mut l,
        vec![
            build::fault_filter(&Default::default()),
            hcm::HttpFilter {
                name: "envoy.filters.http.lua".into(),
                ..Default::default()
            },
        ],
    );
    let err = rejected(ResourceType::Listener, &any(&l));
    assert!(
        err.starts_with("api_listener.api_listener.http_filters[1]: unsupported HTTP filter \"envoy.filters.http.lua\""),
        "{err}"
    );
}

/// A `load_balancing_policy` list of typed configs.
fn typed_policies(policies: Vec<Any>) -> Option<cds::LoadBalancingPolicy> {
    Some(cds::LoadBalancingPolicy {
        policies: policies
            .into_iter()
            .map(|typed| cds::load_balancing_policy::Policy {
                typed_extension_config: Some(core::TypedExtensionConfig {
                    name: "policy".into(),
                    typed_config: Some(typed),
                }),
            })
            .collect(),
    })
}

#[test]
fn typed_lb_policies_take_the_first_supported_entry() {
    use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
    use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration, FloatValue};
    use lbp::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin;
    let translated = |c: &cds::Cluster| match decode(ResourceType::Cluster, &any(c)).unwrap().result
    {
        Ok(Translated::Cluster(out)) => out,
        other => panic!("{other:?}"),
    };
    // The first entry we support wins.
    let mut c = eds_cluster("wrr");
    c.load_balancing_policy = typed_policies(vec![
        any(&cds::Cluster::default()),
        any(&ClientSideWeightedRoundRobin {
            blackout_period: Some(PbDuration {
                seconds: 0,
                nanos: 0,
            }),
            weight_update_period: Some(PbDuration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            error_utilization_penalty: Some(FloatValue { value: 2.0 }),
            metric_names_for_computing_utilization: vec!["named_metrics.gpu".into()],
            ..Default::default()
        }),
    ]);
    let out = translated(&c);
    assert_eq!(out.lb_policy, LbPolicy::ClientSideWeightedRoundRobin);
    let w = out.client_side_weighted_round_robin_lb_config.unwrap();
    assert_eq!(
        w.periods(),
        (
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(180),
            std::time::Duration::from_millis(500)
        )
    );
    assert_eq!(w.error_utilization_penalty.map(|p| p.0), Some(2.0));
    assert_eq!(
        w.metric_names_for_computing_utilization,
        ["named_metrics.gpu"]
    );

    // Unknown types are skipped; our own peak-EWMA type is recognised.
    c.load_balancing_policy = typed_policies(vec![
        any(&cds::Cluster::default()),
        Any {
            type_url: format!("type.googleapis.com/{}", cluster::PEAK_EWMA_TYPE),
            value: Vec::new(),
        },
    ]);
    assert_eq!(translated(&c).lb_policy, LbPolicy::PeakEwma);

    // Out-of-band reports (gRFC A51), with the period asked for.
    c.load_balancing_policy = typed_policies(vec![any(&ClientSideWeightedRoundRobin {
        enable_oob_load_report: Some(BoolValue { value: true }),
        oob_reporting_period: Some(PbDuration {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    })]);
    let w = translated(&c)
        .client_side_weighted_round_robin_lb_config
        .unwrap();
    assert_eq!(w.oob_period(), Some(std::time::Duration::from_secs(2)));

    // Nothing supported: the cluster is refused, with the reason.
    c.load_balancing_policy = typed_policies(vec![any(&cds::Cluster::default())]);
    assert_eq!(
        rejected(ResourceType::Cluster, &any(&c)),
        "load_balancing_policy: no supported policy in the list"
    );
    // A negative penalty is refused with its path.
    c.load_balancing_policy = typed_policies(vec![any(&ClientSideWeightedRoundRobin {
        error_utilization_penalty: Some(FloatValue { value: -1.0 }),
        ..Default::default()
    })]);
    assert_eq!(
        rejected(ResourceType::Cluster, &any(&c)),
        "client_side_weighted_round_robin_lb_config.error_utilization_penalty: -1 must be a finite number >= 0"
    );
}

#[test]
fn lrs_server_self_asks_for_load_reports_and_another_server_is_refused() {
    use envoy_types::pb::envoy::config::core::v3 as core;
    let mut c = eds_cluster("web");
    c.lrs_server = Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Self_(
            Default::default(),
        )),
        ..Default::default()
    });
    match decode(ResourceType::Cluster, &build::any(&c))
        .unwrap()
        .result
    {
        Ok(Translated::Cluster(t)) => assert!(t.lrs_report),
        other => panic!("{other:?}"),
    }
    c.lrs_server = Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        ..Default::default()
    });
    assert!(
        rejected(ResourceType::Cluster, &build::any(&c))
            .contains("lrs_server: only `self` is supported"),
    );
}
