//! Drives `interop/istiod` (our Go program running Istio's discovery server without
//! Kubernetes) from Rust tests, and writes the bootstrap Istio's agent writes for proxyless
//! gRPC workloads.
//!
//! The binary is big (Istio's whole pilot) and takes minutes to build cold, so it is cached as
//! `target/interop-bin/istiod-<hash of go.sum and main.go>`: `.ci/test` builds it once, a test
//! builds it only when that file is missing. A missing Go toolchain fails the test loudly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Istio's version this peer is built from (the module pinned in `interop/istiod/go.mod`).
pub const ISTIO_MODULE: &str = "istio.io/istio v0.0.0-20260827124520-eed52ebb66ad";

fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("istiod")
}

/// The cache key: FNV-1a over the files that decide the binary.
fn source_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in ["go.mod", "go.sum", "main.go"] {
        let data = std::fs::read(source_dir().join(name))
            .unwrap_or_else(|e| panic!("interop/istiod/{name}: {e}"));
        for b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The path of the cached binary (built on first use when missing).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/interop-bin");
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = out_dir.join(format!("istiod-{}", source_hash()));
        if out.exists() {
            return out;
        }
        let tmp = out_dir.join(format!("istiod.{}", std::process::id()));
        let status = Command::new("go")
            .args(["build", "-buildvcs=false", "-tags", "vtprotobuf", "-o"])
            .arg(&tmp)
            .arg(".")
            .env("CGO_ENABLED", "0")
            .current_dir(source_dir())
            .status()
            .unwrap_or_else(|e| panic!("the istiod peer needs the Go toolchain (`go`): {e}"));
        assert!(status.success(), "go build of interop/istiod failed");
        std::fs::rename(&tmp, &out).unwrap();
        out
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
    applied: Arc<(Mutex<u64>, std::sync::Condvar)>,
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
        let applied = Arc::new((Mutex::new(0), std::sync::Condvar::new()));
        let seen = applied.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("APPLIED ").and_then(|n| n.parse().ok()) {
                    *seen.0.lock().unwrap() = n;
                    seen.1.notify_all();
                }
            }
        });
        Istiod {
            child,
            grpc,
            http,
            applied,
            config_dir: config_dir.to_owned(),
        }
    }

    /// How many config reloads istiod has applied.
    pub fn applied(&self) -> u64 {
        *self.applied.0.lock().unwrap()
    }

    /// Blocks until istiod applied reload number `n` (at most `patience`).
    pub fn wait_applied(&self, n: u64, patience: Duration) {
        let guard = self.applied.0.lock().unwrap();
        let (guard, timeout) = self
            .applied
            .1
            .wait_timeout_while(guard, patience, |seen| *seen < n)
            .unwrap();
        drop(guard);
        assert!(!timeout.timed_out(), "istiod never applied reload {n}");
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

/// A proxyless workload as Istio's agent describes it in the bootstrap it writes.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    /// Pod (workload) name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// The workload's IP (istiod matches it against WorkloadEntry addresses for inbound config).
    pub ip: &'a str,
    /// Service account.
    pub service_account: &'a str,
    /// Labels.
    pub labels: &'a [(&'a str, &'a str)],
    /// Certificate files for provider `default` (`cert-chain.pem`, `key.pem`,
    /// `root-cert.pem` in this directory), if the workload has an identity.
    pub cert_dir: Option<&'a Path>,
}

impl Workload<'_> {
    /// The node id istiod expects: `sidecar~<ip>~<name>.<ns>~<ns>.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            self.ip, self.name, self.namespace, self.namespace
        )
    }

    /// The bootstrap JSON (what `GRPC_XDS_BOOTSTRAP` points at in an Istio pod).
    pub fn bootstrap(&self, istiod: &Istiod) -> String {
        let labels: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let mut doc = serde_json::json!({
            "xds_servers": [{
                "server_uri": istiod.grpc.to_string(),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"]
            }],
            "node": {
                "id": self.node_id(),
                "metadata": {
                    "GENERATOR": "grpc",
                    "NAMESPACE": self.namespace,
                    "CLUSTER_ID": "Kubernetes",
                    "INSTANCE_IPS": self.ip,
                    "ISTIO_VERSION": "1.31.0",
                    "LABELS": labels,
                    "SERVICE_ACCOUNT": self.service_account,
                    "WORKLOAD_NAME": self.name,
                },
                "locality": {}
            },
            "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
        });
        if let Some(dir) = self.cert_dir {
            doc["certificate_providers"] = serde_json::json!({
                "default": {
                    "plugin_name": "file_watcher",
                    "config": {
                        "certificate_file": dir.join("cert-chain.pem"),
                        "private_key_file": dir.join("key.pem"),
                        "ca_certificate_file": dir.join("root-cert.pem"),
                        "refresh_interval": "900s"
                    }
                }
            });
        }
        serde_json::to_string_pretty(&doc).unwrap()
    }
}
