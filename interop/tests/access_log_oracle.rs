//! Envoy as the oracle for access log format strings: Envoy 1.40 and the mesh route the same
//! requests to the same backend, each writing its access log in one Envoy format (text, then
//! JSON), and the lines must be equal. The format leaves out what cannot agree (times,
//! durations) and uses every command whose value both know: request line and headers with
//! fallbacks and truncation, response headers, code, flags, bytes sent, upstream host and
//! cluster, gRPC status.
//!
//! The last test gives both the log through go-control-plane, in the same HttpConnectionManager
//! `access_log` (Envoy's socket listener, the mesh's API listener): the mesh must translate the
//! file logger and its format as Envoy reads it.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use mesh_examples::backend::Backend;
use mesh_tower::Mesh;
use mesh_tower::telemetry::{AccessLog, LogFormat, Telemetry};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use support::envoy::{Envoy, free_port};
use support::envoy_tls::hcm_listener_head;
use support::log_pair::{self, request};
use tower::ServiceExt;

const FORMAT: &str = r#"%REQ(:METHOD)% %REQ(X-ORIGINAL?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %REQ(X-USER):5% %RESP(X-BACKEND)% %RESP(X-NONE?X-PATH)% %GRPC_STATUS%"#;

const JSON_FORMAT: &str = r#"{"method": "%REQ(:METHOD)%", "path": "%REQ(X-ORIGINAL?:PATH)%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "bytes": "%BYTES_SENT%", "ua": "%REQ(USER-AGENT)%", "user": "%REQ(X-USER):5%", "host": "%UPSTREAM_HOST%", "both": "%RESPONSE_CODE% via %UPSTREAM_CLUSTER%"}"#;

/// Envoy on `listener` routing everything to cluster `web` (`backend`), logging to `log`.
fn envoy_config(
    listener: SocketAddr,
    admin_addr: SocketAddr,
    backend: SocketAddr,
    log: &std::path::Path,
    json: bool,
) -> String {
    let format = if json {
        format!("{{ json_format: {JSON_FORMAT} }}")
    } else {
        format!(
            "{{ text_format_source: {{ inline_string: {:?} }} }}",
            format!("{FORMAT}\n")
        )
    };
    format!(
        r#"{head}                access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                      path: {log}
                      log_format: {format}
                route_config:
                  virtual_hosts:
                    - name: web
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: / }}
                          route: {{ cluster: web }}
  clusters:
    - name: web
      type: STATIC
      load_assignment:
        cluster_name: web
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {backend} }} }} }} }}] }}]
"#,
        head = hcm_listener_head(admin_addr, "in", listener.port()),
        log = log.display(),
        backend = backend.port(),
    )
}

/// A request: method, path, headers.
type Req = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// The requests.
fn requests() -> Vec<Req> {
    vec![
        (
            "GET",
            "/items?id=1",
            vec![
                ("user-agent", "curl/8.5"),
                ("x-request-id", "r-1"),
                ("x-user", "alexandra"),
            ],
        ),
        ("GET", "/status/404", vec![("x-request-id", "r-2")]),
        (
            "POST",
            "/status/503",
            vec![("x-request-id", "r-3"), ("x-original", "/before-rewrite")],
        ),
        (
            "DELETE",
            "/items/7",
            // Envoy makes up an x-request-id when there is none: always send one.
            vec![("x-user", "bo"), ("x-request-id", "r-4")],
        ),
    ]
}

