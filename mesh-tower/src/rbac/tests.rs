//! RBAC decisions by gRFC A41's rules, and what a refused caller sees.

use super::{RbacEngine, RbacLayer};
use crate::tls::{LeafInfo, PeerIdentity, PeerInfo, San};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use mesh_core::config::rbac::RbacFilter;
use mesh_core::config::tls::SanType;
use std::sync::Arc;
use std::time::SystemTime;
use tower::{Layer, ServiceExt};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const INTRUDER: &str = "spiffe://cluster.local/ns/other/sa/intruder";

fn filter(yaml: &str) -> RbacFilter {
    let f: RbacFilter = serde_saphyr::from_str(yaml).unwrap();
    let mut errors = mesh_core::error::Errors::new();
    f.validate(&mesh_core::error::FieldPath::root(), &mut errors);
    errors.into_result().unwrap();
    f
}

fn engine(filters: &[(&str, &str)]) -> RbacEngine {
    let fs: Vec<(&str, RbacFilter)> = filters.iter().map(|(n, y)| (*n, filter(y))).collect();
    RbacEngine::new(fs.iter().map(|(n, f)| (*n, f))).unwrap()
}

fn peer(sans: &[(SanType, &str)], subject: &str) -> PeerInfo {
    PeerInfo {
        remote_addr: Some("10.1.2.3:40000".parse().unwrap()),
        local_addr: Some("10.9.9.9:8443".parse().unwrap()),
        tls: true,
        identity: Some(PeerIdentity(Arc::new(LeafInfo {
            serial: "01".into(),
            sans: sans
                .iter()
                .map(|(kind, value)| San {
                    kind: *kind,
                    value: (*value).into(),
                })
                .collect(),
            subject: subject.into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
        }))),
    }
}

fn spiffe(id: &str) -> PeerInfo {
    peer(&[(SanType::Uri, id)], "")
}

fn req(method: &str, uri: &str, peer: Option<PeerInfo>) -> Request<()> {
    let mut r = Request::builder().method(method).uri(uri).body(()).unwrap();
    if let Some(p) = peer {
        r.extensions_mut().insert(p);
    }
    r
}

fn allowed(e: &RbacEngine, r: &Request<()>) -> bool {
    e.check(r).is_ok()
}

#[test]
fn allow_by_spiffe_id_refuses_others_and_plaintext() {
    let e = engine(&[(
        "rbac",
        r#"
rules:
  policies:
    frontend:
      permissions: [{ any: true }]
      principals: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/frontend" } } }]
"#,
    )]);
    assert!(allowed(&e, &req("GET", "/", Some(spiffe(FRONTEND)))));
    let denied = e
        .check(&req("GET", "/", Some(spiffe(INTRUDER))))
        .unwrap_err()
        .denied()
        .cloned()
        .unwrap();
    assert_eq!(&*denied.filter, "rbac");
    assert_eq!(denied.policy, None, "no ALLOW policy matched");
    assert!(!allowed(&e, &req("GET", "/", None)), "no peer at all");
    let plaintext = PeerInfo::plaintext(
        "10.1.2.3:1".parse().unwrap(),
        "10.9.9.9:80".parse().unwrap(),
    );
    assert!(!allowed(&e, &req("GET", "/", Some(plaintext))));
}

#[test]
fn istio_deny_then_allow_chain() {
    let e = engine(&[
        (
            "envoy.filters.http.rbac.DENY",
            r#"
rules:
  action: DENY
  policies:
    ns[shop]-policy[no-admin]-rule[0]:
      permissions: [{ url_path: { path: { prefix: /admin } } }]
      principals: [{ any: true }]
"#,
        ),
        (
            "envoy.filters.http.rbac",
            r#"
rules:
  policies:
    ns[shop]-policy[same-ns]-rule[0]:
      permissions: [{ and_rules: { rules: [{ header: { name: ":method", string_match: { exact: GET } } }] } }]
      principals: [{ or_ids: { ids: [{ authenticated: { principal_name: { safe_regex: { regex: ".*/ns/shop/.*" } } } }] } }]
"#,
        ),
    ]);
    assert!(allowed(&e, &req("GET", "/cart", Some(spiffe(FRONTEND)))));
    let d = e
        .check(&req("GET", "/admin/users", Some(spiffe(FRONTEND))))
        .unwrap_err()
        .denied()
        .cloned()
        .unwrap();
    assert_eq!(
        d.policy.as_deref(),
        Some("ns[shop]-policy[no-admin]-rule[0]")
    );
    assert_eq!(&*d.filter, "envoy.filters.http.rbac.DENY");
    assert!(!allowed(&e, &req("POST", "/cart", Some(spiffe(FRONTEND)))));
    assert!(!allowed(&e, &req("GET", "/cart", Some(spiffe(INTRUDER)))));
}

