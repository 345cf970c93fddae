//! A proxyless workload in an Istio mesh: the bootstrap Istio's agent writes for it, and the
//! `istio` example's whole flow (a server and a client, both configured by istiod) as a
//! function the interop tests run against a real istiod.
//!
//! In a pod, Istio's agent (pilot-agent, with `inject.istio.io/templates: grpc-agent`) writes
//! the bootstrap and the workload's certificates and points `GRPC_XDS_BOOTSTRAP` at the file;
//! `Mesh::from_bootstrap_env()` is then all an application needs. Outside Kubernetes (here,
//! tests, the example), [`Workload::bootstrap`] writes the same document.

use crate::greeter::{GreeterClient, HelloRequest};
use crate::pki::DevCa;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_tower::Mesh;
use mesh_xds_client::XdsMesh;
use std::path::Path;
use std::time::Duration;
use tower::ServiceExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A proxyless workload as Istio's agent describes it to istiod.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    /// Pod (workload) name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// The workload's IP: istiod matches it against WorkloadEntry (or pod) addresses to find
    /// the inbound config of a server.
    pub ip: &'a str,
    /// Service account (the `sa` of its SPIFFE identity).
    pub service_account: &'a str,
    /// Labels (AuthorizationPolicy selectors match them).
    pub labels: &'a [(&'a str, &'a str)],
    /// Where its certificates are (`cert-chain.pem`, `key.pem`, `root-cert.pem`, Istio's
    /// names): certificate provider `default` watches them. `None`: no identity.
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

    /// The bootstrap JSON for a workload whose istiod serves plaintext ADS at `xds_server`
    /// (`host:port`). `GENERATOR: grpc` makes istiod answer with its proxyless generator.
    ///
    /// ```
    /// use mesh_examples::istio::Workload;
    /// let w = Workload {
    ///     name: "frontend-7d9f", namespace: "shop", ip: "10.0.0.7",
    ///     service_account: "frontend", labels: &[("app", "frontend")], cert_dir: None,
    /// };
    /// let json: serde_json::Value = serde_json::from_str(&w.bootstrap("istiod:15010")).unwrap();
    /// assert_eq!(json["node"]["metadata"]["GENERATOR"], "grpc");
    /// assert_eq!(json["node"]["id"], "sidecar~10.0.0.7~frontend-7d9f.shop~shop.svc.cluster.local");
    /// ```
    pub fn bootstrap(&self, xds_server: &str) -> String {
        let labels: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let mut doc = serde_json::json!({
            "xds_servers": [{
                "server_uri": xds_server,
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
        serde_json::to_string_pretty(&doc).expect("JSON")
    }
}

/// The example service's address: `examples/istio/config/echo.yaml`'s WorkloadEntry.
pub const ECHO_ADDR: &str = "127.0.0.1:17070";
/// The target clients use (host and port of its ServiceEntry).
pub const ECHO_TARGET: &str = "xds:///echo.default.svc.cluster.local:7070";
/// The frontend's identity, which the AuthorizationPolicy allows.
pub const FRONTEND_ID: &str = "spiffe://cluster.local/ns/default/sa/frontend";

/// What the example saw.
#[derive(Debug)]
pub struct Report {
    /// The greeter's reply to the frontend (tonic, over mTLS).
    pub greeting: String,
    /// `GET /hello` through the HTTP client: status and body.
    pub hello: (u16, String),
    /// `GET /admin/users`, which the DENY policy refuses: status.
    pub admin_status: u16,
}

/// Runs the example against istiod's plaintext ADS at `istiod` (`host:port`), serving
/// `examples/istio/config`: a development CA issues the workloads' identities into `workdir`;
/// the `echo` server (our xDS-enabled server: STRICT mTLS and RBAC from istiod) listens on
/// [`ECHO_ADDR`]; the `frontend` calls it with tonic and with the HTTP client.
pub async fn run(istiod: &str, workdir: &Path) -> Result<Report, Error> {
    let ca = DevCa::new("istio example root");
    let identity = |name: &str, id: &str| -> Result<std::path::PathBuf, Error> {
        let dir = workdir.join(name);
        ca.write_workload(&dir, &ca.issue_spiffe(id))?;
        Ok(dir)
    };
    let echo_certs = identity("echo", "spiffe://cluster.local/ns/default/sa/echo")?;
    let frontend_certs = identity("frontend", FRONTEND_ID)?;
    let mesh_for = |w: Workload<'_>| {
        let path = workdir.join(format!("{}-bootstrap.json", w.name));
        let written = std::fs::write(&path, w.bootstrap(istiod));
        async move {
            written?;
            Ok::<Mesh, Error>(Mesh::from_bootstrap(&path).await?)
        }
    };

    // The server: istiod's inbound listener for 127.0.0.1:17070 says mTLS and who may call.
    let echo = mesh_for(Workload {
        name: "echo-v1",
        namespace: "default",
        ip: "127.0.0.1",
        service_account: "echo",
        labels: &[("app", "echo"), ("version", "v1")],
        cert_dir: Some(&echo_certs),
    })
    .await?;
    let addr: std::net::SocketAddr = ECHO_ADDR.parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let server = echo.xds_server(addr, Duration::from_secs(20)).await?;
    let handler = tower::service_fn(move |req| crate::echo::handle(addr, req));
    tokio::spawn(server.serve(listener, handler));

    // The client: routes, the ISTIO_MUTUAL cluster and its endpoints from istiod.
    let frontend = mesh_for(Workload {
        name: "frontend-1",
        namespace: "default",
        ip: "127.0.0.2",
        service_account: "frontend",
        labels: &[("app", "frontend")],
        cert_dir: Some(&frontend_certs),
    })
    .await?;
    let channel = frontend.channel(ECHO_TARGET);
    frontend
        .wait_ready(ECHO_TARGET, Duration::from_secs(20))
        .await?;
    let greeting = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: "frontend".into(),
        })
        .await?
        .into_inner()
        .message;

    let http = frontend.http_client::<Empty<Bytes>>();
    let get = |path: &str| {
        let req = http::Request::get(format!("http://echo.default.svc.cluster.local:7070{path}"))
            .body(Empty::new());
        let http = http.clone();
        async move {
            let res = http.oneshot(req?).await?;
            let status = res.status().as_u16();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, Error>((status, String::from_utf8_lossy(&body).into_owned()))
        }
    };
    let hello = get("/hello").await?;
    let admin_status = get("/admin/users").await?.0;
    Ok(Report {
        greeting,
        hello,
        admin_status,
    })
}
