use super::*;
use crate::config::server::Server;

const HMAC_JWKS: &str = r#"{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"}]}"#;

fn errors_of(yaml: &str) -> Vec<String> {
    let f: JwtAuthn = serde_saphyr::from_str(yaml).unwrap();
    let mut errors = Errors::new();
    f.validate(&FieldPath::root().field("jwt_authn"), &mut errors);
    match errors.into_result() {
        Ok(()) => Vec::new(),
        Err(crate::ConfigError::Invalid(v)) => v.iter().map(|e| e.to_string()).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_valid_filter_has_no_errors() {
    let yaml = format!(
        "providers: {{ a: {{ issuer: i, local_jwks: {{ inline_string: '{HMAC_JWKS}' }} }} }}\n\
         rules: [{{ match: {{ prefix: / }}, requires: {{ requires_all: {{ requirements: \
         [{{ provider_name: a }}, {{ provider_and_audiences: {{ provider_name: a, audiences: [x] }} }}] }} }} }}]"
    );
    assert_eq!(errors_of(&yaml), Vec::<String>::new());
}

#[test]
fn errors_name_the_field() {
    let yaml = format!(
        "providers:\n  a: {{ local_jwks: {{ inline_string: '{{\"keys\":[]}}' }} }}\n  b: {{}}\n  \
         c: {{ local_jwks: {{ inline_string: '{HMAC_JWKS}' }}, from_headers: [{{ name: 'bad name' }}] }}\n\
         rules:\n  - match: {{ prefix: / }}\n    requires: {{ provider_name: nobody }}\n  \
         - match: {{ prefix: / }}\n    requires: {{ requires_any: {{ requirements: [{{ provider_name: a }}] }} }}\n  \
         - match: {{ prefix: / }}\n    requires: {{ provider_name: a, allow_missing: {{}} }}\n"
    );
    let errors = errors_of(&yaml);
    let expect = [
        "jwt_authn.providers.a.local_jwks.inline_string: JWKS has no keys",
        "jwt_authn.providers.b.local_jwks: must be set",
        "jwt_authn.providers.c.from_headers[0].name",
        "jwt_authn.rules[0].requires.provider_name: unknown provider \"nobody\"",
        "jwt_authn.rules[1].requires.requires_any.requirements: needs at least two",
        "jwt_authn.rules[2].requires: exactly one of",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "{e:?} not in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn jwks_keys_decode_by_type_and_bad_ones_are_named() {
    let keys = parse_jwks(
        r#"{"keys":[
        {"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"},
        {"kty":"EC","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"kty":"OKP","crv":"Ed25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        {"kty":"oct","k":"c2VjcmV0"}]}"#,
    )
    .unwrap();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0].kid.as_deref(), Some("r"));
    assert_eq!(keys[0].alg.as_deref(), Some("RS256"));
    assert!(matches!(&keys[1].key, JwkKey::Ec { crv, x, .. } if crv == "P-256" && x.len() == 32));
    assert!(matches!(&keys[3].key, JwkKey::Oct { k } if k == b"secret"));

    for (doc, want) in [
        ("not json", "JWKS is not JSON"),
        (r#"{"keys":{}}"#, "no \"keys\" array"),
        (
            r#"{"keys":[{"kty":"RSA","n":"AQAB"}]}"#,
            "keys[0]: missing \"e\"",
        ),
        (
            r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#,
            "P-521",
        ),
        (
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#,
            "32 bytes",
        ),
        (r#"{"keys":[{"kty":"oct","k":"!!"}]}"#, "not base64url"),
        (r#"{"keys":[{"kty":"XYZ"}]}"#, "\"XYZ\" is not supported"),
    ] {
        let e = parse_jwks(doc).unwrap_err();
        assert!(e.contains(want), "{doc}: {e}");
    }
}

#[test]
fn deep_requirements_are_refused_not_recursed() {
    let mut r = "{ provider_name: a }".to_owned();
    for _ in 0..=MAX_REQUIREMENT_DEPTH {
        r = format!("{{ requires_any: {{ requirements: [{r}, {{ allow_missing: {{}} }}] }} }}");
    }
    let yaml = format!(
        "providers: {{ a: {{ local_jwks: {{ inline_string: '{HMAC_JWKS}' }} }} }}\n\
         rules: [{{ match: {{ prefix: / }}, requires: {r} }}]"
    );
    let errors = errors_of(&yaml);
    assert!(
        errors.iter().any(|e| e.contains("nested deeper than")),
        "{errors:#?}"
    );
}

#[test]
fn the_jwt_filter_must_run_before_rbac() {
    let yaml = format!(
        "name: s\nhttp_filters:\n  - name: envoy.filters.http.rbac\n    rbac: {{}}\n  \
         - name: envoy.filters.http.jwt_authn\n    jwt_authn: {{ providers: {{ a: {{ local_jwks: {{ inline_string: '{HMAC_JWKS}' }} }} }} }}\n"
    );
    let s: Server = serde_saphyr::from_str(&yaml).unwrap();
    let mut errors = Errors::new();
    s.validate(&FieldPath::root(), &mut errors);
    let e = errors.into_result().unwrap_err().to_string();
    assert!(
        e.contains("http_filters[1]: the jwt_authn filter must come before"),
        "{e}"
    );
    assert!(s.jwt_authn().is_some());
}
