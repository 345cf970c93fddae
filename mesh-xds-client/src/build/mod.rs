//! Builders for the xDS resources a client needs: handy for tests, fake control planes and
//! examples. Each returns the proto; [`any`] wraps one for a response.
//!
//! ```
//! use mesh_xds_client::build;
//! let listener = build::api_listener_rds("greeter", "greeter-routes");
//! let wire = build::any(&listener);
//! assert!(wire.type_url.ends_with("envoy.config.listener.v3.Listener"));
//! ```

mod server;
mod tls;
pub use server::{
    downstream_mtls, downstream_mtls_sds, inbound_route_config, rbac_filter, server_listener,
    server_listener_with_rds, server_listener_with_routes,
};
pub use tls::{
    data_file, data_inline, mesh_tls, roots_secret, sds_over_ads, sds_tls, static_tls, tls_secret,
};

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use std::net::SocketAddr;

/// Wraps a message for a discovery response.
pub fn any<M: prost::Message + prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// An access log format writing a JSON object of `fields` (key, Envoy command operator or
/// literal), as Envoy's `json_format`.
///
/// ```
/// use mesh_xds_client::build;
/// let f = build::json_log_format(&[("code", "%RESPONSE_CODE%"), ("path", "%REQ(:PATH)%")]);
/// assert!(f.format.is_some());
/// ```
pub fn json_log_format(fields: &[(&str, &str)]) -> core::SubstitutionFormatString {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let json = Struct {
        fields: (fields.iter())
            .map(|(k, v)| {
                let v = Value {
                    kind: Some(Kind::StringValue((*v).to_owned())),
                };
                ((*k).to_owned(), v)
            })
            .collect(),
    };
    core::SubstitutionFormatString {
        format: Some(core::substitution_format_string::Format::JsonFormat(json)),
        ..Default::default()
    }
}

/// The router filter, last in every client filter chain.
pub fn router_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
            &Router::default(),
        ))),
        ..Default::default()
    }
}

fn api_listener(name: &str, spec: hcm::http_connection_manager::RouteSpecifier) -> lds::Listener {
    let manager = hcm::HttpConnectionManager {
        route_specifier: Some(spec),
        http_filters: vec![router_filter()],
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

/// An API listener whose routes come from RDS over ADS.
pub fn api_listener_rds(name: &str, route_config: &str) -> lds::Listener {
    api_listener(
        name,
        hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                    Default::default(),
                )),
                ..Default::default()
            }),
            route_config_name: route_config.into(),
        }),
    )
}

/// An API listener with its route config inline.
pub fn api_listener_inline(name: &str, rc: rds::RouteConfiguration) -> lds::Listener {
    api_listener(
        name,
        hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc),
    )
}

/// A route matching a path prefix, to one cluster.
pub fn route(prefix: &str, cluster: &str) -> rds::Route {
    rds::Route {
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(rds::route::Action::Route(rds::RouteAction {
            cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A header matcher: `exact` value, or present when `None`.
pub fn header(name: &str, exact: Option<&str>) -> rds::HeaderMatcher {
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        StringMatcher, string_matcher::MatchPattern,
    };
    use rds::header_matcher::HeaderMatchSpecifier as H;
    rds::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(match exact {
            Some(v) => H::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(v.into())),
                ..Default::default()
            }),
            None => H::PresentMatch(true),
        }),
        ..Default::default()
    }
}

/// A route matching a path prefix and `headers`, to one cluster.
pub fn header_route(prefix: &str, headers: Vec<rds::HeaderMatcher>, cluster: &str) -> rds::Route {
    let mut r = route(prefix, cluster);
    if let Some(m) = r.r#match.as_mut() {
        m.headers = headers;
    }
    r
}

