//! A seeded, structure-aware fuzzer for the untrusted inputs the xDS client reads: xDS
//! resources of every type (decode + translation), the bootstrap JSON, the static YAML,
//! certificate material (PEM chains and keys, SPIFFE bundle maps), the server's request path
//! (JWTs, callers' trace headers, request heads against RBAC), access log formats, and ORCA
//! load reports in their three wire forms.
//!
//! Why seeded: it runs on the stable toolchain with no extra tooling, inside the test
//! command, and a failure is reproduced by its seed and iteration. The coverage-guided
//! companion for xDS resources is AFL++'s (`interop/fuzz/afl_xds.rs`).
//! Structure comes from the corpus (resources made by `build` in the shapes control planes
//! send, and the resources a real istiod sent, checked in under `tests/corpus/istiod/`) and
//! from the mutations: besides byte edits, *splicing* appends another valid message of the
//! same type, which protobuf decodes as a merge of the two, so mutants stay deep inside the
//! translation rather than dying in the decoder.
//!
//! Properties checked for every input:
//! - no panic (each run is under `catch_unwind`; a panic fails the test with a reproducer);
//! - no hang: one input takes less than a second;
//! - a rejected resource is reported with a field path or a decode error, never an empty
//!   message;
//! - translation is deterministic: an accepted resource translates to the same config twice;
//! - a JWT verifies only as minted: no mutant of a valid token is accepted;
//! - RBAC allows exactly what its policies name, whatever method, URI and headers come;
//! - at least 1 % of the mutants of each xDS type are accepted, and 1 % rejected (the fuzzer
//!   reaches the translation, not only the decoder).
//!
//! `FUZZ_ITERS` (per target, default 2 000) and `FUZZ_SEED` (default fixed) steer it; the
//! long run is `FUZZ_ITERS=2000000 cargo test --release -p mesh-xds-client --test fuzz -- --nocapture`.

use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::build;
use mesh_xds_client::translate::{Context, ResourceType, decode_in};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// The longest any one input may take.
const HANG: Duration = Duration::from_secs(1);

fn iterations() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f0f0)
}

/// One to four edits of `input`, drawing splices from `corpus`.
fn mutate(rng: &mut fastrand::Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let len = out.len();
        // Splices (6 and up) are drawn as often as all byte edits together: they keep
        // mutants decodable and deep in the translation.
        match rng.u8(0..12) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                out[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                out[i] = [0, 0xff, 0x7f, 0x80, 0x01, b'"', b'{', b'-'][rng.usize(..8)];
            }
            2 => {
                let at = rng.usize(..=len);
                let n = rng.usize(1..8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
                out.splice(at..at, bytes);
            }
            3 if len > 1 => {
                let a = rng.usize(..len);
                let b = (a + rng.usize(1..16)).min(len);
                out.drain(a..b);
            }
            4 if len > 1 => {
                let a = rng.usize(..len);
                let b = (a + rng.usize(1..32)).min(len);
                let chunk = out[a..b].to_vec();
                let at = rng.usize(..=out.len());
                out.splice(at..at, chunk);
            }
            5 if len > 0 => out.truncate(rng.usize(..len)),
            // Splice: a whole other entry appended (a protobuf merge), or its tail.
            6..=8 => out.extend_from_slice(&corpus[rng.usize(..corpus.len())]),
            _ => {
                let other = &corpus[rng.usize(..corpus.len())];
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    out.extend_from_slice(&other[from..]);
                }
            }
        }
    }
    out
}

/// Runs `check` on `iters` mutants of `corpus` (and the corpus itself), failing with a
/// reproducer on a panic, a hang or a broken property; returns how many inputs ended in each
/// outcome `check` named.
fn fuzz(
    target: &str,
    corpus: &[Vec<u8>],
    check: impl Fn(&[u8]) -> Result<&'static str, String>,
) -> std::collections::BTreeMap<&'static str, usize> {
    let mut outcomes = std::collections::BTreeMap::new();
    let (iters, seed) = (iterations(), seed());
    let mut rng = fastrand::Rng::with_seed(seed ^ fnv(target));
    let started = Instant::now();
    for i in 0..iters + corpus.len() {
        let input = match corpus.get(i) {
            Some(c) => c.clone(),
            None => {
                let base = rng.usize(..corpus.len());
                mutate(&mut rng, &corpus[base], corpus)
            }
        };
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = t.elapsed();
        let repro = || {
            format!(
                "{target}: input {i} (FUZZ_SEED={seed}), {} bytes: {}",
                input.len(),
                hex(&input)
            )
        };
        match outcome {
            Err(_) => panic!("panicked on {}", repro()),
            Ok(Err(broken)) => panic!("{broken} on {}", repro()),
            Ok(Ok(_)) if took > HANG => panic!("took {took:?} on {}", repro()),
            Ok(Ok(outcome)) => *outcomes.entry(outcome).or_insert(0) += 1,
        }
    }
    println!(
        "{target}: {} inputs in {:?}: {outcomes:?}",
        iters + corpus.len(),
        started.elapsed()
    );
    outcomes
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().take(4096).map(|x| format!("{x:02x}")).collect()
}

