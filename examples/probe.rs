//! probe: send N requests through the mesh and print what happened as JSON.
//!
//! ```text
//! cargo run --release --example probe -- (--config FILE | --bootstrap FILE [--delta])
//!     --target T --requests N [--path P] [--header K:V]... [--concurrency C]
//! ```
//!
//! With `--bootstrap` the mesh is configured by the control plane the gRPC bootstrap file names;
//! the probe first waits for the target's config (at most the does-not-exist timeout plus a
//! margin), then sends, so a silent control plane ends in counted `no_config` errors, not a hang.
//!
//! The last line of output is one JSON object:
//! `{"responses":{"<endpoint ip:port>":n},"status":{"200":n},"errors":{"<kind>":n},
//!   "peers":{"<server identity>":n},"latency_us":{"p50":x,"p99":y,"max":z}}`
//! - `responses`: by the endpoint that answered (any status);
//! - `status`: every HTTP status the caller saw, including ones the mesh produced itself;
//! - `errors`: requests that got no HTTP response, by kind (`timeout`, `no_route`, …);
//! - `peers`: by the server identity the client verified over mTLS (SPIFFE ID, else first SAN).
//!
//! It exits 0 whenever it ran, whatever the outcomes. Try it against the quickstart's backends:
//! `cargo run --example quickstart -- --serve` prints a config path to pass as `--config`.

use mesh_examples::probe::{self, Args};
use mesh_tower::Mesh;
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::time::Duration;

const HELP: &str = "\
probe: send requests through the mesh and report outcomes as JSON (last line)

USAGE:
    probe --config FILE --target T --requests N [OPTIONS]
    probe --bootstrap FILE [--delta] --target T --requests N [OPTIONS]

OPTIONS:
    --config FILE        mesh config (YAML, the embedded-default format)
    --bootstrap FILE     gRPC xDS bootstrap JSON: config comes from that control plane
    --delta              use Delta ADS (default: SotW, or the bootstrap's delta_ads feature)
    --target T           xds:///<listener> (a channel, virtual hosts match the name)
                         or <host[:port]> (the HTTP client, routed by that authority)
    --requests N         how many requests to send
    --path P             request path and query (default /)
    --header K:V         a request header; repeatable
    --concurrency C      requests in flight at once (default 1)
    -h, --help           this text
";

fn parse_args() -> Result<(Args, Source), String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        path: "/".into(),
        concurrency: 1,
        ..Args::default()
    };
    let (mut config, mut target, mut requests) = (None, None, None);
    let (mut bootstrap, mut delta) = (None, None);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--config" => config = Some(value("--config")?),
            "--bootstrap" => bootstrap = Some(value("--bootstrap")?),
            "--delta" => delta = Some(true),
            "--target" => target = Some(value("--target")?),
            "--requests" => {
                requests = Some(
                    value("--requests")?
                        .parse()
                        .map_err(|e| format!("--requests: {e}"))?,
                )
            }
            "--path" => args.path = value("--path")?,
            "--header" => {
                let h = value("--header")?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h:?}: expected K:V"))?;
                args.headers
                    .push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "--concurrency" => {
                args.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let source = match (config, bootstrap) {
        (Some(c), None) => Source::File(c),
        (None, Some(b)) => Source::Bootstrap(b, delta),
        _ => return Err("exactly one of --config and --bootstrap is required".into()),
    };
    args.target = target.ok_or("--target is required")?;
    args.requests = requests.ok_or("--requests is required")?;
    Ok((args, source))
}

enum Source {
    File(String),
    Bootstrap(String, Option<bool>),
}

/// Does-not-exist timeout of the xDS client, and how much longer the probe waits.
const RESOURCE_TIMEOUT: Duration = Duration::from_secs(15);
const MARGIN: Duration = Duration::from_secs(5);

async fn mesh(source: &Source) -> Result<Mesh, String> {
    match source {
        Source::File(path) => Mesh::from_file(path).await.map_err(|e| e.to_string()),
        Source::Bootstrap(path, delta) => {
            let bootstrap = Bootstrap::from_file(path).map_err(|e| e.to_string())?;
            let mut builder =
                XdsClientBuilder::from_bootstrap(bootstrap).resource_timeout(RESOURCE_TIMEOUT);
            if let Some(d) = delta {
                builder = builder.delta(*d);
            }
            Mesh::from_xds(builder).await.map_err(|e| e.to_string())
        }
    }
}

#[tokio::main]
async fn main() {
    let (args, source) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("probe: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let mesh = match mesh(&source).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(1);
        }
    };
    if let Source::Bootstrap(..) = source
        && let Err(e) = mesh
            .wait_ready(&args.target, RESOURCE_TIMEOUT + MARGIN)
            .await
    {
        eprintln!("probe: {e}; sending anyway");
    }
    let report = probe::run(&mesh, &args).await;
    println!("{}", report.to_json());
}
