//! The ORCA stream against a real HTTP/2 server (the mesh's own, on loopback) that serves
//! `StreamCoreMetrics` the way grpc-go's ORCA service does: a report at once, then more.

use super::*;
use crate::balance::weighted_round_robin::orca::tests::encode;
use crate::breaker::Limits;
use crate::connect::{ConnectTarget, Connector};
use http_body_util::{BodyExt, StreamBody};
use mesh_core::config::cluster::ClientSideWeightedRoundRobinConfig;
use std::convert::Infallible;
use tokio::sync::mpsc;

type Reply = http::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

fn framed(msg: &[u8]) -> Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.into()
}

fn grpc_reply(frames: Vec<Bytes>, status: &str) -> Reply {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status.parse().unwrap());
    let frames = frames
        .into_iter()
        .map(|b| Ok(http_body::Frame::data(b)))
        .chain([Ok(http_body::Frame::trailers(trailers))]);
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
        .unwrap()
}

/// Serves `answer` for every call on a loopback port; each call's path and request body go
/// to the returned receiver.
async fn server(
    answer: impl Fn() -> Reply + Clone + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = tower::service_fn(move |req: http::Request<crate::server::Incoming>| {
        let (tx, answer) = (tx.clone(), answer.clone());
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let _ = tx.send((path, body));
            Ok::<_, Infallible>(answer())
        }
    });
    serve(listener, handler).await;
    (addr, rx)
}

/// Serves `handler` on `listener` through a mesh server.
async fn serve<S>(listener: tokio::net::TcpListener, handler: S)
where
    S: tower::Service<http::Request<crate::server::Incoming>, Response = Reply, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml("servers:\n  - name: s\n").unwrap())
        .unwrap();
    let mesh = crate::Mesh::builder().store(store).build().await.unwrap();
    tokio::spawn(mesh.server("s").unwrap().serve(listener, handler));
}

fn connection(addr: SocketAddr) -> Arc<Connection> {
    let target = ConnectTarget {
        address: addr,
        cluster: "wrr".into(),
        connect_timeout: Duration::from_secs(5),
        protocol: mesh_core::Protocol::Http2,
        tls: None,
    };
    Arc::new(Connection::new(
        target,
        Connector::default(),
        Arc::new(Limits::new("wrr".into())),
    ))
}

fn settings() -> Arc<ReportSettings> {
    Arc::new(ReportSettings::new(&ClientSideWeightedRoundRobinConfig {
        enable_oob_load_report: true,
        ..Default::default()
    }))
}

/// The weight recorded now, with no blackout.
fn weight(stats: &EndpointStats) -> Option<f64> {
    stats
        .reported
        .get_at(now_nanos(), Duration::ZERO, Duration::from_secs(60))
}

#[test]
fn the_request_asks_for_the_period() {
    // OrcaLoadReportRequest { report_interval: { seconds: 2 } }, gRPC-framed.
    assert_eq!(
        &request_message(Duration::from_secs(2))[..],
        [0, 0, 0, 0, 4, 0x0a, 2, 0x08, 2]
    );
    // 1.25 s: seconds 1, nanos 250,000,000 (varint 80 e5 9a 77).
    assert_eq!(
        &request_message(Duration::from_millis(1250))[..],
        [
            0, 0, 0, 0, 9, 0x0a, 7, 0x08, 1, 0x10, 0x80, 0xe5, 0x9a, 0x77
        ]
    );
}

#[test]
fn messages_are_cut_from_split_frames_and_bad_ones_refused() {
    let report = encode(&[(1, 0.5), (6, 100.0)], &[]);
    let two = [framed(&report), framed(&report)].concat();
    let mut buf = BytesMut::new();
    // Byte by byte: a message comes out exactly when its last byte is in.
    let mut got = Vec::new();
    for b in &two {
        buf.extend_from_slice(&[*b]);
        while let Some(m) = next_message(&mut buf).unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, [Bytes::from(report.clone()), Bytes::from(report)]);
    assert!(buf.is_empty());
    let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
    assert!(
        next_message(&mut compressed)
            .unwrap_err()
            .contains("compressed")
    );
    let mut huge = BytesMut::from(&[0u8, 0x7f, 0xff, 0xff, 0xff][..]);
    assert!(next_message(&mut huge).unwrap_err().contains("at most"));
}

