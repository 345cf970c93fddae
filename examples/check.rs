//! check: find what the mesh would refuse, before it runs (what `istioctl analyze` and Envoy's
//! `--mode validate` do for their users).
//!
//! ```text
//! cargo run --example check -- --config FILE
//! cargo run --example check -- --bootstrap FILE
//! cargo run --example check -- --bootstrap FILE [--delta] --target T... [--server ADDR]... [--wait SECS]
//! cargo run --example check -- --resources PATH
//! ```
//!
//! - `--config`: the YAML config, every problem with its field path.
//! - `--bootstrap` alone: the gRPC bootstrap, offline: its JSON, its certificate providers,
//!   and the files they name (present and readable).
//! - `--bootstrap` with targets (`xds:///name` or `host:port`) and server addresses: asks the
//!   control plane for them as this node, waits until each is complete (at most `--wait`,
//!   default 20 s), then lists every resource it received with its state: accepted, or
//!   NACKed with the field path and why, or missing.
//! - `--resources`: xDS resource files (a file or a directory of Envoy's JSON/YAML
//!   `DiscoveryResponse`s, what a `file://` source or Envoy's `path_config_source` reads),
//!   offline: files that do not parse, resources the client would refuse (with field paths),
//!   and references no file satisfies (a listener's route config, a route's cluster, an EDS
//!   cluster's endpoints).
//!
//! Each problem is one line, `<where>: <what>`, followed by a `hint:` line when there is a
//! likely fix. Exit status: 0 when nothing is wrong, 1 when something is, 2 on bad usage. For
//! CI: `cargo run --example check -- --config mesh.yaml || exit 1`.

use mesh_tower::Mesh;
use mesh_xds_client::bootstrap::Bootstrap;
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "\
check: validate a mesh config, a gRPC xDS bootstrap, or what a control plane serves

USAGE:
    check --config FILE
    check --bootstrap FILE
    check --bootstrap FILE [--delta] --target T... [--server ADDR]... [--wait SECS]
    check --resources PATH

