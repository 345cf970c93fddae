//! The cost of one RBAC decision: an engine of 10 Istio-shaped rules (principal regexes and
//! prefixes, method and path matchers), the request matching only the last rule (the worst
//! allowed case: every rule is tried), a request no rule matches (denied), and a DENY-then-ALLOW
//! chain as istiod sends it.
//!
//! `cargo bench -p mesh-benches --bench rbac`

#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_core::config::rbac::RbacFilter;
use mesh_examples::pki::DevCa;
use mesh_tower::rbac::RbacEngine;
use mesh_tower::tls::{PeerIdentity, PeerInfo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::hint::black_box;

fn ten_rules() -> String {
    let mut out = String::from("rules:\n  action: ALLOW\n  policies:\n");
    for i in 0..10 {
        out.push_str(&format!(
            "    rule{i}:\n      permissions: [{{ and_rules: {{ rules: [{{ header: {{ name: \":method\", string_match: {{ exact: GET }} }} }}, {{ url_path: {{ path: {{ prefix: /svc{i}/ }} }} }}] }} }}]\n      principals: [{{ authenticated: {{ principal_name: {{ safe_regex: {{ regex: \"spiffe://cluster.local/ns/ns{i}/sa/.*\" }} }} }} }}, {{ authenticated: {{ principal_name: {{ prefix: \"spiffe://cluster.local/ns/team{i}/\" }} }} }}]\n"
        ));
    }
    out
}

fn request(path: &str, peer: &PeerInfo) -> http::Request<()> {
    let mut r = http::Request::get(path).body(()).unwrap();
    r.extensions_mut().insert(peer.clone());
    r
}

fn bench(c: &mut Criterion) {
    let ca = DevCa::new("bench root");
    let cert = ca.issue_spiffe("spiffe://cluster.local/ns/ns9/sa/caller");
    let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
    let peer = PeerInfo {
        remote_addr: Some("10.0.0.1:40000".parse().unwrap()),
        local_addr: Some("10.0.0.2:8443".parse().unwrap()),
        tls: true,
        identity: Some(PeerIdentity::from_der(&der).unwrap()),
    };
    let allow: RbacFilter = serde_saphyr::from_str(&ten_rules()).unwrap();
    let engine = RbacEngine::new([("envoy.filters.http.rbac", &allow)]).unwrap();
    let deny: RbacFilter = serde_saphyr::from_str(
        "rules: { action: DENY, policies: { admin: { permissions: [{ url_path: { path: { prefix: /admin } } }], principals: [{ any: true }] } } }",
    )
    .unwrap();
    let chain = RbacEngine::new([
        ("envoy.filters.http.rbac.DENY", &deny),
        ("envoy.filters.http.rbac", &allow),
    ])
    .unwrap();

    let last = request("/svc9/items", &peer);
    let none = request("/other", &peer);
    assert!(engine.check(&last).is_ok() && engine.check(&none).is_err());
    let mut g = c.benchmark_group("rbac");
    g.bench_function("10 rules, last matches (allowed)", |b| {
        b.iter(|| black_box(&engine).check(black_box(&last)).is_ok())
    });
    g.bench_function("10 rules, none matches (denied)", |b| {
        b.iter(|| black_box(&engine).check(black_box(&none)).is_err())
    });
    g.bench_function("DENY then 10-rule ALLOW (allowed)", |b| {
        b.iter(|| black_box(&chain).check(black_box(&last)).is_ok())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
