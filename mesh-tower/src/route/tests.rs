use super::table::Table;
use crate::ErrorKind;
use http::{HeaderMap, HeaderValue};
use mesh_core::RouteConfig;
use std::sync::Arc;

fn table(yaml: &str) -> Table {
    let rc: RouteConfig = serde_saphyr_from(yaml);
    let mut errors = mesh_core::error::Errors::new();
    rc.validate(&mesh_core::FieldPath::root(), &mut errors);
    errors.into_result().expect("valid route config");
    Table::compile(&rc, &[]).unwrap()
}

fn serde_saphyr_from(yaml: &str) -> RouteConfig {
    // Parse through the public document type so tests use the real loader.
    let doc = format!("route_configs:\n  - name: t\n{}", indent(yaml));
    let mut cfg = mesh_core::MeshConfig::from_yaml(&format!(
        "{doc}\nclusters: [{{name: a}}, {{name: b}}, {{name: c}}, {{name: d}}]"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    cfg.route_configs.remove(0)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn vhost_of(t: &Table, host: &str) -> Option<String> {
    t.route(host, "/", None, &HeaderMap::new())
        .ok()
        .map(|r| r.virtual_host.to_string())
}

const DOMAINS: &str = r#"
virtual_hosts:
  - { name: exact, domains: ["api.example.com", "API2.example.com"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
  - { name: suffix-short, domains: ["*.com"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
  - { name: suffix-long, domains: ["*.example.com"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
  - { name: prefix, domains: ["api.*"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
  - { name: ported, domains: ["svc:8080"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
  - { name: any, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
"#;

#[test]
fn domain_precedence_follows_envoy() {
    let t = table(DOMAINS);
    assert_eq!(vhost_of(&t, "api.example.com").as_deref(), Some("exact"));
    assert_eq!(
        vhost_of(&t, "api2.example.com").as_deref(),
        Some("exact"),
        "domains are case-insensitive"
    );
    assert_eq!(vhost_of(&t, "API.EXAMPLE.COM").as_deref(), Some("exact"));
    assert_eq!(
        vhost_of(&t, "www.example.com").as_deref(),
        Some("suffix-long"),
        "longest suffix wins"
    );
    assert_eq!(
        vhost_of(&t, "www.other.com").as_deref(),
        Some("suffix-short")
    );
    assert_eq!(
        vhost_of(&t, "api.internal").as_deref(),
        Some("prefix"),
        "suffix beats prefix, prefix beats *"
    );
    assert_eq!(
        vhost_of(&t, ".example.com").as_deref(),
        Some("suffix-short"),
        "a wildcard never matches empty"
    );
    assert_eq!(vhost_of(&t, "svc:8080").as_deref(), Some("ported"));
    // Envoy matches the full `host:port` first, against every kind of domain.
    assert_eq!(
        vhost_of(&t, "api.example.com:443").as_deref(),
        Some("prefix")
    );
    assert_eq!(vhost_of(&t, "svc:9090").as_deref(), Some("any"));
    assert_eq!(vhost_of(&t, "elsewhere").as_deref(), Some("any"));
}

#[test]
fn port_is_dropped_only_when_nothing_matches_with_it() {
    let t = table(
        r#"
virtual_hosts:
  - { name: bare, domains: ["greeter"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
  - { name: ported, domains: ["greeter:50051"], routes: [{ match: { prefix: / }, route: { cluster: a } }] }
"#,
    );
    assert_eq!(vhost_of(&t, "greeter:50051").as_deref(), Some("ported"));
    assert_eq!(vhost_of(&t, "greeter:8080").as_deref(), Some("bare"));
    assert_eq!(vhost_of(&t, "greeter").as_deref(), Some("bare"));
    assert_eq!(vhost_of(&t, "other:50051"), None);
}

#[test]
fn no_matching_virtual_host_is_no_route() {
    let t = table(
        "virtual_hosts: [{ name: v, domains: [a.b], routes: [{ match: { prefix: / }, route: { cluster: a } }] }]",
    );
    let err = t.route("c.d", "/", None, &HeaderMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoRoute);
    assert!(
        err.to_string()
            .contains("no virtual host matches authority \"c.d\""),
        "{err}"
    );
}

const PATHS: &str = r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - { name: exact, match: { path: /exact }, route: { cluster: a } }
      - { name: ci, match: { prefix: /CI, case_sensitive: false }, route: { cluster: a } }
      - { name: regex, match: { safe_regex: { regex: "/v[0-9]+/items" } }, route: { cluster: a } }
      - { name: sep, match: { path_separated_prefix: /sep }, route: { cluster: a } }
      - { name: grpc, match: { prefix: /helloworld.Greeter/ }, route: { cluster: a } }
      - { name: fallback, match: { prefix: /api }, route: { cluster: a } }
"#;

fn route_of(t: &Table, path: &str) -> Option<String> {
    t.route("x", path, None, &HeaderMap::new())
        .ok()
        .map(|r| r.name.to_string())
}

#[test]
fn path_matchers_and_first_match_wins() {
    let t = table(PATHS);
    assert_eq!(route_of(&t, "/exact").as_deref(), Some("exact"));
    assert_eq!(route_of(&t, "/exact/more"), None);
    assert_eq!(
        route_of(&t, "/EXACT"),
        None,
        "exact is case sensitive by default"
    );
    assert_eq!(route_of(&t, "/ci/anything").as_deref(), Some("ci"));
    assert_eq!(route_of(&t, "/Ci").as_deref(), Some("ci"));
    assert_eq!(route_of(&t, "/v12/items").as_deref(), Some("regex"));
    assert_eq!(
        route_of(&t, "/v12/items/x"),
        None,
        "regex must match the whole path"
    );
    assert_eq!(route_of(&t, "/sep").as_deref(), Some("sep"));
    assert_eq!(route_of(&t, "/sep/x").as_deref(), Some("sep"));
    assert_eq!(route_of(&t, "/separate"), None);
    assert_eq!(
        route_of(&t, "/helloworld.Greeter/SayHello").as_deref(),
        Some("grpc")
    );
    assert_eq!(route_of(&t, "/api/v1").as_deref(), Some("fallback"));
}

const HEADERS: &str = r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - { name: both, match: { prefix: /, headers: [{ name: x-a, exact_match: "1" }, { name: x-b, prefix_match: pre }] }, route: { cluster: a } }
      - { name: range, match: { prefix: /, headers: [{ name: x-n, range_match: { start: 10, end: 20 } }] }, route: { cluster: a } }
      - { name: regex, match: { prefix: /, headers: [{ name: x-id, safe_regex_match: { regex: "u-[0-9]+" } }] }, route: { cluster: a } }
      - { name: not-exact, match: { prefix: /, headers: [{ name: x-env, exact_match: prod, invert_match: true }] }, route: { cluster: a } }
      - { name: absent, match: { prefix: /, headers: [{ name: x-debug, present_match: false }] }, route: { cluster: a } }
      - { name: rest, match: { prefix: / }, route: { cluster: a } }
"#;

fn header_route(t: &Table, h: &[(&'static str, &'static str)]) -> String {
    t.route("x", "/", None, &headers(h))
        .unwrap()
        .name
        .to_string()
}

#[test]
fn header_matchers_follow_envoy_semantics() {
    let t = table(HEADERS);
    // x-debug present so the "absent" route does not take everything below.
    let d = ("x-debug", "1");
    assert_eq!(
        header_route(&t, &[("x-a", "1"), ("x-b", "prefix"), d]),
        "both"
    );
    assert_eq!(
        header_route(&t, &[("x-a", "1"), d, ("x-env", "prod")]),
        "rest",
        "all matchers must hold"
    );
    assert_eq!(
        header_route(&t, &[("x-n", "15"), d, ("x-env", "prod")]),
        "range"
    );
    assert_eq!(
        header_route(&t, &[("x-n", "20"), d, ("x-env", "prod")]),
        "rest",
        "range end is exclusive"
    );
    assert_eq!(
        header_route(&t, &[("x-n", "abc"), d, ("x-env", "prod")]),
        "rest"
    );
    assert_eq!(
        header_route(&t, &[("x-id", "u-42"), d, ("x-env", "prod")]),
        "regex"
    );
    assert_eq!(
        header_route(&t, &[("x-id", "u-42x"), d, ("x-env", "prod")]),
        "rest"
    );
    assert_eq!(header_route(&t, &[("x-env", "dev"), d]), "not-exact");
    // Envoy: a missing header never matches an inverted value matcher.
    assert_eq!(header_route(&t, &[d]), "rest");
    assert_eq!(header_route(&t, &[("x-env", "prod")]), "absent");
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let t = table(
        r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - { name: joined, match: { prefix: /, headers: [{ name: x-t, exact_match: "a,b" }] }, route: { cluster: a } }
      - { name: rest, match: { prefix: / }, route: { cluster: a } }
"#,
    );
    assert_eq!(header_route(&t, &[("x-t", "a"), ("x-t", "b")]), "joined");
    assert_eq!(header_route(&t, &[("x-t", "a")]), "rest");
}

#[test]
fn weighted_clusters_split_by_weight() {
    let t = table(
        r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - match: { prefix: / }
        route: { weighted_clusters: { clusters: [{ name: a, weight: 90 }, { name: b, weight: 0 }, { name: c, weight: 10 }] } }
"#,
    );
    let route = t.route("x", "/", None, &HeaderMap::new()).unwrap();
    let h = HeaderMap::new();
    // Every point of [0, 100) maps to exactly the right cluster.
    let mut counts = std::collections::HashMap::new();
    for r in 0..100u64 {
        *counts
            .entry(route.pick_cluster(&h, r).unwrap().0.to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&90));
    assert_eq!(counts.get("c"), Some(&10));
    assert_eq!(counts.get("b"), None, "zero weight never picked");
    // And with a seeded RNG the proportions hold within a statistical bound.
    let mut rng = fastrand::Rng::with_seed(7);
    let n = 20_000;
    let c = (0..n)
        .filter(|_| &*route.pick_cluster(&h, rng.u64(..)).unwrap().0 == "c")
        .count();
    let share = c as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.01, "canary share {share}");
}

#[test]
fn cluster_header_reads_the_request() {
    let t = table(
        "virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster_header: x-cluster } }] }]",
    );
    let route = t.route("x", "/", None, &HeaderMap::new()).unwrap();
    assert_eq!(
        &*route
            .pick_cluster(&headers(&[("x-cluster", "d")]), 0)
            .unwrap()
            .0,
        "d"
    );
    let err = route.pick_cluster(&HeaderMap::new(), 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownCluster);
}

#[test]
fn default_timeout_is_envoys_and_zero_disables() {
    let t = table(
        r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - { name: off, match: { prefix: /off }, route: { cluster: a, timeout: 0s } }
      - { name: short, match: { prefix: /short }, route: { cluster: a, timeout: 0.5s } }
      - { name: default, match: { prefix: / }, route: { cluster: a } }
"#,
    );
    let h = HeaderMap::new();
    assert_eq!(t.route("x", "/off", None, &h).unwrap().timeout, None);
    assert_eq!(
        t.route("x", "/short", None, &h).unwrap().timeout,
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        t.route("x", "/", None, &h).unwrap().timeout,
        Some(std::time::Duration::from_secs(15))
    );
}

#[test]
fn grpc_requests_follow_a31_not_the_http_route_timeout() {
    use crate::timeout::limit;
    use std::time::Duration;
    let t = table(
        r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - name: msd
        match: { prefix: /msd }
        route: { cluster: a, max_stream_duration: { max_stream_duration: 3s } }
      - name: capped
        match: { prefix: /capped }
        route:
          cluster: a
          max_stream_duration: { max_stream_duration: 3s, grpc_timeout_header_max: 1s }
      - { name: default, match: { prefix: / }, route: { cluster: a, timeout: 2s } }
"#,
    );
    let grpc = |timeout: Option<&'static str>| {
        let mut h = headers(&[("content-type", "application/grpc")]);
        if let Some(t) = timeout {
            h.insert("grpc-timeout", HeaderValue::from_static(t));
        }
        h
    };
    let secs = |s: u64| Some(Duration::from_secs(s));
    let at =
        |path: &str, h: &HeaderMap| limit(t.route("x", path, None, h).unwrap(), h).map(|l| l.after);
    // No deadline, no max_stream_duration: unlimited (the 2 s HTTP timeout does not apply).
    assert_eq!(at("/", &grpc(None)), None);
    // The caller's deadline is honoured without grpc_timeout_header_max.
    assert_eq!(at("/", &grpc(Some("20S"))), secs(20));
    // max_stream_duration caps gRPC calls; grpc_timeout_header_max replaces it when set.
    assert_eq!(at("/msd", &grpc(None)), secs(3));
    assert_eq!(at("/msd", &grpc(Some("20S"))), secs(3));
    assert_eq!(at("/capped", &grpc(Some("20S"))), secs(1));
    assert_eq!(at("/capped", &grpc(None)), secs(1));
    // Plain HTTP requests keep the route timeout.
    assert_eq!(at("/", &HeaderMap::new()), secs(2));
    assert_eq!(at("/", &headers(&[("grpc-timeout", "20S")])), secs(2));
    // The error says which limit fired: the caller's deadline is not a route timeout.
    use crate::timeout::LimitSource;
    let source = |path: &str, h: &HeaderMap| {
        limit(t.route("x", path, None, h).unwrap(), h).map(|l| (l.source, l.error().to_string()))
    };
    let (src, text) = source("/", &grpc(Some("20S"))).unwrap();
    assert_eq!(src, LimitSource::Deadline);
    assert_eq!(text, "the caller's deadline passed (grpc-timeout of 20s)");
    let (src, text) = source("/msd", &grpc(Some("20S"))).unwrap();
    assert_eq!(src, LimitSource::StreamDuration);
    assert_eq!(text, "the route's max_stream_duration of 3s elapsed");
    let (src, text) = source("/", &HeaderMap::new()).unwrap();
    assert_eq!(src, LimitSource::Route);
    assert_eq!(text, "route timeout of 2s elapsed");
}

#[test]
fn filter_overrides_resolve_route_over_virtual_host_over_listener() {
    use mesh_core::config::listener::HttpFilter;
    let rc = serde_saphyr_from(
        r#"virtual_hosts:
  - name: v
    domains: ["*"]
    typed_per_filter_config:
      rl: { local_ratelimit: { token_bucket: { max_tokens: 1, fill_interval: 1s } } }
    routes:
      - match: { prefix: /own }
        typed_per_filter_config:
          f: { fault: { abort: { http_status: 503 } } }
          rl: { disabled: true }
        route: { cluster: a }
      - match: { prefix: /off }
        typed_per_filter_config:
          f: { disabled: true }
        route: { cluster: a }
      - match: { prefix: / }
        route: { cluster: a }"#,
    );
    let listener_fault = mesh_core::policy::HttpFault {
        delay: Some(mesh_core::policy::FaultDelay {
            fixed_delay: Some(std::time::Duration::from_secs(1)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let filters = [
        HttpFilter {
            name: "f".into(),
            fault: Some(listener_fault),
            local_ratelimit: None,
        },
        HttpFilter {
            name: "rl".into(),
            fault: None,
            local_ratelimit: Some(Default::default()),
        },
    ];
    let t = Table::compile(&rc, &filters).unwrap();
    let at = |p: &str| t.route("x", p, None, &HeaderMap::new()).unwrap().clone();
    let own = at("/own");
    assert!(
        format!("{:?}", own.fault).contains("Http(503)"),
        "{:?}",
        own.fault
    );
    assert!(own.rate_limit.is_none(), "disabled on the route");
    assert!(at("/off").fault.is_none());
    let rest = at("/");
    assert!(
        format!("{:?}", rest.fault).contains("Fixed(1s)"),
        "listener's"
    );
    assert!(rest.rate_limit.is_some(), "the virtual host's bucket");
    assert!(Arc::ptr_eq(
        rest.rate_limit.as_ref().unwrap(),
        at("/off").rate_limit.as_ref().unwrap()
    ));
}

#[test]
fn query_grpc_and_runtime_fraction_matchers() {
    let t = table(
        r#"virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - match: { prefix: /, query_parameters: [{ name: debug, string_match: { exact: "1" } }] }
        route: { cluster: a }
      - match: { prefix: /, query_parameters: [{ name: trace }] }
        route: { cluster: b }
      - match: { prefix: /, grpc: {} }
        route: { cluster: c }
      - match: { prefix: /, runtime_fraction: { default_value: { numerator: 30 } } }
        route: { cluster: d }
      - match: { prefix: / }
        route: { cluster: a }"#,
    );
    let cluster = |q: Option<&str>, h: &HeaderMap| {
        let r = t.route("x", "/p", q, h).unwrap();
        r.pick_cluster(h, 0).unwrap().0.to_string()
    };
    let none = HeaderMap::new();
    fastrand::seed(3);
    assert_eq!(cluster(Some("x=2&debug=1"), &none), "a");
    assert_eq!(cluster(Some("trace"), &none), "b");
    assert_eq!(cluster(Some("debug=2&trace=0"), &none), "b");
    let grpc = headers(&[("content-type", "application/grpc")]);
    assert_eq!(cluster(None, &grpc), "c");
    let d = (0..2000).filter(|_| cluster(None, &none) == "d").count();
    // 30% of 2000: sd ≈ 20.5; ±4 sd.
    assert!((518..=682).contains(&d), "{d}");
}

#[test]
fn plain_routes_are_those_without_policy_layer_work() {
    let t = table(
        r#"
virtual_hosts:
  - name: v
    domains: ["*"]
    routes:
      - { match: { prefix: /plain }, route: { cluster: a, timeout: 2s } }
      - { match: { prefix: /no-retries }, route: { cluster: a, retry_policy: { retry_on: 5xx, num_retries: 0 } } }
      - { match: { prefix: /retries }, route: { cluster: a, retry_policy: { retry_on: 5xx, num_retries: 2 } } }
      - { match: { prefix: /rewrite }, route: { cluster: a, prefix_rewrite: /v2 } }
      - { match: { prefix: /mirror }, route: { cluster: a, request_mirror_policies: [{ cluster: b }] } }
      - { match: { prefix: /headers }, route: { cluster: a }, request_headers_to_add: [{ header: { key: x-a, value: "1" } }] }
      - { match: { prefix: /direct }, direct_response: { status: 204 } }
"#,
    );
    let plain = |path: &str| {
        t.route("any", path, None, &HeaderMap::new())
            .unwrap()
            .is_plain()
    };
    assert!(plain("/plain"), "a timeout alone keeps the lean path");
    assert!(plain("/no-retries"), "a retry policy that cannot retry");
    for path in ["/retries", "/rewrite", "/mirror", "/headers", "/direct"] {
        assert!(!plain(path), "{path} needs its policy layer");
    }
}