#[tokio::test]
async fn reports_become_the_weight_and_the_stream_opens_again_after_it_ends() {
    // Each call: one report (cpu 0.5, 100 rps → weight 200), then the call ends OK.
    let (addr, mut calls) =
        server(|| grpc_reply(vec![framed(&encode(&[(1, 0.5), (6, 100.0)], &[]))], "0")).await;
    let stats = Arc::new(EndpointStats::default());
    let period = Duration::from_millis(1250);
    let stream = OobStream::start(
        &Handle::current(),
        addr,
        connection(addr),
        stats.clone(),
        settings(),
        period,
    );
    let (path, body) = calls.recv().await.unwrap();
    assert_eq!(path, METHOD);
    assert_eq!(body, request_message(period), "the period is asked for");
    // A call that delivered a report is opened again at once (no backoff).
    let again = tokio::time::timeout(Duration::from_millis(500), calls.recv()).await;
    assert!(again.is_ok(), "the stream was not opened again at once");
    assert_eq!(weight(&stats), Some(200.0));
    // Dropping the stream cancels it: no more calls arrive once the channel drains.
    drop(stream);
    let mut drained = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), calls.recv()).await {
        drained += 1;
        assert!(drained < 100_000, "calls keep coming after the drop");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), calls.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_endpoint_without_the_service_is_not_asked_again() {
    // grpc-go's answer to an unregistered method: trailers-only UNIMPLEMENTED.
    let (addr, mut calls) = server(|| {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "12")
            .body(http_body_util::Empty::new().boxed())
            .unwrap()
    })
    .await;
    let stats = Arc::new(EndpointStats::default());
    let conn = connection(addr);
    // `run` returns (instead of backing off and asking again).
    tokio::time::timeout(
        Duration::from_secs(10),
        run(conn, stats.clone(), settings(), Duration::from_secs(1)),
    )
    .await
    .expect("the stream gave up");
    assert_eq!(calls.recv().await.unwrap().0, METHOD);
    assert!(calls.try_recv().is_err(), "asked once");
    assert_eq!(weight(&stats), None);
}

#[tokio::test]
async fn a_malformed_report_or_a_failed_call_ends_it_with_the_reason() {
    let (addr, _calls) = server(|| grpc_reply(vec![framed(&[0x0f])], "0")).await;
    let mut reports = 0;
    let end = call(&connection(addr), Duration::from_secs(1), |r| {
        reports += 1;
        settings().record_report(r, &super::super::ReportedWeight::default())
    })
    .await;
    assert_eq!(reports, 1);
    assert!(
        matches!(&end, End::Failed(why) if why.contains("ORCA load report")),
        "{end:?}"
    );
    let (addr, _calls) = server(|| grpc_reply(Vec::new(), "14")).await;
    let end = call(&connection(addr), Duration::from_secs(1), |_| Ok(())).await;
    assert!(
        matches!(&end, End::Failed(why) if why.contains("grpc-status 14")),
        "{end:?}"
    );
}

