//! `Cluster` → [`Cluster`].

use super::{duration, endpoint, finish};
use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use mesh_core::error::{Errors, FieldPath};
use mesh_core::{Cluster, ConfigError, DiscoveryType, LbPolicy, Protocol};
use prost::Message;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const LB_TYPE_PREFIX: &str = "type.googleapis.com/envoy.extensions.load_balancing_policies.";
/// Our peak-EWMA policy, as a control plane names it in `load_balancing_policy`: a typed config
/// with this type (`type.googleapis.com/mesh.lb.v1.PeakEwma`; its value is ignored, settings keep
/// their defaults).
pub const PEAK_EWMA_TYPE: &str = "mesh.lb.v1.PeakEwma";

/// A slow-start config from either proto that carries one (the cluster's and the typed
/// policies' share the field names); `$path` locates the enclosing config for errors.
macro_rules! slow_start {
    ($s:expr, $path:expr, $errors:expr) => {
        $s.as_ref()
            .map(|s| mesh_core::config::cluster::SlowStartConfig {
                slow_start_window: s.slow_start_window.as_ref().and_then(|d| {
                    duration(
                        d,
                        &$path.field("slow_start_config").field("slow_start_window"),
                        $errors,
                    )
                }),
                aggression: s
                    .aggression
                    .as_ref()
                    .map(|a| mesh_core::policy::RuntimeDouble {
                        default_value: a.default_value,
                    }),
                min_weight_percent: s
                    .min_weight_percent
                    .as_ref()
                    .map(|p| mesh_core::policy::Percent::new(p.value)),
            })
    };
}

/// Least-request settings from either Envoy proto that carries them (the cluster's
/// `LeastRequestLbConfig` and the typed `LeastRequest` policy share the field names).
macro_rules! least_request_config {
    ($l:expr, $path:expr, $errors:expr) => {
        mesh_core::config::cluster::LeastRequestConfig {
            choice_count: $l.choice_count.as_ref().map(|v| v.value),
            active_request_bias: $l
                .active_request_bias
                .as_ref()
                .map(|b| mesh_core::policy::Percent::new(b.default_value)),
            slow_start_config: slow_start!($l.slow_start_config, $path, $errors),
        }
    };
}

mod lb;
use lb::lb_policy;

/// `envoy.extensions.clusters.aggregate.v3.ClusterConfig`, which envoy-types lacks: one field.
#[derive(Clone, PartialEq, prost::Message)]
struct AggregateClusterConfig {
    #[prost(string, repeated, tag = "1")]
    clusters: Vec<String>,
}

