//! A server `Listener` (gRFC A36: a socket address, filter chains, no API listener) → the
//! mesh's [`Server`].
//!
//! NACKed as A36 says: `listener_filters`, `use_original_dst`, a chain whose network filters
//! are not exactly one HttpConnectionManager, an HCM filter list not ending in the router, and
//! (A41) `xff_num_trusted_hops` or IP detection extensions. Chains that can never match
//! in-process (`destination_port`, `server_names`, `application_protocols`, a transport
//! protocol other than `raw_buffer`) are dropped, as gRPC drops them. One chain left that
//! takes every connection becomes the server's only chain (Istio sends such listeners);
//! otherwise the chains are kept with their matches, chosen per connection
//! ([`mesh_core::config::filter_chain`]), the `default_filter_chain` becoming the top-level
//! settings (none: unmatched connections are closed). Chains that could tie are NACKed.
//! `direct_source_prefix_ranges` is NACKed (gRPC ignores it; ignoring it here would widen a
//! chain). The route config is inline (Istio sends it so) or named for RDS (then the
//! `RouteConfiguration` is translated in server form, see [`super::Context`]); its routes'
//! non-forwarding action means "serve here".

use super::listener::{HCM_TYPE, ROUTER_TYPE};
use super::{Context, finish, jwt, rbac, tls};
use envoy_types::pb::envoy::config::core::v3::address::Address as PbAddress;
use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use mesh_core::ConfigError;
use mesh_core::config::filter_chain::{FilterChain, FilterChainMatch, SourceType};
use mesh_core::config::rbac::CidrRange;
use mesh_core::config::server::{Server, ServerHttpFilter};
use mesh_core::error::{Errors, FieldPath};
use prost::Message;

/// Whether `l` is a server listener (it has an address and no API listener).
pub fn is_server(l: &pb::Listener) -> bool {
    l.api_listener.is_none() && l.address.is_some()
}

/// Translates and validates a server listener.
pub fn translate(l: &pb::Listener, ctx: &Context) -> Result<Server, ConfigError> {
    let mut errors = Errors::new();
    let root = FieldPath::root();
    let mut out = Server {
        name: l.name.clone(),
        ..Server::default()
    };
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(PbAddress::SocketAddress(s)) => {
            use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
            let port = match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            out.address = Some(if s.address.contains(':') {
                format!("[{}]:{port}", s.address)
            } else {
                format!("{}:{port}", s.address)
            });
        }
        _ => errors.push(&root.field("address"), "must be a socket address"),
    }
    if !l.listener_filters.is_empty() {
        errors.push(&root.field("listener_filters"), "must be empty (gRFC A36)");
    }
    if l.use_original_dst.as_ref().is_some_and(|v| v.value) {
        errors.push(
            &root.field("use_original_dst"),
            "is not supported (gRFC A36)",
        );
    }
    // Chains in-process matching can never pick are dropped, as gRPC drops them.
    let usable: Vec<(usize, &pb::FilterChain)> = l
        .filter_chains
        .iter()
        .enumerate()
        .filter(|(_, c)| can_match(c))
        .collect();
    let default = l
        .default_filter_chain
        .as_ref()
        .map(|c| (root.field("default_filter_chain"), c));
    match usable.as_slice() {
        // The common case (Istio's): one chain taking every connection is the server's only
        // chain; the default could never be used.
        [(i, c)] if c.filter_chain_match.as_ref().is_none_or(matches_everything) => filter_chain(
            c,
            ctx,
            &root.field("filter_chains").index(*i),
            &mut errors,
            &mut out,
        ),
        [] => match default {
            Some((path, c)) => filter_chain(c, ctx, &path, &mut errors, &mut out),
            None => errors.push(
                &root.field("filter_chains"),
                "no filter chain can match a connection and there is no default_filter_chain",
            ),
        },
        chains => {
            match default {
                Some((path, c)) => filter_chain(c, ctx, &path, &mut errors, &mut out),
                None => out.close_unmatched = true,
            }
            for (i, c) in chains {
                let path = root.field("filter_chains").index(*i);
                let mut chain = Server::default();
                filter_chain(c, ctx, &path, &mut errors, &mut chain);
                out.filter_chains.push(FilterChain {
                    name: c.name.clone(),
                    filter_chain_match: chain_match(
                        c.filter_chain_match.as_ref(),
                        &path.field("filter_chain_match"),
                        &mut errors,
                    ),
                    transport_socket: chain.transport_socket,
                    http_filters: chain.http_filters,
                    limits: chain.limits,
                    route_config: chain.route_config,
                    rds: chain.rds,
                    access_log: chain.access_log,
                });
            }
            let at = |i: usize| root.field("filter_chains").index(chains[i].0);
            mesh_core::config::filter_chain::validate(&out.filter_chains, &at, &mut errors);
        }
    }
    if errors.is_empty() {
        out.validate(&root, &mut errors);
    }
    finish(out, errors)
}

