//! What the server-side oracles against grpc-go share: the bootstrap both servers read, and
//! a raw gRPC call's request and status.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;

/// The bootstrap Istio's agent writes for a proxyless server: an insecure ADS channel, the
/// listener name template, and certificate provider `default` reading `files`.
pub fn bootstrap(
    ads: SocketAddr,
    node: &str,
    template: &str,
    files: &mesh_examples::pki::WorkloadFiles,
) -> serde_json::Value {
    serde_json::json!({
        "xds_servers": [{"server_uri": ads.to_string(), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
        "node": {"id": node},
        "server_listener_resource_name_template": template,
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": files.cert,
            "private_key_file": files.key,
            "ca_certificate_file": files.roots,
            "refresh_interval": "600s",
        }}},
    })
}

/// A unary `helloworld.HelloRequest { name: "x" }` to `method` (a path), length-prefixed.
pub fn hello_request(method: &str) -> http::request::Builder {
    http::Request::post(format!("https://localhost{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
}

/// The body of [`hello_request`].
pub fn hello_body() -> Full<Bytes> {
    let message = [0x0a, 0x01, b'x'];
    let mut frame = vec![0, 0, 0, 0, message.len() as u8];
    frame.extend_from_slice(&message);
    Full::new(Bytes::from(frame))
}

/// The response's `grpc-status`, from its headers (trailers-only) or its trailers.
pub async fn status(
    res: http::Response<hyper::body::Incoming>,
) -> Result<u32, mesh_core::BoxError> {
    let status_of = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
    };
    if let Some(s) = status_of(res.headers()) {
        return Ok(s);
    }
    let body = res.into_body().collect().await?;
    body.trailers()
        .and_then(status_of)
        .ok_or_else(|| "no grpc-status".into())
}

/// The server's workload files under `dir`: a leaf for `spiffe_id` (and DNS `localhost`,
/// the name the test callers verify) issued by `ca`.
pub fn server_files(
    ca: &mesh_examples::pki::DevCa,
    dir: &std::path::Path,
    spiffe_id: &str,
) -> mesh_examples::pki::WorkloadFiles {
    let leaf = ca.issue(&mesh_examples::pki::LeafSpec {
        uris: &[spiffe_id],
        dns: &["localhost"],
        validity: None,
    });
    ca.write_workload(&dir.join("greeter"), &leaf).unwrap()
}

/// Our mesh on the same bootstrap as the grpc-go servers (node `mesh`).
pub async fn mesh(
    ads: SocketAddr,
    template: &str,
    files: &mesh_examples::pki::WorkloadFiles,
) -> mesh_tower::Mesh {
    use mesh_xds_client::XdsMesh;
    let json = bootstrap(ads, "mesh", template, files).to_string();
    mesh_tower::Mesh::from_xds(mesh_xds_client::XdsClientBuilder::from_bootstrap(
        mesh_xds_client::bootstrap::Bootstrap::from_json(&json).unwrap(),
    ))
    .await
    .unwrap()
}
