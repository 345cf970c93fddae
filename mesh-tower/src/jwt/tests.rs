use super::*;
use base64::Engine as _;
use mesh_core::config::jwt::JwtAuthn;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://issuer.example";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// One key of each kind, and a JWKS holding their public halves.
struct Keys {
    rsa: sig::RsaKeyPair,
    ec: sig::EcdsaKeyPair,
    ed: sig::Ed25519KeyPair,
    rng: SystemRandom,
}

impl Keys {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pem = include_str!("testdata/rsa-2048-test-key.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let ec_doc =
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ed_doc = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Self {
            rsa: sig::RsaKeyPair::from_pkcs8(&der).unwrap(),
            ec: sig::EcdsaKeyPair::from_pkcs8(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                ec_doc.as_ref(),
                &rng,
            )
            .unwrap(),
            ed: sig::Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap(),
            rng,
        }
    }

    fn jwks(&self) -> String {
        let rsa = sig::RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64(&rsa.n), "e": b64(&rsa.e)},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(self.ed.public_key().as_ref())},
            {"kty": "oct", "kid": "hmac", "k": b64(b"secret")},
        ]})
        .to_string()
    }

    /// A token signed with `alg` (the key of its kind), header `kid` as given.
    fn mint(&self, alg: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(k) = kid {
            header["kid"] = json!(k);
        }
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let m = signed.as_bytes();
        let signature = match alg {
            "RS256" | "PS256" => {
                let pad: &dyn sig::RsaEncoding = if alg == "RS256" {
                    &sig::RSA_PKCS1_SHA256
                } else {
                    &sig::RSA_PSS_SHA256
                };
                let mut out = vec![0; self.rsa.public().modulus_len()];
                self.rsa.sign(pad, &self.rng, m, &mut out).unwrap();
                out
            }
            "ES256" => self.ec.sign(&self.rng, m).unwrap().as_ref().to_vec(),
            "EdDSA" => self.ed.sign(m).as_ref().to_vec(),
            "HS256" => {
                let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
                ring::hmac::sign(&k, m).as_ref().to_vec()
            }
            _ => b"unsigned".to_vec(),
        };
        format!("{signed}.{}", b64(&signature))
    }

    fn good(&self, alg: &str) -> String {
        self.mint(alg, None, claims())
    }
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": ["orders"], "exp": NOW + 600, "scope": "read write"})
}

fn engine(keys: &Keys, extra: &str, rules: &str) -> JwtEngine {
    JwtEngine::new(&filter(keys, extra, rules)).unwrap()
}

fn filter(keys: &Keys, extra: &str, rules: &str) -> JwtAuthn {
    let yaml = format!(
        "providers:\n  corp:\n    issuer: {ISS}\n    audiences: [orders]\n    \
         payload_in_metadata: payload\n    local_jwks: {{ inline_string: '{}' }}\n{extra}\nrules:\n{rules}",
        keys.jwks()
    );
    let f: JwtAuthn = serde_saphyr::from_str(&yaml).unwrap();
    let mut errors = mesh_core::error::Errors::new();
    f.validate(&mesh_core::FieldPath::root(), &mut errors);
    errors.into_result().unwrap();
    f
}

const REQUIRED: &str = "  - match: { prefix: / }\n    requires: { provider_name: corp }\n";