fn addrs(n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080 + i)))
        .collect()
}

/// A server listener choosing among chains per connection (addresses, source type, ports,
/// raw_buffer), one of them taking its routes by RDS, with a default chain.
fn chained_server(at: SocketAddr) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    use envoy_types::pb::envoy::config::core::v3::CidrRange;
    use envoy_types::pb::envoy::config::listener::v3 as lds;
    let cidr = |a: &str, len: u32| CidrRange {
        address_prefix: a.into(),
        prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value { value: len }),
    };
    let name = "grpc/server?xds.resource.listening_address=0.0.0.0:8443";
    let mut l = build::server_listener(name, at, Some(build::downstream_mtls("default")), vec![]);
    let mut by_rds = build::server_listener_with_rds(name, at, None, vec![], "inbound-routes")
        .filter_chains
        .remove(0);
    by_rds.filter_chain_match = Some(lds::FilterChainMatch {
        prefix_ranges: vec![cidr("10.0.0.0", 8)],
        source_type: 1,
        source_prefix_ranges: vec![cidr("10.1.0.0", 16)],
        source_ports: vec![9000, 9001],
        transport_protocol: "raw_buffer".into(),
        ..Default::default()
    });
    let mut external = l.filter_chains[0].clone();
    external.filter_chain_match = Some(lds::FilterChainMatch {
        source_type: 2,
        ..Default::default()
    });
    l.default_filter_chain = Some(l.filter_chains.remove(0));
    l.filter_chains = vec![by_rds, external];
    l
}

/// Real resources of each type, as control planes send them.
fn xds_corpus(ty: ResourceType) -> Vec<Any> {
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault};
    let routes = || {
        build::route_config(
            "web-routes",
            &["web", "*.shop.svc.cluster.local"],
            vec![
                build::header_route(
                    "/api",
                    vec![build::header("x-canary", Some("yes"))],
                    "canary",
                ),
                build::header_route("/", vec![build::header("x-user", None)], "web"),
                build::route("/", "web"),
            ],
        )
    };
    match ty {
        ResourceType::Listener => {
            let mut faulty = build::api_listener_rds("faulty", "web-routes");
            build::set_http_filters(
                &mut faulty,
                vec![build::fault_filter(&HttpFault {
                    abort: Some(FaultAbort {
                        error_type: Some(ErrorType::GrpcStatus(14)),
                        ..Default::default()
                    }),
                    ..Default::default()
                })],
            );
            let at = addrs(1)[0];
            vec![
                build::any(&build::api_listener_rds("web", "web-routes")),
                build::any(&build::api_listener_inline("inline", routes())),
                build::any(&faulty),
                build::any(&build::server_listener(
                    "grpc/server?xds.resource.listening_address=10.0.0.1:8080",
                    at,
                    Some(build::downstream_mtls("default")),
                    vec![build::rbac_filter(
                        "envoy.filters.http.rbac",
                        &Default::default(),
                    )],
                )),
                build::any(&chained_server(at)),
            ]
        }
        ResourceType::RouteConfiguration => {
            // A server's (RDS on servers): a non-forwarding route with an RBAC override.
            use envoy_types::pb::envoy::config::route::v3 as rds;
            let mut serve = build::route("/", "");
            serve.action = Some(rds::route::Action::NonForwardingAction(Default::default()));
            serve.typed_per_filter_config = [(
                "envoy.filters.http.rbac".to_owned(),
                build::any(
                    &envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute::default(),
                ),
            )]
            .into();
            vec![
                build::any(&routes()),
                build::any(&build::inbound_route_config("inbound-routes", vec![serve])),
            ]
        }
        ResourceType::Cluster => {
            let mut tls = build::eds_cluster("tls");
            tls.transport_socket = Some(build::mesh_tls(
                "default",
                &["spiffe://cluster.local/ns/shop/sa/web"],
            ));
            let mut sds = build::eds_cluster("sds");
            sds.transport_socket = Some(build::sds_tls("cert", "roots", &["spiffe://a/b"]));
            let mut files = build::eds_cluster("files");
            files.transport_socket = Some(build::static_tls(
                build::data_file("/c.pem"),
                build::data_file("/k.pem"),
                build::data_inline("-----BEGIN CERTIFICATE-----"),
                &["spiffe://a/b"],
            ));
            vec![
                build::any(&build::eds_cluster("web")),
                build::any(&tls),
                build::any(&sds),
                build::any(&files),
            ]
        }
        ResourceType::ClusterLoadAssignment => {
            let mut zoned = build::assignment("zoned", &[]);
            zoned.endpoints = vec![
                build::locality("a", 0, 3, &addrs(2), &[true, false]),
                build::locality("b", 1, 1, &addrs(3), &[true, true, true]),
            ];
            vec![
                build::any(&build::assignment("web", &addrs(3))),
                build::any(&zoned),
            ]
        }
        ResourceType::Secret => {
            let (cert, key) = self_signed();
            vec![
                build::any(&build::roots_secret("roots", &cert)),
                build::any(&build::tls_secret("cert", &cert, &key)),
            ]
        }
    }
}

