//! The fuzzer's seeds from a real istiod (issue "reliability"): istiod, given a service with
//! two subsets, a DestinationRule (ISTIO_MUTUAL, least request, outlier detection, pool
//! limits), a VirtualService (header and regex matches, weights, retries, timeout, fault,
//! rewrite, header edits) and STRICT mTLS with ALLOW and DENY policies, configures a client
//! and an xDS-enabled server; every resource they accepted (CSDS's copy, byte for byte what
//! istiod sent) must translate under the fuzzer's context, and every type must have seeds in
//! `mesh-xds-client/tests/corpus/istiod/`, which `tests/fuzz.rs` mutates.
//!
//! `CORPUS_WRITE=1 cargo test -p mesh-interop --test istio_corpus` rewrites that directory
//! from the istiod in use (after an Istio upgrade, say).

mod support;

use envoy_types::pb::google::protobuf::Any;
use mesh_tower::Mesh;
use mesh_xds_client::XdsMesh;
use mesh_xds_client::translate::{Context, ResourceType, decode_in};
use std::path::PathBuf;
use support::istio::*;
use support::*;

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const ECHO_ID: &str = "spiffe://cluster.local/ns/default/sa/echo";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mesh-xds-client/tests/corpus/istiod")
}

/// Every resource `mesh` accepted: its type, name and the bytes it was sent.
fn accepted(mesh: &Mesh) -> Vec<(ResourceType, String, Any)> {
    let status = mesh.xds_client().expect("an xDS mesh").csds().status();
    let mut out = Vec::new();
    for config in status.config {
        for g in config.generic_xds_configs {
            let ty = ResourceType::ALL
                .into_iter()
                .find(|t| t.type_url() == g.type_url)
                .unwrap();
            if let Some(any) = g.xds_config {
                out.push((ty, g.name, any));
            }
        }
    }
    out
}

/// A file name for a resource: its type and name, path characters replaced.
fn file_name(ty: ResourceType, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    format!("{}-{name}.pb", ty.short().to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_istiod_sends_is_a_seed_of_the_fuzzer() {
    let pki = mesh_examples::pki::DevCa::new("istio test root");
    let certs = tempfile::tempdir().unwrap();
    let (client_dir, echo_dir) = (
        issue(&pki, certs.path(), "client", CLIENT_ID),
        issue(&pki, certs.path(), "echo", ECHO_ID),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let v2 = std::net::SocketAddr::from(([127, 0, 0, 2], addr.port()));
    let dr = "  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    loadBalancer: {simple: LEAST_REQUEST}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
    connectionPool: {http: {http2MaxRequests: 100, maxRetries: 3}}
";
    let rules = format!(
        "  - match: [{{uri: {{prefix: /api}}, headers: {{x-canary: {{exact: \"yes\"}}}}}}]
    route: [{v2}]
    retries: {{attempts: 3, perTryTimeout: 0.5s, retryOn: \"5xx,reset,connect-failure\"}}
    timeout: 2s
    fault: {{abort: {{httpStatus: 503, percentage: {{value: 1}}}}}}
    headers: {{request: {{set: {{x-team: shop}}}}, response: {{remove: [server]}}}}
  - match: [{{uri: {{regex: \"^/items/[0-9]+$\"}}}}]
    rewrite: {{uri: /item}}
    route: [{{destination: {{host: {HOST}, subset: v1}}, weight: 80}}, {{destination: {{host: {HOST}, subset: v2}}, weight: 20}}]
  - route: [{v1}]
",
        v1 = dest("v1"),
        v2 = dest("v2"),
    );
    // Flow style: an ALLOW by principal, method and path, and one by namespace and port.
    let allow = r#"{apiVersion: security.istio.io/v1, kind: AuthorizationPolicy,
 metadata: {name: echo-allow, namespace: default},
 spec: {selector: {matchLabels: {app: echo}}, action: ALLOW, rules: [
   {from: [{source: {principals: [cluster.local/ns/default/sa/client]}}],
    to: [{operation: {methods: [GET], paths: [/api*]}}]},
   {from: [{source: {namespaces: [other]}}],
    to: [{operation: {ports: ["7070"], notPaths: [/private*]}}]}]}}
---
"#;
    let cp = Cp::start(&[
        ("service.yaml", &service(&[("v1", addr), ("v2", v2)], dr)),
        ("vs.yaml", &virtual_service(&rules)),
        (
            "policy.yaml",
            &(STRICT_MTLS.to_owned() + allow + DENY_ADMIN),
        ),
    ]);
    let echo = echo_workload(&echo_dir);
    let server_mesh = cp.client(&echo, false).await;
    let _server = server_mesh.xds_server(addr, PATIENCE).await.unwrap();
    let client = cp.client(&client_workload(Some(&client_dir)), false).await;
    client.wait_ready(TARGET, PATIENCE).await.unwrap();

    let mut seeds = accepted(&client);
    seeds.extend(accepted(&server_mesh));
    seeds.sort_by(|a, b| (a.0.short(), &a.1).cmp(&(b.0.short(), &b.1)));
    seeds.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    // What the fuzzer translates its inputs with (tests/fuzz.rs).
    let ctx = Context {
        certificate_providers: ["default".to_owned()].into(),
        inbound_route_configs: ["inbound-routes".to_owned()].into(),
        ..Default::default()
    };
    for (ty, name, any) in &seeds {
        let decoded = decode_in(*ty, any, &ctx).unwrap();
        assert!(
            decoded.result.is_ok(),
            "{ty:?} {name:?} from istiod is accepted: {:?}",
            decoded.result.err()
        );
    }
    let types = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
    ];
    for ty in types {
        assert!(
            seeds.iter().any(|s| s.0 == ty),
            "istiod sent {ty:?}: {:?}",
            seeds.iter().map(|s| &s.1).collect::<Vec<_>>()
        );
    }

    let dir = corpus_dir();
    if std::env::var_os("CORPUS_WRITE").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (ty, name, any) in &seeds {
            std::fs::write(dir.join(file_name(*ty, name)), &any.value).unwrap();
        }
        eprintln!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
    // The checked-in seeds cover every type istiod sends, and each seed still translates.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CORPUS_WRITE=1)", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for ty in types {
        let prefix = format!("{}-", ty.short().to_lowercase());
        assert!(
            files.iter().any(|f| f.starts_with(&prefix)),
            "a {ty:?} seed in {}: {files:?}",
            dir.display()
        );
    }
}
