//! sovereign (PyPI, 0.32.12): a REST-JSON xDS control plane, the peer of the client's REST
//! transport (`POST /v3/discovery:<type>`).
//!
//! Its templates are Python modules this fixture writes: each yields the resources of one
//! type from `resources.json` in the fixture's directory, so a test changes the config by
//! rewriting that file (sovereign renders on every request; the version it answers with is a
//! hash of what it rendered, and it answers `304` when that is the version asked about).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// The sovereign executable: `$SOVEREIGN_BIN`, else `target/venv-sovereign/bin/sovereign`
/// (what the test command installs); panics naming the install step when neither exists.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SOVEREIGN_BIN") {
        return p.into();
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv-sovereign/bin/sovereign");
    assert!(
        p.exists(),
        "sovereign is required for the REST-JSON tests: run `bash .ci/test` (installs \
         sovereign==0.32.12 into target/venv-sovereign) or set SOVEREIGN_BIN"
    );
    p
}

/// The discovery types and their template names.
const TYPES: [&str; 4] = ["listeners", "routes", "clusters", "endpoints"];

/// A running sovereign; killed on drop.
#[derive(Debug)]
pub struct Sovereign {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
    /// Its log lines: one per request, `path`, `status`, `resource_version` (client → server)
    /// and `error_detail` (a NACK's message, else `-`).
    pub lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Sovereign {
    /// Starts it serving `resources` (`{"listeners": [...], "clusters": [...], ...}`, each
    /// resource in Envoy's JSON form) and returns once it answers its health check.
    pub async fn start(resources: &serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("resources.json");
        let mut templates = String::from("templates:\n  default:\n");
        for ty in TYPES {
            let module = dir.path().join(format!("{ty}.py"));
            std::fs::write(
                &module,
                format!(
                    "import json\n\ndef call(*args, **kwargs):\n    with open({data:?}) as f:\n        \
                     yield from json.load(f).get({ty:?}, [])\n"
                ),
            )
            .unwrap();
            templates.push_str(&format!(
                "    - {{ type: {ty}, spec: {{ protocol: python, serialization: raw, path: {} }} }}\n",
                module.display()
            ));
        }
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, templates).unwrap();
        let addr = crate::envoy::free_port();
        let mut child = Command::new(binary())
            .env("SOVEREIGN_CONFIG", format!("file://{}", config.display()))
            .env("SOVEREIGN_HOST", addr.ip().to_string())
            .env("SOVEREIGN_PORT", addr.port().to_string())
            .env("SOVEREIGN_WORKERS", "1")
            // The access log with the requests' error details (a NACK's message).
            .env(
                "SOVEREIGN_LOG_FORMAT",
                r#"{"type": "{type}", "path": "{PATH}", "status": "{STATUS_CODE}", "resource_version": "{XDS_CLIENT_VERSION} -> {XDS_SERVER_VERSION}", "error_detail": "{XDS_ERROR_DETAIL}"}"#,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: gunicorn's workers are stopped with their master.
            .process_group(0)
            .spawn()
            .expect("start sovereign");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let me = Self {
            child,
            addr,
            lines,
            dir,
        };
        me.set(resources);
        let up = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok()
                    && crate::http1(addr, "GET", "/healthcheck", String::new())
                        .await
                        .0
                        == 200
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        assert!(
            up.await.is_ok(),
            "sovereign never answered its health check"
        );
        me
    }

    /// Serves `resources` from now on (written aside, then renamed into place).
    pub fn set(&self, resources: &serde_json::Value) {
        let aside = self.dir.path().join(".resources.json");
        std::fs::write(&aside, serde_json::to_vec(resources).unwrap()).unwrap();
        std::fs::rename(&aside, self.dir.path().join("resources.json")).unwrap();
    }
}

impl Drop for Sovereign {
    fn drop(&mut self) {
        // The whole group (master and workers; a SIGKILLed master leaves its workers behind).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