fn bearer(token: &str) -> http::Request<()> {
    http::Request::get("http://svc/orders")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

fn check(e: &JwtEngine, mut req: http::Request<()>) -> Result<http::Request<()>, JwtError> {
    e.check(&mut req, NOW).map(|()| req)
}

#[test]
fn every_algorithm_verifies_and_the_claims_reach_the_handler() {
    let keys = Keys::new();
    let e = engine(&keys, "", REQUIRED);
    for alg in ["RS256", "PS256", "ES256", "EdDSA", "HS256"] {
        let req = check(&e, bearer(&keys.good(alg))).unwrap_or_else(|e| panic!("{alg}: {e}"));
        let jwt = req.extensions().get::<VerifiedJwt>().expect(alg);
        assert_eq!(jwt.subject(), Some("alice"), "{alg}");
        assert_eq!(jwt.issuer(), Some(ISS));
        assert_eq!(jwt.tokens()[0].provider(), "corp");
        assert!(
            req.headers().get("authorization").is_none(),
            "not forwarded"
        );
    }
}

#[test]
fn each_bad_token_fails_with_envoys_status() {
    let keys = Keys::new();
    let e = engine(&keys, "", REQUIRED);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        keys.mint("ES256", None, c)
    };
    let good = keys.good("HS256");
    let (head, _) = good.rsplit_once('.').unwrap();
    let cases: Vec<(&str, http::Request<()>, JwtError)> = vec![
        (
            "missing",
            http::Request::get("/").body(()).unwrap(),
            JwtError::Missing,
        ),
        (
            "expired",
            bearer(&with(&|c| c["exp"] = json!(NOW - 61))),
            JwtError::Expired,
        ),
        (
            "not yet valid",
            bearer(&with(&|c| c["nbf"] = json!(NOW + 61))),
            JwtError::NotYetValid,
        ),
        (
            "other issuer",
            bearer(&with(&|c| c["iss"] = json!("https://evil"))),
            JwtError::UnknownIssuer,
        ),
        (
            "other audience",
            bearer(&with(&|c| c["aud"] = json!("billing"))),
            JwtError::AudienceNotAllowed,
        ),
        (
            "exp not a number",
            bearer(&with(&|c| c["exp"] = json!("soon"))),
            JwtError::BadClaim("exp"),
        ),
        (
            "bad signature",
            bearer(&format!("{head}.{}", b64(b"forged"))),
            JwtError::VerificationFailed,
        ),
        (
            "unknown kid",
            bearer(&keys.mint("HS256", Some("other"), claims())),
            JwtError::NoMatchingKey,
        ),
        (
            "alg none",
            bearer(&keys.mint("none", None, claims())),
            JwtError::UnsupportedAlg,
        ),
        ("two parts", bearer("abc.def"), JwtError::BadFormat),
        ("not base64", bearer("a.b.c"), JwtError::BadHeader),
    ];
    for (what, req, want) in cases {
        assert_eq!(check(&e, req).err(), Some(want), "{what}");
    }
    assert_eq!(JwtError::AudienceNotAllowed.status(), 403);
    assert_eq!(JwtError::Expired.status(), 401);
    // Within the clock skew (60 s) either way: accepted.
    assert!(check(&e, bearer(&with(&|c| c["exp"] = json!(NOW - 59)))).is_ok());
    assert!(check(&e, bearer(&with(&|c| c["nbf"] = json!(NOW + 59)))).is_ok());
}

