//! Shared by the istiod scenarios (`tests/istio*.rs`): a watched config directory with
//! istiod on it, clients configured by the bootstrap Istio's agent writes, and the Istio YAML
//! for the `echo` service (ServiceEntry, WorkloadEntries, DestinationRule, VirtualService).

use super::istiod::Istiod;
use bytes::Bytes;
use http_body_util::Empty;
pub use mesh_examples::istio::Workload;
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub const HOST: &str = "echo.default.svc.cluster.local";
pub const PORT: u16 = 7070;

/// A config directory istiod watches, and istiod on it.
pub struct Cp {
    pub dir: tempfile::TempDir,
    pub istiod: Istiod,
}

impl Drop for Cp {
    /// A failed scenario shows the end of istiod's log (what it pushed, what was NACKed).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("istiod.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- istiod.log (last 60 lines)");
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Cp {
    pub fn start(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        for (name, yaml) in files {
            std::fs::write(dir.path().join("config").join(name), yaml).unwrap();
        }
        let istiod = Istiod::start(&dir.path().join("config"));
        Cp { dir, istiod }
    }

    /// Replaces one config file (write + rename, as `kubectl apply` replaces an object).
    pub fn write(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join("config").join(name);
        let tmp = self.dir.path().join(format!("{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Writes a workload's bootstrap (as Istio's agent writes it) and returns its path.
    pub fn bootstrap_file(&self, workload: &Workload<'_>) -> std::path::PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("{}-bootstrap.json", workload.name));
        std::fs::write(&path, workload.bootstrap(&self.istiod.grpc.to_string())).unwrap();
        path
    }

    /// A client workload's mesh (bootstrap as Istio's agent writes it).
    pub async fn client(&self, workload: &Workload<'_>, delta: bool) -> Mesh {
        let path = self.bootstrap_file(workload);
        let bootstrap = Bootstrap::from_file(&path).unwrap();
        let builder = XdsClientBuilder::from_bootstrap(bootstrap)
            .delta(delta)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        Mesh::from_xds(builder).await.unwrap()
    }
}

pub fn client_workload(dir: Option<&Path>) -> Workload<'_> {
    Workload {
        name: "client",
        namespace: "default",
        ip: "127.0.0.10",
        service_account: "client",
        labels: &[("app", "client")],
        cert_dir: dir,
    }
}

/// The `echo-v1` server workload (127.0.0.1, service account `echo`, labels app=echo and
/// version=v1), its certificates in `dir`.
pub fn echo_workload(dir: &Path) -> Workload<'_> {
    Workload {
        name: "echo-v1",
        namespace: "default",
        ip: "127.0.0.1",
        service_account: "echo",
        labels: &[("app", "echo"), ("version", "v1")],
        cert_dir: Some(dir),
    }
}

/// ServiceEntry `echo` (port 7070 named `http`) selecting WorkloadEntries `echo-<version>`,
/// one per backend; a DestinationRule with a subset per version (and `extra` DR fields).
pub fn service(backends: &[(&str, SocketAddr)], dr_extra: &str) -> String {
    let mut out = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: echo}}}}
"#
    );
    let mut subsets = String::new();
    for (version, addr) in backends {
        out.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-{version}, namespace: default}}
spec:
  address: {ip}
  ports: {{http: {port}}}
  serviceAccount: echo
  labels: {{app: echo, version: {version}}}
"#,
            ip = addr.ip(),
            port = addr.port()
        ));
        subsets.push_str(&format!(
            "  - {{name: {version}, labels: {{version: {version}}}}}\n"
        ));
    }
    out.push_str(&format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
{dr_extra}  subsets:
{subsets}"#
    ));
    out
}

/// A VirtualService for the echo host with the given `http:` rules (YAML, indented 2).
pub fn virtual_service(http: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
{http}"#
    )
}

pub fn dest(subset: &str) -> String {
    format!("{{destination: {{host: {HOST}, subset: {subset}}}}}")
}

/// Which backend answered each of `n` requests (by address); errors by status or kind.
pub async fn tally(
    svc: &MeshService<Empty<Bytes>>,
    uri: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> HashMap<String, usize> {
    use tower::ServiceExt;
    let mut out = HashMap::new();
    for _ in 0..n {
        let mut req = http::Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let key = match svc.clone().oneshot(req.body(Empty::new()).unwrap()).await {
            Ok(res) if res.status() == 200 => res
                .headers()
                .get("x-backend")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| "no x-backend".into()),
            Ok(res) => format!("status {}", res.status().as_u16()),
            Err(e) => format!("error {:?}", e.kind()),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

pub const TARGET: &str = "xds:///echo.default.svc.cluster.local:7070";

/// Status and body of a GET or POST through `svc`; a mesh error as its kind.
pub async fn call(svc: &MeshService<Empty<Bytes>>, method: &str, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Empty::new())
        .unwrap();
    match svc.clone().oneshot(req).await {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, format!("{:?}: {e}", e.kind())),
    }
}

/// PeerAuthentication STRICT for namespace `default`, then `---` (prefix an
/// AuthorizationPolicy document to it).
pub const STRICT_MTLS: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
"#;

/// AuthorizationPolicy `echo-deny`: DENY every caller `/admin*` on the echo workloads.
pub const DENY_ADMIN: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-deny, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin*]}}]
"#;

/// Issues `id` from `pki` into `<dir>/<name>` (the files Istio's agent writes); returns it.
pub fn issue(
    pki: &mesh_examples::pki::DevCa,
    dir: &Path,
    name: &str,
    id: &str,
) -> std::path::PathBuf {
    let dir = dir.join(name);
    pki.write_workload(&dir, &pki.issue_spiffe(id)).unwrap();
    dir
}

/// Waits for every caller and adds up their tallies.
pub async fn merged(
    mut callers: tokio::task::JoinSet<HashMap<String, usize>>,
) -> HashMap<String, usize> {
    let mut total: HashMap<String, usize> = HashMap::new();
    while let Some(t) = callers.join_next().await {
        for (k, v) in t.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}
