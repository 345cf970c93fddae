//! serve: an echo service behind the mesh's server side (mTLS and RBAC from the config).
//!
//! ```text
//! cargo run --release --example serve -- --listen ADDR (--config FILE | --bootstrap FILE [--delta]) [--admin ADDR]
//! ```
//!
//! HTTP/1.1 and HTTP/2 requests are answered 200 with the body
//! `<listen-addr> <path> <peer-identity-or-"-">\n`; gRPC `helloworld.Greeter/SayHello` answers
//! with the same text as the reply's message. The server block used is the config's `servers:`
//! entry whose `address` is `--listen`, else the only entry; without one the echo serves
//! plaintext with no policy (and says so). `--admin ADDR` serves the library's admin endpoint
//! (`mesh_tower::admin`): `/ready`, `/config_dump` (the config in force, YAML, keys redacted),
//! `/clusters` and `/metrics` (Prometheus text: Istio's request metrics,
//! `reporter="destination"`, labelled from the bootstrap's node metadata; with `--config` the
//! server records none).
//!
//! With `--bootstrap` the server is xDS-enabled (gRFC A36): its listener is the bootstrap's
//! `server_listener_resource_name_template` with `%s` = the `--listen` address, and its TLS and
//! RBAC follow the control plane (waited for at most 20 s before serving).

use mesh_tower::Mesh;
use mesh_tower::admin::Admin;
use mesh_tower::rbac::RbacEngine;
use mesh_tower::server::MeshServer;
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

const HELP: &str = "\
serve: an echo service behind the mesh's server side

USAGE:
    serve --listen ADDR --config FILE [--admin ADDR]
    serve --listen ADDR --bootstrap FILE [--delta] [--admin ADDR]

OPTIONS:
    --listen ADDR      where to serve (ip:port)
    --config FILE      mesh config (YAML): its servers: entry for ADDR gives TLS and RBAC
    --bootstrap FILE   gRPC xDS bootstrap: an xDS-enabled server (gRFC A36)
    --delta            Delta ADS (with --bootstrap)
    --admin ADDR       serve /ready, /config_dump, /clusters and /metrics on ADDR
    -h, --help         this text
";

struct Args {
    listen: SocketAddr,
    config: Option<String>,
    bootstrap: Option<String>,
    delta: bool,
    admin: Option<SocketAddr>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut listen, mut config, mut bootstrap, mut admin) = (None, None, None, None);
    let mut delta = false;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let addr = |v: String, name: &str| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--listen" => listen = Some(addr(value("--listen")?, "--listen")?),
            "--config" => config = Some(value("--config")?),
            "--bootstrap" => bootstrap = Some(value("--bootstrap")?),
            "--delta" => delta = true,
            "--admin" => admin = Some(addr(value("--admin")?, "--admin")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if config.is_some() == bootstrap.is_some() {
        return Err("exactly one of --config and --bootstrap is required".into());
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        config,
        bootstrap,
        delta,
        admin,
    })
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("serve: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("serve: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Before the mesh: it registers its metric handles with the recorder in place.
    let metrics = match args.admin {
        Some(_) => Some(mesh_tower::telemetry::prometheus::install()?),
        None => None,
    };
    let (mesh, server) = match (&args.config, &args.bootstrap) {
        (Some(config), _) => {
            let mesh = Mesh::from_file(config).await?;
            let server = pick_server(&mesh, args.listen)?;
            (mesh, server)
        }
        (None, Some(bootstrap)) => {
            let mut builder = XdsClientBuilder::from_bootstrap(Bootstrap::from_file(bootstrap)?);
            if args.delta {
                builder = builder.delta(true);
            }
            let mesh = Mesh::from_xds(builder).await?;
            let server = mesh
                .xds_server(args.listen, Duration::from_secs(20))
                .await?;
            (mesh, server)
        }
        (None, None) => unreachable!("checked when parsing"),
    };
    let listener = TcpListener::bind(args.listen).await?;
    let listen = listener.local_addr()?;
    if let Some(addr) = args.admin {
        // The library's admin endpoint: /ready, /config_dump, /clusters, /metrics.
        let mut admin = Admin::new(mesh.clone());
        if let Some(handle) = metrics {
            admin = admin.with_prometheus(handle);
        }
        let listener = TcpListener::bind(addr).await?;
        tokio::spawn(admin.serve(listener));
    }
    eprintln!(
        "serve: {} on {listen} ({})",
        server.name(),
        if server.tls().is_some() {
            "TLS"
        } else {
            "plaintext"
        }
    );
    let echo = tower::service_fn(move |req| mesh_examples::echo::handle(listen, req));
    server.serve(listener, echo).await?;
    Ok(())
}

/// The `servers:` entry for `listen`, else the only one, else plaintext without policy.
fn pick_server(mesh: &Mesh, listen: SocketAddr) -> Result<MeshServer, mesh_tower::MeshError> {
    let config = mesh.config_dump();
    let by_address = config
        .servers
        .iter()
        .find(|s| s.address.as_deref().and_then(|a| a.parse().ok()) == Some(listen));
    let chosen = by_address.or(match config.servers.as_slice() {
        [only] => Some(only),
        _ => None,
    });
    match chosen {
        Some(s) => mesh.server(&s.name),
        None => {
            eprintln!("serve: no servers: entry for {listen}; plaintext, no policy");
            Ok(MeshServer::new(None, RbacEngine::default()))
        }
    }
}