/// The resources of type `ty` a real istiod sent (`tests/corpus/istiod/<type>-<name>.pb`,
/// captured by `interop/tests/istio_corpus.rs`).
fn istiod_seeds(ty: ResourceType) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/istiod");
    let prefix = format!("{}-", ty.short().to_lowercase());
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    // Directory order varies; the fuzzer's draws must not.
    seeds.sort();
    seeds.into_iter().map(|(_, bytes)| bytes).collect()
}

/// A self-signed SPIFFE leaf and its key, PEM.
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
    ));
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[test]
fn xds_resources_never_panic_and_translate_deterministically() {
    let ctx = Context {
        certificate_providers: ["default".to_owned()].into(),
        inbound_route_configs: ["inbound-routes".to_owned()].into(),
        ..Default::default()
    };
    for ty in ResourceType::ALL {
        let mut corpus: Vec<Vec<u8>> = xds_corpus(ty).into_iter().map(|a| a.value).collect();
        corpus.extend(istiod_seeds(ty));
        let seen = fuzz(ty.short(), &corpus, |bytes| {
            let any = Any {
                type_url: ty.type_url().into(),
                value: bytes.to_vec(),
            };
            let Ok(first) = decode_in(ty, &any, &ctx) else {
                return Ok("undecodable"); // not this type's message: NACKed as such
            };
            match &first.result {
                Err(e) if e.trim().is_empty() => Err("a rejection without a message".into()),
                Err(e) if !e.contains(": ") => Err(format!("a rejection without a path: {e}")),
                Err(_) => Ok("rejected"),
                Ok(t) => {
                    let again = decode_in(ty, &any, &ctx).unwrap();
                    match again.result {
                        Ok(u) if &u == t => Ok("accepted"),
                        other => Err(format!("not deterministic: {t:?} then {other:?}")),
                    }
                }
            }
        });
        // The mutants reach translation, both ways: the fuzzer is not stuck in the decoder.
        let deep = iterations() / 100;
        for outcome in ["accepted", "rejected"] {
            assert!(
                seen.get(outcome).copied().unwrap_or(0) >= deep,
                "{}: too few inputs {outcome}: {seen:?}",
                ty.short()
            );
        }
    }
}

#[test]
fn bootstraps_never_panic() {
    let corpus: Vec<Vec<u8>> = [
        r#"{"xds_servers":[{"server_uri":"istiod.istio-system.svc:15010","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"sidecar~10.0.0.1~a.shop~shop.svc.cluster.local","metadata":{"GENERATOR":"grpc","NAMESPACE":"shop"},"locality":{"zone":"z1"}},"certificate_providers":{"default":{"plugin_name":"file_watcher","config":{"certificate_file":"/c.pem","private_key_file":"/k.pem","ca_certificate_file":"/r.pem","refresh_interval":"900s"}}},"server_listener_resource_name_template":"xds.istio.io/grpc/lds/inbound/%s"}"#,
        r#"{"xds_servers":[{"server_uri":"a:1","channel_creds":[{"type":"google_default"},{"type":"insecure"}]}],"node":{"id":"n"},"authorities":{"b.example":{"xds_servers":[{"server_uri":"b:1","channel_creds":[{"type":"insecure"}]}],"client_listener_resource_name_template":"xdstp://b.example/envoy.config.listener.v3.Listener/%s"}},"client_default_listener_resource_name_template":"xdstp://a/envoy.config.listener.v3.Listener/%s"}"#,
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    fuzz("bootstrap", &corpus, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match mesh_xds_client::bootstrap::Bootstrap::from_json(&text) {
            Err(e) if e.to_string().trim().is_empty() => Err("an error without a message".into()),
            Err(_) => Ok("rejected"),
            Ok(_) => Ok("accepted"),
        }
    });
}