OPTIONS:
    --config FILE      mesh config (YAML, the embedded-default format)
    --bootstrap FILE   gRPC xDS bootstrap JSON
    --target T         a client target to fetch (xds:///<listener> or host:port); repeatable
    --server ADDR      a server listening address to fetch (gRFC A36); repeatable
    --delta            use Delta ADS
    --wait SECS        how long to wait for the control plane (default 20)
    --resources PATH   xDS resource files (Envoy's JSON/YAML), a file or a directory
    -h, --help         this text

Exit status: 0 nothing wrong, 1 problems found (listed), 2 bad usage.
";

#[derive(Default)]
struct Args {
    config: Option<String>,
    bootstrap: Option<String>,
    resources: Option<String>,
    targets: Vec<String>,
    servers: Vec<std::net::SocketAddr>,
    delta: bool,
    wait: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args::default();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--config" => a.config = Some(value("--config")?),
            "--bootstrap" => a.bootstrap = Some(value("--bootstrap")?),
            "--resources" => a.resources = Some(value("--resources")?),
            "--target" => a.targets.push(value("--target")?),
            "--server" => {
                let v = value("--server")?;
                a.servers.push(
                    v.parse()
                        .map_err(|_| format!("--server {v:?} is not ip:port"))?,
                );
            }
            "--delta" => a.delta = true,
            "--wait" => {
                let v = value("--wait")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--wait {v:?} is not a number of seconds"))?;
                a.wait = Some(Duration::from_secs_f64(secs));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let online = !a.targets.is_empty() || !a.servers.is_empty();
    match (&a.config, &a.bootstrap, &a.resources) {
        (Some(_), None, None) | (None, None, Some(_)) if !online => Ok(a),
        (None, Some(_), None) => Ok(a),
        _ => Err(
            "exactly one of --config, --bootstrap and --resources (targets go with --bootstrap)"
                .into(),
        ),
    }
}

/// The problems found, as `(where, what)`.
type Problems = Vec<(String, String)>;

/// A likely fix for a problem, from what it says.
fn hint(what: &str) -> Option<&'static str> {
    let rules: [(&str, &str); 11] = [
        (
            "unknown certificate provider instance",
            "name an instance of the bootstrap's (or the config's) certificate_providers",
        ),
        (
            "is not supported",
            "the mesh does not implement this field; docs/guides/xds.md lists what is translated",
        ),
        (
            "does not exist",
            "the control plane does not serve this name: check the spelling (Istio names listeners host:port with the full service name)",
        ),
        (
            "unknown cluster",
            "a route names a cluster the config does not define",
        ),
        (
            "no such file",
            "the path is read by the process that runs the mesh: make it absolute or relative to that process's directory",
        ),
        (
            "would tie",
            "two filter chains match the same connections: make one's match narrower",
        ),
        (
            "is not ip:port",
            "addresses are written ip:port, [v6]:port for IPv6",
        ),
        (
            "which no file defines",
            "add the resource to the files, or fix the name that refers to it",
        ),
        (
            "in the files",
            "an EDS cluster's endpoints come from a ClusterLoadAssignment named by its service_name (else its name)",
        ),
        (
            "unrecognized field name",
            "a misspelt or unsupported field: Envoy's v3 API, snake_case or lowerCamelCase",
        ),
        (
            "unknown field",
            "a misspelt or unsupported key: the config is Envoy's v3 shapes, snake_case",
        ),
    ];
    rules
        .iter()
        .find(|(pattern, _)| what.contains(pattern))
        .map(|(_, h)| *h)
}

fn report(problems: &Problems) -> ExitCode {
    for (at, what) in problems {
        println!("{at}: {what}");
        if let Some(h) = hint(what) {
            println!("  hint: {h}");
        }
    }
    if problems.is_empty() {
        println!("ok: nothing to fix");
        ExitCode::SUCCESS
    } else {
        println!("{} problem(s)", problems.len());
        ExitCode::from(1)
    }
}

/// The config file's problems, one per field.
fn check_config(path: &str) -> Problems {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![(path.to_owned(), e.to_string())],
    };
    match mesh_core::MeshConfig::from_yaml_named(&text, path) {
        Ok(_) => Vec::new(),
        Err(mesh_core::ConfigError::Invalid(errors)) => errors
            .into_iter()
            .map(|e| (format!("{path}: {}", e.path), e.message))
            .collect(),
        Err(e) => vec![(path.to_owned(), e.to_string())],
    }
}

/// The bootstrap's problems, offline.
fn check_bootstrap(path: &str) -> Result<Bootstrap, Problems> {
    let bootstrap =
        Bootstrap::from_file(path).map_err(|e| vec![(path.to_owned(), e.to_string())])?;
    let mut problems = Vec::new();
    match bootstrap.mesh_certificate_providers() {
        Err(e) => problems.push((path.to_owned(), e.to_string())),
        Ok(providers) => {
            for (name, p) in &providers {
                let Some(fw) = &p.file_watcher else { continue };
                for (field, file) in [
                    ("certificate_file", &fw.certificate_file),
                    ("private_key_file", &fw.private_key_file),
                    ("ca_certificate_file", &fw.ca_certificate_file),
                    (
                        "spiffe_trust_bundle_map_file",
                        &fw.spiffe_trust_bundle_map_file,
                    ),
                ] {
                    if let Some(f) = file
                        && let Err(e) = std::fs::File::open(f)
                    {
                        problems.push((
                            format!("{path}: certificate_providers.{name}.config.{field}"),
                            format!("{f:?}: {e}").to_lowercase(),
                        ));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(bootstrap)
    } else {
        Err(problems)
    }
}

/// What the control plane serves for `args`' targets and servers.
async fn check_online(bootstrap: Bootstrap, args: &Args) -> Problems {
    let wait = args.wait.unwrap_or(Duration::from_secs(20));
    let mut builder = XdsClientBuilder::from_bootstrap(bootstrap);
    if args.delta {
        builder = builder.delta(true);
    }
    let mesh = match Mesh::from_xds(builder).await {
        Ok(m) => m,
        Err(e) => return vec![("bootstrap".to_owned(), e.to_string())],
    };
    let mut problems = Vec::new();
    // Waiting makes the client ask for each one and everything it references.
    let mut servers = Vec::new();
    for t in &args.targets {
        if let Err(e) = mesh.wait_ready(t, wait).await {
            problems.push((format!("target {t}"), e.to_string()));
        }
    }
    for s in &args.servers {
        match mesh.xds_server(*s, wait).await {
            Ok(server) => servers.push(server),
            Err(e) => problems.push((format!("server {s}"), e.to_string())),
        }
    }
    let Some(client) = mesh.xds_client() else {
        return problems;
    };
    for (ty, by_name) in client.resource_status() {
        for (name, status) in by_name {
            let at = format!("{} {name:?}", ty.short());
            match (status.state, &status.last_error) {
                (_, Some(e)) => problems.push((at, format!("NACKed: {e}"))),
                ("does_not_exist", None) => {
                    problems.push((at, "the control plane says it does not exist".into()))
                }
                (state, None) => println!("{at}: {state} (version {:?})", status.version),
            }
        }
    }
    problems
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("check: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if let Some(config) = &args.config {
        return report(&check_config(config));
    }
    if let Some(path) = &args.resources {
        let problems = mesh_xds_client::files::check(std::path::Path::new(path))
            .into_iter()
            .map(|p| (p.place, p.what))
            .collect();
        return report(&problems);
    }
    let path = args
        .bootstrap
        .clone()
        .expect("parse_args: one of the three");
    let bootstrap = match check_bootstrap(&path) {
        Ok(b) => b,
        Err(problems) => return report(&problems),
    };
    if args.targets.is_empty() && args.servers.is_empty() {
        return report(&Vec::new());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let problems = rt.block_on(check_online(bootstrap, &args));
    report(&problems)
}
