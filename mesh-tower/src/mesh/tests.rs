//! The mesh handle's own behaviour: fast failures yield to the scheduler; wait-for-ready.

use super::*;
use crate::ErrorKind;
use futures_util::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use tower_service::Service;

/// Listener `web` → EDS cluster `web` with no endpoint: every call fails at once.
const EMPTY: &str = r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - match: { prefix: / }
              route: { cluster: web }
clusters:
  - { name: web, type: EDS }
endpoints:
  - cluster_name: web
    endpoints:
      - lb_endpoints: []
"#;

async fn empty_mesh() -> Mesh {
    Mesh::builder()
        .store({
            let store = Store::new();
            store
                .replace(MeshConfig::from_yaml(EMPTY).unwrap())
                .unwrap();
            store
        })
        .control(Control::runtime(tokio::runtime::Handle::current()))
        .build()
        .await
        .unwrap()
}

fn get(timeout: Option<&str>) -> http::Request<()> {
    let mut req = http::Request::get("/");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", t);
    }
    req.body(()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_loop_over_fast_failures_lets_other_tasks_run() {
    let mesh = empty_mesh().await;
    let mut web = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///web");
    let other_ran = Arc::new(AtomicBool::new(false));
    let flag = other_ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
    // Without a yield the spawned task never runs on this single thread: the loop would end
    // after all its calls with the flag unset. Tokio's budget is 128 units a poll.
    let mut calls = 0;
    while !other_ran.load(Ordering::Relaxed) && calls < 1000 {
        let req = http::Request::get("/").body(Default::default()).unwrap();
        let err = web.call(req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoEndpoint);
        calls += 1;
    }
    assert!(
        other_ran.load(Ordering::Relaxed),
        "no yield in {calls} failed calls"
    );
    assert!(calls <= 129, "yielded only after {calls} calls");
}

#[tokio::test]
async fn without_wait_for_ready_a_call_fails_at_once() {
    let mesh = empty_mesh().await;
    let mut web = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///web");
    let req = get(None).map(|_| Default::default());
    let out = web.call(req).now_or_never().expect("completes at once");
    assert_eq!(out.unwrap_err().kind(), ErrorKind::NoEndpoint);
}

#[tokio::test]
async fn a_call_can_opt_out_of_its_channels_wait_for_ready() {
    let mesh = empty_mesh().await;
    let options = ChannelOptions::default().wait_for_ready(true);
    let mut web = mesh.channel_with::<http_body_util::Empty<bytes::Bytes>>("xds:///web", options);
    let mut req = get(None).map(|_| Default::default());
    req.extensions_mut().insert(WaitForReady(false));
    let out = web.call(req).now_or_never().expect("completes at once");
    assert_eq!(out.unwrap_err().kind(), ErrorKind::NoEndpoint);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_ends_at_its_deadline() {
    let mesh = empty_mesh().await;
    let options = ChannelOptions::default().wait_for_ready(true);
    let mut web = mesh.channel_with::<http_body_util::Empty<bytes::Bytes>>("xds:///web", options);
    let start = tokio::time::Instant::now();
    let req = get(Some("2S")).map(|_| Default::default());
    let err = web.call(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let text = err.to_string();
    assert!(
        text.contains("waiting for the target to be ready"),
        "{text}"
    );
    assert!(text.contains("no usable endpoint"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_per_call_wait_for_ready_waits_on_the_http_client_too() {
    let mesh = empty_mesh().await;
    let mut http = mesh.http_client::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = http::Request::get("http://web/")
        .header("grpc-timeout", "700m")
        .body(Default::default())
        .unwrap();
    req.extensions_mut().insert(WaitForReady(true));
    let start = tokio::time::Instant::now();
    let err = http.call(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(start.elapsed(), Duration::from_millis(700));
}

#[tokio::test]
async fn a_config_that_cannot_serve_is_walked_once_per_version() {
    let store = Store::new();
    store
        .replace(MeshConfig::from_yaml(EMPTY).unwrap())
        .unwrap();
    let mesh = Mesh::builder()
        .store(store.clone())
        .control(Control::runtime(tokio::runtime::Handle::current()))
        .build()
        .await
        .unwrap();
    // No such listener: the config refuses the target.
    let mut nowhere = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///nowhere");
    assert_eq!(nowhere.startup().unwrap().refused_at(), u64::MAX);
    let call = |svc: &mut MeshService<_>| {
        svc.call(http::Request::get("/").body(Default::default()).unwrap())
            .now_or_never()
            .expect("fails at once")
            .unwrap_err()
    };
    assert_eq!(call(&mut nowhere).kind(), ErrorKind::NoConfig);
    // Refused at this version: later calls route at once without walking the config again.
    assert_eq!(nowhere.startup().unwrap().refused_at(), store.version());
    assert_eq!(call(&mut nowhere).kind(), ErrorKind::NoConfig);
    // A new config is walked again.
    let v = store
        .replace(
            MeshConfig::from_yaml(&EMPTY.replace("[]", "[{ address: \"127.0.0.1:1\" }]")).unwrap(),
        )
        .unwrap();
    assert_eq!(call(&mut nowhere).kind(), ErrorKind::NoConfig);
    assert_eq!(nowhere.startup().unwrap().refused_at(), v);
}

/// A mesh of `yaml` recording `telemetry`, its control work on the test's runtime.
async fn logging_mesh(yaml: &str, telemetry: crate::telemetry::Telemetry) -> Mesh {
    let store = Store::new();
    store.replace(MeshConfig::from_yaml(yaml).unwrap()).unwrap();
    Mesh::builder()
        .store(store)
        .control(Control::runtime(tokio::runtime::Handle::current()))
        .telemetry(telemetry)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_listener_with_its_own_access_log_writes_there_and_others_to_the_mesh_log() {
    use crate::telemetry::{AccessLog, Telemetry};
    use crate::test_util::Lines;
    let dir = tempfile::tempdir().unwrap();
    let (file, errors) = (dir.path().join("web.log"), dir.path().join("quiet.log"));
    let yaml = format!(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - {{ name: web, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: web }} }} ] }}
    access_log:
      - {{ path: {:?}, text_format: "%RESPONSE_FLAGS% %REQ(:PATH)%\n", filter: {{ response_flag: [UH] }} }}
  - name: quiet
    route_config:
      virtual_hosts:
        - {{ name: quiet, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: web }} }} ] }}
    access_log:
      - {{ path: {:?}, filter: {{ status_code: {{ op: GE, value: 400 }} }} }}
  - name: other
    route_config:
      virtual_hosts:
        - {{ name: other, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: web }} }} ] }}
