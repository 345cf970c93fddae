//! gRPC's per-attempt and retry metrics (A66, A96) from a real retried call: a channel of a
//! mesh with telemetry, a route retrying `unavailable`, and a server of the same mesh that
//! fails the first call with `UNAVAILABLE` (trailers-only) and answers the second.

use super::*;
use crate::test_util::Series;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt;

/// A gRPC message: flag, length, bytes.
fn message(payload: &[u8]) -> Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.into()
}

/// Serves the flaky gRPC handler on a loopback port with a mesh that has a retrying route to
/// it; makes `calls` calls of a 7-byte message on channel `web`, each read to its end.
async fn calls(calls: usize) -> Vec<Option<String>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let yaml = crate::test_util::web_h2_yaml(
        addr,
        "retry_policy: { retry_on: unavailable, num_retries: 2, retry_back_off: { base_interval: 0.001s } }",
    );
    let mesh = crate::test_util::mesh_of(&yaml, Telemetry::new(Workload::default())).await;
    // Every other request fails, the first included: each call's first attempt fails.
    let served = Arc::new(AtomicU32::new(0));
    let handler = tower::service_fn(move |req: http::Request<crate::server::Incoming>| {
        let fail = served.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
        async move {
            // Read as a handler does: the server counts the message bytes it reads.
            req.into_body().collect().await.unwrap();
            let res = http::Response::builder().header("content-type", "application/grpc");
            let body = if fail {
                let res = res.header("grpc-status", "14");
                return Ok::<_, std::convert::Infallible>(
                    res.body(Full::new(Bytes::new()).boxed()).unwrap(),
                );
            } else {
                message(b"abc")
            };
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = http_body_util::StreamBody::new(futures_util::stream::iter([
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(body)),
                Ok(http_body::Frame::trailers(trailers)),
            ]));
            Ok(res.body(body.boxed()).unwrap())
        }
    });
    tokio::spawn(mesh.server("s").unwrap().serve(listener, handler));
    let channel = mesh.channel::<Full<Bytes>>("web");
    let mut statuses = Vec::new();
    for _ in 0..calls {
        let req = http::Request::post("http://web/echo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(message(b"1234567")))
            .unwrap();
        let res = channel.clone().oneshot(req).await.unwrap();
        let trailers = res.into_body().collect().await.unwrap().trailers().cloned();
        statuses.push(
            trailers
                .and_then(|t| t.get("grpc-status").cloned())
                .map(|v| v.to_str().unwrap().to_owned()),
        );
    }
    statuses
}

#[test]
fn each_attempt_is_recorded_with_its_status_and_message_sizes() {
    let series = Series::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = metrics::with_local_recorder(&series, || rt.block_on(calls(2)));
    assert_eq!(statuses, [Some("0".to_owned()), Some("0".to_owned())]);
    let call = [("grpc.method", "echo.Echo/Say"), ("grpc.target", "web")];
    let with = |status: &'static str| {
        let mut l = call.to_vec();
        l.push(("grpc.status", status));
        l
    };
    assert_eq!(
        series.counter(CLIENT_ATTEMPT_STARTED, &call),
        4,
        "two per call"
    );
    assert_eq!(
        series
            .values(CLIENT_ATTEMPT_DURATION, &with("UNAVAILABLE"))
            .len(),
        2
    );
    assert_eq!(series.values(CLIENT_ATTEMPT_DURATION, &with("OK")).len(), 2);
    // Message bytes without the 5-byte prefix: 7 sent by each attempt, 3 received by the
    // answered ones, none by the failed ones (trailers-only).
    assert_eq!(series.values(CLIENT_ATTEMPT_SENT, &with("OK")), [7.0, 7.0]);
    assert_eq!(
        series.values(CLIENT_ATTEMPT_SENT, &with("UNAVAILABLE")),
        [7.0, 7.0]
    );
    assert_eq!(series.values(CLIENT_ATTEMPT_RCVD, &with("OK")), [3.0, 3.0]);
    assert_eq!(
        series.values(CLIENT_ATTEMPT_RCVD, &with("UNAVAILABLE")),
        [0.0, 0.0]
    );
    // A96: one retry per call, and the wait before it; no hedges (none is recorded as 0).
    assert_eq!(series.values(CLIENT_CALL_RETRIES, &call), [1.0, 1.0]);
    let delays = series.values(CLIENT_CALL_RETRY_DELAY, &call);
    assert_eq!(delays.len(), 2);
    assert!(delays.iter().all(|d| (0.0..0.01).contains(d)), "{delays:?}");
    assert!(series.values(CLIENT_CALL_HEDGES, &call).is_empty());
    // The calls themselves succeeded.
    assert_eq!(series.values(CLIENT_CALL_DURATION, &with("OK")).len(), 2);
    // The server's side of the same calls (A66): each call it answered read 7 message bytes
    // and sent 3 (OK) or none (UNAVAILABLE, trailers-only).
    let served = |status: &'static str| [("grpc.method", "echo.Echo/Say"), ("grpc.status", status)];
    assert_eq!(series.values(SERVER_CALL_RCVD, &served("OK")), [7.0, 7.0]);
    assert_eq!(
        series.values(SERVER_CALL_RCVD, &served("UNAVAILABLE")),
        [7.0, 7.0]
    );
    assert_eq!(series.values(SERVER_CALL_SENT, &served("OK")), [3.0, 3.0]);
    assert_eq!(
        series.values(SERVER_CALL_SENT, &served("UNAVAILABLE")),
        [0.0, 0.0]
    );
    assert_eq!(series.values(SERVER_CALL_DURATION, &served("OK")).len(), 2);
}
