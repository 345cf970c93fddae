//! Quickstart: the mesh from its embedded default (a YAML file), no control plane.
//!
//! Starts three HTTP/2 backends and a tonic greeter on 127.0.0.1:0, writes `examples/mesh.yaml`
//! with their real addresses, loads it with `Mesh::from_file`, then:
//! 1. sends 1000 plain HTTP requests through `mesh.http_client()` and prints which cluster and
//!    endpoint served them (a 90/10 weighted split, round robin inside the stable cluster);
//! 2. sends requests with `x-canary: 1`, which a header route sends to the canary only;
//! 3. calls the greeter through a tonic client built on `mesh.channel("xds:///greeter")`;
//! 4. shows the error a request gets when no route matches;
//! 5. prints Istio's request metrics the mesh recorded for all of it (Prometheus text; with
//!    `--serve` they are served on `/metrics`).
//!
//! Run: `cargo run --release --example quickstart` (add `-- --serve` to keep the backends up
//! for the `probe` tool).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::backend::Backend;
use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
use mesh_tower::admin::Admin;
use mesh_tower::telemetry::{Telemetry, Workload};
use mesh_tower::{Mesh, ServedBy};
use std::collections::{BTreeMap, HashMap};
use tower::ServiceExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();

    // 1. Backends and the config file that points at them.
    let (web1, web2, canary) = (
        Backend::start().await?,
        Backend::start().await?,
        Backend::start().await?,
    );
    let (greeter_addr, _greeter) = greeter::spawn_server().await?;
    let values = HashMap::from([
        ("WEB_1", web1.addr().to_string()),
        ("WEB_2", web2.addr().to_string()),
        ("CANARY", canary.addr().to_string()),
        ("GREETER", greeter_addr.to_string()),
    ]);
    let yaml = mesh_examples::yaml::render(include_str!("mesh.yaml"), &values)?;
    let path = std::env::temp_dir().join(format!("mesh-quickstart-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml)?;
    println!(
        "backends: stable {} {}, canary {}, greeter {}",
        web1.addr(),
        web2.addr(),
        canary.addr(),
        greeter_addr
    );
    println!("config:   {}", path.display());

    // Istio's request metrics: the exporter first (the mesh registers its handles with it).
    let metrics = mesh_tower::telemetry::prometheus::install()?;
    let mesh = Mesh::builder()
        .file(&path)
        .telemetry(Telemetry::new(Workload {
            name: "quickstart".into(),
            namespace: "default".into(),
            app: Some("quickstart".into()),
            ..Workload::default()
        }))
        .build()
        .await?;
    let http = mesh.http_client::<Empty<Bytes>>();

    // 2. Weighted split + round robin.
    let counts = send(&http, 1000, None).await?;
    println!("\n1000 requests to http://web/ (90/10 split between web-stable and web-canary):");
    print_counts(&counts);

    // 3. Header-routed canary.
    let counts = send(&http, 100, Some(("x-canary", "1"))).await?;
    println!("\n100 requests with `x-canary: 1` (header route to web-canary):");
    print_counts(&counts);

    // 4. tonic, unchanged, over a mesh channel.
    let mut client = GreeterClient::new(mesh.channel("xds:///greeter"));
    let reply = client
        .say_hello(HelloRequest {
            name: "mesh".into(),
        })
        .await?;
    println!(
        "\ngreeter via mesh.channel(\"xds:///greeter\"): {}",
        reply.into_inner().message
    );

    // 5. What a failure looks like.
    let err = mesh
        .http_client::<Empty<Bytes>>()
        .oneshot(http::Request::get("http://nowhere/").body(Empty::new())?)
        .await
        .expect_err("no listener for `nowhere`");
    println!(
        "\nrequest to http://nowhere/ fails with [{}]: {err}",
        err.kind()
    );

    // 6. Istio's metrics, as Prometheus would scrape them.
    println!("\nistio_requests_total (reporter=\"source\"), as Prometheus text:");
    for line in metrics.render().lines() {
        if line.starts_with("istio_requests_total{") {
            println!("  {}", short(line));
        }
    }

    if std::env::args().any(|a| a == "--serve") {
        // The mesh's admin endpoint: /metrics, and /clusters, /config_dump, /ready.
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = admin.local_addr()?;
        tokio::spawn(
            Admin::new(mesh.clone())
                .with_prometheus(metrics)
                .serve(admin),
        );
        println!("\n--serve: backends stay up; in another terminal try:");
        println!(
            "  cargo run --release --example probe -- --config {} --target web --requests 100 --concurrency 8",
            path.display()
        );
        println!(
            "  curl http://{addr}/metrics    # Istio's metrics for Prometheus (also /clusters)"
        );
        println!("Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

async fn send(
    http: &mesh_tower::MeshService<Empty<Bytes>>,
    n: usize,
    header: Option<(&str, &str)>,
) -> Result<BTreeMap<(String, String), usize>, Error> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut req = http::Request::get("http://web/hello");
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let res = http.clone().oneshot(req.body(Empty::new())?).await?;
        let served = res
            .extensions()
            .get::<ServedBy>()
            .cloned()
            .ok_or("no ServedBy")?;
        res.into_body().collect().await?;
        *counts
            .entry((served.cluster.to_string(), served.endpoint.to_string()))
            .or_insert(0) += 1;
    }
    Ok(counts)
}

fn print_counts(counts: &BTreeMap<(String, String), usize>) {
    for ((cluster, endpoint), n) in counts {
        println!("  {cluster:<12} {endpoint:<22} {n:>5}");
    }
}

/// A metrics line with only the labels that differ between the quickstart's series.
fn short(line: &str) -> String {
    let keep = [
        "destination_service=",
        "request_protocol=",
        "response_code=",
        "grpc_response_status=",
        "response_flags=",
    ];
    let (labels, value) = line.rsplit_once(' ').unwrap_or((line, ""));
    let inner = labels
        .trim_start_matches("istio_requests_total{")
        .trim_end_matches('}');
    let kept: Vec<&str> = inner
        .split(',')
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .collect();
    format!("{{{}}} {value}", kept.join(","))
}
