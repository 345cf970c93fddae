//! Drives `interop/gocp` (our go-control-plane program) from Rust tests and benches.
//!
//! The binary is built with `go build` on first use (Go's build cache makes later builds
//! instant). A missing Go toolchain fails the test loudly: this peer is never skipped.

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Builds the Go package `pkg` of `interop/gocp` into `target/interop-bin/<name>`.
fn go_build(pkg: &str, name: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gocp");
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/interop-bin");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let tmp = out_dir.join(format!("{name}.{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(pkg)
        .current_dir(&src)
        .status()
        .unwrap_or_else(|e| panic!("the Go peers need the Go toolchain (`go`): {e}"));
    assert!(status.success(), "go build of interop/gocp/{pkg} failed");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| go_build(".", "gocp")).clone()
}

/// The grpc-go load generator (`interop/gocp/grpcload`: gRPC's own proxyless xDS client
/// calling a raw-bytes unary method in a closed loop), built on first use.
pub fn grpc_go_load_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| go_build("./grpcload", "grpcload"))
        .clone()
}

/// grpc-go's proxyless client and `xds.NewGRPCServer` with xDS credentials
/// (`interop/gocp/grpcpeer`), the differential oracle of the istiod scenarios, built on first
/// use.
pub fn grpc_go_peer_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| go_build("./grpcpeer", "grpcpeer"))
        .clone()
}

/// grpc-go's `xds.NewGRPCServer` (`grpcpeer server`) on `addr`, configured from the xDS
/// bootstrap at `bootstrap`; killed on drop.
#[derive(Debug)]
pub struct GrpcGoServer(Child);

impl GrpcGoServer {
    /// Starts it and returns once it reports `SERVING` (its listener resource arrived and
    /// was accepted); panics with what it said otherwise.
    pub fn start(bootstrap: &std::path::Path, addr: SocketAddr) -> Self {
        let mut child = Command::new(grpc_go_peer_binary())
            .args(["server", "-listen", &addr.to_string()])
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start grpcpeer server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(l)) if l == "SERVING" => {}
            other => panic!("grpc-go's xDS server is not serving: {other:?}"),
        }
        Self(child)
    }

    /// Its process id (to pin it or read its CPU time).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for GrpcGoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running go-control-plane server.
#[derive(Debug)]
pub struct GoControlPlane {
    child: Child,
    /// Its ADS (gRPC) address.
    pub ads: SocketAddr,
    http: SocketAddr,
}

impl Drop for GoControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the server saw.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Event {
    /// The requesting node's id.
    pub node: String,
    /// Whether it came on a Delta stream.
    pub delta: bool,
    /// The resource type.
    pub type_url: String,
    /// The version the request ACKs (or NACKs).
    pub version: String,
    /// Subscribed names (SotW) or names to subscribe (Delta).
    pub names: Option<Vec<String>>,
    /// The NACK's error message, if it is one.
    pub nack: Option<String>,
    /// When the server saw it, µs since the Unix epoch.
    #[serde(default)]
    pub at_us: u64,
}

/// One locality of one cluster in one load report.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct LrsEntry {
    /// The reporting node's id.
    pub node: String,
    /// The cluster.
    pub cluster: String,
    /// The locality's zone.
    pub zone: String,
    /// `total_successful_requests`.
    pub successful: u64,
    /// `total_requests_in_progress`.
    pub in_progress: u64,
    /// `total_error_requests`.
    pub errors: u64,
    /// `total_issued_requests`.
    pub issued: u64,
    /// The cluster's `total_dropped_requests`.
    pub dropped: u64,
    /// `load_metric_stats`: (name, requests finished with it, total value).
    pub metrics: Vec<LrsMetric>,
}

/// One `load_metric_stats` entry of a locality's report.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct LrsMetric {
    /// `metric_name`.
    pub name: String,
    /// `num_requests_finished_with_metric`.
    pub requests: u64,
    /// `total_metric_value`.
    pub total: f64,
}

