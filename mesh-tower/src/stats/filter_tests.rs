//! Access log filters on real calls: a mesh client calling a mesh server over loopback, with
//! one listener logging through every kind of filter, each into its own file.

use crate::telemetry::Telemetry;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

/// A call: path, method, request headers.
type Call<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
/// The same, owning its header list.
type Owned<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// Runs `calls` (path, method, headers) through listener `web`, whose `access_log` entries
/// are `logs` (YAML flow maps with `FILE` where each file goes); returns each file's lines.
async fn logged(logs: &[&str], calls: &[Call<'_>]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files: Vec<_> = (0..logs.len())
        .map(|i| dir.path().join(format!("{i}.log")))
        .collect();
    let entries: String = (logs.iter().zip(&files))
        .map(|(l, f)| {
            format!(
                "      - {}\n",
                l.replace("FILE", &format!("{:?}", f.display().to_string()))
            )
        })
        .collect();
    let yaml = crate::test_util::web_h2_yaml(addr, "")
        .replace("clusters:", &format!("    access_log:\n{entries}clusters:"));
    let mesh = crate::test_util::mesh_of(&yaml, Telemetry::new(Default::default())).await;
    // Answers with the status the request's `x-status` asks, and `x-shard: 2` on `/shard`.
    let handler = tower::service_fn(|req: http::Request<crate::server::Incoming>| async move {
        let status = (req.headers().get("x-status"))
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(200);
        let mut res = http::Response::builder().status(status);
        if req.uri().path() == "/shard" {
            res = res.header("x-shard", "2");
        }
        Ok::<_, std::convert::Infallible>(res.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
    });
    tokio::spawn(mesh.server("s").unwrap().serve(listener, handler));
    let channel = mesh.channel::<Full<Bytes>>("web");
    for (path, method, headers) in calls {
        let mut req = http::Request::builder()
            .method(*method)
            .uri(format!("http://web{path}"));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let res = channel
            .clone()
            .oneshot(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    drop((channel, mesh));
    files
        .iter()
        .map(|f| {
            (std::fs::read_to_string(f).unwrap().lines())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn every_filter_kind_decides_on_the_requests_it_should() {
    let line = r#"text_format: "%REQ(:PATH)%\n""#;
    let logs = [
        // 0: CEL over the response code and a request header.
        format!(
            r#"{{ path: FILE, {line}, filter: {{ cel: "response.code >= 500 || request.headers['X-Debug'] == 'on'" }} }}"#
        ),
        // 1: Envoy's header filter.
        format!(
            r#"{{ path: FILE, {line}, filter: {{ header: {{ name: x-tenant, string_match: {{ prefix: gold }} }} }} }}"#
        ),
        // 2: CEL over a response header, the cluster, the endpoint, the method and the query.
        format!(
            r#"{{ path: FILE, {line}, filter: {{ cel: "response.headers['x-shard'] == '2' && xds.cluster_name == 'web' && upstream.port > 0 && request.method == 'POST' && request.query == 'q=1' && request.url_path == '/shard'" }} }}"#
        ),
        // 3: half the requests, by x-request-id.
        format!(
            r#"{{ path: FILE, {line}, filter: {{ runtime: {{ runtime_key: access_log.sample, percent_sampled: {{ numerator: 50 }} }} }} }}"#
        ),
        // 4: kinds every request passes, and one none does.
        format!(
            r#"{{ path: FILE, {line}, filter: {{ and: [ not_health_check, {{ log_type: {{ types: [DownstreamEnd] }} }} ] }} }}"#
        ),
        format!(
            r#"{{ path: FILE, {line}, filter: {{ or: [ traceable, {{ log_type: {{ types: [DownstreamEnd], exclude: true }} }} ] }} }}"#
        ),
        // 6: a CEL error (the header is absent on most requests) counts as false.
        format!(
            r#"{{ path: FILE, {line}, filter: {{ cel: "int(request.headers['x-n']) > 3" }} }}"#
        ),
    ];
    let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
    let ids: Vec<String> = (0..40).map(|i| format!("id-{i}")).collect();
    let mut owned: Vec<Owned<'_>> = vec![
        ("/ok", "GET", vec![]),
        ("/fail", "GET", vec![("x-status", "503")]),
        ("/debug", "GET", vec![("x-debug", "on"), ("x-n", "7")]),
        ("/gold", "GET", vec![("x-tenant", "gold-eu"), ("x-n", "2")]),
        ("/silver", "GET", vec![("x-tenant", "silver")]),
        ("/shard?q=1", "POST", vec![]),
        ("/shard?q=2", "POST", vec![]),
        ("/shard?q=1", "GET", vec![]),
    ];
    for id in &ids {
        owned.push(("/sampled", "GET", vec![("x-request-id", id.as_str())]));
    }
    let calls: Vec<Call<'_>> = owned
        .iter()
        .map(|(p, m, h)| (*p, *m, h.as_slice()))
        .collect();
    let got = logged(&logs, &calls).await;
    assert_eq!(got[0], ["/fail", "/debug"]);
    assert_eq!(got[1], ["/gold"]);
    assert_eq!(got[2], ["/shard?q=1"]);
    // The runtime filter: about half of 40 distinct ids, and the same ids decide the same
    // way in another mesh (a hash of the id, not a draw).
    let sampled = got[3].iter().filter(|p| *p == "/sampled").count();
    assert!((10..=30).contains(&sampled), "{sampled} of 40 sampled");
    let again = logged(&logs[3..4], &calls[8..]).await;
    assert_eq!(again[0].len(), sampled, "x-request-id decides, not chance");
    assert_eq!(got[4].len(), calls.len(), "every request passes");
    assert!(
        got[5].is_empty(),
        "untraced, and DownstreamEnd excluded: {:?}",
        got[5]
    );
    assert_eq!(got[6], ["/debug"]);
}

#[tokio::test]
async fn independent_randomness_ignores_the_request_id() {
    // 50 % drawn per request: the same id 200 times is written some of the times, not all
    // or none (a hash of the id would decide all alike). Seeded: the draw is fastrand's.
    fastrand::seed(11);
    let log = r#"{ path: FILE, text_format: "x\n", filter: { runtime: { percent_sampled: { numerator: 50 }, use_independent_randomness: true } } }"#;
    let calls: Vec<Call<'_>> = vec![("/", "GET", &[("x-request-id", "same")][..]); 200];
    let got = logged(&[log], &calls).await;
    assert!(
        (50..=150).contains(&got[0].len()),
        "{} of 200",
        got[0].len()
    );
}

/// The end-time leaves alone, on made-up outcomes.
mod leaves {
    use super::super::filter::{Ended, LogFilter};
    use super::super::{Flags, Outcome};
    use mesh_core::cel::{Attribute, Value};
    use mesh_core::config::listener::AccessLogFilter;

    fn passes(f: &AccessLogFilter, code: u16, flags: Flags, grpc: Option<u16>) -> bool {
        let none = |_: &Attribute| -> Option<Value<'static>> { None };
        LogFilter::new(f).unwrap().passes(&Ended {
            outcome: Outcome { code, grpc, flags },
            millis: 1.0,
            bytes: 0,
            traced: false,
            early: 0,
            attrs: &none,
        })
    }

    #[test]
    fn flag_and_grpc_filters_read_what_envoy_reads() {
        let flags = AccessLogFilter::ResponseFlag(vec!["UT".into(), "UH".into()]);
        assert!(passes(&flags, 0, Flags::UH, None));
        assert!(passes(&flags, 504, Flags::UT.with(Flags::UC), None));
        assert!(!passes(&flags, 503, Flags::UF, None));
        let any_flag = AccessLogFilter::ResponseFlag(Vec::new());
        assert!(passes(&any_flag, 503, Flags::UF, None));
        assert!(!passes(&any_flag, 200, Flags::NONE, None));
        let not_ok = AccessLogFilter::GrpcStatus {
            statuses: vec![0],
            exclude: true,
        };
        assert!(!passes(&not_ok, 200, Flags::NONE, Some(0)));
        assert!(passes(&not_ok, 200, Flags::NONE, Some(14)));
        // No gRPC status: inferred from the HTTP code (503: UNAVAILABLE; 200: UNKNOWN).
        let unavailable = AccessLogFilter::GrpcStatus {
            statuses: vec![14],
            exclude: false,
        };
        assert!(passes(&unavailable, 503, Flags::NONE, None));
        assert!(!passes(&unavailable, 200, Flags::NONE, None));
        // CEL reads the end's numbers itself.
        let cel = AccessLogFilter::Cel("response.code == 503 && response.grpc_status == 14".into());
        assert!(passes(&cel, 503, Flags::NONE, Some(14)));
        assert!(
            !passes(&cel, 503, Flags::NONE, None),
            "no gRPC status: an error, false"
        );
    }
}
