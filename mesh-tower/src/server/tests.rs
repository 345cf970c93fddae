//! The server's limits on untrusted callers, with raw clients that break the rules: oversized
//! headers, a caller that never finishes its headers, too many HTTP/2 streams, rapid resets.

use super::MeshServer;
use crate::rbac::RbacEngine;
use bytes::Bytes;
use mesh_core::config::server::Limits;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(10);

/// A plaintext server with `limits` counting the requests that reach the handler.
async fn start(limits: Limits) -> (SocketAddr, MeshServer, Arc<AtomicU64>) {
    let server = MeshServer::new(None, RbacEngine::default()).with_limits(limits);
    let (addr, handled) = serve_counting(server.clone()).await;
    (addr, server, handled)
}

/// Serves `server` on a loopback port with a handler counting the requests it gets.
async fn serve_counting(server: MeshServer) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let svc = tower::service_fn(move |_req: http::Request<crate::server::Incoming>| {
        h.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"ok"),
            )))
        }
    });
    tokio::spawn(server.serve(listener, svc));
    (addr, handled)
}

/// Serves server `s` of the config `yaml`, counting what reaches the handler, and an
/// HTTP/1.1 connection to it.
async fn serve_config(
    yaml: &str,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    Arc<AtomicU64>,
) {
    let mesh = crate::Mesh::from_config(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
        .await
        .unwrap();
    let (addr, handled) = serve_counting(mesh.server("s").unwrap()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    // The mesh's control work lives as long as the connection is driven.
    tokio::spawn(async move {
        let _mesh = mesh;
        conn.await
    });
    (tx, handled)
}

pub(super) async fn until(what: &str, f: impl Fn() -> bool) {
    let ok = tokio::time::timeout(PATIENCE, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(ok.await.is_ok(), "never: {what}");
}

#[tokio::test]
async fn oversized_http1_headers_get_431_and_are_counted() {
    let (addr, server, handled) = start(Limits {
        max_request_headers_kb: 8,
        ..Limits::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(16 * 1024);
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    until("counted", || server.stats().headers_too_large == 1).await;
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_caller_that_never_finishes_its_headers_is_cut_off() {
    let (addr, server, handled) = start(Limits {
        request_headers_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The server closes the connection (EOF) once the limit passes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server kept a slow caller");
    until("counted", || server.stats().header_timeouts == 1).await;
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http2_announces_its_stream_limit() {
    let (addr, _server, _) = start(Limits {
        max_concurrent_streams: 7,
        ..Limits::default()
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, mut conn) = h2::client::handshake(tcp).await.unwrap();
    // One exchange (driving the connection alongside), so the server's SETTINGS are read.
    let exchange = async {
        let mut tx = tx.ready().await.unwrap();
        let (res, _) = tx
            .send_request(http::Request::get("http://x/").body(()).unwrap(), true)
            .unwrap();
        res.await.unwrap().status()
    };
    let status = tokio::select! {
        s = exchange => s,
        _ = &mut conn => panic!("connection ended"),
    };
    assert_eq!(status, 200);
    assert_eq!(conn.max_concurrent_send_streams(), 7);
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client's connection preface and empty SETTINGS.
fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

/// GET http://x/ as a header block: indexed :method GET, :scheme http, :path /; literal
/// :authority "x".
const GET_X: [u8; 6] = [0x82, 0x86, 0x84, 0x01, 0x01, b'x'];

/// Streams beyond `max_concurrent_streams` (a caller ignoring the SETTINGS) are refused by
/// h2 itself; the server counts them from the resets it writes.
#[tokio::test]
async fn streams_beyond_the_limit_are_refused_and_counted() {
    let (addr, server, handled) = start(Limits {
        max_concurrent_streams: 7,
        ..Limits::default()
    })
    .await;
    // Ten requests whose bodies never end (HEADERS without END_STREAM): each stays open.
    let mut burst = preface();
    for i in 0..10u32 {
        burst.extend(frame(0x1, 0x4, 2 * i + 1, &GET_X)); // HEADERS, END_HEADERS
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&burst).await.unwrap();
    // The server's frames until three REFUSED_STREAM resets (0x7) have come.
    let mut got = Vec::new();
    let refused = |got: &[u8]| {
        let (mut at, mut n) = (0, 0);
        while at + 9 <= got.len() {
            let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
            if got[at + 3] == 0x3 && at + 9 + 4 <= got.len() && got[at + 9..at + 13] == [0, 0, 0, 7]
            {
                n += 1;
            }
            at += 9 + len;
        }
        n
    };
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while refused(&got) < 3 {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "three streams refused");
    until("counted", || server.stats().refused_streams == 3).await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        7,
        "the seven admitted reached the handler"
    );
}

#[tokio::test]
async fn rapid_resets_close_the_connection_and_are_counted() {
    let (addr, server, handled) = start(Limits {
        max_pending_accept_reset_streams: 5,
        ..Limits::default()
    })
    .await;
    // The CVE-2023-44487 pattern, by hand: many streams opened (HEADERS) and cancelled
    // (RST_STREAM) in one burst, so they are reset before the server accepts them.
    let mut burst = preface();
    for i in 0..50u32 {
        let id = 2 * i + 1;
        burst.extend(frame(0x1, 0x5, id, &GET_X)); // HEADERS, END_STREAM | END_HEADERS
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&burst).await.unwrap();
    // Read the server's frames until it closes: a GOAWAY with ENHANCE_YOUR_CALM (0xb).
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    let mut goaway = None;
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 && at + 9 + 8 <= got.len() {
            let p = &got[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    until("counted", || server.stats().http2_errors >= 1).await;
    assert!(
        handled.load(Ordering::SeqCst) < 50,
        "not every stream reached the handler"
    );
}

/// A `local_ratelimit` filter on a server: the bucket's tokens are served, the rest refused
/// before the handler (429 for HTTP, UNAVAILABLE for gRPC); the filter must come first.
#[tokio::test]
async fn a_servers_local_rate_limit_refuses_callers_over_the_bucket() {
    let yaml = r#"
servers:
  - name: s
    http_filters:
      - name: envoy.filters.http.local_ratelimit
        local_ratelimit:
          token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 3600s }
          filter_enabled: { numerator: 100 }
          filter_enforced: { numerator: 100 }
"#;
    let (mut tx, handled) = serve_config(yaml).await;
    let mut statuses = Vec::new();
    for grpc in [false, false, false, true] {
        let mut req = http::Request::post("/pkg.Svc/M").header("host", "s");
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let res = tx
            .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let grpc_status = res
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        statuses.push((res.status().as_u16(), grpc_status));
        let _ = http_body_util::BodyExt::collect(res.into_body()).await;
    }
    assert_eq!(
        statuses,
        [
            (200, None),
            (200, None),
            (429, None),
            (200, Some("14".to_owned()))
        ]
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        2,
        "refused calls never reach the handler"
    );

    // Placed after RBAC it would run after policy work: refused with the path.
    let late = mesh_core::MeshConfig::from_yaml(
        r#"
servers:
  - name: s
    http_filters:
      - { name: rbac, rbac: {} }
      - { name: rl, local_ratelimit: { token_bucket: { max_tokens: 1, fill_interval: 1s } } }
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        late.contains("servers[0].http_filters[1]: the local_ratelimit filter must come before"),
        "{late}"
    );
}

#[tokio::test]
async fn a_servers_fault_filter_aborts_allowed_requests_only() {
    // RBAC lets `/open` in; the fault filter aborts what gets through when asked by header.
    let yaml = r#"
servers:
  - name: s
    http_filters:
      - name: envoy.filters.http.rbac
        rbac: { rules: { policies: { open: { permissions: [{ url_path: { path: { prefix: /open } } }], principals: [{ any: true }] } } } }
      - name: envoy.filters.http.fault
        fault:
          abort: { http_status: 503, percentage: { numerator: 100 } }
          headers: [{ name: x-chaos, exact_match: "on" }]
"#;
    let (mut tx, handled) = serve_config(yaml).await;
    let mut statuses = Vec::new();
    for (path, chaos) in [("/open", false), ("/open", true), ("/closed", true)] {
        let mut req = http::Request::get(path).header("host", "s");
        if chaos {
            req = req.header("x-chaos", "on");
        }
        let res = tx
            .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        let _ = http_body_util::BodyExt::collect(res.into_body()).await;
    }
    // Served; aborted by the fault; refused by RBAC before any fault.
    assert_eq!(statuses, [200, 503, 403]);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// A route's own fault and rate limit (Envoy's per-route `HTTPFault` and `LocalRateLimit`):
/// `/health` is never limited, `/flaky` has its own bucket of 3 and always fails, every other
/// path shares the filter's bucket of 1.
#[tokio::test]
async fn per_route_faults_and_rate_limits_override_the_filters() {
    let bucket = |n: u32| {
        format!(
            "{{ token_bucket: {{ max_tokens: {n}, tokens_per_fill: {n}, fill_interval: 3600s }}, \
             filter_enabled: {{ numerator: 100 }}, filter_enforced: {{ numerator: 100 }} }}"
        )
    };
    let yaml = format!(
        r#"
servers:
  - name: s
    http_filters:
      - {{ name: rl, local_ratelimit: {one} }}
      - name: chaos
        fault:
          abort: {{ http_status: 503, percentage: {{ numerator: 100 }} }}
          headers: [{{ name: x-chaos, exact_match: "on" }}]
    route_config:
      virtual_hosts:
        - name: inbound
          domains: ["*"]
          routes:
            - match: {{ prefix: /health }}
              typed_per_filter_config: {{ rl: {{ disabled: true }} }}
            - match: {{ prefix: /flaky }}
              typed_per_filter_config:
                rl: {{ local_ratelimit: {three} }}
                chaos: {{ fault: {{ abort: {{ http_status: 500, percentage: {{ numerator: 100 }} }} }} }}
            - match: {{ prefix: / }}
"#,
        one = bucket(1),
        three = bucket(3),
    );
    let (mut tx, handled) = serve_config(&yaml).await;
    let mut statuses = Vec::new();
    for path in [
        "/health", "/health", "/health", "/a", "/a", "/flaky", "/flaky", "/flaky", "/flaky",
    ] {
        let req = http::Request::get(path).header("host", "s");
        let res = tx
            .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        let _ = http_body_util::BodyExt::collect(res.into_body()).await;
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 500, 500, 500, 429]);
    assert_eq!(handled.load(Ordering::SeqCst), 4, "/health ×3 and /a once");

    // An override of another filter's kind is refused with its path.
    let wrong = mesh_core::MeshConfig::from_yaml(&yaml.replace(
        "rl: { disabled: true }",
        "rl: { fault: { abort: { http_status: 500, percentage: { numerator: 1 } } } }",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        wrong
            .contains("routes[0].typed_per_filter_config.rl.fault: \"rl\" is not the fault filter"),
        "{wrong}"
    );
}

/// A server with its own `access_log` writes its requests' lines there, in its format.
#[tokio::test]
async fn a_servers_own_access_log_gets_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inbound.log");
    let yaml = format!(
        r#"
servers:
  - name: s
    access_log:
      - {{ path: {:?}, text_format: "%RESPONSE_CODE% %REQ(:PATH)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n" }}
"#,
        file.display().to_string()
    );
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .unwrap();
    let mesh = crate::Mesh::builder()
        .store(store)
        .telemetry(crate::telemetry::Telemetry::new(Default::default()))
        .build()
        .await
        .unwrap();
    let server = mesh.server("s").unwrap();
    let (addr, _) = serve_counting(server.clone()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/hello")
        .header("host", "s")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = tx.send_request(req).await.unwrap();
    let _ = http_body_util::BodyExt::collect(res.into_body()).await;
    // The line is written when the server sees the answer's stream end (hyper may finish
    // writing it first); flush the buffer until it is there.
    let log = server
        .checks
        .access_log
        .load_full()
        .expect("the server's own log");
    let written = || {
        log.flush();
        std::fs::read_to_string(&file).unwrap_or_default()
    };
    until("the line is written", || !written().is_empty()).await;
    assert_eq!(written(), "200 /hello 127.0.0.1\n");
}
