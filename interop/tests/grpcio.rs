//! grpcio (gRPC's C-core, `pip install grpcio==1.85.*`) as a peer xDS client: on one
//! go-control-plane snapshot, the same helloworld calls through grpcio's proxyless client and
//! through the mesh must reach the same greeters.
//!
//! The route config sends `x-tier: canary` to `canary`, any `x-beta` header to `beta`, and the
//! rest to `stable`, each cluster one greeter that answers with its own address. The Python
//! side is `interop/grpcio/peer.py` (raw bytes, no generated stubs), run by the venv
//! `.ci/test` installs into `target/venv`; a missing venv or grpcio fails the test.

mod support;

use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
use mesh_tower::Mesh;
use mesh_xds_client::build::{self, header, header_route};
use mesh_xds_client::{XdsClientBuilder, XdsMesh};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::gocp::GoControlPlane;
use support::*;

/// Calls: (name, metadata).
const CASES: [(&str, &[(&str, &str)]); 5] = [
    ("plain", &[]),
    ("canary", &[("x-tier", "canary")]),
    ("not-canary", &[("x-tier", "stable")]),
    ("beta", &[("x-beta", "1")]),
    ("both", &[("x-tier", "canary"), ("x-beta", "1")]),
];

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
    assert!(
        venv.exists(),
        "the grpcio peer needs target/venv (created by `bash .ci/test`, which installs grpcio)"
    );
    venv
}

/// Runs the grpcio peer over `CASES`; the replies (or errors) in order.
fn through_grpcio(bootstrap: &std::path::Path) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("grpcio/peer.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg("xds:///greeter")
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the venv's python runs");
    {
        let mut stdin = child.stdin.take().unwrap();
        for (name, metadata) in CASES {
            let line = serde_json::json!({"name": name, "metadata": metadata});
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "grpcio peer failed (is grpcio installed in target/venv?)"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("reply")
                .or_else(|| v.get("error"))
                .and_then(|r| r.as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_and_the_mesh_send_the_same_calls_to_the_same_greeters() {
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let (addr, handle) = greeter::spawn_server().await.unwrap();
        addrs.push(addr);
        servers.push(handle);
    }
    let clusters = ["stable", "canary", "beta"];
    let rc = build::route_config(
        "greeter-routes",
        &["*"],
        vec![
            header_route("/", vec![header("x-tier", Some("canary"))], "canary"),
            header_route("/helloworld.Greeter/", vec![header("x-beta", None)], "beta"),
            build::route("/", "stable"),
        ],
    );
    let mut resources = vec![
        build::any(&build::api_listener_rds("greeter", "greeter-routes")),
        build::any(&rc),
    ];
    for (name, addr) in clusters.iter().zip(&addrs) {
        resources.push(build::any(&build::eds_cluster(name)));
        resources.push(build::any(&build::assignment(name, &[*addr])));
    }
    let cp = GoControlPlane::start();
    for node in ["grpcio-peer", "mesh-client"] {
        cp.set(node, "1", &resources).await;
    }

    let bootstrap = config_file(
        &serde_json::json!({
            "xds_servers": [{"server_uri": cp.ads.to_string(),
                             "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "grpcio-peer", "cluster": "interop"}
        })
        .to_string(),
    );
    let path = bootstrap.path().to_owned();
    let theirs = tokio::task::spawn_blocking(move || through_grpcio(&path))
        .await
        .unwrap();

    let mesh = Mesh::from_xds(XdsClientBuilder::new(cp.ads.to_string(), "mesh-client"))
        .await
        .unwrap();
    mesh.wait_ready("xds:///greeter", PATIENCE).await.unwrap();
    let mut client = GreeterClient::new(mesh.channel("xds:///greeter"));
    let mut ours = Vec::new();
    for (name, metadata) in CASES {
        let mut req = tonic::Request::new(HelloRequest { name: name.into() });
        for (k, v) in metadata {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        ours.push(client.say_hello(req).await.unwrap().into_inner().message);
    }

    let expect = |name: &str, cluster: usize| format!("hello {name} from {}", addrs[cluster]);
    assert_eq!(
        ours,
        [
            expect("plain", 0),
            expect("canary", 1),
            expect("not-canary", 0),
            expect("beta", 2),
            expect("both", 1),
        ]
    );
    assert_eq!(theirs, ours, "grpcio and the mesh disagree");
}
