//! Envoy as the oracle for request authentication: one Envoy listener and one mesh server per
//! filter config, each given the *same* `jwt_authn` YAML (Envoy's `JwtAuthentication` is our
//! `jwt_authn:` config, field for field; some configs add an RBAC filter whose principals
//! match the verified claims, as istiod writes `requestPrincipals`). A matrix of tokens
//! (every algorithm, expired, not yet valid, wrong issuer, wrong audience, forged signature,
//! unknown `kid`, `alg: none`, malformed, missing, another provider's) × paths × configs must
//! get the same status and the same `www-authenticate` challenge from both.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_examples::jwt::{DevIssuer, now};
use mesh_interop::envoy::{Envoy, TypedFilter, answering_listener, free_port};
use mesh_tower::Mesh;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const JWT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// A filter: its name, whether it is the JWT filter (else RBAC), its YAML flow mapping.
type Filter = (&'static str, bool, String);
/// (name, filters in chain order).
type Config = (&'static str, Vec<Filter>);

fn configs(corp: &DevIssuer, other: &DevIssuer) -> Vec<Config> {
    let provider = |i: &DevIssuer, extra: &str| {
        format!(
            "{{ issuer: \"{}\", audiences: [orders], local_jwks: {{ inline_string: '{}' }}, payload_in_metadata: payload{extra} }}",
            i.issuer(),
            i.jwks()
        )
    };
    let jwt = |rules: &str, corp_extra: &str| {
        format!(
            "{{ providers: {{ corp: {}, other: {} }}, rules: [{rules}] }}",
            provider(corp, corp_extra),
            provider(
                other,
                ", from_headers: [{ name: x-other-token, value_prefix: \"Token \" }]"
            )
        )
    };
    let iss = corp.issuer();
    vec![
        (
            "required",
            vec![(
                "envoy.filters.http.jwt_authn",
                true,
                jwt(
                    "{ match: { prefix: / }, requires: { provider_name: corp } }",
                    "",
                ),
            )],
        ),
        (
            "per-path",
            vec![(
                "envoy.filters.http.jwt_authn",
                true,
                jwt(
                    "{ match: { prefix: /admin }, requires: { provider_and_audiences: { provider_name: corp, audiences: [admin] } } }, \
                     { match: { prefix: /both }, requires: { requires_all: { requirements: [{ provider_name: corp }, { provider_name: other }] } } }, \
                     { match: { prefix: /either }, requires: { requires_any: { requirements: [{ provider_name: corp }, { provider_name: other }] } } }, \
                     { match: { prefix: /soft }, requires: { allow_missing_or_failed: {} } }, \
                     { match: { prefix: /public } }, \
                     { match: { prefix: / }, requires: { allow_missing: {} } }",
                    ", clock_skew_seconds: 5",
                ),
            )],
        ),
        (
            "istio-request-principals",
            vec![
                (
                    "envoy.filters.http.jwt_authn",
                    true,
                    jwt(
                        "{ match: { prefix: / }, requires: { requires_any: { requirements: [{ provider_name: corp }, { allow_missing: {} }] } } }",
                        ", normalize_payload_in_metadata: { space_delimited_claims: [scope] }",
                    ),
                ),
                (
                    "envoy.filters.http.rbac",
                    false,
                    format!(
                        "{{ rules: {{ policies: {{ \
                         public: {{ permissions: [{{ url_path: {{ path: {{ prefix: /public }} }} }}], principals: [{{ any: true }}] }}, \
                         alice: {{ permissions: [{{ any: true }}], principals: [{{ and_ids: {{ ids: [\
                           {{ metadata: {{ filter: envoy.filters.http.jwt_authn, path: [{{ key: payload }}, {{ key: iss }}], value: {{ string_match: {{ exact: \"{iss}\" }} }} }} }}, \
                           {{ metadata: {{ filter: envoy.filters.http.jwt_authn, path: [{{ key: payload }}, {{ key: sub }}], value: {{ string_match: {{ exact: alice }} }} }} }}] }} }}] }}, \
                         writers: {{ permissions: [{{ header: {{ name: \":method\", string_match: {{ exact: POST }} }} }}], principals: [\
                           {{ metadata: {{ filter: envoy.filters.http.jwt_authn, path: [{{ key: payload }}, {{ key: scope }}], value: {{ or_match: {{ value_matchers: [{{ list_match: {{ one_of: {{ string_match: {{ exact: write }} }} }} }}, {{ string_match: {{ exact: write }} }}] }} }} }} }}] }} \
                         }} }} }}"
                    ),
                ),
            ],
        ),
    ]
}

/// The tokens of the matrix: label, and the headers carrying them.
fn tokens(corp: &DevIssuer, other: &DevIssuer) -> Vec<(String, Vec<(&'static str, String)>)> {
    let t = now();
    let bearer = |tok: String| vec![("authorization", format!("Bearer {tok}"))];
    let aud = json!("orders");
    let mut out = Vec::new();
    for alg in ["RS256", "PS256", "ES256", "EdDSA", "HS256"] {
        out.push((
            format!("{alg} alice"),
            bearer(corp.token(alg, json!({"sub": "alice", "aud": aud, "scope": "read"}))),
        ));
    }
    let forged = {
        let good = corp.token("ES256", json!({"sub": "alice", "aud": aud}));
        let (head, _) = good.rsplit_once('.').unwrap();
        format!("{head}.c2lnbmF0dXJl")
    };
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        (
            "bob with write scope",
            bearer(corp.token(
                "ES256",
                json!({"sub": "bob", "aud": aud, "scope": "read write"}),
            )),
        ),
        (
            "admin audience",
            bearer(corp.token("EdDSA", json!({"sub": "alice", "aud": ["admin", "x"]}))),
        ),
        (
            "expired",
            bearer(corp.token(
                "ES256",
                json!({"sub": "alice", "aud": aud, "exp": t - 3600}),
            )),
        ),
        (
            "expired within 30 s",
            bearer(corp.token("ES256", json!({"sub": "alice", "aud": aud, "exp": t - 30}))),
        ),
        (
            "not yet valid",
            bearer(corp.token(
                "ES256",
                json!({"sub": "alice", "aud": aud, "nbf": t + 3600}),
            )),
        ),
        (
            "no exp",
            bearer(corp.token("HS256", json!({"sub": "alice", "aud": aud, "exp": null}))),
        ),
        (
            "wrong issuer",
            bearer(corp.token(
                "ES256",
                json!({"sub": "alice", "aud": aud, "iss": "https://evil.example"}),
            )),
        ),
        (
            "wrong audience",
            bearer(corp.token("ES256", json!({"sub": "alice", "aud": "billing"}))),
        ),
        ("forged signature", bearer(forged)),
        (
            "unknown kid",
            bearer(corp.token_with_header(
                json!({"alg": "RS256", "kid": "gone"}),
                json!({"sub": "alice", "aud": aud}),
            )),
        ),
        (
            "alg none",
            bearer(corp.token("none", json!({"sub": "alice", "aud": aud}))),
        ),
        ("malformed", bearer("not.a-token".into())),
        ("missing", vec![]),
        (
            "other's token as bearer",
            bearer(other.token("ES256", json!({"sub": "svc", "aud": aud}))),
        ),
        (
            "other's token in x-other-token",
            vec![(
                "x-other-token",
                format!(
                    "Token {}",
                    other.token("ES256", json!({"sub": "svc", "aud": aud}))
                ),
            )],
        ),
        (
            "both tokens",
            vec![
                (
                    "authorization",
                    format!(
                        "Bearer {}",
                        corp.token("RS256", json!({"sub": "alice", "aud": aud}))
                    ),
                ),
                (
                    "x-other-token",
                    format!(
                        "Token {}",
                        other.token("ES256", json!({"sub": "svc", "aud": aud}))
                    ),
                ),
            ],
        ),
    ];
    out.extend(cases.into_iter().map(|(l, h)| (l.to_owned(), h)));
    out
}

const REQUESTS: [(&str, &str); 7] = [
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("GET", "/admin/users"),
    ("GET", "/both"),
    ("GET", "/either"),
    ("GET", "/soft"),
    ("GET", "/public/info"),
];

fn envoy_config(listeners: &[(SocketAddr, &[Filter])]) -> String {
    let mut out = String::from("static_resources:\n  listeners:\n");
    for (i, (addr, filters)) in listeners.iter().enumerate() {
        let typed: Vec<TypedFilter<'_>> = filters
            .iter()
            .map(|(name, is_jwt, yaml)| {
                let ty = if *is_jwt { JWT_TYPE } else { RBAC_TYPE };
                (*name, ty, yaml.as_str())
            })
            .collect();
        out.push_str(&answering_listener(i, addr.port(), "", &typed));
    }
    out
}

fn mesh_config(configs: &[Config]) -> String {
    let mut out = String::from("servers:\n");
    for (name, filters) in configs {
        out.push_str(&format!("  - name: {name}\n    http_filters:\n"));
        for (fname, is_jwt, yaml) in filters {
            let key = if *is_jwt { "jwt_authn" } else { "rbac" };
            out.push_str(&format!("      - {{ name: {fname}, {key}: {yaml} }}\n"));
        }
    }
    out
}

/// One request on a fresh HTTP/1.1 connection: the status and the challenge, if any (and the
/// body, for the report: Envoy's words are not compared).
async fn ask(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> ((u16, String), String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "orders.shop.svc");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = tx
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (
        (status, challenge),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_jwt_authn_decides_as_envoy_does() {
    let corp = DevIssuer::new("https://corp.example");
    let other = DevIssuer::new("https://other.example");
    let configs = configs(&corp, &other);

    let envoy_addrs: Vec<SocketAddr> = configs.iter().map(|_| free_port()).collect();
    let listeners: Vec<(SocketAddr, &[Filter])> = envoy_addrs
        .iter()
        .zip(&configs)
        .map(|(a, (_, f))| (*a, f.as_slice()))
        .collect();
    let envoy = Envoy::start_static(&envoy_config(&listeners), envoy_addrs[0]);
    for a in &envoy_addrs {
        envoy.wait_listening(*a, Duration::from_secs(30)).await;
    }

    let mesh = Mesh::from_config(mesh_core::MeshConfig::from_yaml(&mesh_config(&configs)).unwrap())
        .await
        .unwrap();
    let mut ours = Vec::new();
    for (name, _) in &configs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ours.push(listener.local_addr().unwrap());
        let ok = tower::service_fn(|_req: http::Request<mesh_tower::server::Incoming>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"ok"),
            )))
        });
        tokio::spawn(mesh.server(name).unwrap().serve(listener, ok));
    }

    let (mut cases, mut by_status) = (0, std::collections::BTreeMap::<u16, usize>::new());
    let mut disagreements = Vec::new();
    let tokens = tokens(&corp, &other);
    for (c, (config, _)) in configs.iter().enumerate() {
        for (label, headers) in &tokens {
            for (method, path) in REQUESTS {
                let (theirs, their_body) = ask(envoy_addrs[c], method, path, headers).await;
                let (mine, my_body) = ask(ours[c], method, path, headers).await;
                cases += 1;
                *by_status.entry(theirs.0).or_default() += 1;
                if theirs != mine {
                    disagreements.push(format!(
                        "{config} / {label} / {method} {path}: Envoy {theirs:?} {their_body:?}, \
                         mesh {mine:?} {my_body:?}"
                    ));
                }
            }
        }
    }
    eprintln!(
        "JWT oracle: {cases} cases (Envoy's statuses {by_status:?}), {} disagreements",
        disagreements.len()
    );
    for s in [200, 401, 403] {
        assert!(
            by_status.get(&s).is_some_and(|n| *n > 0),
            "the matrix exercises {s}: {by_status:?}"
        );
    }
    assert!(
        disagreements.is_empty(),
        "{} of {cases} cases disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
