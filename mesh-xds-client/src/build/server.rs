//! Server listeners (gRFC A36) as istiod's gRPC generator writes them: one filter chain with
//! the mesh mTLS `DownstreamTlsContext`, an HttpConnectionManager with an inline route
//! (`*`, prefix `/`, non-forwarding action) and the RBAC filters before the router.

use super::{any, router_filter};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use std::net::SocketAddr;

/// Istio STRICT's server TLS: identity and client roots from provider `instance`, a client
/// certificate required.
pub fn downstream_mtls(instance: &str) -> core::TransportSocket {
    let provider = tls::CertificateProviderPluginInstance {
        instance_name: instance.into(),
        certificate_name: String::new(),
    };
    requiring_client_certificates(tls::CommonTlsContext {
        tls_certificate_provider_instance: Some(provider.clone()),
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::ValidationContext(
                tls::CertificateValidationContext {
                    ca_certificate_provider_instance: Some(provider),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    })
}

/// Envoy's way for servers: the certificate and the client roots as SDS secrets on the ADS
/// stream (`cert_secret`, `roots_secret`), a client certificate required.
pub fn downstream_mtls_sds(cert_secret: &str, roots_secret: &str) -> core::TransportSocket {
    requiring_client_certificates(tls::CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![super::sds_over_ads(cert_secret)],
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                super::sds_over_ads(roots_secret),
            ),
        ),
        ..Default::default()
    })
}

fn requiring_client_certificates(common: tls::CommonTlsContext) -> core::TransportSocket {
    let context = tls::DownstreamTlsContext {
        require_client_certificate: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: true,
        }),
        common_tls_context: Some(common),
        ..Default::default()
    };
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            &context,
        ))),
    }
}

/// The RBAC HTTP filter `name` with config `rbac`.
pub fn rbac_filter(name: &str, rbac: &Rbac) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(rbac))),
        ..Default::default()
    }
}

/// A server listener `name` on `addr`: one chain with `tls` (none: plaintext), `filters`
/// before the router, and the inline non-forwarding route.
pub fn server_listener(
    name: &str,
    addr: SocketAddr,
    tls: Option<core::TransportSocket>,
    filters: Vec<hcm::HttpFilter>,
) -> lds::Listener {
    let route = rds::Route {
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(rds::route::Action::NonForwardingAction(Default::default())),
        ..Default::default()
    };
    server_listener_with_routes(name, addr, tls, filters, vec![route])
}

/// [`server_listener`] whose inline route config's one virtual host (`*`) has `routes`
/// (per-route filter overrides, forwarding actions, partial coverage).
pub fn server_listener_with_routes(
    name: &str,
    addr: SocketAddr,
    tls: Option<core::TransportSocket>,
    filters: Vec<hcm::HttpFilter>,
    routes: Vec<rds::Route>,
) -> lds::Listener {
    let inline = inbound_route_config("inbound", routes);
    use hcm::http_connection_manager::RouteSpecifier;
    with_routes(
        name,
        addr,
        tls,
        filters,
        RouteSpecifier::RouteConfig(inline),
    )
}

/// [`server_listener`] whose routes come by RDS from route config `route_config_name`
/// (over ADS; see [`inbound_route_config`]).
pub fn server_listener_with_rds(
    name: &str,
    addr: SocketAddr,
    tls: Option<core::TransportSocket>,
    filters: Vec<hcm::HttpFilter>,
    route_config_name: &str,
) -> lds::Listener {
    use hcm::http_connection_manager::RouteSpecifier;
    let rds = hcm::Rds {
        config_source: Some(core::ConfigSource {
            config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                Default::default(),
            )),
            resource_api_version: core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
        route_config_name: route_config_name.into(),
    };
    with_routes(name, addr, tls, filters, RouteSpecifier::Rds(rds))
}

/// A server's route config `name`: one virtual host (`*`) with `routes`.
pub fn inbound_route_config(name: &str, routes: Vec<rds::Route>) -> rds::RouteConfiguration {
    rds::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![rds::VirtualHost {
            name: "inbound".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn with_routes(
    name: &str,
    addr: SocketAddr,
    tls: Option<core::TransportSocket>,
    mut filters: Vec<hcm::HttpFilter>,
    routes: hcm::http_connection_manager::RouteSpecifier,
) -> lds::Listener {
    filters.push(router_filter());
    let manager = hcm::HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(routes),
        http_filters: filters,
        ..Default::default()
    };
    lds::Listener {
        name: name.into(),
        address: Some(super::socket_address(addr)),
        filter_chains: vec![lds::FilterChain {
            name: if tls.is_some() {
                "inbound-mtls".into()
            } else {
                "inbound-plaintext".into()
            },
            filters: vec![lds::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(lds::filter::ConfigType::TypedConfig(any(&manager))),
            }],
            transport_socket: tls,
            ..Default::default()
        }],
        ..Default::default()
    }
}