/// Sends a value when dropped (the server's side of a cancelled stream).
struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// An endpoint whose ORCA stream reports `cpu` (at 100 rps) once and stays open, and whose
/// other answers carry the opposite per-response report. Returns its address, a receiver
/// told when its ORCA stream opens, and one told when that stream is cancelled.
async fn reporting_endpoint(
    cpu: f64,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (opened_tx, opened) = mpsc::unbounded_channel();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let handler = tower::service_fn(move |req: http::Request<crate::server::Incoming>| {
        let (opened, closed) = (opened_tx.clone(), closed_tx.clone());
        async move {
            if req.uri().path() != METHOD {
                let opposite = format!("TEXT cpu_utilization={}, rps_fractional=100", 1.0 - cpu);
                return Ok::<_, Infallible>(
                    http::Response::builder()
                        .header(super::super::orca::HEADER, opposite)
                        .body(http_body_util::Full::new(Bytes::from(addr.to_string())).boxed())
                        .unwrap(),
                );
            }
            let _ = opened.send(());
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                if rx.await.is_ok() {
                    let _ = closed.send(());
                }
            });
            let guard = OnDrop(Some(tx));
            let report = framed(&encode(&[(1, cpu), (6, 100.0)], &[]));
            let frames = futures_util::stream::iter([Ok(http_body::Frame::data(report))]);
            let frames = futures_util::StreamExt::map(
                futures_util::StreamExt::chain(frames, futures_util::stream::pending()),
                move |f| {
                    let _ = &guard;
                    f
                },
            );
            Ok(http::Response::builder()
                .header("content-type", "application/grpc")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap())
        }
    });
    serve(listener, handler).await;
    (addr, opened, closed)
}

fn wrr_yaml(endpoints: &[SocketAddr]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - {{ name: web, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: wrr }} }}] }}
clusters:
  - name: wrr
    type: STATIC
    protocol: HTTP2
    lb_policy: CLIENT_SIDE_WEIGHTED_ROUND_ROBIN
    client_side_weighted_round_robin_lb_config:
      enable_oob_load_report: true
      oob_reporting_period: 1s
      blackout_period: 0s
      weight_update_period: 0.1s
    load_assignment: {{ cluster_name: wrr, endpoints: [{{ lb_endpoints: [{}] }}] }}
"#,
        eps.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_follow_out_of_band_reports_and_a_removed_endpoint_stops_reporting() {
    use tower::ServiceExt;
    // busy: cpu 0.8 → weight 125; idle: cpu 0.2 → weight 500 (80 % of the picks). Their
    // responses say the opposite, which out-of-band mode ignores.
    let (busy, mut busy_opened, mut busy_closed) = reporting_endpoint(0.8).await;
    let (idle, mut idle_opened, _idle_closed) = reporting_endpoint(0.2).await;
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(&wrr_yaml(&[busy, idle])).unwrap())
        .unwrap();
    let mesh = crate::Mesh::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let channel = mesh.channel::<http_body_util::Empty<Bytes>>("web");
    let idle_share = |n: usize| {
        let channel = channel.clone();
        async move {
            let mut to_idle = 0;
            for _ in 0..n {
                let req = http::Request::get("http://web/")
                    .body(http_body_util::Empty::new())
                    .unwrap();
                let res = channel.clone().oneshot(req).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                to_idle += usize::from(body == idle.to_string());
            }
            to_idle as f64 / n as f64
        }
    };
    // The first request brings the cluster up, which opens both streams.
    idle_share(1).await;
    busy_opened.recv().await.unwrap();
    idle_opened.recv().await.unwrap();
    // The weights apply once the reports are in and the schedule is next rebuilt (every
    // 0.1 s): measure until the share settles, within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut share = idle_share(400).await;
    while (share - 0.8).abs() > 0.05 && tokio::time::Instant::now() < deadline {
        share = idle_share(400).await;
    }
    assert!((share - 0.8).abs() <= 0.05, "idle endpoint's share {share}");
    // Still so after many responses carrying the opposite report.
    let share = idle_share(1000).await;
    assert!((share - 0.8).abs() <= 0.05, "idle endpoint's share {share}");

    // The busy endpoint leaves the cluster: its stream is cancelled; the other's stays.
    store
        .replace(mesh_core::MeshConfig::from_yaml(&wrr_yaml(&[idle])).unwrap())
        .unwrap();
    assert_eq!(idle_share(20).await, 1.0);
    tokio::time::timeout(Duration::from_secs(10), busy_closed.recv())
        .await
        .expect("the removed endpoint's stream was cancelled")
        .unwrap();
    assert!(
        idle_opened.try_recv().is_err(),
        "the kept stream was not reopened"
    );
}