#[test]
fn principal_name_is_uri_sans_then_dns_then_subject_then_empty() {
    let by = |m: &str| {
        engine(&[(
            "rbac",
            &format!(
                "rules: {{ policies: {{ p: {{ permissions: [{{ any: true }}], principals: [{{ authenticated: {{ principal_name: {m} }} }}] }} }} }}"
            ),
        )])
    };
    let both = peer(
        &[(SanType::Dns, "web.shop.svc"), (SanType::Uri, FRONTEND)],
        "CN=web",
    );
    let dns_only = peer(&[(SanType::Dns, "web.shop.svc")], "CN=web");
    let subject_only = peer(&[(SanType::Email, "a@b")], "CN=web,O=shop");
    let no_cert = PeerInfo {
        identity: None,
        ..spiffe(FRONTEND)
    };
    let dns = by("{ exact: web.shop.svc }");
    assert!(
        !allowed(&dns, &req("GET", "/", Some(both.clone()))),
        "URI SANs win"
    );
    assert!(allowed(&dns, &req("GET", "/", Some(dns_only.clone()))));
    let subject = by("{ exact: \"CN=web,O=shop\" }");
    assert!(allowed(&subject, &req("GET", "/", Some(subject_only))));
    assert!(!allowed(&subject, &req("GET", "/", Some(dns_only))));
    let empty = by("{ exact: \"\" }");
    assert!(allowed(&empty, &req("GET", "/", Some(no_cert.clone()))));
    assert!(!allowed(&empty, &req("GET", "/", Some(both))));
    // No matcher: any TLS connection, certificate or not.
    let any_tls = engine(&[(
        "rbac",
        "rules: { policies: { p: { permissions: [{ any: true }], principals: [{ authenticated: {} }] } } }",
    )]);
    assert!(allowed(&any_tls, &req("GET", "/", Some(no_cert))));
    assert!(!allowed(&any_tls, &req("GET", "/", None)));
}

