//! Out-of-band load reports (gRFC A51) against grpc-go's ORCA service.
//!
//! Two grpc-go servers (`grpcpeer orca`: Greeter plus `orca.Register` with a
//! `ServerMetricsRecorder`) report CPU 0.8 and 0.2 at the same QPS on their
//! `OpenRcaService/StreamCoreMetrics` streams and attach nothing to responses. go-control-plane
//! configures the mesh, and Envoy 1.40 (which implements the same streams) as a second
//! opinion, with a `client_side_weighted_round_robin` cluster of both with
//! `enable_oob_load_report` and a 0.2 s `oob_reporting_period`. Both send the lighter one 80 %
//! of the calls and follow a swap of the two loads; the mesh cancels a removed endpoint's
//! stream.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin;
use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration};
use http_body_util::{BodyExt, Full};
use mesh_tower::{Mesh, MeshService};
use mesh_xds_client::{XdsClientBuilder, XdsMesh, build};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use support::envoy::{Envoy, free_port};
use support::gocp::GoControlPlane;
use support::*;

/// `grpcpeer orca` on a free loopback port; killed on drop.
struct OrcaServer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl OrcaServer {
    fn start(cpu: f64) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port().port()).parse().unwrap();
        let mut child = Command::new(gocp::grpc_go_peer_binary())
            .args([
                "orca",
                "-listen",
                &addr.to_string(),
                "-cpu",
                &cpu.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start grpcpeer orca");
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        let server = Self {
            child,
            stdin,
            lines,
            addr,
        };
        server.expect("SERVING");
        server
    }

    /// Waits for the server to print `want` (its next line); panics with what came instead.
    fn expect(&self, want: &str) {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) if line == want => {}
            other => panic!("{}: expected {want:?}, got {other:?}", self.addr),
        }
    }

    /// Changes the CPU utilization it reports, once it has taken the change.
    fn set_cpu(&mut self, cpu: &str) {
        writeln!(self.stdin, "cpu {cpu}").unwrap();
        self.expect(&format!("SET {cpu}"));
    }
}

impl Drop for OrcaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oob_cluster() -> cds::Cluster {
    let mut cluster = build::eds_cluster("orca");
    let ms = |millis: i32| PbDuration {
        seconds: 0,
        nanos: millis * 1_000_000,
    };
    let policy = ClientSideWeightedRoundRobin {
        enable_oob_load_report: Some(BoolValue { value: true }),
        oob_reporting_period: Some(ms(200)),
        blackout_period: Some(PbDuration::default()),
        weight_update_period: Some(ms(100)),
        ..Default::default()
    };
    cluster.load_balancing_policy = Some(build::typed_lb_policy(
        "envoy.load_balancing_policies.client_side_weighted_round_robin",
        &policy,
    ));
    cluster
}

async fn snapshot(
    cp: &GoControlPlane,
    node: &str,
    listener: envoy_types::pb::envoy::config::listener::v3::Listener,
    version: &str,
    endpoints: &[SocketAddr],
) {
    let resources = [
        build::any(&listener),
        build::any(&build::route_config(
            "routes",
            &["*"],
            vec![build::route("/", "orca")],
        )),
        build::any(&oob_cluster()),
        build::any(&build::assignment("orca", endpoints)),
    ];
    cp.set(node, version, &resources).await;
}

