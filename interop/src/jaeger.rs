//! Jaeger v2 (an OpenTelemetry Collector distribution) as the tracing tests' OTLP receiver:
//! built from the module pinned in `interop/jaeger` (cached like istiod), run with in-memory
//! storage on free loopback ports; its query API reads the traces back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The path of the cached binary (built on first use when missing).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        crate::gobin::cached(
            "jaeger",
            "jaeger",
            &["go.mod", "go.sum", "tools.go"],
            &["-buildvcs=false"],
            "github.com/jaegertracing/jaeger/cmd/jaeger",
        )
    })
    .clone()
}

/// A running Jaeger.
#[derive(Debug)]
pub struct Jaeger {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its OTLP/gRPC receiver.
    pub otlp: SocketAddr,
    /// Its query API (`/api/traces/<id>`).
    pub query: SocketAddr,
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Jaeger {
    /// Starts it and returns once its query API answers.
    pub async fn start() -> Self {
        let (otlp, query, query_grpc) = (
            crate::envoy::free_port(),
            crate::envoy::free_port(),
            crate::envoy::free_port(),
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: {{ level: none }}
    logs: {{ level: warn }}
extensions:
  jaeger_query:
    storage: {{ traces: mem }}
    http: {{ endpoint: "{query}" }}
    grpc: {{ endpoint: "{query_grpc}" }}
  jaeger_storage:
    backends:
      mem:
        memory: {{ max_traces: 10000 }}
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "{otlp}" }}
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"#
            ),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start jaeger");
        let jaeger = Self {
            child,
            _dir: dir,
            otlp,
            query,
        };
        let up = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                if tokio::net::TcpStream::connect(query).await.is_ok()
                    && tokio::net::TcpStream::connect(otlp).await.is_ok()
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
        assert!(
            up.await.is_ok(),
            "Jaeger never listened on {query} and {otlp}"
        );
        jaeger
    }

    /// The trace `id` (hex) as Jaeger's query API gives it (`{"data": [{"spans": …}]}`), or
    /// `None` while it does not know it.
    pub async fn trace(&self, id: &str) -> Option<serde_json::Value> {
        let (status, body) = crate::http1(
            self.query,
            "GET",
            &format!("/api/traces/{id}"),
            String::new(),
        )
        .await;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }
}
