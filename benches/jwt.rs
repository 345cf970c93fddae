//! The cost of one JWT check on the server: a valid token of each algorithm verified by a
//! `requires: { provider_name }` rule (the token's JSON decoded, `iss`/`aud`/`exp` checked,
//! the signature verified with ring), the same token again (Envoy's verified-token cache:
//! the signature is not re-verified), a request the rules do not select, and a request
//! without a token.
//!
//! `cargo bench -p mesh-benches --bench jwt`

#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_core::config::jwt::JwtAuthn;
use mesh_examples::jwt::DevIssuer;
use mesh_tower::jwt::JwtEngine;
use serde_json::json;
use std::hint::black_box;

fn engine(issuer: &DevIssuer, cache: bool) -> JwtEngine {
    let cache = if cache {
        "    jwt_cache_config: { jwt_cache_size: 100 }\n"
    } else {
        ""
    };
    let filter: JwtAuthn = serde_saphyr::from_str(&format!(
        "providers:\n  corp:\n    issuer: {}\n    audiences: [orders]\n    payload_in_metadata: payload\n    \
         local_jwks: {{ inline_string: '{}' }}\n{cache}\
         rules:\n  - match: {{ prefix: /health }}\n  - match: {{ prefix: / }}\n    requires: {{ provider_name: corp }}\n",
        issuer.issuer(),
        issuer.jwks()
    ))
    .unwrap();
    JwtEngine::new(&filter).unwrap()
}

fn bench(c: &mut Criterion) {
    let issuer = DevIssuer::new("https://corp.example");
    let (uncached, cached) = (engine(&issuer, false), engine(&issuer, true));
    let now = mesh_examples::jwt::now();
    let claims = json!({"sub": "alice", "aud": "orders", "scope": "read write"});
    let mut g = c.benchmark_group("jwt");
    for alg in ["HS256", "ES256", "EdDSA", "RS256", "PS256"] {
        let token = issuer.token(alg, claims.clone());
        let req = http::Request::get("/orders")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let mut probe = req.clone();
        assert!(uncached.check(&mut probe, now).is_ok(), "{alg}");
        g.bench_function(format!("{alg} verified"), |b| {
            b.iter(|| {
                let mut r = black_box(&req).clone();
                black_box(&uncached).check(&mut r, now).is_ok()
            })
        });
        g.bench_function(format!("{alg} from the verified-token cache"), |b| {
            b.iter(|| {
                let mut r = black_box(&req).clone();
                black_box(&cached).check(&mut r, now).is_ok()
            })
        });
    }
    let health = http::Request::get("/health").body(()).unwrap();
    g.bench_function("not selected by a rule", |b| {
        b.iter(|| {
            let mut r = black_box(&health).clone();
            black_box(&cached).check(&mut r, now).is_ok()
        })
    });
    let missing = http::Request::get("/orders").body(()).unwrap();
    g.bench_function("no token (refused)", |b| {
        b.iter(|| {
            let mut r = black_box(&missing).clone();
            black_box(&cached).check(&mut r, now).is_err()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