/// Whether in-process matching can ever pick `c`: A36's never-matching fields unset, and
/// (when set) the raw-buffer transport.
fn can_match(c: &pb::FilterChain) -> bool {
    let Some(m) = &c.filter_chain_match else {
        return true;
    };
    m.destination_port.is_none()
        && m.server_names.is_empty()
        && m.application_protocols.is_empty()
        && (m.transport_protocol.is_empty() || m.transport_protocol == "raw_buffer")
}

/// Whether a (usable) chain's match takes every connection.
fn matches_everything(m: &pb::FilterChainMatch) -> bool {
    m.prefix_ranges.is_empty()
        && m.direct_source_prefix_ranges.is_empty()
        && m.source_prefix_ranges.is_empty()
        && m.source_ports.is_empty()
        && m.source_type == 0
}

/// A usable chain's match → the mesh's.
fn chain_match(
    m: Option<&pb::FilterChainMatch>,
    path: &FieldPath,
    errors: &mut Errors,
) -> FilterChainMatch {
    let Some(m) = m else {
        return FilterChainMatch::default();
    };
    if !m.direct_source_prefix_ranges.is_empty() {
        // Behind a proxy protocol header only; matching on the source instead would let
        // more callers in than the chain means to.
        errors.push(
            &path.field("direct_source_prefix_ranges"),
            "is not supported (no proxy protocol in-process)",
        );
    }
    let ranges = |v: &[envoy_types::pb::envoy::config::core::v3::CidrRange]| -> Vec<CidrRange> {
        v.iter()
            .map(|r| CidrRange {
                address_prefix: r.address_prefix.clone(),
                prefix_len: r.prefix_len.as_ref().map_or(0, |l| l.value),
            })
            .collect()
    };
    let source_type = match m.source_type {
        0 => SourceType::Any,
        1 => SourceType::SameIpOrLoopback,
        2 => SourceType::External,
        t => {
            errors.push(
                &path.field("source_type"),
                format!("unknown source type {t}"),
            );
            SourceType::Any
        }
    };
    let mut source_ports = Vec::with_capacity(m.source_ports.len());
    for (i, p) in m.source_ports.iter().enumerate() {
        match u16::try_from(*p) {
            Ok(p) => source_ports.push(p),
            Err(_) => errors.push(
                &path.field("source_ports").index(i),
                format!("{p} is not a port"),
            ),
        }
    }
    FilterChainMatch {
        prefix_ranges: ranges(&m.prefix_ranges),
        transport_protocol: m.transport_protocol.clone(),
        source_type,
        source_prefix_ranges: ranges(&m.source_prefix_ranges),
        source_ports,
    }
}

