//! Drives `interop/istiod` (our Go program running Istio's discovery server without
//! Kubernetes) from Rust tests. (The bootstrap Istio's agent writes for a proxyless workload
//! is `mesh_examples::istio::Workload`, shared with the `istio` example.)
//!
//! The binary is big (Istio's whole pilot) and takes minutes to build cold, so it is cached as
//! `target/interop-bin/istiod-<hash of go.sum and main.go>`: `.ci/test` builds it once, a test
//! builds it only when that file is missing. A missing Go toolchain fails the test loudly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Istio's version this peer is built from (the module pinned in `interop/istiod/go.mod`).
pub const ISTIO_MODULE: &str = "istio.io/istio v0.0.0-20260827124520-eed52ebb66ad";

/// The path of the cached binary (built on first use when missing).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        crate::gobin::cached(
            "istiod",
            "istiod",
            &["go.mod", "go.sum", "main.go"],
            &["-buildvcs=false", "-tags", "vtprotobuf"],
            ".",
        )
    })
    .clone()
}

/// A running istiod serving the Istio YAML files of one directory.
#[derive(Debug)]
pub struct Istiod {
    child: Child,
    /// Plaintext ADS (SotW and Delta).
    pub grpc: SocketAddr,
    /// istiod's debug endpoints (`/debug/syncz`, `/debug/config_dump`, …).
    pub http: SocketAddr,
    /// The config directory it watches.
    pub config_dir: PathBuf,
}

impl Drop for Istiod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Istiod {
    /// Starts on free ports, serving `config_dir` (watched: edits are pushed). Its log goes to
    /// `istiod.log` beside the config directory.
    pub fn start(config_dir: &Path) -> Self {
        let log = config_dir.with_file_name("istiod.log");
        let log = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(binary())
            .arg("-config")
            .arg(config_dir)
            .env("PILOT_DEBOUNCE_AFTER", "10ms")
            .env("POD_NAMESPACE", "istio-system")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start istiod");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("READY ") => break line,
                Some(Ok(_)) => continue,
                _ => panic!("istiod exited before serving (see istiod.log)"),
            }
        };
        let addr_of = |key: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("istiod did not say {key}: {ready:?}"))
        };
        let (grpc, http) = (addr_of("grpc="), addr_of("http="));
        // Keep reading its stdout (APPLIED lines) so it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Istiod {
            child,
            grpc,
            http,
            config_dir: config_dir.to_owned(),
        }
    }

    /// GET on the debug port; returns status and body.
    pub async fn debug(&self, path: &str) -> (u16, String) {
        crate::http1(self.http, "GET", path, String::new()).await
    }

    /// `/debug/syncz`: every connected proxy with what it ACKed (`istioctl proxy-status`).
    pub async fn syncz(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.debug("/debug/syncz").await;
        assert_eq!(status, 200, "syncz: {body}");
        serde_json::from_str::<Option<Vec<serde_json::Value>>>(&body)
            .unwrap_or_else(|e| panic!("syncz JSON: {e}: {body}"))
            .unwrap_or_default()
    }
}
