//! Runs a real Prometheus server (Debian's `prometheus` package, 2.42, which `.ci/test`
//! installs) that scrapes the mesh's `/metrics` endpoints, and asks it PromQL over its HTTP
//! API: what Kiali and Grafana's Istio dashboards would read.
//!
//! The binary is `PROMETHEUS_BIN`, else `prometheus` on the `PATH`. A missing Prometheus
//! fails the test loudly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "Prometheus is required for the telemetry tests: run `bash .ci/test` (installs \
             Debian's `prometheus` package) or set PROMETHEUS_BIN"
        )
    })
}

/// A running Prometheus scraping some targets every second.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// Its HTTP API.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts scraping `targets` (`/metrics` on each) every second; returns once it says it
    /// serves its API.
    pub fn start(targets: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: mesh\n  static_configs: [{{targets: [{}]}}]\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = crate::envoy::free_port();
        let mut child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prometheus");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = std::sync::mpsc::channel();
        // Its log says when the API is up; keep draining it after that.
        std::thread::spawn(move || {
            let mut log = Vec::new();
            for line in lines.map_while(Result::ok) {
                if line.contains("Server is ready to receive web requests") {
                    let _ = tx.send(Ok(()));
                }
                log.push(line);
                if log.len() > 200 {
                    log.remove(0);
                }
            }
            let _ = tx.send(Err(log.join("\n")));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(log)) => panic!("prometheus exited before serving:\n{log}"),
            Err(_) => panic!("prometheus did not become ready in 60 s"),
        }
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// An instant query: the `data.result` vector, as `(labels, value)` pairs.
    pub async fn query(
        &self,
        promql: &str,
    ) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = crate::http1(self.addr, "GET", &path, String::new()).await;
        assert_eq!(status, 200, "query {promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        result
            .into_iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1].as_str().unwrap_or("NaN").parse().unwrap();
                (labels, value)
            })
            .collect()
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
