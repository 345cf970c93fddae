//! What the Envoy mTLS tests share: a test CA writing workload files, Envoy's TLS context
//! and an Envoy mTLS listener as YAML, and a GET through a mesh service.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::pki::{DevCa, WorkloadFiles};
use mesh_tower::MeshService;
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt;

pub const NODE: &str = "mesh-client";
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
pub const ENVOY_ID: &str = "spiffe://cluster.local/ns/edge/sa/envoy";
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/backend";
pub const INTRUDER_ID: &str = "spiffe://cluster.local/ns/other/sa/intruder";
/// Envoy is another process with no readiness signal: its start is waited for, bounded.
pub const ENVOY_START: Duration = Duration::from_secs(30);

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
}

impl Pki {
    pub fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: DevCa::new("envoy interop root"),
        }
    }

    pub fn workload(&self, name: &str, spiffe_id: &str) -> WorkloadFiles {
        self.ca
            .write_workload(
                &self.dir.path().join(name),
                &self.ca.issue_spiffe(spiffe_id),
            )
            .unwrap()
    }
}

/// Envoy's `common_tls_context` certificate and roots from `files`, matching peers whose URI
/// SAN is `peer` (YAML, indented for the configs below).
pub fn envoy_tls_context(files: &WorkloadFiles, peer: &str, alpn: &str) -> String {
    format!(
        r#"
                alpn_protocols: [{alpn}]
                tls_certificates:
                  - certificate_chain: {{ filename: "{cert}" }}
                    private_key: {{ filename: "{key}" }}
                validation_context:
                  trusted_ca: {{ filename: "{roots}" }}
                  match_typed_subject_alt_names:
                    - {{ san_type: URI, matcher: {{ exact: "{peer}" }} }}"#,
        cert = files.cert.display(),
        key = files.key.display(),
        roots = files.roots.display(),
    )
}

pub fn admin(port: SocketAddr) -> String {
    format!(
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        port.port()
    )
}

pub const ROUTER: &str = r#"[{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]"#;

/// An Envoy listener on `addr` that requires a client certificate with URI SAN `CLIENT_ID`
/// and answers 200 `envoy`, echoing the caller's URI SAN in `x-peer`.
pub fn envoy_server_config(
    addr: SocketAddr,
    admin_addr: SocketAddr,
    files: &WorkloadFiles,
) -> String {
    format!(
        r#"{admin}static_resources:
  listeners:
    - name: mtls
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:{tls}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: mtls
                codec_type: AUTO
                http_filters: {ROUTER}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      response_headers_to_add:
                        - header: {{ key: x-peer, value: "%DOWNSTREAM_PEER_URI_SAN%" }}
                      routes:
                        - match: {{ prefix: / }}
                          direct_response: {{ status: 200, body: {{ inline_string: envoy }} }}
"#,
        admin = admin(admin_addr),
        port = addr.port(),
        tls = envoy_tls_context(files, CLIENT_ID, "h2, http/1.1"),
    )
}

pub async fn call(
    svc: &MeshService<Empty<Bytes>>,
) -> Result<http::Response<Bytes>, mesh_tower::MeshError> {
    let res = svc
        .clone()
        .oneshot(http::Request::get("/").body(Empty::new()).unwrap())
        .await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

pub fn stat(stats: &str, suffix: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| name.ends_with(suffix))
        .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(0))
        .sum()
}

/// API listener `name` → route config → EDS cluster `name` (HTTP/2, TLS `tls`) → `endpoint`.
pub fn tls_resources(
    name: &str,
    tls: envoy_types::pb::envoy::config::core::v3::TransportSocket,
    endpoint: SocketAddr,
) -> Vec<envoy_types::pb::google::protobuf::Any> {
    use mesh_xds_client::build;
    let mut cluster = build::eds_cluster(name);
    cluster.transport_socket = Some(tls);
    let routes = format!("{name}-routes");
    vec![
        build::any(&build::api_listener_rds(name, &routes)),
        build::any(&build::route_config(
            &routes,
            &["*"],
            vec![build::route("/", name)],
        )),
        build::any(&cluster),
        build::any(&build::assignment(name, &[endpoint])),
    ]
}

/// The head of a static Envoy config: admin on `admin_addr`, then listener `name` on
/// loopback `port` with one HttpConnectionManager (stat prefix `name`, the router only).
/// The caller goes on with more HCM fields, indented 16 spaces (`route_config:`, …), then
/// `  clusters:` if any.
pub fn hcm_listener_head(admin_addr: SocketAddr, name: &str, port: u16) -> String {
    format!(
        r#"{admin}static_resources:
  listeners:
    - name: {name}
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: {name}
                http_filters: {ROUTER}
"#,
        admin = admin(admin_addr),
    )
}
