//! A proxyless service in an Istio mesh: a server and a client configured by istiod.
//!
//! istiod serves `examples/istio/config` (a ServiceEntry + WorkloadEntry for `echo`, a
//! DestinationRule with ISTIO_MUTUAL, a VirtualService, PeerAuthentication STRICT and
//! AuthorizationPolicies). A development CA stands in for Istio's: it issues the workloads'
//! SPIFFE identities into the files Istio's agent would write. The `echo` server takes its TLS
//! and authorization from istiod's inbound listener; the `frontend` client its routes, cluster
//! and mTLS from istiod; the example prints what the frontend got.
//!
//! Run (istiod without Kubernetes: see examples/istio/README.md):
//! `cargo run --example istio -- --istiod 127.0.0.1:15010`

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let mut args = std::env::args().skip(1);
    let istiod = match (args.next().as_deref(), args.next()) {
        (Some("--istiod"), Some(addr)) => addr,
        _ => {
            eprintln!("usage: istio --istiod HOST:PORT  (istiod's plaintext xDS port)");
            std::process::exit(2);
        }
    };
    let workdir = std::env::temp_dir().join(format!("mesh-istio-{}", std::process::id()));
    let report = mesh_examples::istio::run(&istiod, &workdir).await?;
    println!("tonic SayHello   → {}", report.greeting.trim_end());
    println!(
        "GET /hello       → {} {}",
        report.hello.0,
        report.hello.1.trim_end()
    );
    println!(
        "GET /admin/users → {} (AuthorizationPolicy DENY)",
        report.admin_status
    );
    Ok(())
}