#[test]
fn every_permission_and_principal_kind() {
    let one = |perm: &str, prin: &str| {
        engine(&[(
            "rbac",
            &format!(
                "rules: {{ policies: {{ p: {{ permissions: [{perm}], principals: [{prin}] }} }} }}"
            ),
        )])
    };
    let any = "{ any: true }";
    let r = |m: &str, u: &str| req(m, u, Some(spiffe(FRONTEND)));
    let cases: Vec<(RbacEngine, Request<()>, bool)> = vec![
        (one("{ destination_port: 8443 }", any), r("GET", "/"), true),
        (one("{ destination_port: 80 }", any), r("GET", "/"), false),
        (
            one(
                "{ destination_port_range: { start: 8000, end: 9000 } }",
                any,
            ),
            r("GET", "/"),
            true,
        ),
        (
            one(
                "{ destination_ip: { address_prefix: 10.9.0.0, prefix_len: 16 } }",
                any,
            ),
            r("GET", "/"),
            true,
        ),
        (
            one(
                any,
                "{ remote_ip: { address_prefix: 10.1.2.0, prefix_len: 24 } }",
            ),
            r("GET", "/"),
            true,
        ),
        (
            one(
                any,
                "{ direct_remote_ip: { address_prefix: 10.2.0.0, prefix_len: 16 } }",
            ),
            r("GET", "/"),
            false,
        ),
        (
            one("{ not_rule: { url_path: { path: { exact: /a } } } }", any),
            r("GET", "/a"),
            false,
        ),
        // url_path is the path without the query; `:path` carries it.
        (
            one("{ url_path: { path: { exact: /a } } }", any),
            r("GET", "/a?x=1"),
            true,
        ),
        (
            one(
                "{ header: { name: \":path\", string_match: { exact: \"/a?x=1\" } } }",
                any,
            ),
            r("GET", "/a?x=1"),
            true,
        ),
        (
            one(
                "{ header: { name: host, string_match: { exact: web.shop } } }",
                any,
            ),
            r("GET", "http://web.shop/"),
            true,
        ),
        (
            one(
                "{ header: { name: \":authority\", string_match: { prefix: web } } }",
                any,
            ),
            r("GET", "http://web.shop/"),
            true,
        ),
        (
            one(
                "{ header: { name: \":method\", string_match: { exact: GET }, invert_match: true } }",
                any,
            ),
            r("GET", "/"),
            false,
        ),
        (
            one("{ header: { name: te, present_match: true } }", any),
            {
                let mut q = r("GET", "/");
                q.headers_mut().insert("te", "trailers".parse().unwrap());
                q
            },
            false,
        ),
        (
            one("{ requested_server_name: { exact: \"\" } }", any),
            r("GET", "/"),
            true,
        ),
        (
            one("{ requested_server_name: { exact: web } }", any),
            r("GET", "/"),
            false,
        ),
        (one("{ metadata: true }", any), r("GET", "/"), false),
        (
            one("{ not_rule: { metadata: true } }", any),
            r("GET", "/"),
            true,
        ),
        (
            one(
                any,
                "{ and_ids: { ids: [{ any: true }, { not_id: { any: true } }] } }",
            ),
            r("GET", "/"),
            false,
        ),
        (
            one(
                "{ or_rules: { rules: [{ url_path: { path: { prefix: /x } } }, { header: { name: \":method\", string_match: { exact: GET } } }] } }",
                any,
            ),
            r("GET", "/"),
            true,
        ),
    ];
    for (i, (e, r, want)) in cases.iter().enumerate() {
        assert_eq!(
            allowed(e, r),
            *want,
            "case {i}: {:?} {}",
            r.method(),
            r.uri()
        );
    }
}

#[test]
fn no_rules_and_log_let_everything_through() {
    let e = engine(&[
        ("none", "{}"),
        ("log", "rules: { action: LOG, policies: {} }"),
    ]);
    assert!(e.is_empty());
    assert!(allowed(&e, &req("DELETE", "/", None)));
    // An ALLOW filter with no policies allows nothing.
    let e = engine(&[("rbac", "rules: { action: ALLOW, policies: {} }")]);
    assert!(!allowed(&e, &req("GET", "/", Some(spiffe(FRONTEND)))));
}

#[tokio::test]
async fn refused_callers_see_403_or_permission_denied_and_the_handler_never_runs() {
    let e = engine(&[("rbac", "rules: { policies: {} }")]);
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = called.clone();
    let handler = tower::service_fn(move |_r: Request<()>| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
    });
    let svc = RbacLayer::new(e).layer(handler);
    let res = svc.clone().oneshot(req("GET", "/", None)).await.unwrap();
    assert_eq!(res.status(), 403);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "RBAC: access denied");

    let mut grpc = req("POST", "/helloworld.Greeter/SayHello", None);
    grpc.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let res = svc.oneshot(grpc).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "7");
    assert_eq!(res.headers()["grpc-message"], "RBAC: access denied");
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn audit_logs_the_decisions_its_condition_names() {
    use super::AuditEvent;
    let seen: Arc<std::sync::Mutex<Vec<AuditEvent>>> = Default::default();
    let sink = seen.clone();
    let e = engine(&[
        (
            "deny",
            r#"
rules:
  action: DENY
  audit_logging_options: { audit_condition: ON_DENY, logger_configs: [{ stdout: {} }] }
  policies:
    admin: { permissions: [{ url_path: { path: { prefix: /admin } } }], principals: [{ any: true }] }
"#,
        ),
        (
            "allow",
            r#"
rules:
  audit_logging_options: { audit_condition: ON_DENY_AND_ALLOW, logger_configs: [{ stdout: {} }] }
  policies:
    shop: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { prefix: "spiffe://cluster.local/ns/shop/" } } }] }