/// Lines written to memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Envoy's lines and the mesh's for the same requests, in one format.
async fn both(backend: &Backend, json: bool) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (listener, admin_addr) = (free_port(), free_port());
    let envoy = Envoy::start_static(
        &envoy_config(listener, admin_addr, backend.addr(), &log, json),
        listener,
    );
    envoy.wait_listening(listener, support::PATIENCE).await;

    let lines = Lines::default();
    let format = if json {
        LogFormat::json(JSON_FORMAT).unwrap()
    } else {
        LogFormat::text(&format!("{FORMAT}\n")).unwrap()
    };
    let telemetry = Telemetry::new(Default::default())
        .with_access_log(AccessLog::writer(lines.clone()).with_format(format));
    let store = mesh_core::Store::new();
    store
        .replace(
            mesh_core::MeshConfig::from_yaml(&support::web_config(&[backend.addr()], "HTTP1"))
                .unwrap(),
        )
        .unwrap();
    let mesh = Mesh::builder()
        .store(store)
        .telemetry(telemetry)
        .build()
        .await
        .unwrap();
    let client = mesh.http_client::<Full<Bytes>>();
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for (method, path, headers) in requests() {
        let via_envoy = plain
            .request(request(
                method,
                format!("http://{listener}{path}"),
                &headers,
            ))
            .await
            .unwrap();
        drain(via_envoy.into_body()).await;
        let via_mesh = client
            .clone()
            .oneshot(request(method, format!("http://web{path}"), &headers))
            .await
            .unwrap();
        drain(via_mesh.into_body()).await;
    }
    // Envoy flushes its file every second: wait for all the lines.
    let n = requests().len();
    let read = || -> Vec<String> {
        (std::fs::read_to_string(&log).unwrap_or_default().lines())
            .map(str::to_owned)
            .collect()
    };
    let theirs = log_pair::at_least(n, read)
        .await
        .expect("Envoy writes its access log");
    let ours = tokio::time::timeout(support::PATIENCE, async {
        loop {
            let l = lines.lines();
            if l.len() >= n {
                return l;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the mesh writes a line per request");
    (theirs, ours)
}

async fn drain<B: hyper::body::Body>(body: B)
where
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    body.collect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_match_envoys_in_text_and_json() {
    let backend = Backend::start().await.unwrap();
    let (theirs, ours) = both(&backend, false).await;
    eprintln!("Envoy:\n{}\nmesh:\n{}", theirs.join("\n"), ours.join("\n"));
    assert_eq!(ours, theirs);
    assert!(
        ours[0].contains(" \"curl/8.5\" \"r-1\" \"web\" "),
        "{}",
        ours[0]
    );
    assert!(
        ours[2].starts_with("POST /before-rewrite HTTP/1.1 503 - "),
        "{}",
        ours[2]
    );

    let (theirs, ours) = both(&backend, true).await;
    eprintln!("Envoy:\n{}\nmesh:\n{}", theirs.join("\n"), ours.join("\n"));
    let parse = |l: &[String]| -> Vec<serde_json::Value> {
        l.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    assert_eq!(parse(&ours), parse(&theirs));
}

/// The file logger both get over xDS, writing `FORMAT` to `path`.
fn file_logger(path: &std::path::Path) -> envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
    use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file;
    let format = core::SubstitutionFormatString {
        format: Some(core::substitution_format_string::Format::TextFormatSource(
            core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString(format!(
                    "{FORMAT}\n"
                ))),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let config = file::FileAccessLog {
        path: path.display().to_string(),
        access_log_format: Some(file::file_access_log::AccessLogFormat::LogFormat(format)),
    };
    accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(
            mesh_xds_client::build::any(&config),
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_log_from_go_control_plane_matches_envoys() {
    let backend = Backend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (theirs_log, ours_log) = (dir.path().join("envoy.log"), dir.path().join("mesh.log"));
    // Each listener has a second logger too: both write every request to each.
    let (theirs_2, ours_2) = (
        dir.path().join("envoy-2.log"),
        dir.path().join("mesh-2.log"),
    );
    let pair = log_pair::start(
        backend.addr(),
        vec![file_logger(&theirs_log), file_logger(&theirs_2)],
        vec![file_logger(&ours_log), file_logger(&ours_2)],
    )
    .await;
    for (method, path, headers) in requests() {
        let uri = format!("http://{}{path}", pair.envoy.listener);
        let via_envoy = pair
            .plain
            .request(request(method, uri, &headers))
            .await
            .unwrap();
        drain(via_envoy.into_body()).await;
        let via_mesh = (pair.web.clone())
            .oneshot(request(method, format!("http://web{path}"), &headers))
            .await
            .unwrap();
        drain(via_mesh.into_body()).await;
    }
    // The mesh's file log is flushed when its last user (the mesh) goes.
    let log_pair::Pair {
        mesh,
        web,
        probes,
        envoy,
        cp,
        ..
    } = pair;
    drop((web, mesh));
    let read = |p: &std::path::Path| -> Vec<String> {
        (std::fs::read_to_string(p).unwrap_or_default().lines())
            .map(str::to_owned)
            .collect()
    };
    let ours = read(&ours_log);
    assert_eq!(read(&ours_2), ours, "the second logger has every line too");
    // Envoy flushes its files every second: wait for all the lines (after the probes').
    let n = probes + requests().len();
    let theirs: Vec<String> = (log_pair::at_least(n, || read(&theirs_log)).await)
        .expect("Envoy writes its access log")
        .into_iter()
        .skip(probes)
        .collect();
    eprintln!("Envoy:\n{}\nmesh:\n{}", theirs.join("\n"), ours.join("\n"));
    assert_eq!(ours.len(), requests().len());
    assert_eq!(ours, theirs);
    // Envoy's second logger too (flushed on its own timer).
    let theirs_second: Vec<String> = (log_pair::at_least(n, || read(&theirs_2)).await)
        .expect("Envoy writes its second log")
        .into_iter()
        .skip(probes)
        .collect();
    assert_eq!(theirs_second, theirs);
    drop((envoy, cp));
}