/// A custom cluster type: the aggregate cluster (gRFC A37), or an error at `path`.
fn aggregate(
    ct: &pb::cluster::CustomClusterType,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<mesh_core::config::cluster::ClusterType> {
    use mesh_core::config::cluster::{AGGREGATE_CLUSTER, AGGREGATE_CONFIG_TYPE, ClusterType};
    if ct.name != AGGREGATE_CLUSTER {
        errors.push(
            &path.field("name"),
            format!("custom cluster type {:?} is not supported", ct.name),
        );
        return None;
    }
    let config = path.field("typed_config");
    let Some(any) = &ct.typed_config else {
        errors.push(&config, "field not present (the aggregate's clusters)");
        return None;
    };
    if any.type_url != AGGREGATE_CONFIG_TYPE {
        errors.push(
            &config.field("type_url"),
            format!("{:?}: expected {AGGREGATE_CONFIG_TYPE}", any.type_url),
        );
        return None;
    }
    match AggregateClusterConfig::decode(any.value.as_slice()) {
        Ok(c) => Some(ClusterType::aggregate(c.clusters)),
        Err(e) => {
            errors.push(&config, format!("does not decode: {e}"));
            None
        }
    }
}

/// Translates and validates a cluster; TLS contexts may name the instances in `ctx`.
pub fn translate(c: &pb::Cluster, ctx: &super::Context) -> Result<Cluster, ConfigError> {
    let mut errors = Errors::new();
    let root = FieldPath::root();
    let mut out = Cluster::new(c.name.clone());

    use pb::cluster::{ClusterDiscoveryType as T, DiscoveryType as D};
    match &c.cluster_discovery_type {
        None => out.discovery = DiscoveryType::Static,
        Some(T::Type(t)) => match D::try_from(*t) {
            Ok(D::Static) => out.discovery = DiscoveryType::Static,
            Ok(D::Eds) => out.discovery = DiscoveryType::Eds,
            Ok(D::StrictDns) => out.discovery = DiscoveryType::StrictDns,
            Ok(D::LogicalDns) => out.discovery = DiscoveryType::LogicalDns,
            Ok(other) => errors.push(
                &root.field("type"),
                format!("{other:?} clusters are not supported yet"),
            ),
            Err(_) => errors.push(&root.field("type"), format!("unknown discovery type {t}")),
        },
        Some(T::ClusterType(ct)) => {
            out.cluster_type = aggregate(ct, &root.field("cluster_type"), &mut errors);
        }
    }
    let aggregate = out.cluster_type.is_some();
    if out.discovery == DiscoveryType::Eds
        && !aggregate
        && let Some(eds) = &c.eds_cluster_config
        && !eds.service_name.is_empty()
    {
        out.eds_service_name = Some(eds.service_name.clone());
    }
    // gRFC A47: an `xdstp:` cluster cannot name its endpoints after itself (the EDS name must
    // be a ClusterLoadAssignment URI), so it has to say which.
    if out.discovery == DiscoveryType::Eds
        && !aggregate
        && out.eds_service_name.is_none()
        && c.name.starts_with(crate::federation::XDSTP)
    {
        errors.push(
            &root.field("eds_cluster_config").field("service_name"),
            "must be set when the cluster has an xdstp: name",
        );
    }
    if out.discovery.is_dns() {
        dns(c, &mut out, &root, &mut errors);
    }
    if out.discovery == DiscoveryType::Static {
        match &c.load_assignment {
            Some(cla) => {
                out.load_assignment = Some(endpoint::assignment(
                    cla,
                    &root.field("load_assignment"),
                    &mut errors,
                ))
            }
            None => errors.push(
                &root.field("load_assignment"),
                "field not present (required for STATIC)",
            ),
        }
    }
    // An aggregate's requests are balanced by the cluster each goes to (Envoy requires
    // CLUSTER_PROVIDED here; gRPC ignores the field): nothing to translate.
    if !aggregate {
        out.lb_policy = lb_policy(c, &mut out, &root, &mut errors);
    }
    if let Some(t) = &c.connect_timeout
        && let Some(d) = duration(t, &root.field("connect_timeout"), &mut errors)
    {
        out.connect_timeout = d;
    }
    // Load reports (LRS) go to the control plane this cluster came from: `self`, as gRPC
    // takes it; another server is refused.
    if let Some(lrs) = &c.lrs_server {
        use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
        match lrs.config_source_specifier {
            Some(ConfigSourceSpecifier::Self_(_)) => out.lrs_report = true,
            _ => errors.push(
                &root.field("lrs_server"),
                "only `self` is supported (reports go to the control plane the cluster came from)",
            ),
        }
    }
    out.protocol = protocol(c, &root, &mut errors);
    if let Some(ts) = &c.transport_socket {
        out.transport_socket = super::tls::upstream(
            ts,
            &ctx.certificate_providers,
            &root.field("transport_socket"),
            &mut errors,
        );
    }
    if !c.transport_socket_matches.is_empty() {
        // Sending plaintext where the control plane asked for TLS would be a security bug.
        errors.push(
            &root.field("transport_socket_matches"),
            "is not supported (use transport_socket)",
        );
    }
    if let Some(cb) = &c.circuit_breakers {
        out.circuit_breakers = Some(super::policy::circuit_breakers(cb));
    }
    if let Some(od) = &c.outlier_detection {
        out.outlier_detection = Some(super::policy::outlier_detection(
            od,
            &root.field("outlier_detection"),
            &mut errors,
        ));
    }
    if errors.is_empty() {
        out.validate(&root, &mut errors);
    }
    finish(out, errors)
}

/// HTTP/2 when the cluster says so (the deprecated `http2_protocol_options`, or explicit HTTP/2
/// in `HttpProtocolOptions`), HTTP/1.1 otherwise, as in Envoy.
fn protocol(c: &pb::Cluster, root: &FieldPath, errors: &mut Errors) -> Protocol {
    #[allow(deprecated)]
    if c.http2_protocol_options.is_some() {
        return Protocol::Http2;
    }
    let Some(any) = c
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    else {
        return Protocol::Http1;
    };
    let path = root
        .field("typed_extension_protocol_options")
        .field(HTTP_PROTOCOL_OPTIONS);
    let options = match upstream_http::HttpProtocolOptions::decode(&*any.value) {
        Ok(o) => o,
        Err(e) => {
            errors.push(&path, format!("cannot decode: {e}"));
            return Protocol::Http1;
        }
    };
    use upstream_http::http_protocol_options::UpstreamProtocolOptions as U;
    use upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    match options.upstream_protocol_options {
        Some(U::ExplicitHttpConfig(e)) => match e.protocol_config {
            Some(P::Http2ProtocolOptions(_)) => Protocol::Http2,
            Some(P::HttpProtocolOptions(_)) | None => Protocol::Http1,
            Some(P::Http3ProtocolOptions(_)) => {
                errors.push(&path, "HTTP/3 upstreams are not supported");
                Protocol::Http1
            }
        },
        // Downstream/auto protocol selection: a client has no downstream; HTTP/2 if offered.
        Some(U::UseDownstreamProtocolConfig(d)) if d.http2_protocol_options.is_some() => {
            Protocol::Http2
        }
        Some(U::AutoConfig(a)) if a.http2_protocol_options.is_some() => Protocol::Http2,
        _ => Protocol::Http1,
    }
}

/// A DNS cluster: its load assignment's socket addresses are names (hostname and port).
fn dns(c: &pb::Cluster, out: &mut Cluster, root: &FieldPath, errors: &mut Errors) {
    use envoy_types::pb::envoy::config::core::v3::{
        address::Address as A, socket_address::PortSpecifier,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier as H;
    use mesh_core::config::cluster::{DnsEndpoint, DnsLookupFamily};
    let lp = root.field("load_assignment");
    let Some(cla) = &c.load_assignment else {
        errors.push(&lp, "field not present (required for DNS clusters)");
        return;
    };
    for (i, l) in cla.endpoints.iter().enumerate() {
        for (j, e) in l.lb_endpoints.iter().enumerate() {
            let ep = lp
                .field("endpoints")
                .index(i)
                .field("lb_endpoints")
                .index(j);
            let sa = match &e.host_identifier {
                Some(H::Endpoint(end)) => {
                    match end.address.as_ref().and_then(|a| a.address.as_ref()) {
                        Some(A::SocketAddress(sa)) => sa,
                        _ => {
                            errors.push(&ep, "a socket address is required");
                            continue;
                        }
                    }
                }
                _ => {
                    errors.push(&ep, "an endpoint is required");
                    continue;
                }
            };
            let port = match sa.port_specifier {
                Some(PortSpecifier::PortValue(p)) => u16::try_from(p).unwrap_or(0),
                _ => 0,
            };
            out.dns_endpoints.push(DnsEndpoint {
                hostname: sa.address.clone(),
                port,
                load_balancing_weight: e.load_balancing_weight.as_ref().map(|w| w.value),
            });
        }
    }
    use pb::cluster::DnsLookupFamily as F;
    #[allow(deprecated)]
    let family = c.dns_lookup_family;
    out.dns_lookup_family = match F::try_from(family) {
        Ok(F::V4Only) => DnsLookupFamily::V4Only,
        Ok(F::V6Only) => DnsLookupFamily::V6Only,
        Ok(F::V4Preferred) => DnsLookupFamily::V4Preferred,
        Ok(F::All) => DnsLookupFamily::All,
        _ => DnsLookupFamily::Auto,
    };
    #[allow(deprecated)]
    if let Some(r) = &c.dns_refresh_rate {
        out.dns_refresh_rate = duration(r, &root.field("dns_refresh_rate"), errors);
    }
    #[allow(deprecated)]
    {
        out.respect_dns_ttl = c.respect_dns_ttl;
    }
}
