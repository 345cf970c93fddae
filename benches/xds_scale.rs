//! xDS at scale, side by side: one go-control-plane snapshot of N clusters × 10 endpoints and
//! one route config referencing all of them, served to our client, to Envoy 1.40 and to
//! grpc-go's proxyless xDS client, each in its own process, one after the other.
//!
//! "Ready" has one definition for all three, taken where none of them can flatter itself: the
//! control plane (`interop/gocp`, `/acked`) records the time of the ACK for the response that
//! completed the client's listener, route config, clusters and endpoints (N of each of the
//! last two). The clock starts just before the process is spawned, so process start-up counts,
//! as it does for a user. Memory is the process's peak RSS (`VmHWM`) read at that moment.
//!
//! What each client does meanwhile is its own design: Envoy creates every cluster with its
//! stats; grpc-go builds a load-balancing policy per cluster and, its round-robin being eager,
//! starts connecting to every endpoint (here a closed loopback port, refused at once, so the
//! connects cost what they cost and do not hang); our client connects on first use.
//!
//! `cargo bench -p mesh-benches --bench xds_scale` runs N = 1k, 10k, 50k (`XDS_SCALE_SIZES`
//! overrides, e.g. `1000,10000`), SotW for all three and Delta for ours and Envoy (grpc-go has
//! no Delta), prints a markdown table and writes it to `target/xds_scale.md`. Without `--bench`
//! (as `cargo test --all-targets` runs it) it is a seconds-long smoke run with N = 20 that
//! checks every contender got ready.

#![allow(missing_docs)]

use bytes::Bytes;
use http_body_util::Empty;
use mesh_benches::scale::{self, ListenerKind, peak_rss_mib};
use mesh_interop::envoy::{Envoy, free_port};
use mesh_interop::gocp::{GoControlPlane, grpc_go_peer_binary};
use mesh_tower::Mesh;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PER: usize = 10;
/// A contender that is not ready by then is reported as such.
const PATIENCE: Duration = Duration::from_secs(300);
/// Set in the child process that runs our client.
const CLIENT_ENV: &str = "XDS_SCALE_CLIENT";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Contender {
    Mesh,
    Envoy,
    GrpcGo,
}

impl Contender {
    fn key(self) -> &'static str {
        match self {
            Contender::Mesh => "mesh",
            Contender::Envoy => "envoy",
            Contender::GrpcGo => "grpc-go",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Contender::Mesh => "mesh (ours)",
            Contender::Envoy => "Envoy 1.40",
            Contender::GrpcGo => "grpc-go xDS client",
        }
    }
}

struct Outcome {
    contender: Contender,
    clusters: usize,
    delta: bool,
    /// Spawn → the last ACK of the full snapshot; `None`: not within [`PATIENCE`].
    ready: Option<Duration>,
    peak_rss_mib: f64,
    /// The process's CPU time (user + system, all threads) when it was ready: its own work,
    /// apart from the control plane's and the machine's.
    cpu_ms: f64,
}