/// A route config with one virtual host for `domains`.
pub fn route_config(
    name: &str,
    domains: &[&str],
    routes: Vec<rds::Route>,
) -> rds::RouteConfiguration {
    rds::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![rds::VirtualHost {
            name: format!("{name}-vh"),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A `load_balancing_policy` of one typed policy: extension `name` configured by `config`.
pub fn typed_lb_policy<M: prost::Message + prost::Name>(
    name: &str,
    config: &M,
) -> cds::LoadBalancingPolicy {
    cds::LoadBalancingPolicy {
        policies: vec![cds::load_balancing_policy::Policy {
            typed_extension_config: Some(core::TypedExtensionConfig {
                name: name.into(),
                typed_config: Some(any(config)),
            }),
        }],
    }
}

/// An EDS cluster speaking HTTP/2 (explicit `HttpProtocolOptions`, as Envoy wants it), round
/// robin.
pub fn eds_cluster(name: &str) -> cds::Cluster {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options as hpo,
    };
    let http2 = HttpProtocolOptions {
        upstream_protocol_options: Some(hpo::UpstreamProtocolOptions::ExplicitHttpConfig(
            hpo::ExplicitHttpConfig {
                protocol_config: Some(
                    hpo::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Default::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    cds::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            eds_config: Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                    Default::default(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&http2),
        )]
        .into(),
        ..Default::default()
    }
}

/// An aggregate cluster (`envoy.clusters.aggregate`, gRFC A37) over `clusters`, highest
/// priority first, with the `CLUSTER_PROVIDED` policy Envoy requires.
pub fn aggregate_cluster(name: &str, clusters: &[&str]) -> cds::Cluster {
    // envoy-types lacks `ClusterConfig`; its one field is `repeated string clusters = 1`.
    let mut value = Vec::new();
    for c in clusters {
        prost::encoding::string::encode(1, &c.to_string(), &mut value);
    }
    cds::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::ClusterType(
            cds::cluster::CustomClusterType {
                name: mesh_core::config::cluster::AGGREGATE_CLUSTER.into(),
                typed_config: Some(Any {
                    type_url: mesh_core::config::cluster::AGGREGATE_CONFIG_TYPE.into(),
                    value,
                }),
            },
        )),
        lb_policy: cds::cluster::LbPolicy::ClusterProvided as i32,
        ..Default::default()
    }
}

/// A `STRICT_DNS` cluster of `host:port` (IPv4 lookups), speaking HTTP/2 as [`eds_cluster`].
pub fn dns_cluster(name: &str, host: &str, port: u16) -> cds::Cluster {
    let mut c = eds_cluster(name);
    c.eds_cluster_config = None;
    c.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::Type(
        cds::cluster::DiscoveryType::StrictDns as i32,
    ));
    c.dns_lookup_family = cds::cluster::DnsLookupFamily::V4Only as i32;
    c.load_assignment = Some(eds::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![eds::LocalityLbEndpoints {
            lb_endpoints: vec![eds::LbEndpoint {
                host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
                    address: Some(core::Address {
                        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                            address: host.into(),
                            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                                u32::from(port),
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    c
}

/// A socket listener on `addr` whose HttpConnectionManager takes routes from RDS over ADS: the
/// shape Envoy (a proxy) needs where a client uses an API listener.
pub fn socket_listener(name: &str, addr: SocketAddr, route_config: &str) -> lds::Listener {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(core::ConfigSource {
                    config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                        Default::default(),
                    )),
                    resource_api_version: core::ApiVersion::V3 as i32,
                    ..Default::default()
                }),
                route_config_name: route_config.into(),
            },
        )),
        http_filters: vec![router_filter()],
        ..Default::default()
    };
    lds::Listener {
        name: name.into(),
        address: Some(socket_address(addr)),
        filter_chains: vec![lds::FilterChain {
            filters: vec![lds::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(lds::filter::ConfigType::TypedConfig(any(&manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An endpoint assignment: every address in one locality, healthy, priority 0.
pub fn assignment(cluster: &str, addrs: &[SocketAddr]) -> eds::ClusterLoadAssignment {
    eds::ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![eds::LocalityLbEndpoints {
            locality: Some(core::Locality {
                region: "local".into(),
                zone: "a".into(),
                ..Default::default()
            }),
            lb_endpoints: addrs.iter().map(|a| lb_endpoint(*a)).collect(),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One locality's endpoints at `priority`, with the locality's weight; `healthy[i]` says whether
/// endpoint `i` is HEALTHY (else UNHEALTHY).
pub fn locality(
    zone: &str,
    priority: u32,
    weight: u32,
    addrs: &[SocketAddr],
    healthy: &[bool],
) -> eds::LocalityLbEndpoints {
    eds::LocalityLbEndpoints {
        locality: Some(core::Locality {
            region: "local".into(),
            zone: zone.into(),
            ..Default::default()
        }),
        lb_endpoints: addrs
            .iter()
            .zip(healthy)
            .map(|(a, h)| {
                let mut e = lb_endpoint(*a);
                if !h {
                    e.health_status = core::HealthStatus::Unhealthy as i32;
                }
                e
            })
            .collect(),
        load_balancing_weight: Some(UInt32Value { value: weight }),
        priority,
        ..Default::default()
    }
}

/// `addr` as an Envoy socket address.
pub(crate) fn socket_address(addr: SocketAddr) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                addr.port().into(),
            )),
            ..Default::default()
        })),
    }
}

fn lb_endpoint(addr: SocketAddr) -> eds::LbEndpoint {
    eds::LbEndpoint {
        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
            address: Some(socket_address(addr)),
            ..Default::default()
        })),
        health_status: core::HealthStatus::Healthy as i32,
        ..Default::default()
    }
}

/// The fault filter with `config` (an empty `HTTPFault` injects nothing until a route overrides
/// it through `typed_per_filter_config`).
pub fn fault_filter(
    config: &envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault,
) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: "envoy.filters.http.fault".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// Replaces the HTTP filters of a listener built here (API or socket listener); the router
/// stays last.
pub fn set_http_filters(listener: &mut lds::Listener, mut filters: Vec<hcm::HttpFilter>) {
    filters.push(router_filter());
    edit_manager(listener, |m| m.http_filters = filters.clone());
}

/// Edits the HttpConnectionManager of a listener built here (API or socket listener), e.g.
/// to give it an `access_log`.
///
/// ```
/// use mesh_xds_client::build;
/// let mut l = build::api_listener_rds("web", "web-routes");
/// build::edit_manager(&mut l, |m| m.stat_prefix = "web".into());
/// ```
pub fn edit_manager(listener: &mut lds::Listener, f: impl Fn(&mut hcm::HttpConnectionManager)) {
    use prost::Message;
    let edit = |a: &mut Any| {
        if let Ok(mut m) = hcm::HttpConnectionManager::decode(&*a.value) {
            f(&mut m);
            *a = any(&m);
        }
    };
    if let Some(a) = listener
        .api_listener
        .as_mut()
        .and_then(|l| l.api_listener.as_mut())
    {
        edit(a);
    }
    for chain in &mut listener.filter_chains {
        for f in &mut chain.filters {
            if let Some(lds::filter::ConfigType::TypedConfig(a)) = &mut f.config_type {
                edit(a);
            }
        }
    }
}