impl GoControlPlane {
    /// Starts on a free port.
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Starts with ADS on `port` (0: any), e.g. to restart where a killed one was.
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, false, true)
    }

    /// Starts on a free port without recording events ([`Self::events`] stays empty): for
    /// large snapshots, whose requests name thousands of resources each.
    pub fn start_unrecorded() -> Self {
        Self::spawn(0, false, false)
    }

    /// Starts with the snapshot cache's ADS consistency mode on (see `interop/gocp/main.go`).
    pub fn start_consistent() -> Self {
        Self::spawn(0, true, true)
    }

    fn spawn(port: u16, consistent: bool, record: bool) -> Self {
        let mut child = Command::new(binary())
            .env("GOCP_ADS_PORT", port.to_string())
            .env("GOCP_ADS_CONSISTENT", if consistent { "1" } else { "0" })
            .env("GOCP_RECORD", if record { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gocp");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port_of = |key: &str| -> u16 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("gocp did not start: {line:?}"))
        };
        let ads = SocketAddr::from(([127, 0, 0, 1], port_of("ads=")));
        let http = SocketAddr::from(([127, 0, 0, 1], port_of("http=")));
        GoControlPlane { child, ads, http }
    }

    /// Kills the process (streams break, nothing is said).
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.ads.port()
    }

    /// Sets the snapshot served to `node`.
    pub async fn set(&self, node: &str, version: &str, resources: &[Any]) {
        let encoded: Vec<String> = resources
            .iter()
            .map(|a| base64(&a.encode_to_vec()))
            .collect();
        let body = serde_json::json!({"version": version, "resources": encoded}).to_string();
        let (status, text) = self.http("POST", &format!("/snapshot/{node}"), body).await;
        assert_eq!(status, 204, "gocp rejected the snapshot: {text}");
    }

    /// Every load report received (LRS), one entry per locality per report.
    pub async fn lrs(&self) -> Vec<LrsEntry> {
        let (status, text) = self.http("GET", "/lrs", String::new()).await;
        assert_eq!(status, 200);
        serde_json::from_str::<Option<Vec<LrsEntry>>>(&text)
            .unwrap()
            .unwrap_or_default()
    }

    /// Waits until `node` has ACKed, for each `(type, count)` of `want` (`lds`, `rds`, `cds`,
    /// `eds`), a response after which it held at least `count` resources of that type, and
    /// returns when the last of those ACKs arrived (µs since the Unix epoch); `None` if that did
    /// not happen within `timeout`. The server blocks on the ACKs as they come (see
    /// `interop/gocp/acks.go`): the one definition of "ready" the xDS-scale bench applies to
    /// every client.
    pub async fn acked(
        &self,
        node: &str,
        want: &[(&str, usize)],
        timeout: std::time::Duration,
    ) -> Option<u64> {
        let mut path = format!("/acked?node={node}&timeout_ms={}", timeout.as_millis());
        for (ty, n) in want {
            path.push_str(&format!("&{ty}={n}"));
        }
        let (status, text) = self.http("GET", &path, String::new()).await;
        assert_eq!(status, 200, "gocp /acked: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["ready"]
            .as_bool()
            .unwrap()
            .then(|| v["at_us"].as_u64().unwrap())
    }

    /// Every request seen so far.
    pub async fn events(&self) -> Vec<Event> {
        let (status, text) = self.http("GET", "/events", String::new()).await;
        assert_eq!(status, 200);
        // Go encodes an empty (nil) slice as `null`.
        serde_json::from_str::<Option<Vec<Event>>>(&text)
            .unwrap()
            .unwrap_or_default()
    }

    /// Waits until an event satisfying `f` was seen (polling the server, which has no push).
    pub async fn wait_for(&self, f: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Some(e) = self.events().await.into_iter().find(|e| f(e)) {
                    return e;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("event seen in time")
    }

    async fn http(&self, method: &str, path: &str, body: String) -> (u16, String) {
        crate::http1(self.http, method, path, body).await
    }
}

/// Standard base64 with padding (what Go's `base64.StdEncoding` reads).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}