#[test]
fn static_configs_never_panic() {
    let corpus: Vec<Vec<u8>> = [
        "listeners:\n  - name: web\n    route_config:\n      virtual_hosts:\n        - name: all\n          domains: [\"*\"]\n          routes:\n            - match: { prefix: /api, headers: [{ name: x-canary, exact_match: \"yes\" }] }\n              route: { weighted_clusters: { clusters: [{ name: web, weight: 80 }, { name: canary, weight: 20 }] }, retry_policy: { retry_on: \"5xx,reset\", num_retries: 2 }, timeout: 2s }\n            - match: { safe_regex: { regex: \"^/items/[0-9]+$\" } }\n              route: { cluster: web }\nclusters:\n  - name: web\n    type: STATIC\n    lb_policy: LEAST_REQUEST\n    load_assignment: { cluster_name: web, endpoints: [{ lb_endpoints: [{ address: \"127.0.0.1:8080\" }] }] }\n  - name: canary\n    type: STATIC\n    load_assignment: { cluster_name: canary, endpoints: [] }\n",
        "certificate_providers: { default: { file_watcher: { certificate_file: /c.pem, private_key_file: /k.pem, ca_certificate_file: /r.pem } } }\nservers:\n  - name: echo\n    transport_socket: { require_client_certificate: true, common_tls_context: { tls_certificate_provider_instance: { instance_name: default }, validation_context: { ca_certificate_provider_instance: { instance_name: default } } } }\n    http_filters:\n      - { name: rl, local_ratelimit: { token_bucket: { max_tokens: 5, fill_interval: 1s } } }\n      - { name: envoy.filters.http.rbac, rbac: { rules: { policies: { a: { permissions: [{ url_path: { path: { prefix: /pkg } } }], principals: [{ authenticated: { principal_name: { exact: \"spiffe://x/y\" } } }] } } } } }\n",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    fuzz("yaml", &corpus, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match mesh_core::MeshConfig::from_yaml(&text) {
            Err(e) if e.to_string().trim().is_empty() => Err("an error without a message".into()),
            Err(_) => Ok("rejected"),
            Ok(_) => Ok("accepted"),
        }
    });
}

#[test]
fn certificate_material_never_panics() {
    use mesh_tower::tls::{Identity, Roots};
    let (pem, key_pem) = self_signed();
    let bundle = format!(
        r#"{{"trust_domains":{{"cluster.local":{{"spiffe_sequence":1,"keys":[{{"use":"x509-svid","kty":"EC","crv":"P-256","x5c":["{}"]}}]}}}}}}"#,
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    );
    let corpus: Vec<Vec<u8>> = vec![pem.clone().into_bytes(), bundle.into_bytes()];
    let key_bytes = key_pem.into_bytes();
    fuzz("pem", &corpus, |bytes| {
        let roots = Roots::from_pem(bytes).is_ok() || Roots::from_spiffe_bundle_map(bytes).is_ok();
        let identity = Identity::from_pem(bytes, &key_bytes).is_ok();
        Ok(match (roots, identity) {
            (false, false) => "rejected",
            _ => "accepted",
        })
    });
}

/// An HS256 token for provider `corp` below (key `secret`, expiring in 2100), minted once with
/// Python's `hmac`: the fuzzer needs a valid token to mutate, not a signer.
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwic3ViIjoiYWxpY2UiLCJhdWQiOiJvcmRlcnMiLCJleHAiOjQxMDI0NDQ4MDAsImdyb3VwcyI6WyJhIiwiYiJdfQ.WqNbWRQ0UvJ-7cZJsfZM0dFT-_cScDRTfW7DbiPLKaw";