clusters:
  - {{ name: web, type: EDS }}
endpoints:
  - {{ cluster_name: web, endpoints: [ {{ lb_endpoints: [] }} ] }}
"#,
        file.display().to_string(),
        errors.display().to_string()
    );
    let mesh_wide = Lines::default();
    let mesh = logging_mesh(
        &yaml,
        Telemetry::new(Default::default()).with_access_log(AccessLog::writer(mesh_wide.clone())),
    )
    .await;
    let mut web = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///web");
    let mut other = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///other");
    let req = |path: &str| {
        http::Request::get(path)
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    let e = web.call(req("/a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoEndpoint, "{e}");
    other.call(req("/b")).await.unwrap_err();
    // Failed before any answer: code 0, which the quiet target's filter (>= 400) leaves out.
    let mut quiet = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///quiet");
    quiet.call(req("/c")).await.unwrap_err();
    // The last clone of the file's log goes with the mesh: its buffer is flushed then.
    drop((web, other, quiet, mesh));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "UH /a\n");
    assert_eq!(
        std::fs::read_to_string(&errors).unwrap(),
        "",
        "filtered out"
    );
    let mesh_wide = mesh_wide.text();
    assert!(mesh_wide.contains(r#""path":"/b""#), "{mesh_wide}");
    assert!(!mesh_wide.contains(r#""path":"/a""#), "{mesh_wide}");
}

#[tokio::test]
async fn every_log_of_a_listener_is_written_in_its_own_format_and_filter() {
    use crate::telemetry::Telemetry;
    let dir = tempfile::tempdir().unwrap();
    let (all, flagged, coded) = (
        dir.path().join("all.log"),
        dir.path().join("flagged.log"),
        dir.path().join("coded.log"),
    );
    // Three loggers on one listener, as an HttpConnectionManager's `access_log` list, each
    // with its own format and filter: every request (with a request header its format
    // names), requests with an upstream-unhealthy flag, and requests with a status of 400 or
    // more (none: a request failed before any answer has code 0).
    let yaml = format!(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - {{ name: web, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: web }} }} ] }}
    access_log:
      - {{ path: {:?}, text_format: "%REQ(X-ID)% %REQ(:PATH)% %RESPONSE_FLAGS%\n" }}
      - {{ path: {:?}, text_format: "%REQ(:PATH)% flagged\n", filter: {{ response_flag: [UH] }} }}
      - {{ path: {:?}, filter: {{ status_code: {{ op: GE, value: 400 }} }} }}
clusters:
  - {{ name: web, type: EDS }}
endpoints:
  - {{ cluster_name: web, endpoints: [ {{ lb_endpoints: [] }} ] }}
"#,
        all.display().to_string(),
        flagged.display().to_string(),
        coded.display().to_string()
    );
    let mesh = logging_mesh(&yaml, Telemetry::new(Default::default())).await;
    let mut web = mesh.channel::<http_body_util::Empty<bytes::Bytes>>("xds:///web");
    for (path, id) in [("/a", "1"), ("/b", "2")] {
        let req = http::Request::get(path)
            .header("x-id", id)
            .body(http_body_util::Empty::new())
            .unwrap();
        web.call(req).await.unwrap_err();
    }
    drop((web, mesh));
    assert_eq!(std::fs::read_to_string(&all).unwrap(), "1 /a UH\n2 /b UH\n");
    assert_eq!(
        std::fs::read_to_string(&flagged).unwrap(),
        "/a flagged\n/b flagged\n"
    );
    assert_eq!(std::fs::read_to_string(&coded).unwrap(), "", "filtered out");
}
