//! The HTTP/2 connection against a scripted `h2` server over in-memory streams: flow-control
//! windows, a reset in the middle of a body, GOAWAY between requests, trailers.

use super::*;
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the scripted server does with each request it accepts.
type Script = Arc<dyn Fn(usize, h2::server::SendResponse<Bytes>) + Send + Sync>;

/// A connector whose every connection is an in-memory stream to a fresh `h2` server running
/// `script` (the request number across the connector and the stream to answer on).
struct Scripted {
    script: Script,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Send GOAWAY after this many requests on a connection.
    goaway_after: Option<usize>,
}

impl Connect for Scripted {
    fn connect(&self, _: &ConnectTarget) -> ConnectFuture {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let (client, server) = tokio::io::duplex(1 << 16);
        let (script, requests, goaway_after) = (
            self.script.clone(),
            self.requests.clone(),
            self.goaway_after,
        );
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(server).await.unwrap();
            let mut on_this = 0;
            while let Some(Ok((req, respond))) = conn.accept().await {
                drop(req);
                on_this += 1;
                script(requests.fetch_add(1, Ordering::Relaxed), respond);
                if goaway_after.is_some_and(|n| on_this >= n) {
                    conn.graceful_shutdown();
                }
            }
        });
        Box::pin(async move { Ok(Box::new(client) as BoxIo) })
    }
}

fn connection(script: Script, goaway_after: Option<usize>) -> (Connection, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let connector = Connector::new(Scripted {
        script,
        connections: connections.clone(),
        requests: Arc::default(),
        goaway_after,
    });
    let target = ConnectTarget {
        address: "127.0.0.1:1".parse().unwrap(),
        cluster: "c".into(),
        connect_timeout: Duration::from_secs(5),
        protocol: Protocol::Http2,
        tls: None,
    };
    let limits = Arc::new(Limits::new("c".into()));
    (Connection::new(target, connector, limits), connections)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://c/")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn respond(respond: &mut h2::server::SendResponse<Bytes>) -> h2::SendStream<Bytes> {
    respond
        .send_response(Response::new(()), false)
        .expect("response head sent")
}

#[tokio::test]
async fn a_body_larger_than_the_windows_arrives_as_the_caller_reads_it() {
    // 6 MiB: more than the stream window (2 MiB) and the connection window (5 MiB), so the
    // server can finish only if each frame's credit is given back as it is read.
    const LEN: usize = 6 * 1024 * 1024;
    let script: Script = Arc::new(|_, mut r| {
        let mut body = respond(&mut r);
        tokio::spawn(async move {
            let mut left = LEN;
            while left > 0 {
                body.reserve_capacity(left.min(1 << 20));
                let cap = std::future::poll_fn(|cx| body.poll_capacity(cx))
                    .await
                    .unwrap()
                    .unwrap();
                let n = cap.min(left);
                left -= n;
                body.send_data(Bytes::from(vec![7u8; n]), left == 0)
                    .unwrap();
            }
        });
    });
    let (conn, _) = connection(script, None);
    let res = conn.send(get()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), LEN);
    assert!(body.iter().all(|b| *b == 7));
}

#[tokio::test]
async fn a_reset_mid_body_fails_the_body_and_leaves_the_connection_usable() {
    // The reset comes once the client has read the first half.
    let read_half = Arc::new(tokio::sync::Notify::new());
    let go = read_half.clone();
    let script: Script = Arc::new(move |n, mut r| {
        let mut body = respond(&mut r);
        if n == 0 {
            body.send_data(Bytes::from_static(b"half"), false).unwrap();
            let go = go.clone();
            tokio::spawn(async move {
                go.notified().await;
                body.send_reset(h2::Reason::INTERNAL_ERROR);
            });
        } else {
            body.send_data(Bytes::from_static(b"whole"), true).unwrap();
        }
    });
    let (conn, connections) = connection(script, None);
    let mut body = conn.send(get()).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "half");
    read_half.notify_one();
    let err = body.frame().await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains("INTERNAL_ERROR") || format!("{err:?}").contains("INTERNAL_ERROR"),
        "{err:?}"
    );
    let again = conn.send(get()).await.unwrap().into_body();
    assert_eq!(again.collect().await.unwrap().to_bytes(), "whole");
    assert_eq!(
        connections.load(Ordering::Relaxed),
        1,
        "the reset ended a stream, not the connection"
    );
}

#[tokio::test]
async fn after_goaway_the_next_request_goes_on_a_new_connection() {
    let script: Script = Arc::new(|n, mut r| {
        let mut body = respond(&mut r);
        body.send_data(Bytes::from(n.to_string()), true).unwrap();
    });
    // Each connection takes one request, then says GOAWAY.
    let (conn, connections) = connection(script, Some(1));
    for n in 0..3 {
        let res = conn.send(get()).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, n.to_string());
    }
    // Every request was served; those after a GOAWAY on new connections.
    assert!(
        connections.load(Ordering::Relaxed) >= 2,
        "a new connection after GOAWAY"
    );
}

#[tokio::test]
async fn trailers_follow_the_data() {
    let script: Script = Arc::new(|_, mut r| {
        let mut body = respond(&mut r);
        body.send_data(Bytes::from_static(b"msg"), false).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        body.send_trailers(trailers).unwrap();
    });
    let (conn, _) = connection(script, None);
    let mut body = conn.send(get()).await.unwrap().into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "msg"
    );
    let trailers = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
}

/// A connector whose every connection is an in-memory stream to a hyper HTTP/1.1 server that
/// answers with the request's `host` header and its request line's target.
struct EchoHost {
    connections: Arc<AtomicUsize>,
}

impl Connect for EchoHost {
    fn connect(&self, _: &ConnectTarget) -> ConnectFuture {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req.headers().get(header::HOST).map(|v| v.to_str().unwrap());
                    let answer = format!("{} {}", host.unwrap_or("-"), req.uri());
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(answer))))
                });
            let io = hyper_util::rt::TokioIo::new(server);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
        Box::pin(async move { Ok(Box::new(client) as BoxIo) })
    }
}

#[tokio::test]
async fn http1_requests_carry_their_own_authority_as_host_and_reuse_the_connection() {
    let connections = Arc::new(AtomicUsize::new(0));
    let target = ConnectTarget {
        address: "127.0.0.1:1".parse().unwrap(),
        cluster: "c".into(),
        connect_timeout: Duration::from_secs(5),
        protocol: Protocol::Http1,
        tls: None,
    };
    let connector = Connector::new(EchoHost {
        connections: connections.clone(),
    });
    let conn = Connection::new(target, connector, Arc::new(Limits::new("c".into())));
    let send = |uri: &'static str| {
        let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
        let answer = conn.send(req);
        async move {
            let body = answer.await.unwrap().into_body().collect().await.unwrap();
            String::from_utf8(body.to_bytes().to_vec()).unwrap()
        }
    };
    // The first authority is cached; another one (a second virtual host on the same
    // endpoint) must still get its own.
    assert_eq!(send("http://a.example/x?q=1").await, "a.example /x?q=1");
    assert_eq!(send("http://b.example:8080/y").await, "b.example:8080 /y");
    assert_eq!(send("http://a.example/z").await, "a.example /z");
    assert_eq!(
        connections.load(Ordering::Relaxed),
        1,
        "one connection, reused"
    );
}
