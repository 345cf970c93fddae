//! Two services talking over mesh mTLS, on the embedded default (no control plane).
//!
//! A development CA issues two SPIFFE identities and writes them where Istio's agent would
//! (`cert-chain.pem`, `key.pem`, `root-cert.pem`). The backend (a tonic greeter) accepts only
//! clients with a certificate from that CA; the frontend's mesh has a cluster whose
//! `transport_socket` presents the frontend's identity and accepts only the backend's SPIFFE
//! ID. Each side prints the other's verified identity. Then the backend's certificate is
//! rotated on disk and the next connection shows the new serial.
//!
//! Run: `cargo run --release --example mtls`

use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
use mesh_examples::pki::DevCa;
use mesh_tower::Mesh;
use mesh_tower::tls::PeerIdentity;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const BACKEND: &str = "spiffe://cluster.local/ns/shop/sa/greeter";

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let dir = std::env::temp_dir().join(format!("mesh-mtls-{}", std::process::id()));
    let ca = DevCa::new("mesh dev root");

    // The backend: its identity on disk, a mesh that only holds its certificate provider,
    // and a tonic server behind the mesh's TLS acceptor (client certificates required).
    let backend_cert = ca.issue_spiffe(BACKEND);
    let backend_files = ca.write_workload(&dir.join("greeter"), &backend_cert)?;
    let backend_mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&format!(
        "certificate_providers: {{ default: {} }}",
        backend_files.file_watcher_yaml("1s")
    ))?)
    .await?;
    let server_tls = backend_mesh.server_tls(&serde_saphyr::from_str(
        r#"
require_client_certificate: true
common_tls_context:
  tls_certificate_provider_instance: { instance_name: default }
  validation_context: { ca_certificate_provider_instance: { instance_name: default } }
"#,
    )?)?;
    let (addr, _server) = greeter::spawn_tls_server(server_tls, BACKEND).await?;

    // The frontend: a mesh whose greeter cluster speaks mTLS and accepts only the backend.
    let frontend_files = ca.write_workload(&dir.join("frontend"), &ca.issue_spiffe(FRONTEND))?;
    let config = mesh_core::MeshConfig::from_yaml(&format!(
        r#"
certificate_providers:
  default: {provider}
listeners:
  - name: greeter
    route_config:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{{ match: {{ prefix: / }}, route: {{ cluster: greeter }} }}]
clusters:
  - name: greeter
    type: STATIC
    protocol: HTTP2
    load_assignment:
      cluster_name: greeter
      endpoints: [{{ lb_endpoints: [{{ address: "{addr}" }}] }}]
    transport_socket:
      common_tls_context:
        tls_certificate_provider_instance: {{ instance_name: default }}
        validation_context:
          ca_certificate_provider_instance: {{ instance_name: default }}
          match_subject_alt_names: [{{ exact: "{BACKEND}" }}]
"#,
        provider = frontend_files.file_watcher_yaml("1s"),
    ))?;
    let mesh = Mesh::from_config(config).await?;
    println!("greeter on {addr} (mTLS, client certificates required)");

    let mut client = GreeterClient::new(mesh.channel("xds:///greeter"));
    let reply = client
        .say_hello(HelloRequest {
            name: "frontend".into(),
        })
        .await?;
    let peer = reply.extensions().get::<PeerIdentity>().cloned();
    println!("the backend says:  {}", reply.into_inner().message);
    print_peer("the frontend saw: ", peer.as_ref());

    // Rotation: a new backend certificate on disk; the next connection presents it.
    let rotated = ca.issue_spiffe(BACKEND);
    ca.write_workload(&dir.join("greeter"), &rotated)?;
    let provider = backend_mesh
        .certificate_provider("default")
        .ok_or("no provider")?;
    while provider.status().serial.as_deref() != Some(rotated.serial.as_str()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = Mesh::from_config(mesh.store().load().to_config()).await?;
    let reply = GreeterClient::new(fresh.channel("xds:///greeter"))
        .say_hello(HelloRequest {
            name: "frontend".into(),
        })
        .await?;
    print_peer(
        "after rotation, a new connection saw:",
        reply.extensions().get::<PeerIdentity>(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn print_peer(label: &str, peer: Option<&PeerIdentity>) {
    match peer {
        Some(p) => println!(
            "{label} {} (certificate serial {})",
            p.spiffe_id().unwrap_or("<no SPIFFE ID>"),
            p.serial()
        ),
        None => println!("{label} <no TLS>"),
    }
}
