//! Traffic policy in one run: retries with a budget hide a flaky backend, a per-try timeout
//! steps around a stalled one, outlier detection ejects a failing one, a fault filter injects
//! errors for requests that ask for chaos, and a redirect is answered locally.
//!
//! Everything is configured in one YAML document (Envoy's shapes); a control plane sending the
//! same policy over xDS has the same effect.
//!
//! Run: `cargo run --release --example policy`

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::{Backend, Mode};
use mesh_tower::{Mesh, MeshService, ServedBy};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tower::ServiceExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

const CONFIG: &str = r#"
listeners:
  - name: shop
    http_filters:
      - name: envoy.filters.http.fault
        fault:
          abort: { http_status: 503, percentage: { numerator: 100 } }
          headers: [{ name: x-chaos }]
    route_config:
      virtual_hosts:
        - name: shop
          domains: ["*"]
          routes:
            - match: { prefix: /old-cart }
              redirect: { path_redirect: /cart, response_code: FOUND }
            - match: { prefix: /flaky }
              route:
                cluster: flaky
                retry_policy: { retry_on: 5xx, num_retries: 5, retry_back_off: { base_interval: 0.002s } }
            - match: { prefix: /slow }
              route:
                cluster: slow-and-fast
                retry_policy:
                  retry_on: 5xx
                  per_try_timeout: 0.1s
                  retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
            - match: { prefix: / }
              route: { cluster: sometimes-broken }
clusters:
  - name: flaky
    circuit_breakers:
      thresholds: [{ retry_budget: { budget_percent: { value: 20.0 }, min_retry_concurrency: 5 } }]
  - name: slow-and-fast
  - name: sometimes-broken
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 30s, max_ejection_percent: 50 }
endpoints:
  - { cluster_name: flaky, endpoints: [{ lb_endpoints: [{ address: "FLAKY" }] }] }
  - { cluster_name: slow-and-fast, endpoints: [{ lb_endpoints: [{ address: "SLOW" }, { address: "FAST" }] }] }
  - { cluster_name: sometimes-broken, endpoints: [{ lb_endpoints: [{ address: "BROKEN" }, { address: "HEALTHY" }] }] }
"#;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let flaky = Backend::start_with(Mode::flaky(20)).await?;
    let slow = Backend::start_with(Mode::slow(Duration::from_secs(10))).await?;
    let fast = Backend::start().await?;
    let broken = Backend::start_with(Mode::failing(503)).await?;
    let healthy = Backend::start().await?;
    let yaml = CONFIG
        .replace("FLAKY", &flaky.addr().to_string())
        .replace("SLOW", &slow.addr().to_string())
        .replace("FAST", &fast.addr().to_string())
        .replace("BROKEN", &broken.addr().to_string())
        .replace("HEALTHY", &healthy.addr().to_string());
    let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&yaml)?).await?;
    let shop = mesh.channel::<Empty<Bytes>>("xds:///shop");

    // 1. Retries: the backend fails 20% of requests; callers see none of it.
    let mut ok = 0;
    for _ in 0..500 {
        ok += usize::from(status(&shop, "/flaky", None).await? == 200);
    }
    println!(
        "retries:   {ok}/500 succeeded; the flaky backend answered {} attempts (budget-bounded retries)",
        flaky.served()
    );

    // 2. Per-try timeout: round robin sends every other first attempt to a stalled endpoint;
    //    after 100 ms the retry goes to the other host.
    let start = Instant::now();
    let mut served = BTreeMap::new();
    for _ in 0..6 {
        let res = send(&shop, "/slow", None).await?;
        let ep = res.extensions().get::<ServedBy>().map(|s| s.endpoint);
        *served
            .entry(ep.map(|e| e.to_string()).unwrap_or_default())
            .or_insert(0) += 1;
    }
    println!(
        "per-try:   6 requests in {:?}, all served by the fast endpoint {}: {served:?}",
        start.elapsed(),
        fast.addr()
    );

    // 3. Outlier detection: three 5xx in a row eject the broken endpoint for 30 s.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(status(&shop, "/", None).await?);
    }
    println!(
        "outlier:   statuses {statuses:?}; the broken endpoint saw {} requests",
        broken.served()
    );

    // 4. Fault injection for requests that carry x-chaos; 5. a local redirect.
    println!(
        "fault:     without x-chaos {}, with x-chaos {}",
        status(&shop, "/", None).await?,
        status(&shop, "/", Some(("x-chaos", "1"))).await?
    );
    let res = send(&shop, "/old-cart?item=7", None).await?;
    println!(
        "redirect:  {} location {:?}",
        res.status(),
        res.headers().get("location")
    );
    Ok(())
}

async fn send(
    svc: &MeshService<Empty<Bytes>>,
    path: &str,
    header: Option<(&str, &str)>,
) -> Result<http::Response<mesh_tower::MeshBody>, Error> {
    let mut req = http::Request::get(format!("http://shop{path}"));
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    Ok(svc.clone().oneshot(req.body(Empty::new())?).await?)
}

async fn status(
    svc: &MeshService<Empty<Bytes>>,
    path: &str,
    header: Option<(&str, &str)>,
) -> Result<u16, Error> {
    Ok(send(svc, path, header).await?.status().as_u16())
}
