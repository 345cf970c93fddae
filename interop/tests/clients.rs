//! Real clients through the mesh against real servers on loopback: a tonic generated client on
//! `Mesh::channel`, hyper requests on `Mesh::http_client`, over HTTP/1.1 and HTTP/2.

mod support;

use bytes::Bytes;
use http_body_util::Empty;
use mesh_examples::backend::Backend;
use mesh_examples::greeter::{self, GreeterClient, HelloRequest};
use mesh_tower::ErrorKind;
use std::collections::HashMap;
use support::*;

fn greeter_config(endpoints: &[std::net::SocketAddr]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        r#"
listeners:
  - name: greeter.default.svc:50051
    route_config:
      virtual_hosts:
        - name: greeter
          domains: ["greeter.default.svc", "greeter.default.svc:50051"]
          routes:
            - match: {{ prefix: /helloworld.Greeter/ }}
              route: {{ cluster: greeter }}
  - name: broken
    route_config:
      virtual_hosts:
        - name: b
          domains: ["*"]
          routes:
            - match: {{ prefix: /helloworld.Greeter/ }}
              route: {{ cluster: empty }}
clusters:
  - name: greeter
    type: STATIC
    protocol: HTTP2
    load_assignment:
      cluster_name: greeter
      endpoints: [{{ lb_endpoints: [{}] }}]
  - name: empty
    protocol: HTTP2
"#,
        eps.join(", ")
    )
}

#[tokio::test]
async fn tonic_generated_client_works_unchanged_on_a_mesh_channel() {
    let (a, _ta) = greeter::spawn_server().await.unwrap();
    let (b, _tb) = greeter::spawn_server().await.unwrap();
    let mesh = mesh_from(&greeter_config(&[a, b])).await;
    let mut client = GreeterClient::new(mesh.channel("xds:///greeter.default.svc:50051"));
    let mut seen = HashMap::new();
    for i in 0..10 {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("n{i}"),
            })
            .await
            .unwrap();
        let msg = reply.into_inner().message;
        assert!(msg.starts_with(&format!("hello n{i} from ")), "{msg}");
        *seen
            .entry(msg.rsplit(' ').next().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        seen.get(&a.to_string()),
        Some(&5),
        "round robin over both servers: {seen:?}"
    );
    assert_eq!(seen.get(&b.to_string()), Some(&5), "{seen:?}");
}

#[tokio::test]
async fn mesh_failures_reach_tonic_as_grpc_statuses() {
    let (a, _ta) = greeter::spawn_server().await.unwrap();
    let mesh = mesh_from(&greeter_config(&[a])).await;

    // No listener for the target.
    let mut client = GreeterClient::new(mesh.channel("xds:///missing"));
    let status = client.say_hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("target \"missing\""),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("no listener named \"missing\""),
        "{}",
        status.message()
    );

    // Cluster without endpoints.
    let mut client = GreeterClient::new(mesh.channel("xds:///broken"));
    let status = client.say_hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("cluster \"empty\""),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("no endpoints"),
        "{}",
        status.message()
    );

    // Malformed targets (no name).
    for target in ["xds://authority", "xds:///"] {
        let mut client = GreeterClient::new(mesh.channel(target));
        let status = client.say_hello(HelloRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{target}");
    }

    // Endpoint down: connect refused names the endpoint.
    let (dead, task) = greeter::spawn_server().await.unwrap();
    task.abort();
    let _ = task.await;
    let mesh = mesh_from(&greeter_config(&[dead])).await;
    let mut client = GreeterClient::new(mesh.channel("xds:///greeter.default.svc:50051"));
    let status = client.say_hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status
            .message()
            .contains(&format!("connect to {dead} failed")),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn http_client_routes_by_authority_over_http2() {
    let (b1, b2) = (
        Backend::start().await.unwrap(),
        Backend::start().await.unwrap(),
    );
    let (mesh, _store, counter) =
        counting_mesh(&web_config(&[b1.addr(), b2.addr()], "HTTP2")).await;
    let http = mesh.http_client::<Empty<Bytes>>();

    // Concurrent requests share one multiplexed connection per endpoint.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            get(&http, "http://web/some/path?q=1").await.unwrap()
        }));
    }
    let mut per = HashMap::new();
    for t in tasks {
        let (status, served, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(&*served.cluster, "web");
        assert_eq!(
            body,
            served.endpoint.to_string(),
            "ServedBy names the endpoint that answered"
        );
        *per.entry(served.endpoint).or_insert(0) += 1;
    }
    assert_eq!(per.get(&b1.addr()), Some(&20));
    assert_eq!(per.get(&b2.addr()), Some(&20));
    assert_eq!(
        counter.count(b1.addr()),
        1,
        "one HTTP/2 connection per endpoint"
    );
    assert_eq!(counter.count(b2.addr()), 1);

    // An authority with no listener is a clear error, not a hang.
    let err = get(&http, "http://elsewhere:8080/").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoConfig);
    assert!(
        err.to_string()
            .contains("no listener named \"elsewhere:8080\""),
        "{err}"
    );
}

