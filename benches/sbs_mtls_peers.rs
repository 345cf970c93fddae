//! The peers of the mTLS side-by-side that are not ours: the Envoy pair's configs, and grpc-go
//! with xDS credentials at both ends (`grpcpeer server` and `grpcload -xds-creds`), configured
//! by go-control-plane as Istio's proxyless gRPC is: bootstrap `file_watcher` providers, an
//! A29 `UpstreamTlsContext` on the client's cluster, an A36 server listener requiring client
//! certificates.

use super::{SERVER_ID, SERVER_NAME};
use mesh_examples::pki::WorkloadFiles;
use mesh_interop::envoy::free_port;
use mesh_interop::gocp::{GoControlPlane, GrpcGoServer};
use mesh_xds_client::build;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub(crate) fn envoy_tls(files: &WorkloadFiles, peer: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "\n{pad}alpn_protocols: [h2]\n{pad}tls_certificates: [{{ certificate_chain: {{ filename: \"{}\" }}, private_key: {{ filename: \"{}\" }} }}]\n{pad}validation_context:\n{pad}  trusted_ca: {{ filename: \"{}\" }}\n{pad}  match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: \"{peer}\" }} }}]",
        files.cert.display(),
        files.key.display(),
        files.roots.display(),
    )
}

/// One Envoy of the pair: a listener on `listen` (TLS when `downstream` is given) proxying to
/// `upstream` over HTTP/2 (TLS when `upstream_tls` is given).
pub(crate) fn envoy_config(
    listen: SocketAddr,
    downstream: Option<String>,
    upstream: SocketAddr,
    upstream_tls: Option<String>,
) -> String {
    let listener_tls = downstream.map_or(String::new(), |tls| {
        format!(
            r#"
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:{tls}"#
        )
    });
    let cluster_tls = upstream_tls.map_or(String::new(), |tls| {
        format!(
            r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {SERVER_NAME}
          common_tls_context:{tls}"#
        )
    });
    format!(
        r#"static_resources:
  listeners:
    - name: in
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: in
                codec_type: AUTO
                http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
                route_config:
                  virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: out }} }}] }}]{listener_tls}
  clusters:
    - name: out
      type: STATIC
      connect_timeout: 2s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: out
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {uport} }} }} }} }}] }}]{cluster_tls}
"#,
        lport = listen.port(),
        uport = upstream.port(),
    )
}

/// grpc-go's xDS mTLS pair: its control plane, its server (pinned by the caller) and the
/// client's bootstrap.
pub(crate) struct GrpcGo {
    _cp: GoControlPlane,
    pub(crate) server: GrpcGoServer,
    pub(crate) client_bootstrap: PathBuf,
}

const TEMPLATE: &str = "grpc/server?xds.resource.listening_address=%s";

fn bootstrap(dir: &Path, cp: &GoControlPlane, node: &str, files: &WorkloadFiles) -> PathBuf {
    let json = serde_json::json!({
        "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
        "node": {"id": node, "cluster": "bench"},
        "server_listener_resource_name_template": TEMPLATE,
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": files.cert,
            "private_key_file": files.key,
            "ca_certificate_file": files.roots,
            "refresh_interval": "600s",
        }}},
    });
    let path = dir.join(format!("{node}.json"));
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// Starts go-control-plane and grpc-go's xDS server (mTLS required, our CA), and writes the
/// client's bootstrap (its cluster verifies the server's SPIFFE ID).
pub(crate) fn grpc_go(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    server: &WorkloadFiles,
    client: &WorkloadFiles,
) -> GrpcGo {
    let cp = GoControlPlane::start();
    let addr: SocketAddr = free_port();
    let name = TEMPLATE.replace("%s", &addr.to_string());
    let listener =
        build::server_listener(&name, addr, Some(build::downstream_mtls("default")), vec![]);
    rt.block_on(cp.set("bench-echo", "1", &[build::any(&listener)]));
    let mut cluster = build::eds_cluster("web");
    cluster.transport_socket = Some(build::mesh_tls("default", &[SERVER_ID]));
    let resources = [
        build::any(&build::api_listener_rds("web", "web-routes")),
        build::any(&build::route_config(
            "web-routes",
            &["*"],
            vec![build::route("/", "web")],
        )),
        build::any(&cluster),
        build::any(&build::assignment("web", &[addr])),
    ];
    rt.block_on(cp.set("bench-load", "1", &resources));
    let server_bootstrap = bootstrap(dir, &cp, "bench-echo", server);
    let server = GrpcGoServer::start(&server_bootstrap, addr);
    GrpcGo {
        client_bootstrap: bootstrap(dir, &cp, "bench-load", client),
        _cp: cp,
        server,
    }
}

/// The grpc-go client of one run: `grpcload -xds-creds` on the client CPU, one OS thread as
/// the Rust clients run one runtime thread.
pub(crate) fn grpc_go_client(
    go: &GrpcGo,
    c: usize,
    secs: f64,
    size: usize,
) -> std::process::Command {
    let mut cmd = mesh_benches::harness::pinned(
        mesh_benches::harness::CLIENT_CPU,
        mesh_interop::gocp::grpc_go_load_binary(),
    );
    cmd.env("GRPC_XDS_BOOTSTRAP", &go.client_bootstrap)
        .env("GOMAXPROCS", "1")
        .args([
            "-target",
            "xds:///web",
            "-method",
            "/bench.Echo/Unary",
            "-xds-creds",
        ])
        .arg(format!("-concurrency={c}"))
        .arg(format!("-secs={secs}"))
        .arg(format!("-size={size}"));
    cmd
}