/// `n` SayHello calls through Envoy's listener at `envoy` (HTTP/2 without TLS): the replies.
async fn envoy_calls(envoy: SocketAddr, n: usize) -> Result<Vec<String>, mesh_core::BoxError> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(envoy).await?;
    // Headers and data go out as separate writes: without this, each call waits out Nagle
    // and the peer's delayed ACK (~40 ms).
    tcp.set_nodelay(true)?;
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::post(format!("http://{envoy}/helloworld.Greeter/SayHello"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(grpc_server::hello_body())?;
        let res = tx.send_request(req).await?;
        let body = res.into_body().collect().await?.to_bytes();
        replies.push(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(replies)
}

/// The share of `n` SayHello calls through Envoy answered by `server`.
async fn envoy_share(envoy: SocketAddr, server: SocketAddr, n: usize) -> f64 {
    let replies = envoy_calls(envoy, n).await.expect("Envoy answers");
    let hits = replies
        .iter()
        .filter(|r| r.contains(&format!("{server} ")))
        .count();
    hits as f64 / n as f64
}

/// The share of `n` SayHello calls answered by `server`.
async fn share(web: &MeshService<Full<Bytes>>, server: SocketAddr, n: usize) -> f64 {
    let mut hits = 0;
    for _ in 0..n {
        let req = http::Request::post("http://web/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(grpc_server::hello_body())
            .unwrap();
        let res = tower::ServiceExt::oneshot(web.clone(), req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let reply = String::from_utf8_lossy(&body);
        assert!(reply.contains("/helloworld.Greeter/SayHello"), "{reply:?}");
        hits += usize::from(reply.contains(&format!("{server} ")));
    }
    hits as f64 / n as f64
}

/// Measures `share` (400 calls a round) until it is within 0.05 of `want`, for at most three
/// patience periods; `who` names the client in the failure.
async fn settles(who: &str, want: f64, share: impl AsyncFn() -> f64) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        let got = share().await;
        if (got - want).abs() <= 0.05 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who}: the share stayed at {got}, expected {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_follow_grpc_go_out_of_band_reports() {
    let mut busy = OrcaServer::start(0.8);
    let mut idle = OrcaServer::start(0.2);
    let cp = GoControlPlane::start();
    let api = || build::api_listener_rds("web", "routes");
    let both = [busy.addr, idle.addr];
    snapshot(&cp, "mesh-client", api(), "1", &both).await;
    let envoy_addr = free_port();
    let socket = build::socket_listener("ingress", envoy_addr, "routes");
    snapshot(&cp, "envoy", socket, "1", &both).await;
    let envoy = Envoy::start("envoy", cp.ads, envoy_addr, false);
    let mesh = Mesh::from_xds(XdsClientBuilder::new(cp.ads.to_string(), "mesh-client"))
        .await
        .unwrap();
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    let web = mesh.channel::<Full<Bytes>>("xds:///web");
    // The first call brings the cluster up: one report stream to each endpoint (Envoy opens
    // its own when it takes the cluster).
    share(&web, idle.addr, 1).await;
    assert!(
        envoy_routes_grpc(envoy.listener).await,
        "Envoy took its config"
    );
    busy.expect("ORCA_OPEN");
    busy.expect("ORCA_OPEN");
    idle.expect("ORCA_OPEN");
    idle.expect("ORCA_OPEN");
    // Weight qps/cpu: 100/0.2 = 500 against 100/0.8 = 125, so 80 % to the idle one.
    let (e, i) = (envoy.listener, idle.addr);
    settles("mesh", 0.8, async || share(&web, i, 400).await).await;
    settles("Envoy", 0.8, async || envoy_share(e, i, 400).await).await;
    let steady = share(&web, idle.addr, 1000).await;
    assert!((steady - 0.8).abs() <= 0.05, "idle share {steady}");

    // The loads swap: the reports on the open streams carry it, and the shares follow.
    busy.set_cpu("0.2");
    idle.set_cpu("0.8");
    settles("mesh", 0.2, async || share(&web, i, 400).await).await;
    settles("Envoy", 0.2, async || envoy_share(e, i, 400).await).await;

    // The busy endpoint leaves the mesh's cluster: its stream is cancelled (Envoy's, on an
    // unchanged snapshot, stays; the kept stream not reopening is a unit test's).
    snapshot(&cp, "mesh-client", api(), "2", &[idle.addr]).await;
    busy.expect("ORCA_CLOSE");
    assert_eq!(share(&web, idle.addr, 20).await, 1.0);
}

/// Waits until Envoy answers a gRPC call on its listener (it listens once its config came).
async fn envoy_routes_grpc(envoy: SocketAddr) -> bool {
    tokio::time::timeout(PATIENCE, async {
        while !envoy_calls(envoy, 1)
            .await
            .is_ok_and(|r| r[0].contains("/helloworld.Greeter/SayHello"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok()
}
