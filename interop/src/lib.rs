//! Test-only crate: integration tests against real servers on loopback (`tests/`), interop tests
//! against real third-party peers (go-control-plane in `gocp/`, Envoy), and the in-process ADS
//! server those tests and the benches share.

#![forbid(unsafe_code)]

pub mod ads;
pub mod envoy;
mod gobin;
pub mod gocp;
pub mod istiod;
pub mod jaeger;
pub mod prometheus;
pub mod sovereign;

/// One HTTP/1.1 request to a peer's plain-text admin/debug port; returns status and body.
pub(crate) async fn http1(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: String,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let res = tx.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
