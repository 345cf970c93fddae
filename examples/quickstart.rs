//! Quickstart: the mesh from its embedded default (a YAML file), no control plane.
//!
//! Starts three HTTP/2 backends and a tonic greeter on 127.0.0.1:0, writes `examples/mesh.yaml`
//! with their real addresses, loads it with `Mesh::from_file`, then:
//! 1. sends 1000 plain HTTP requests through `mesh.http_client()` and prints which cluster and
//!    endpoint served them (a 90/10 weighted split, round robin inside the stable cluster);
//! 2. sends requests with `x-canary: 1`, which a header route sends to the canary only;
//! 3. calls the greeter through a tonic client built on `mesh.channel("xds:///greeter")`;
//! 4. shows the error a request gets when no route matches.
//!
//! Run: `cargo run --release --example quickstart` (add `-- --serve` to keep the backends up
//! for the `probe` tool).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_examples::backend::Backend;
use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
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

    let mesh = Mesh::from_file(&path).await?;
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

    if std::env::args().any(|a| a == "--serve") {
        println!("\n--serve: backends stay up; in another terminal try:");
        println!(
            "  cargo run --release --example probe -- --config {} --target web --requests 100 --concurrency 8",
            path.display()
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