#[tokio::test]
async fn http1_connections_are_pooled_and_reused() {
    let b = Backend::start().await.unwrap();
    let (mesh, _store, counter) = counting_mesh(&web_config(&[b.addr()], "HTTP1")).await;
    let http = mesh.http_client::<Empty<Bytes>>();
    for _ in 0..30 {
        let (status, _, _) = get(&http, "http://web/").await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(
        counter.count(b.addr()),
        1,
        "sequential HTTP/1.1 requests reuse one connection"
    );

    // Concurrent requests need several connections, which then stay pooled.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            get(&http, "http://web/delay/50").await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let opened = counter.count(b.addr());
    assert!(
        (2..=9).contains(&opened),
        "concurrent requests opened {opened} connections"
    );
    for _ in 0..8 {
        get(&http, "http://web/").await.unwrap();
    }
    assert_eq!(
        counter.count(b.addr()),
        opened,
        "pooled connections are reused"
    );
}

#[tokio::test]
async fn the_backend_sees_the_authority_and_path_the_caller_sent() {
    let b = Backend::start().await.unwrap();
    for protocol in ["HTTP1", "HTTP2"] {
        let mesh = mesh_from(&web_config(&[b.addr()], protocol)).await;
        let http = mesh.http_client::<Empty<Bytes>>();
        let req = http::Request::get("http://web/a/b?c=d")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = tower::ServiceExt::oneshot(http, req).await.unwrap();
        assert_eq!(res.headers()["x-path"], "/a/b?c=d", "{protocol}");
    }
}

#[tokio::test]
async fn grpc_goes_over_http2_on_a_cluster_without_protocol_options() {
    // A tonic server speaks HTTP/2 only; the cluster says nothing (HTTP/1.1 by default), as
    // control planes such as istiod may send it.
    let (a, _ta) = greeter::spawn_server().await.unwrap();
    let yaml = greeter_config(&[a]).replace("    protocol: HTTP2\n", "");
    assert!(!yaml.contains("protocol: HTTP2\n    load_assignment"));
    let mesh = mesh_from(&yaml).await;
    let mut client = GreeterClient::new(mesh.channel("xds:///greeter.default.svc:50051"));
    for i in 0..3 {
        let reply = client
            .say_hello(HelloRequest {
                name: format!("h1-{i}"),
            })
            .await
            .unwrap();
        assert!(
            reply
                .into_inner()
                .message
                .starts_with(&format!("hello h1-{i} from "))
        );
    }
}

#[tokio::test]
async fn an_invalid_target_fails_alike_at_wait_ready_and_on_a_call() {
    use tower::ServiceExt;
    let mesh = mesh_from(&greeter_config(&[])).await;
    for target in ["xds://authority", "xds:///"] {
        let waited = mesh.wait_ready(target, PATIENCE).await.unwrap_err();
        let req = http::Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        let called = mesh
            .channel::<Empty<Bytes>>(target)
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(waited.kind(), ErrorKind::InvalidTarget, "{target}");
        assert_eq!(called.kind(), ErrorKind::InvalidTarget, "{target}");
        assert_eq!(waited.to_string(), called.to_string(), "{target}");
    }
}
