//! The mesh's HTTP/2 connection (driven on `h2` directly) against a real hyper server on
//! loopback: streamed and large request bodies with trailers, flow control, connection-specific
//! headers, the peer's stream limit, and a request body that fails.

mod support;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;

type Chunks = StreamBody<BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

/// A body fed from a channel: what the test sends, when it sends it.
fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, Chunks) {
    let (tx, rx) = mpsc::channel(4);
    let frames = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (tx, StreamBody::new(frames.boxed()))
}

/// An HTTP/2 server that reads the whole request (data and trailers) and answers with: the
/// body's length and a digest of it, the `x-end` trailer it got, the `te` header it saw, and
/// whether any connection-specific header reached it.
async fn server(max_streams: u32, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let te = req.headers().get("te").cloned();
                    let forbidden = ["connection", "keep-alive", "upgrade", "transfer-encoding"]
                        .iter()
                        .any(|h| req.headers().contains_key(*h));
                    let collected = req.into_body().collect().await;
                    tokio::time::sleep(delay).await;
                    let res = match collected {
                        Ok(body) => {
                            let trailer = body
                                .trailers()
                                .and_then(|t| t.get("x-end"))
                                .map(|v| v.to_str().unwrap_or("?").to_owned())
                                .unwrap_or_default();
                            let bytes = body.to_bytes();
                            let digest = bytes
                                .iter()
                                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
                            let mut res = Response::new(Full::new(Bytes::from(format!(
                                "{} {digest} {trailer}",
                                bytes.len()
                            ))));
                            if let Some(te) = te {
                                res.headers_mut().insert("x-te", te);
                            }
                            res.headers_mut()
                                .insert("x-forbidden", forbidden.to_string().parse().unwrap());
                            res
                        }
                        Err(_) => {
                            let mut res = Response::new(Full::new(Bytes::from("body failed")));
                            *res.status_mut() = http::StatusCode::BAD_REQUEST;
                            res
                        }
                    };
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max_streams)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn digest(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

async fn call<B>(svc: mesh_tower::MeshService<B>, req: Request<B>) -> (Response<()>, String)
where
    B: mesh_tower::RequestBody,
{
    let res = tower::ServiceExt::oneshot(svc, req)
        .await
        .expect("answered");
    let (head, body) = res.into_parts();
    let bytes = body.collect().await.expect("response body").to_bytes();
    (
        Response::from_parts(head, ()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn a_streamed_request_body_arrives_whole_with_its_trailers() {
    let addr = server(100, Duration::ZERO).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    let (tx, body) = channel_body();
    let req = Request::post("http://web/upload").body(body).unwrap();
    let call = tokio::spawn(call(mesh.channel::<Chunks>("web"), req));
    // Chunks that are not ready when the request goes out, then trailers.
    let mut sent = Vec::new();
    for i in 0..5u8 {
        let chunk = Bytes::from(vec![b'a' + i; 1000 + usize::from(i)]);
        sent.extend_from_slice(&chunk);
        tx.send(Ok(Frame::data(chunk))).await.unwrap();
        tokio::task::yield_now().await;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-end", "done".parse().unwrap());
    tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
    drop(tx);
    let (res, text) = call.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(text, format!("{} {} done", sent.len(), digest(&sent)));
}

#[tokio::test]
async fn bodies_larger_than_every_window_are_sent_whole() {
    let addr = server(100, Duration::ZERO).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    // 6 MiB in one ready chunk (sent at once, h2 holds it until the windows open) …
    let big: Bytes = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let req = Request::post("http://web/big")
        .body(Full::new(big.clone()))
        .unwrap();
    let (res, text) = call(mesh.channel::<Full<Bytes>>("web"), req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(text, format!("{} {} ", big.len(), digest(&big)));
    // … and the same streamed in 1 MiB chunks (sent as the windows allow).
    let (tx, body) = channel_body();
    let req = Request::post("http://web/big").body(body).unwrap();
    let call = tokio::spawn(call(mesh.channel::<Chunks>("web"), req));
    for chunk in big.chunks(1024 * 1024) {
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
            .await
            .unwrap();
    }
    drop(tx);
    let (res, text) = call.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(text, format!("{} {} ", big.len(), digest(&big)));
}

#[tokio::test]
async fn connection_specific_headers_are_dropped_and_te_trailers_kept() {
    let addr = server(100, Duration::ZERO).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    let send = |te: &'static str| {
        let svc = mesh.channel::<Full<Bytes>>("web");
        let req = Request::post("http://web/h")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .header("upgrade", "websocket")
            .header("te", te)
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        call(svc, req)
    };
    let (res, _) = send("trailers").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-forbidden"], "false");
    assert_eq!(res.headers()["x-te"], "trailers");
    let (res, _) = send("gzip").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("x-te").is_none(),
        "te other than trailers is dropped"
    );
}

#[tokio::test]
async fn requests_over_the_peers_stream_limit_wait_for_a_slot() {
    // One stream at a time, each held for 30 ms: eight concurrent calls must queue.
    let addr = server(1, Duration::from_millis(30)).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    let svc = mesh.channel::<Full<Bytes>>("web");
    // One call first, so the connection is up: this test is about a live connection at its
    // limit (a burst on a new connection is the test below).
    let warm = Request::post("http://web/q")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(svc.clone(), warm).await.0.status(), 200);
    eight_at_once(&svc).await;
}

/// Eight calls at once with bodies of 1…8 bytes; each must be answered whole and in full.
async fn eight_at_once(svc: &mesh_tower::MeshService<Full<Bytes>>) {
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let req = Request::post("http://web/q")
                .body(Full::new(Bytes::from(vec![b'q'; i + 1])))
                .unwrap();
            tokio::spawn(call(svc.clone(), req))
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (res, text) = call.await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(text.starts_with(&format!("{} ", i + 1)), "{text}");
    }
}

#[tokio::test]
async fn a_burst_on_a_new_connection_waits_for_the_servers_settings() {
    // No warm-up and no retry policy: eight calls open the connection together. Streams sent
    // before the server's SETTINGS (limit 1) arrive would be refused; they must wait instead.
    for _ in 0..3 {
        let addr = server(1, Duration::from_millis(5)).await;
        let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
        let svc = mesh.channel::<Full<Bytes>>("web");
        eight_at_once(&svc).await;
    }
}

#[tokio::test]
async fn waiting_for_a_stream_slot_is_bounded_by_max_pending_requests() {
    use futures_util::FutureExt;
    use tower::{Service, ServiceExt};
    // One stream at a time, each answered after 200 ms; at most two requests may wait.
    let addr = server(1, Duration::from_millis(200)).await;
    let yaml = web_config(
        &[addr],
        "HTTP2, circuit_breakers: { thresholds: [{ max_pending_requests: 2 }] }",
    );
    let mesh = mesh_from(&yaml).await;
    let mut svc = mesh.channel::<Full<Bytes>>("web");
    let post = || {
        Request::post("http://web/q")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap()
    };
    assert_eq!(
        call(svc.clone(), post()).await.0.status(),
        200,
        "connection up"
    );
    // A takes the one slot; B and C wait for it (pending); D finds the queue full.
    let a = svc.ready().await.unwrap().call(post());
    let mut b = Box::pin(svc.ready().await.unwrap().call(post()));
    let mut c = Box::pin(svc.ready().await.unwrap().call(post()));
    assert!((&mut b).now_or_never().is_none(), "B waits for a slot");
    assert!((&mut c).now_or_never().is_none(), "C waits for a slot");
    let err = svc.ready().await.unwrap().call(post()).await.unwrap_err();
    assert_eq!(err.kind(), mesh_tower::ErrorKind::Overflow, "{err}");
    assert!(
        err.to_string().contains("max_pending_requests (2)"),
        "{err}"
    );
    // The admitted ones are served in turn.
    for (name, fut) in [
        (
            "A",
            Box::pin(a) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
        ),
        ("B", b),
        ("C", c),
    ] {
        let res = fut.await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(res.status(), 200, "{name}");
        let _ = res.into_body().collect().await.unwrap();
    }
}

#[tokio::test]
async fn a_freed_stream_slot_goes_to_the_longest_waiter() {
    use futures_util::FutureExt;
    use tower::{Service, ServiceExt};
    // One stream at a time. B waits for A's slot; when A ends, a newcomer C must not take the
    // slot ahead of B (under a closed loop, a waiter could otherwise wait for ever).
    let addr = server(1, Duration::from_millis(100)).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    let mut svc = mesh.channel::<Full<Bytes>>("web");
    let post = |tag: &'static str| {
        Request::post("http://web/q")
            .body(Full::new(Bytes::from_static(tag.as_bytes())))
            .unwrap()
    };
    assert_eq!(
        call(svc.clone(), post("w")).await.0.status(),
        200,
        "connection up"
    );
    let a = svc.ready().await.unwrap().call(post("a"));
    let mut b = Box::pin(svc.ready().await.unwrap().call(post("bb")));
    assert!((&mut b).now_or_never().is_none(), "B waits for a slot");
    let res = a.await.unwrap();
    let _ = res.into_body().collect().await.unwrap();
    // A's slot is free again: C arrives now.
    let c = svc.ready().await.unwrap().call(post("ccc"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (name, fut) in [
        (
            "B",
            b as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
        ),
        ("C", Box::pin(c)),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let res: Result<http::Response<_>, mesh_tower::MeshError> = fut.await;
            let _ = res.unwrap().into_body().collect().await;
            tx.send(name).unwrap();
        });
    }
    assert_eq!(rx.recv().await, Some("B"), "the waiter is served first");
    assert_eq!(rx.recv().await, Some("C"));
}

#[tokio::test]
async fn a_failing_request_body_fails_the_call_not_the_connection() {
    let addr = server(100, Duration::ZERO).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    let (tx, body) = channel_body();
    let req = Request::post("http://web/fail").body(body).unwrap();
    let pending = tokio::spawn(tower::ServiceExt::oneshot(
        mesh.channel::<Chunks>("web"),
        req,
    ));
    tx.send(Ok(Frame::data(Bytes::from_static(b"partial"))))
        .await
        .unwrap();
    tx.send(Err(std::io::Error::other("caller gave up")))
        .await
        .unwrap();
    // The upstream must not take a truncated body for a whole one: the stream is reset, so
    // the call fails (or the server reports the broken body); it never answers "7 …".
    match pending.await.unwrap() {
        Err(e) => assert_eq!(e.kind(), mesh_tower::ErrorKind::Upstream, "{e}"),
        Ok(res) => assert_eq!(res.status(), 400),
    }
    // The connection is fine for the next request.
    let req = Request::post("http://web/ok")
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap();
    let (res, text) = call(mesh.channel::<Full<Bytes>>("web"), req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(text, format!("2 {} ", digest(b"ok")));
}

#[tokio::test]
async fn bodies_ready_at_once_in_any_number_of_chunks_arrive_whole() {
    // One chunk whose end shows only on the next poll (tonic's unary bodies), two (both sent
    // at once), and more (handed to the pump): each arrives whole, trailers too.
    let addr = server(100, Duration::ZERO).await;
    let mesh = mesh_from(&web_config(&[addr], "HTTP2")).await;
    for chunks in [1usize, 2, 3, 7] {
        for with_trailers in [false, true] {
            let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> = Vec::new();
            let mut sent = Vec::new();
            for i in 0..chunks {
                let chunk = Bytes::from(vec![b'0' + i as u8; 100 * (i + 1)]);
                sent.extend_from_slice(&chunk);
                frames.push(Ok(Frame::data(chunk)));
            }
            if with_trailers {
                let mut t = HeaderMap::new();
                t.insert("x-end", "t".parse().unwrap());
                frames.push(Ok(Frame::trailers(t)));
            }
            let body: Chunks = StreamBody::new(stream::iter(frames).boxed());
            let req = Request::post("http://web/ready").body(body).unwrap();
            let (res, text) = call(mesh.channel::<Chunks>("web"), req).await;
            assert_eq!(res.status(), 200);
            let trailer = if with_trailers { "t" } else { "" };
            assert_eq!(
                text,
                format!("{} {} {trailer}", sent.len(), digest(&sent)),
                "{chunks} chunks, trailers: {with_trailers}"
            );
        }
    }
}