"#,
        ),
    ])
    .with_audit_sink(Arc::new(move |ev: &AuditEvent| {
        sink.lock().unwrap().push(ev.clone())
    }));
    assert!(allowed(&e, &req("GET", "/cart", Some(spiffe(FRONTEND)))));
    assert!(!allowed(
        &e,
        &req("GET", "/admin/x", Some(spiffe(FRONTEND)))
    ));
    assert!(!allowed(&e, &req("GET", "/cart", Some(spiffe(INTRUDER)))));
    let events = seen.lock().unwrap().clone();
    let short: Vec<(&str, &str, &str, bool)> = events
        .iter()
        .map(|e| {
            (
                e.policy_name.as_str(),
                e.rpc_method.as_str(),
                e.matched_rule.as_str(),
                e.authorized,
            )
        })
        .collect();
    assert_eq!(
        short,
        [
            ("allow", "/cart", "shop", true),
            ("deny", "/admin/x", "admin", false),
            ("allow", "/cart", "", false),
        ],
        "the DENY filter logs only its refusal; the ALLOW filter both outcomes"
    );
    assert_eq!(events[2].principal, INTRUDER);
    assert_eq!(
        events[0].to_json_line(),
        format!(
            r#"{{"grpc_audit_log":{{"authorized":true,"matched_rule":"shop","policy_name":"allow","principal":"{FRONTEND}","rpc_method":"/cart"}}}}"#
        )
    );
}

/// A server's inbound routes: per-route overrides (a route's own over its virtual host's),
/// a forwarding route and uncovered requests not served, JWT per-route requirements.
#[tokio::test]
async fn inbound_routes_select_per_route_policy() {
    use mesh_core::config::server::Server;
    let server: Server = serde_saphyr::from_str(
        r#"
name: s
http_filters:
  - name: envoy.filters.http.rbac
    rbac: { rules: { policies: { frontend: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/frontend" } } }] } } } }
route_config:
  virtual_hosts:
    - name: admin
      domains: [admin.shop]
      typed_per_filter_config:
        envoy.filters.http.rbac: { rbac: { rules: { policies: { other: { permissions: [{ any: true }], principals: [{ authenticated: { principal_name: { suffix: /sa/intruder } } }] } } } } }
      routes:
        - match: { prefix: /open }
          typed_per_filter_config: { envoy.filters.http.rbac: { disabled: true } }
        - match: { prefix: / }
    - name: default
      domains: ["*"]
      routes:
        - match: { prefix: /forward }
          forwarding: true
        - match: { prefix: /healthz }
          typed_per_filter_config: { envoy.filters.http.rbac: { rbac: {} } }
        - match: { prefix: /api }
"#,
    )
    .unwrap();
    let mut errors = mesh_core::error::Errors::new();
    server.validate(&mesh_core::error::FieldPath::root(), &mut errors);
    errors.into_result().unwrap();
    let e = RbacEngine::for_server(&server).unwrap();
    let at = |host: &str, path: &str, who: &str| {
        let mut r = Request::get(format!("http://{host}{path}"))
            .body(())
            .unwrap();
        r.extensions_mut().insert(spiffe(who));
        e.check(&r)
    };
    let ok = |host, path, who| at(host, path, who).is_ok();
    // The filter's own policy on an override-free route.
    assert!(ok("api.shop", "/api/x", FRONTEND));
    assert!(!ok("api.shop", "/api/x", INTRUDER));
    // An override without rules, and `disabled`: no check.
    assert!(ok("api.shop", "/healthz", INTRUDER));
    assert!(ok("admin.shop", "/open", INTRUDER));
    // The virtual host's override for its routes.
    assert!(ok("admin.shop", "/users", INTRUDER));
    assert!(!ok("admin.shop", "/users", FRONTEND));
    // Not served: a forwarding route, and no route.
    for path in ["/forward", "/other"] {
        let refused = at("api.shop", path, FRONTEND).unwrap_err();
        assert!(refused.denied().is_none(), "{path}: {refused}");
    }

    // What a caller sees: 404 for HTTP, UNAVAILABLE for gRPC.
    let svc = RbacLayer::new(e).layer(tower::service_fn(|_r: Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
    }));
    let res = svc
        .clone()
        .oneshot(Request::get("http://api.shop/other").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let grpc = Request::post("http://api.shop/pkg.Svc/Other")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let res = svc.oneshot(grpc).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
}
