//! istiod's view of our clients: `/debug/syncz` (what `istioctl proxy-status` shows) lists
//! each with what it ACKed, and a config our client rejects as a NACK with our field path.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use std::collections::HashMap;
use support::istio::*;
use support::*;

/// istiod's `/debug/syncz` (what `istioctl proxy-status` shows) lists our client with every
/// type ACKed; a VirtualService our client cannot honour (a regex with RE2's `\Q…\E` quoting,
/// which the `regex` crate lacks) shows there as a NACK carrying our field path, while the last
/// good config keeps serving.
async fn syncz(delta: bool) {
    let v1 = Backend::start().await.unwrap();
    let ok = virtual_service(&format!("  - route: [{}]\n", dest("v1")));
    let cp = Cp::start(&[
        ("service.yaml", &service(&[("v1", v1.addr())], "")),
        ("vs.yaml", &ok),
    ]);
    let mesh = cp.client(&client_workload(None), delta).await;
    let channel = mesh.channel::<Empty<Bytes>>(TARGET);
    mesh.wait_ready(TARGET, PATIENCE).await.unwrap();
    let mine = |all: Vec<serde_json::Value>| {
        all.into_iter()
            .find(|p| p["proxy"] == "client.default")
            .expect("our client in syncz")
    };
    const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    // Every type ACKed (istiod has no push for this: poll its debug endpoint, bounded).
    let all_acked = |status: &serde_json::Value| {
        ["listener", "route", "cluster", "endpoint"]
            .iter()
            .all(|ty| {
                let sent = &status[format!("{ty}_sent")];
                sent.is_string() && *sent == status[format!("{ty}_acked")]
            })
    };
    let acked = tokio::time::timeout(PATIENCE, async {
        loop {
            let status = mine(cp.istiod.syncz().await);
            if all_acked(&status) {
                return status;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(acked.is_ok(), "every type ACKed in syncz");

    let bad = virtual_service(&format!(
        "  - match: [{{uri: {{regex: '/api/\\Q.v1\\E/.*'}}}}]\n    route: [{v1}]\n  - route: [{v1}]\n",
        v1 = dest("v1")
    ));
    cp.write("vs.yaml", &bad);
    let error = tokio::time::timeout(PATIENCE, async {
        loop {
            let status = mine(cp.istiod.syncz().await);
            if let Some(e) = status["resources"][RDS]["lastError"].as_str() {
                return e.to_owned();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the NACK reached istiod");
    assert!(
        error.contains("virtual_hosts[0].routes[0].match.safe_regex"),
        "NACK names the field: {error}"
    );
    let served = tally(&channel, "/api/x", &[], 3).await;
    assert_eq!(
        served,
        HashMap::from([(v1.addr().to_string(), 3)]),
        "last good config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncz_shows_acks_and_our_nack_sotw() {
    syncz(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncz_shows_acks_and_our_nack_delta() {
    syncz(true).await;
}