fn filter_chain(
    c: &pb::FilterChain,
    ctx: &Context,
    path: &FieldPath,
    errors: &mut Errors,
    out: &mut Server,
) {
    if let Some(ts) = &c.transport_socket {
        out.transport_socket = tls::downstream(
            ts,
            &ctx.certificate_providers,
            &path.field("transport_socket"),
            errors,
        );
    }
    let fp = path.field("filters");
    let [f] = c.filters.as_slice() else {
        errors.push(&fp, "must be exactly one HttpConnectionManager (gRFC A36)");
        return;
    };
    let fp = fp.index(0);
    let any = match &f.config_type {
        Some(pb::filter::ConfigType::TypedConfig(any)) if any.type_url == HCM_TYPE => any,
        _ => {
            errors.push(&fp, "must be an HttpConnectionManager (gRFC A36)");
            return;
        }
    };
    let fp = fp.field("typed_config");
    let manager = match hcm::HttpConnectionManager::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(&fp, format!("cannot decode HttpConnectionManager: {e}"));
            return;
        }
    };
    out.access_log =
        super::access_log::access_logs(&manager.access_log, &fp.field("access_log"), errors);
    if manager.xff_num_trusted_hops != 0 {
        errors.push(&fp.field("xff_num_trusted_hops"), "must be 0 (gRFC A41)");
    }
    if !manager.original_ip_detection_extensions.is_empty() {
        errors.push(
            &fp.field("original_ip_detection_extensions"),
            "must be empty (gRFC A41)",
        );
    }
    // Envoy's limits on callers, where the listener sets them.
    if let Some(kb) = &manager.max_request_headers_kb {
        out.limits.max_request_headers_kb = kb.value;
    }
    if let Some(t) = &manager.request_headers_timeout
        && let Some(d) = super::duration(t, &fp.field("request_headers_timeout"), errors)
    {
        out.limits.request_headers_timeout = d;
    }
    if let Some(n) = manager
        .http2_protocol_options
        .as_ref()
        .and_then(|o| o.max_concurrent_streams.as_ref())
    {
        out.limits.max_concurrent_streams = n.value;
    }
    use hcm::http_connection_manager::RouteSpecifier as R;
    match &manager.route_specifier {
        Some(R::RouteConfig(rc)) => {
            out.route_config = Some(super::inbound::routes(
                rc,
                &fp.field("route_config"),
                errors,
            ))
        }
        Some(R::Rds(rds)) => {
            let rp = fp.field("rds");
            match &rds.config_source {
                Some(cs) if super::listener::is_same_source(cs, ctx) => {}
                Some(_) => errors.push(
                    &rp.field("config_source"),
                    "only ads and self config sources are supported (and files, for resources read from files)",
                ),
                None => errors.push(&rp.field("config_source"), "field not present"),
            }
            if rds.route_config_name.is_empty() {
                errors.push(&rp.field("route_config_name"), "must not be empty");
            }
            out.rds = Some(rds.route_config_name.clone());
        }
        _ => errors.push(&fp, "an inline route_config is required"),
    }
    let hp = fp.field("http_filters");
    let list = &manager.http_filters;
    if list.is_empty() {
        errors.push(&hp, "must not be empty (the router filter is required)");
    }
    for (i, f) in list.iter().enumerate() {
        let p = hp.index(i);
        let typed = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        };
        let type_url = typed.map(|a| a.type_url.as_str()).unwrap_or("");
        let last = i + 1 == list.len();
        match (type_url, last) {
            (ROUTER_TYPE, true) => {}
            (ROUTER_TYPE, false) => errors.push(&p, "the router filter must be last"),
            (_, true) => errors.push(&p, "the last filter must be the router"),
            _ if f.disabled => {}
            (rbac::RBAC, false) => {
                if let Some(r) =
                    rbac::filter(typed.expect("typed"), &p.field("typed_config"), errors)
                {
                    out.http_filters.push(ServerHttpFilter {
                        name: f.name.clone(),
                        rbac: Some(r),
                        ..ServerHttpFilter::default()
                    });
                }
            }
            (jwt::JWT_AUTHN, false) => {
                if let Some(j) =
                    jwt::filter(typed.expect("typed"), &p.field("typed_config"), errors)
                {
                    out.http_filters.push(ServerHttpFilter {
                        name: f.name.clone(),
                        jwt_authn: Some(j),
                        ..ServerHttpFilter::default()
                    });
                }
            }
            (super::policy::LOCAL_RATELIMIT_TYPE, false) => {
                if let Some(l) = super::policy::local_ratelimit(
                    typed.expect("typed"),
                    &p.field("typed_config"),
                    errors,
                ) {
                    out.http_filters.push(ServerHttpFilter {
                        name: f.name.clone(),
                        local_ratelimit: Some(l),
                        ..ServerHttpFilter::default()
                    });
                }
            }
            (super::policy::FAULT_TYPE, false) => {
                if let Some(fault) =
                    super::policy::fault(typed.expect("typed"), &p.field("typed_config"), errors)
                {
                    out.http_filters.push(ServerHttpFilter {
                        name: f.name.clone(),
                        fault: Some(fault),
                        ..ServerHttpFilter::default()
                    });
                }
            }
            _ if f.is_optional => {}
            _ => errors.push(
                &p,
                format!(
                    "HTTP filter {:?} ({type_url}) is not supported on servers",
                    f.name
                ),
            ),
        }
    }
}
