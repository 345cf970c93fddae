//! An HTTP server behind mesh TLS that answers with who called: the body is the caller's
//! SPIFFE ID as the TLS acceptor verified it (empty without a client certificate). It speaks
//! HTTP/1.1 and HTTP/2 (by ALPN) and can close each connection after one answer, so that every
//! request is a new handshake (rotation tests).

use crate::pki::WorkloadFiles;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_tower::control::Control;
use mesh_tower::tls::{CertificateProvider, ServerTls};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves on `127.0.0.1:0` until the handle is aborted; `keep_alive: false` closes HTTP/1.1
/// connections after each response.
pub async fn spawn_identity_echo(
    tls: ServerTls,
    keep_alive: bool,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut incoming = Box::pin(tls.incoming(listener));
    let task = tokio::spawn(async move {
        while let Some(Ok(conn)) = incoming.next().await {
            let caller = conn
                .peer()
                .identity
                .as_ref()
                .and_then(|i| i.spiffe_id().map(str::to_owned))
                .unwrap_or_default();
            let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                let body = Full::new(Bytes::from(caller.clone()));
                async move { Ok::<_, Infallible>(http::Response::new(body)) }
            });
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().keep_alive(keep_alive);
                let _ = builder.serve_connection(TokioIo::new(conn), svc).await;
            });
        }
    });
    Ok((addr, task))
}

/// Server mTLS as Istio's STRICT mode has it: the identity and the client-certificate roots
/// from one `file_watcher` provider named `name` watching `files` every `refresh` (a YAML
/// duration such as `0.2s`), and a client certificate required. Returns the provider too, for
/// its status.
pub fn strict_server_tls(
    name: &str,
    files: &WorkloadFiles,
    refresh: &str,
) -> (ServerTls, CertificateProvider) {
    let config: mesh_core::config::tls::CertificateProvider =
        serde_saphyr::from_str(&files.file_watcher_yaml(refresh)).expect("provider YAML");
    let watcher = config.file_watcher.as_ref().expect("a file_watcher");
    let provider = CertificateProvider::file_watcher(name, watcher, &Control::dedicated());
    let downstream = serde_saphyr::from_str(&format!(
        "require_client_certificate: true\n\
         common_tls_context:\n  \
           tls_certificate_provider_instance: {{ instance_name: {name} }}\n  \
           validation_context: {{ ca_certificate_provider_instance: {{ instance_name: {name} }} }}\n"
    ))
    .expect("server TLS YAML");
    let p = provider.clone();
    let tls = ServerTls::new(&downstream, move |_| Some(p.clone())).expect("valid server TLS");
    (tls, provider)
}