#[test]
fn requirements_combine_as_envoys() {
    let keys = Keys::new();
    let second = format!(
        "  other:\n    issuer: https://other\n    local_jwks: {{ inline_string: '{}' }}\n    \
         from_headers: [{{ name: x-other-token }}]",
        keys.jwks()
    );
    let rules = "  - match: { prefix: /any }\n    requires: { requires_any: { requirements: [{ provider_name: corp }, { allow_missing: {} }] } }\n\
                 \x20 - match: { prefix: /failed }\n    requires: { allow_missing_or_failed: {} }\n\
                 \x20 - match: { prefix: /all }\n    requires: { requires_all: { requirements: [{ provider_name: corp }, { provider_name: other }] } }\n\
                 \x20 - match: { prefix: /aud }\n    requires: { provider_and_audiences: { provider_name: corp, audiences: [billing] } }\n\
                 \x20 - match: { prefix: /by-issuer }\n    requires: { allow_missing: {} }\n\
                 \x20 - match: { prefix: /open }\n";
    let e = engine(&keys, &second, rules);
    let get = |path: &str, token: Option<&str>| {
        let mut b = http::Request::get(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(()).unwrap()
    };
    let good = keys.good("ES256");
    let expired = keys.mint(
        "ES256",
        None,
        json!({"iss": ISS, "aud": "orders", "exp": NOW - 1000}),
    );
    // requires_any + allow_missing: a missing token passes, a bad one does not.
    assert!(check(&e, get("/any", None)).is_ok());
    assert!(check(&e, get("/any", Some(&good))).is_ok());
    assert_eq!(
        check(&e, get("/any", Some(&expired))).err(),
        Some(JwtError::Expired)
    );
    // allow_missing_or_failed: everything passes, only good tokens are recorded.
    let r = check(&e, get("/failed", Some(&expired))).unwrap();
    assert!(r.extensions().get::<VerifiedJwt>().is_none());
    let r = check(&e, get("/failed", Some(&good))).unwrap();
    assert_eq!(
        r.extensions().get::<VerifiedJwt>().unwrap().subject(),
        Some("alice")
    );
    // requires_all: both providers' tokens, each where its provider looks.
    let other = keys.mint("EdDSA", None, json!({"iss": "https://other", "sub": "svc"}));
    assert_eq!(
        check(&e, get("/all", Some(&good))).err(),
        Some(JwtError::Missing)
    );
    let mut both = get("/all", Some(&good));
    both.headers_mut()
        .insert("x-other-token", other.parse().unwrap());
    let r = check(&e, both).unwrap();
    assert_eq!(
        r.extensions().get::<VerifiedJwt>().unwrap().tokens().len(),
        2
    );
    // provider_and_audiences replaces the provider's audiences.
    assert_eq!(
        check(&e, get("/aud", Some(&good))).err(),
        Some(JwtError::AudienceNotAllowed)
    );
    // allow_missing verifies by issuer, but only issuers whose provider looks where the
    // token was found.
    assert_eq!(
        check(&e, get("/by-issuer", Some(&other))).err(),
        Some(JwtError::UnknownIssuer)
    );
    let mut right_place = get("/by-issuer", None);
    right_place
        .headers_mut()
        .insert("x-other-token", other.parse().unwrap());
    let r = check(&e, right_place).unwrap();
    assert_eq!(
        r.extensions().get::<VerifiedJwt>().unwrap().subject(),
        Some("svc")
    );
    assert!(check(&e, get("/by-issuer", None)).is_ok());
    // A rule without requires, and a path no rule matches: unchecked.
    assert!(check(&e, get("/open", Some("garbage"))).is_ok());
    let e2 = engine(
        &keys,
        "",
        "  - match: { prefix: /api }\n    requires: { provider_name: corp }\n",
    );
    assert!(check(&e2, get("/web", None)).is_ok());
    assert_eq!(check(&e2, get("/api", None)).err(), Some(JwtError::Missing));
}

#[test]
fn every_token_found_must_verify() {
    let keys = Keys::new();
    let e = engine(&keys, "", REQUIRED);
    let good = keys.good("HS256");
    let mut req = http::Request::get("/x?access_token=a.b.c")
        .header("authorization", format!("Bearer {good}"))
        .body(())
        .unwrap();
    assert!(
        e.check(&mut req, NOW).is_err(),
        "a good header token must not vouch for a bad param"
    );
    let mut req = http::Request::get(format!("/x?access_token={good}"))
        .body(())
        .unwrap();
    assert!(
        e.check(&mut req, NOW).is_ok(),
        "the default locations include access_token"
    );
}

#[test]
fn forwarding_payload_and_claim_headers() {
    let keys = Keys::new();
    let extra = "    forward: true\n    forward_payload_header: x-jwt-payload\n    \
                 claim_to_headers: [{ header_name: x-sub, claim_name: sub }, { header_name: x-exp, claim_name: exp }]";
    let e = engine(&keys, extra, REQUIRED);
    let token = keys.good("HS256");
    let req = check(&e, bearer(&token)).unwrap();
    let h = req.headers();
    assert_eq!(
        h["authorization"],
        format!("Bearer {token}").as_str(),
        "forward: true"
    );
    assert_eq!(h["x-jwt-payload"], token.split('.').nth(1).unwrap());
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-exp"], (NOW + 600).to_string().as_str());
}

#[test]
fn custom_locations_and_cors_preflight() {
    let keys = Keys::new();
    let extra = "    from_headers: [{ name: x-token, value_prefix: 'Token ' }]\n    from_cookies: [session]";
    let e = engine(&keys, extra, REQUIRED);
    let token = keys.good("HS256");
    let via = |name: &str, value: String| {
        http::Request::get("/")
            .header(name, value)
            .body(())
            .unwrap()
    };
    assert!(check(&e, via("x-token", format!("Token {token}"))).is_ok());
    assert!(check(&e, via("cookie", format!("a=b; session={token}"))).is_ok());
    assert_eq!(
        check(&e, bearer(&token)).err(),
        Some(JwtError::Missing),
        "Authorization is not a location once from_headers is set"
    );
    let preflight = || {
        http::Request::options("/")
            .header("origin", "https://app")
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap()
    };
    assert_eq!(check(&e, preflight()).err(), Some(JwtError::Missing));
    let mut f = filter(&keys, extra, REQUIRED);
    f.bypass_cors_preflight = true;
    let e = JwtEngine::new(&f).unwrap();
    assert!(check(&e, preflight()).is_ok());
    assert_eq!(
        check(&e, http::Request::options("/").body(()).unwrap()).err(),
        Some(JwtError::Missing)
    );
}

#[tokio::test]
async fn refusals_are_envoys_answers_for_http_and_grpc() {
    use tower::{Layer, ServiceExt};
    let keys = Keys::new();
    let svc = JwtLayer::new(engine(&keys, "", REQUIRED)).layer(tower::service_fn(
        |_r: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        },
    ));
    let res = svc
        .clone()
        .oneshot(http::Request::get("http://svc/orders").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"http://svc/orders\""
    );
    let expired = keys.mint(
        "HS256",
        None,
        json!({"iss": ISS, "aud": "orders", "exp": 1}),
    );
    let res = svc.clone().oneshot(bearer(&expired)).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"http://svc/orders\", error=\"invalid_token\""
    );
    let grpc = http::Request::post("http://svc/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header(
            "authorization",
            format!(
                "Bearer {}",
                keys.mint("HS256", None, json!({"iss": ISS, "aud": "x"}))
            ),
        )
        .body(())
        .unwrap();
    let res = svc.oneshot(grpc).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["grpc-status"],
        "7",
        "wrong audience: 403 → PERMISSION_DENIED"
    );
    assert_eq!(
        res.headers()["grpc-message"],
        "Audiences in Jwt are not allowed"
    );
}