#[test]
fn jwt_tokens_never_panic() {
    let filter: mesh_core::config::jwt::JwtAuthn = serde_saphyr::from_str(
        r#"
providers:
  corp:
    issuer: https://issuer.example
    audiences: [orders]
    local_jwks: { inline_string: '{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"}]}' }
    claim_to_headers: [{ header_name: x-sub, claim_name: sub }]
rules:
  - match: { prefix: / }
    requires: { provider_name: corp }
"#,
    )
    .unwrap();
    let engine = mesh_tower::jwt::JwtEngine::new(&filter).unwrap();
    // Tokens, and pieces of them for splicing: headers, payloads, signatures, dots.
    let parts: Vec<&str> = TOKEN.split('.').collect();
    let corpus: Vec<Vec<u8>> = [TOKEN, parts[0], parts[1], parts[2], "."]
        .map(|s| s.as_bytes().to_vec())
        .to_vec();
    let now = 1_800_000_000;
    let seen = fuzz("jwt", &corpus, |bytes| {
        let Ok(value) = http::HeaderValue::from_bytes(&[b"Bearer ", bytes].concat()) else {
            return Ok("not a header value");
        };
        let mut req = http::Request::get("/orders")
            .header(http::header::AUTHORIZATION, value)
            .body(())
            .unwrap();
        // A token that verifies is the minted one, byte for byte: no mutant is accepted. The
        // token is the run of base64url characters, dots and `=` after `Bearer ` (Envoy's
        // reading: `Bearer <token>, …` works), so junk after the minted token is no mutant.
        let token_len = bytes
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || b"-_.=".contains(c)))
            .unwrap_or(bytes.len());
        match engine.check(&mut req, now) {
            Ok(()) if &bytes[..token_len] == TOKEN.as_bytes() => Ok("accepted"),
            Ok(()) => Err("a changed token verified".into()),
            Err(_) => Ok("rejected"),
        }
    });
    assert!(seen.get("accepted").copied().unwrap_or(0) >= 1, "{seen:?}");
}

#[test]
fn trace_context_headers_never_panic() {
    // A server reads these from any caller: W3C and both B3 forms.
    use mesh_tower::trace::TraceContext;
    let corpus: Vec<Vec<u8>> = vec![
        b"traceparent\n00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
        b"traceparent\n01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra".to_vec(),
        b"b3\n80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90".to_vec(),
        b"x-b3-traceid\n64fe8b2a57d3eff7".to_vec(),
        b"x-b3-spanid\ne457b5a2e4d86bd1".to_vec(),
    ];
    // Each input is `name\nvalue`; the five headers together make the request.
    let seen = fuzz("trace headers", &corpus, |bytes| {
        let mut headers = http::HeaderMap::new();
        for line in bytes.split(|b| *b == b'|') {
            let mut parts = line.splitn(2, |b| *b == b'\n');
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) else {
                continue;
            };
            headers.insert(n, v);
        }
        headers.insert(
            "x-b3-spanid",
            http::HeaderValue::from_static("e457b5a2e4d86bd1"),
        );
        match TraceContext::from_headers(&headers) {
            None => Ok("rejected"),
            Some(ctx) => {
                // What is accepted goes out again as a traceparent that reads back the same.
                let back = TraceContext::from_traceparent(&ctx.traceparent());
                match back {
                    Some(b)
                        if (b.trace_id, b.span_id, b.sampled)
                            == (ctx.trace_id, ctx.span_id, ctx.sampled) =>
                    {
                        Ok("accepted")
                    }
                    other => Err(format!("{ctx:?} does not round-trip: {other:?}")),
                }
            }
        }
    });
    assert!(seen.get("accepted").copied().unwrap_or(0) >= 5, "{seen:?}");
}

#[test]
fn access_log_formats_never_panic() {
    use mesh_tower::telemetry::LogFormat;
    let corpus: Vec<Vec<u8>> = vec![
        br#"[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(X-USER):5% 100%%"#.to_vec(),
        br#"{"code":"%RESPONSE_CODE%","grpc":"%GRPC_STATUS(NUMBER)%","h":"%RESP(X-A?X-B)%"}"#.to_vec(),
        "%DOWNSTREAM_REMOTE_ADDRESS% é %UPSTREAM_HOST%".as_bytes().to_vec(),
    ];
    let seen = fuzz("access log format", &corpus, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let a = LogFormat::text(&text).is_ok();
        let b = LogFormat::json(&text).is_ok();
        Ok(if a || b { "accepted" } else { "rejected" })
    });
    assert!(seen.get("accepted").copied().unwrap_or(0) >= 3, "{seen:?}");
}

