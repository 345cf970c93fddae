//! Draining (gRFC A36): connections whose settings are gone finish what they carry and close;
//! the grace period bounds how long that takes.

use super::{MeshServer, Serving};
use crate::rbac::RbacEngine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const PATIENCE: Duration = Duration::from_secs(10);

/// A handler for which `/slow` waits for `release` (after telling `entered`), `/never` never
/// answers, and anything else answers `ok` at once.
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

impl Gate {
    fn new() -> Self {
        Self {
            entered: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
        }
    }

    async fn serve(&self, server: MeshServer) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered, release) = (self.entered.clone(), self.release.clone());
        let svc = tower::service_fn(move |req: http::Request<crate::server::Incoming>| {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                match req.uri().path() {
                    "/slow" => {
                        entered.notify_one();
                        release.notified().await;
                    }
                    "/never" => {
                        entered.notify_one();
                        std::future::pending::<()>().await;
                    }
                    _ => {}
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"ok"),
                )))
            }
        });
        tokio::spawn(server.serve(listener, svc));
        addr
    }
}

pub(super) type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection to `addr`, and the task driving it (ends when the connection does).
async fn h2(addr: SocketAddr) -> (Sender, tokio::task::JoinHandle<()>) {
    h2_over(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

/// An HTTP/2 connection over `tcp`, and the task driving it.
pub(super) async fn h2_over(tcp: tokio::net::TcpStream) -> (Sender, tokio::task::JoinHandle<()>) {
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (tx, tokio::spawn(async move { drop(conn.await) }))
}

/// Sends `GET path` and returns the status and body, or the error's text.
async fn get(tx: &mut Sender, path: &str) -> Result<(u16, String), String> {
    let req = http::Request::get(format!("http://echo{path}"))
        .body(Empty::new())
        .unwrap();
    let res = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

async fn open_becomes(server: &MeshServer, n: usize) {
    let mut open = server.open_connections();
    let reached = tokio::time::timeout(PATIENCE, open.wait_for(|o| *o == n));
    assert!(reached.await.is_ok(), "open connections never became {n}");
}

#[tokio::test]
async fn a_drained_connection_finishes_its_request_then_closes() {
    let server = MeshServer::new(None, RbacEngine::default());
    let gate = Gate::new();
    let addr = gate.serve(server.clone()).await;
    let (mut tx, driver) = h2(addr).await;
    assert_eq!(get(&mut tx, "/").await.unwrap(), (200, "ok".into()));
    let mut held = tx.clone();
    let slow = tokio::spawn(async move { get(&mut held, "/slow").await });
    gate.entered.notified().await;
    open_becomes(&server, 1).await;

    server.drain();
    // The request in flight is not cut short...
    gate.release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap(), (200, "ok".into()));
    // ...and then the connection ends (GOAWAY), where an idle HTTP/2 connection would stay.
    tokio::time::timeout(PATIENCE, driver)
        .await
        .expect("the drained connection closes")
        .unwrap();
    open_becomes(&server, 0).await;
    assert_eq!(server.stats().drain_expired, 0);

    // The server itself still accepts: a new connection is served.
    let (mut tx, _driver) = h2(addr).await;
    assert_eq!(get(&mut tx, "/").await.unwrap(), (200, "ok".into()));
}

#[tokio::test]
async fn a_request_outliving_the_grace_period_is_cut_off() {
    let server =
        MeshServer::new(None, RbacEngine::default()).with_drain_grace(Duration::from_millis(100));
    let gate = Gate::new();
    let addr = gate.serve(server.clone()).await;
    let (mut tx, _driver) = h2(addr).await;
    let never = tokio::spawn(async move { get(&mut tx, "/never").await });
    gate.entered.notified().await;
    server.drain();
    let cut = tokio::time::timeout(PATIENCE, never)
        .await
        .unwrap()
        .unwrap();
    assert!(cut.is_err(), "answered after the grace period: {cut:?}");
    open_becomes(&server, 0).await;
    assert_eq!(server.stats().drain_expired, 1);
}

/// A plaintext server `echo` whose limits are `limits` (a YAML flow mapping).
fn config(limits: &str) -> mesh_core::MeshConfig {
    mesh_core::MeshConfig::from_yaml(&format!(
        "servers:\n  - {{ name: echo, limits: {limits}, drain_grace_period: 30s }}\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn new_limits_drain_old_connections_and_a_removed_server_drains_all() {
    let mesh = crate::Mesh::from_config(config("{}")).await.unwrap();
    let server = mesh.server("echo").unwrap();
    assert_eq!(server.drain_grace(), Duration::from_secs(30));
    let gate = Gate::new();
    let addr = gate.serve(server.clone()).await;

    // New limits: the connection holding a request drains, a new one is served.
    let (tx, old) = h2(addr).await;
    let mut held = tx.clone();
    let slow = tokio::spawn(async move { get(&mut held, "/slow").await });
    gate.entered.notified().await;
    mesh.store()
        .replace(config("{ max_concurrent_streams: 7 }"))
        .unwrap();
    super::tests::until("the new limits are in force", || {
        server.limits().max_concurrent_streams == 7
    })
    .await;
    let (mut tx2, fresh) = h2(addr).await;
    assert_eq!(get(&mut tx2, "/").await.unwrap(), (200, "ok".into()));
    gate.release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap(), (200, "ok".into()));
    tokio::time::timeout(PATIENCE, old)
        .await
        .expect("the connection with the old limits closes")
        .unwrap();
    assert!(!fresh.is_finished(), "the new connection is not drained");

    // Removed: NotServing, and the open connection drains too.
    let mut removed = config("{}");
    removed.servers.clear();
    mesh.store().replace(removed).unwrap();
    let mut serving = server.serving();
    let stopped = serving.wait_for(|s| matches!(s, Serving::NotServing(_)));
    assert!(tokio::time::timeout(PATIENCE, stopped).await.is_ok());
    tokio::time::timeout(PATIENCE, fresh)
        .await
        .expect("a server without config closes its connections")
        .unwrap();
    open_becomes(&server, 0).await;
}