#[tokio::test]
async fn rbac_principals_match_the_verified_claims() {
    use crate::rbac::{RbacEngine, RbacLayer};
    use mesh_core::config::rbac::RbacFilter;
    use tower::{Layer, ServiceExt};
    let keys = Keys::new();
    let extra = "    normalize_payload_in_metadata: { space_delimited_claims: [scope] }";
    let jwt = engine(
        &keys,
        extra,
        "  - match: { prefix: / }\n    requires: { requires_any: { requirements: [{ provider_name: corp }, { allow_missing: {} }] } }\n",
    );
    // What istiod writes for `requestPrincipals: ["https://issuer.example/alice"]` plus a
    // claim condition on a space-delimited scope.
    let policy: RbacFilter = serde_saphyr::from_str(&format!(
        r#"
rules:
  policies:
    alice-writes:
      permissions: [{{ any: true }}]
      principals:
        - and_ids:
            ids:
              - metadata: {{ filter: envoy.filters.http.jwt_authn, path: [{{ key: payload }}, {{ key: iss }}], value: {{ string_match: {{ exact: "{ISS}" }} }} }}
              - metadata: {{ filter: envoy.filters.http.jwt_authn, path: [{{ key: payload }}, {{ key: sub }}], value: {{ string_match: {{ exact: alice }} }} }}
              - metadata:
                  filter: envoy.filters.http.jwt_authn
                  path: [{{ key: payload }}, {{ key: scope }}]
                  value: {{ or_match: {{ value_matchers: [{{ list_match: {{ one_of: {{ string_match: {{ exact: write }} }} }} }}, {{ string_match: {{ exact: write }} }}] }} }}
"#
    ))
    .unwrap();
    let rbac = RbacEngine::new([("envoy.filters.http.rbac", &policy)]).unwrap();
    let handler = tower::service_fn(|_r: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    });
    let svc = JwtLayer::new(jwt).layer(RbacLayer::new(rbac).layer(handler));
    let status = |req| {
        let svc = svc.clone();
        async move { svc.oneshot(req).await.unwrap().status().as_u16() }
    };
    // Real time here: the layer reads the clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mint = |sub: &str, scope: &str| {
        keys.mint(
            "ES256",
            None,
            json!({"iss": ISS, "sub": sub, "aud": "orders", "exp": now + 600, "scope": scope}),
        )
    };
    assert_eq!(status(bearer(&mint("alice", "read write"))).await, 200);
    assert_eq!(
        status(bearer(&mint("alice", "read"))).await,
        403,
        "scope lacks write"
    );
    assert_eq!(
        status(bearer(&mint("bob", "write"))).await,
        403,
        "other subject"
    );
    assert_eq!(
        status(http::Request::get("/").body(()).unwrap()).await,
        403,
        "no token: JWT lets it through, RBAC refuses"
    );
}