#[test]
fn orca_load_reports_never_panic() {
    use mesh_tower::balance::weighted_round_robin::orca::LoadReport;
    // OrcaLoadReport in the binary header's form: cpu_utilization 0.5 (field 1, a double) and
    // rps_fractional 100 (field 6); and the text and JSON forms servers send.
    let named = ["qps".to_owned(), "foo".to_owned()];
    let proto: Vec<u8> = {
        let mut b = vec![0x09];
        b.extend_from_slice(&0.5f64.to_le_bytes());
        b.push(0x31);
        b.extend_from_slice(&100f64.to_le_bytes());
        b
    };
    let corpus: Vec<Vec<u8>> = vec![
        proto,
        b"TEXT cpu_utilization=0.3, rps_fractional=120, named_metrics.foo=2".to_vec(),
        b"JSON {\"cpu_utilization\":0.3,\"named_metrics\":{\"foo\":2}}".to_vec(),
    ];
    fuzz("orca", &corpus, |bytes| {
        let a = LoadReport::from_proto(bytes, &named).is_ok();
        let b = LoadReport::from_base64(bytes, &named).is_ok();
        let c = LoadReport::from_text(&String::from_utf8_lossy(bytes), &named).is_ok();
        Ok(if a || b || c { "accepted" } else { "rejected" })
    });
}

#[test]
fn server_requests_never_get_past_rbac_unnamed() {
    // The server's request path: any method, URI and headers a caller sends, against a DENY
    // `/admin` then ALLOW (`/public/…`, or `GET /health`) chain. What is allowed is exactly
    // what the policies name, on the path as the engine reads it (without the query).
    let deny: mesh_core::config::rbac::RbacFilter = serde_saphyr::from_str(
        "rules: { action: DENY, policies: { admin: { permissions: [{ url_path: { path: { prefix: /admin } } }], principals: [{ any: true }] } } }",
    )
    .unwrap();
    let allow: mesh_core::config::rbac::RbacFilter = serde_saphyr::from_str(
        r#"rules: { action: ALLOW, policies: {
             public: { permissions: [{ url_path: { path: { prefix: /public/ } } }], principals: [{ any: true }] },
             health: { permissions: [{ and_rules: { rules: [{ header: { name: ":method", string_match: { exact: GET } } }, { url_path: { path: { exact: /health } } }] } }],
                       principals: [{ not_id: { header: { name: x-banned, present_match: true } } }] } } }"#,
    )
    .unwrap();
    let engine = mesh_tower::rbac::RbacEngine::new([
        ("envoy.filters.http.rbac.DENY", &deny),
        ("envoy.filters.http.rbac", &allow),
    ])
    .unwrap();
    // Each input is `METHOD\nURI\nname: value\n…`.
    let corpus: Vec<Vec<u8>> = [
        "GET\n/public/a?x=1\nx-a: b",
        "POST\n/admin/users\nx-banned: 1",
        "GET\n/health\nhost: echo",
        "GET\nhttp://echo:8080/public/../admin\n",
        "DELETE\n/health?probe=1\nx-banned: yes",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    let seen = fuzz("server request", &corpus, |bytes| {
        let mut lines = bytes.split(|b| *b == b'\n');
        let (Some(method), Some(uri)) = (lines.next(), lines.next()) else {
            return Ok("not a request");
        };
        let (Ok(method), Ok(uri)) = (http::Method::from_bytes(method), http::Uri::try_from(uri))
        else {
            return Ok("not a request");
        };
        let mut req = http::Request::builder().method(method).uri(uri);
        for line in lines {
            let mut kv = line.splitn(2, |b| *b == b':');
            let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                continue;
            };
            let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k),
                http::HeaderValue::from_bytes(v.trim_ascii()),
            ) else {
                continue;
            };
            req = req.header(k, v);
        }
        let Ok(req) = req.body(()) else {
            return Ok("not a request");
        };
        let first = engine.check(&req).is_ok();
        if engine.check(&req).is_ok() != first {
            return Err("not deterministic".into());
        }
        let path = req.uri().path();
        let named = !path.starts_with("/admin")
            && (path.starts_with("/public/")
                || (req.method() == http::Method::GET
                    && path == "/health"
                    && !req.headers().contains_key("x-banned")));
        match (first, named) {
            (true, true) => Ok("allowed"),
            (false, false) => Ok("denied"),
            (true, false) => Err(format!("allowed {} {path}", req.method())),
            (false, true) => Err(format!("denied {} {path}", req.method())),
        }
    });
    for outcome in ["allowed", "denied"] {
        assert!(seen.get(outcome).copied().unwrap_or(0) >= 10, "{seen:?}");
    }
}
