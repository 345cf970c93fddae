//! The JWT filter's payloads as dynamic metadata for the access logs outside it (Envoy's
//! `metadata_filter`): a server's stack of telemetry → JWT → RBAC → handler, each log written
//! for the requests its filter picks.

use super::*;
use crate::rbac::{RbacEngine, RbacLayer};
use crate::telemetry::{AccessLog, InboundMetricsLayer, LogFormat, Telemetry};
use crate::test_util::Lines;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_core::config::listener::AccessLogFilter;
use mesh_core::config::rbac::RbacFilter;
use tower::{Layer, ServiceExt};

/// A log of request paths, written for the requests `filter` (YAML) picks.
fn log(lines: &Lines, filter: &str) -> AccessLog {
    let f: AccessLogFilter = serde_saphyr::from_str(filter).unwrap();
    AccessLog::writer(lines.clone())
        .with_format(LogFormat::text("%REQ(:PATH)%\n").unwrap())
        .with_filter(&f)
        .unwrap()
}

#[tokio::test]
async fn metadata_filters_read_the_verified_payload_outside_the_checks() {
    let keys = Keys::new();
    // Tokens optional; a verified one's payload is stored under `payload`.
    let jwt = engine(
        &keys,
        "",
        "  - match: { prefix: / }\n    requires: { requires_any: { requirements: [{ provider_name: corp }, { allow_missing: {} }] } }\n",
    );
    let deny: RbacFilter = serde_saphyr::from_str(
        "rules:\n  action: DENY\n  policies:\n    admin: { permissions: [{ url_path: { path: { prefix: /admin } } }], principals: [{ any: true }] }\n",
    )
    .unwrap();
    let rbac = RbacEngine::new([("envoy.filters.http.rbac", &deny)]).unwrap();
    let sub = "{ filter: envoy.filters.http.jwt_authn, path: [{ key: payload }, { key: sub }]";
    let logs: Vec<(Lines, String)> = [
        // 0: alice's requests, and those without a token (the default).
        format!("{{ metadata: {{ matcher: {sub}, value: {{ string_match: {{ exact: alice }} }} }} }} }}"),
        // 1: alice's only.
        format!("{{ metadata: {{ matcher: {sub}, value: {{ string_match: {{ exact: alice }} }} }}, match_if_key_not_found: false }} }}"),
        // 2: any verified token (its payload has a scope).
        "{ metadata: { matcher: { filter: envoy.filters.http.jwt_authn, path: [{ key: payload }, { key: scope }], value: { present_match: true } }, match_if_key_not_found: false } }".into(),
        // 3: another filter's metadata is never there; `invert` is not consulted (Envoy).
        "{ metadata: { matcher: { filter: envoy.filters.http.rbac, path: [{ key: x }], value: { present_match: true }, invert: true }, match_if_key_not_found: false } }".into(),
        // 4: no matcher: never found, so the default decides.
        "{ metadata: {} }".into(),
        // 5: combined with the status: refused requests of verified callers.
        format!("{{ and: [ {{ status_code: {{ op: EQ, value: 403 }} }}, {{ metadata: {{ matcher: {sub}, value: {{ present_match: true }} }}, match_if_key_not_found: false }} }} ] }}"),
    ]
    .into_iter()
    .map(|f| (Lines::default(), f))
    .collect();
    let mut sink = log(&logs[0].0, &logs[0].1);
    for (lines, f) in &logs[1..] {
        sink = sink.and_also(log(lines, f));
    }
    let telemetry = Telemetry::new(Default::default()).with_access_log(sink);
    let handler = tower::service_fn(|_r: http::Request<_>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let svc = InboundMetricsLayer::new(telemetry)
        .layer(JwtLayer::new(jwt).layer(RbacLayer::new(rbac).layer(handler)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |sub: &str| {
        keys.mint(
            "ES256",
            None,
            json!({"iss": ISS, "sub": sub, "aud": "orders", "exp": now + 600, "scope": "read"}),
        )
    };
    for (path, who) in [
        ("/a-alice", Some("alice")),
        ("/b-bob", Some("bob")),
        ("/c-anon", None),
        ("/admin/d-alice", Some("alice")),
        ("/admin/e-anon", None),
    ] {
        let mut req = http::Request::get(format!("http://svc{path}"));
        if let Some(who) = who {
            req = req.header("authorization", format!("Bearer {}", token(who)));
        }
        let res = svc
            .clone()
            .oneshot(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let want = if path.starts_with("/admin") { 403 } else { 200 };
        assert_eq!(res.status(), want, "{path}");
        res.into_body().collect().await.unwrap();
    }
    let written: Vec<Vec<String>> = (logs.iter())
        .map(|(l, _)| l.text().lines().map(str::to_owned).collect())
        .collect();
    let want: [&[&str]; 6] = [
        &["/a-alice", "/c-anon", "/admin/d-alice", "/admin/e-anon"],
        &["/a-alice", "/admin/d-alice"],
        &["/a-alice", "/b-bob", "/admin/d-alice"],
        &[],
        &[
            "/a-alice",
            "/b-bob",
            "/c-anon",
            "/admin/d-alice",
            "/admin/e-anon",
        ],
        &["/admin/d-alice"],
    ];
    for (i, (got, want)) in written.iter().zip(want).enumerate() {
        assert_eq!(got, want, "log {i}: {}", logs[i].1);
    }
}