#[test]
fn per_route_configs_turn_the_check_off_or_name_a_requirement() {
    use mesh_core::config::server::Server;
    let keys = Keys::new();
    let jwks = keys.jwks();
    let server: Server = serde_saphyr::from_str(&format!(
        r#"
name: s
http_filters:
  - name: jwt
    jwt_authn:
      providers: {{ corp: {{ issuer: "{ISS}", local_jwks: {{ inline_string: '{jwks}' }} }} }}
      requirement_map:
        billing: {{ provider_and_audiences: {{ provider_name: corp, audiences: [billing] }} }}
      rules: [{{ match: {{ prefix: / }}, requires: {{ provider_name: corp }} }}]
route_config:
  virtual_hosts:
    - name: v
      domains: ["*"]
      routes:
        - match: {{ prefix: /public }}
          typed_per_filter_config: {{ jwt: {{ jwt_authn: {{ disabled: true }} }} }}
        - match: {{ prefix: /billing }}
          typed_per_filter_config: {{ jwt: {{ jwt_authn: {{ requirement_name: billing }} }} }}
        - match: {{ prefix: / }}
"#
    ))
    .unwrap();
    let mut errors = mesh_core::error::Errors::new();
    server.validate(&mesh_core::FieldPath::root(), &mut errors);
    errors.into_result().unwrap();
    let e = JwtEngine::for_server(&server).unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut b = http::Request::get(format!("http://svc{path}"));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(()).unwrap()
    };
    let orders = keys.good("ES256");
    assert!(
        check(&e, get("/public/x", None)).is_ok(),
        "disabled on the route"
    );
    assert_eq!(
        check(&e, get("/orders", None)).err(),
        Some(JwtError::Missing)
    );
    assert!(check(&e, get("/orders", Some(&orders))).is_ok());
    assert_eq!(
        check(&e, get("/billing", Some(&orders))).err(),
        Some(JwtError::AudienceNotAllowed),
        "the route's named requirement: billing audience"
    );
}

#[test]
fn remembered_tokens_are_still_checked_for_time_and_audience() {
    let keys = Keys::new();
    let e = engine(
        &keys,
        "    jwt_cache_config: { jwt_cache_size: 2 }",
        "  - match: { prefix: /billing }\n    requires: { provider_and_audiences: { provider_name: corp, audiences: [billing] } }\n\
         \x20 - match: { prefix: / }\n    requires: { provider_name: corp }\n",
    );
    let token = keys.good("ES256");
    let at = |path: &str, now: u64| {
        let mut r = http::Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        e.check(&mut r, now).map(|()| r)
    };
    let r = at("/orders", NOW).unwrap();
    assert_eq!(e.cached_tokens(), 1, "verified once, remembered");
    let again = at("/orders", NOW).unwrap();
    assert_eq!(
        again.extensions().get::<VerifiedJwt>().unwrap().subject(),
        r.extensions().get::<VerifiedJwt>().unwrap().subject()
    );
    assert_eq!(
        at("/billing", NOW).err(),
        Some(JwtError::AudienceNotAllowed),
        "a remembered token meets each rule's audiences"
    );
    assert_eq!(
        at("/orders", NOW + 3600).err(),
        Some(JwtError::Expired),
        "a remembered token expires"
    );
    // A forged signature on the same header and payload is another token: verified, refused.
    let (head, _) = token.rsplit_once('.').unwrap();
    let mut forged = bearer(&format!("{head}.{}", b64(b"forged")));
    assert_eq!(
        e.check(&mut forged, NOW).err(),
        Some(JwtError::VerificationFailed)
    );
    // Bounded: two more tokens fill it; it never holds more than its size.
    for sub in ["bob", "carol"] {
        let t = keys.mint(
            "HS256",
            None,
            json!({"iss": ISS, "sub": sub, "aud": "orders", "exp": NOW + 60}),
        );
        assert!(check(&e, bearer(&t)).is_ok());
    }
    assert_eq!(e.cached_tokens(), 2);
}

#[path = "log_tests.rs"]
mod log_tests;