/// A contender's process, killed on drop.
enum Running {
    Child(Child),
    Envoy(Envoy),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Child(c) => c.id(),
            Running::Envoy(e) => e.pid(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Child(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A closed loopback port per endpoint: distinct addresses, refused at once.
fn endpoint(i: usize, j: usize) -> SocketAddr {
    SocketAddr::from((
        [127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8],
        10_000 + j as u16,
    ))
}

/// Waits for a child's first stdout line (it has started its client) and checks it.
fn started(mut child: Child, want: &str) -> Child {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), want, "the contender did not start");
    child
}

fn spawn(
    contender: Contender,
    cp: &GoControlPlane,
    node: &str,
    delta: bool,
    dir: &std::path::Path,
) -> Running {
    match contender {
        Contender::Mesh => {
            let child = Command::new(std::env::current_exe().unwrap())
                .env(CLIENT_ENV, format!("{} {node} {delta}", cp.ads))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start our client");
            Running::Child(started(child, "STARTED"))
        }
        Contender::Envoy => Running::Envoy(Envoy::start(node, cp.ads, free_port(), delta)),
        Contender::GrpcGo => {
            let bootstrap = dir.join(format!("{node}.json"));
            let json = serde_json::json!({
                "xds_servers": [{"server_uri": cp.ads.to_string(), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
                "node": {"id": node},
            });
            std::fs::write(&bootstrap, json.to_string()).unwrap();
            let child = Command::new(grpc_go_peer_binary())
                .args(["client", "-target", "xds:///web", "-stay"])
                .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start grpc-go's client");
            Running::Child(started(child, "STARTED"))
        }
    }
}

async fn run(cp: &GoControlPlane, contender: Contender, clusters: usize, delta: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let node = format!(
        "{}-{clusters}-{}",
        contender.key(),
        if delta { "delta" } else { "sotw" }
    );
    let listener = match contender {
        Contender::Envoy => ListenerKind::Socket(free_port()),
        _ => ListenerKind::Api,
    };
    let resources: Vec<_> = scale::snapshot(clusters, PER, listener, endpoint)
        .into_iter()
        .map(|(_, _, any)| any)
        .collect();
    cp.set(&node, "v1", &resources).await;
    drop(resources);

    let t0 = unix_us();
    let process = spawn(contender, cp, &node, delta, dir.path());
    let want = [("lds", 1), ("rds", 1), ("cds", clusters), ("eds", clusters)];
    let at = cp.acked(&node, &want, PATIENCE).await;
    let peak_rss_mib = peak_rss_mib(process.pid());
    let cpu_ms = (mesh_benches::harness::cpu_ticks(&process.pid().to_string())
        * mesh_benches::harness::TICK_US) as f64
        / 1000.0;
    if std::env::var_os("XDS_SCALE_DEBUG").is_some() {
        for e in cp.events().await.iter().filter(|e| e.node == node) {
            eprintln!(
                "{:>8} {} {} n={} v={} {:?}",
                e.at_us.saturating_sub(t0),
                e.delta,
                e.type_url,
                e.names.as_ref().map_or(0, |n| n.len()),
                e.version,
                e.nack
            );
        }
    }
    drop(process);
    Outcome {
        contender,
        clusters,
        delta,
        ready: at.map(|at| Duration::from_micros(at.saturating_sub(t0))),
        peak_rss_mib,
        cpu_ms,
    }
}

/// The child process's part: our client subscribed to the target, until stdin closes.
fn mesh_client(spec: &str) {
    let mut it = spec.split(' ');
    let (ads, node, delta) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let builder = XdsClientBuilder::new(ads.to_owned(), node).delta(delta == "true");
        let mesh = Mesh::from_xds(builder).await.unwrap();
        // A channel is what subscribes the target (and so everything it routes to).
        let _web = mesh.channel::<Empty<Bytes>>("xds:///web");
        println!("STARTED");
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new()))
            .await
            .unwrap()
            .unwrap();
    });
}

fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| clusters | protocol | contender | start → ready | per cluster | CPU to ready | peak RSS | per cluster |\n|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let (ready, per) = match o.ready {
            Some(d) => (
                format!("{:.0} ms", d.as_secs_f64() * 1e3),
                format!("{:.1} µs", d.as_secs_f64() * 1e6 / o.clusters as f64),
            ),
            None => (format!("not ready in {} s", PATIENCE.as_secs()), "–".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ready} | {per} | {:.0} ms | {:.0} MiB | {:.1} KiB |",
            o.clusters,
            if o.delta { "Delta" } else { "SotW" },
            o.contender.name(),
            o.cpu_ms,
            o.peak_rss_mib,
            o.peak_rss_mib * 1024.0 / o.clusters as f64,
        );
    }
    out
}

fn main() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        return mesh_client(&spec);
    }
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("XDS_SCALE_SIZES") {
        Ok(s) => s.split(',').map(|n| n.trim().parse().unwrap()).collect(),
        Err(_) if full => vec![1_000, 10_000, 50_000],
        Err(_) => vec![20],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let debug = std::env::var_os("XDS_SCALE_DEBUG").is_some();
    let cp = if debug {
        GoControlPlane::start()
    } else {
        GoControlPlane::start_unrecorded()
    };
    let only = std::env::var("XDS_SCALE_ONLY").ok();
    // Built (or found) before any clock starts.
    let _ = grpc_go_peer_binary();
    let mut outcomes = Vec::new();
    rt.block_on(async {
        for &n in &sizes {
            for (contender, delta) in [
                (Contender::Mesh, false),
                (Contender::Envoy, false),
                (Contender::GrpcGo, false),
                (Contender::Mesh, true),
                (Contender::Envoy, true),
            ] {
                if only.as_deref().is_some_and(|o| o != contender.key()) {
                    continue;
                }
                let o = run(&cp, contender, n, delta).await;
                eprintln!(
                    "{}",
                    table(std::slice::from_ref(&o)).lines().last().unwrap()
                );
                outcomes.push(o);
            }
        }
    });
    let text = table(&outcomes);
    println!(
        "xds_scale ({}):\n{text}",
        if full { "full" } else { "smoke" }
    );
    if full {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/xds_scale.md");
        std::fs::write(path, &text).unwrap();
    }
    for o in &outcomes {
        assert!(
            o.ready.is_some() || full,
            "{} ({} clusters) did not get ready",
            o.contender.name(),
            o.clusters
        );
        assert!(
            o.peak_rss_mib > 0.0,
            "{}: no memory reading",
            o.contender.name()
        );
    }
}
