//! TLS to hosts outside the mesh with the operating system's roots (gRFC A82's
//! `system_root_certs`): the `probe` example, run with `SSL_CERT_FILE` naming a test "public"
//! CA's bundle, calls a TLS server whose certificate that CA issued. The name in `sni` must be
//! on the certificate (a wildcard counts); a certificate from a CA outside the bundle, a name
//! not on it, or no bundle at all fails every request at the handshake and none reaches the
//! server.

mod support;

use mesh_examples::pki::{DevCa, LeafSpec};
use mesh_tower::Mesh;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// A TLS (not mutual) echo server through the mesh's server side, with `cert` as its identity.
async fn tls_server(dir: &Path, ca: &DevCa, dns: &[&str]) -> SocketAddr {
    let issued = ca.issue(&LeafSpec {
        uris: &[],
        dns,
        validity: None,
    });
    let files = ca.write_workload(dir, &issued).unwrap();
    let yaml = format!(
        "certificate_providers: {{ default: {} }}\nservers:\n  - name: public\n    \
         transport_socket: {{ common_tls_context: {{ tls_certificate_provider_instance: {{ instance_name: default }} }} }}\n",
        files.file_watcher_yaml("600s")
    );
    let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let server = mesh.server("public").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
    tokio::spawn(async move {
        let _mesh = mesh;
        server.serve(listener, echo).await
    });
    addr
}

/// Runs `probe` (10 requests) against `addr` with `sni`, the OS bundle being `bundle`; its
/// JSON report.
async fn probe(dir: &Path, addr: SocketAddr, sni: &str, bundle: &Path) -> serde_json::Value {
    let config = dir.join(format!("probe-{}-{sni}.yaml", addr.port()));
    let cluster = format!(
        "transport_socket: {{ sni: \"{sni}\", common_tls_context: {{ validation_context: {{ system_root_certs: {{}} }} }} }}"
    );
    std::fs::write(&config, mesh_examples::yaml::web_config(&[addr], &cluster)).unwrap();
    let mut cmd = Command::new(support::example_binary("probe"));
    cmd.args(["--config"])
        .arg(&config)
        .args(["--target", "xds:///web", "--requests", "10"])
        .env("SSL_CERT_FILE", bundle);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "probe printed no report ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn count(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_outside_hosts_verifies_against_the_system_roots_and_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let public = DevCa::new("test public CA");
    let other = DevCa::new("some other CA");
    let bundle = dir.path().join("ca-certificates.crt");
    std::fs::write(&bundle, public.root_pem()).unwrap();
    let other_bundle = dir.path().join("other.crt");
    std::fs::write(&other_bundle, other.root_pem()).unwrap();

    let exact = tls_server(&dir.path().join("exact"), &public, &["api.example.test"]).await;
    let wildcard = tls_server(&dir.path().join("wild"), &public, &["*.example.test"]).await;

    // The name on the certificate, exactly or by wildcard: served.
    for (addr, sni) in [(exact, "api.example.test"), (wildcard, "shop.example.test")] {
        let r = probe(dir.path(), addr, sni, &bundle).await;
        assert_eq!(r["status"]["200"], 10, "{sni} at {addr}: {r}");
        assert_eq!(count(&r, "errors"), 0, "{r}");
    }
    // A name the certificate does not carry, or a wildcard deeper than one label.
    for (addr, sni) in [(exact, "www.example.test"), (wildcard, "a.b.example.test")] {
        let r = probe(dir.path(), addr, sni, &bundle).await;
        assert_eq!(count(&r, "status"), 0, "{sni}: nothing may be served: {r}");
        assert_eq!(count(&r, "errors"), 10, "{r}");
    }
    // Roots that did not issue the server's certificate.
    let r = probe(dir.path(), exact, "api.example.test", &other_bundle).await;
    assert_eq!(count(&r, "status"), 0, "another CA's bundle: {r}");
    // No bundle at all: every request fails, closed.
    let r = probe(
        dir.path(),
        exact,
        "api.example.test",
        &dir.path().join("missing.crt"),
    )
    .await;
    assert_eq!(count(&r, "status"), 0, "no bundle: {r}");
    assert_eq!(count(&r, "errors"), 10, "{r}");
}
