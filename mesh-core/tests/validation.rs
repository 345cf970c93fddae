//! Config validation: good documents pass, bad ones fail with the exact field path.

use mesh_core::{ConfigError, MeshConfig};
use std::time::Duration;

const GOOD: &str = r#"
listeners:
  - name: web
    rds: web-routes
  - name: greeter
    route_config:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: { prefix: "/" }
              route: { cluster: greeter, timeout: 2s }
route_configs:
  - name: web-routes
    virtual_hosts:
      - name: web
        domains: ["web", "web:80", "*.web.svc"]
        routes:
          - name: canary
            match:
              prefix: /
              headers:
                - { name: x-canary, exact_match: "1" }
                - { name: x-id, safe_regex_match: { regex: "[0-9]+" } }
                - { name: x-n, range_match: { start: 1, end: 10 } }
                - { name: x-s, string_match: { prefix: ab, ignore_case: true } }
                - { name: x-debug, present_match: true, invert_match: true }
            route: { cluster: canary }
          - match: { safe_regex: { regex: "/api/v[0-9]+/.*" } }
            route:
              weighted_clusters:
                clusters: [{ name: stable, weight: 90 }, { name: canary, weight: 10 }]
                total_weight: 100
          - match: { path: /exact, case_sensitive: false }
            route: { cluster_header: x-cluster }
clusters:
  - name: greeter
    type: STATIC
    protocol: HTTP2
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: greeter
      endpoints:
        - lb_endpoints: [{ address: "127.0.0.1:50051" }]
  - { name: stable }
  - { name: canary, type: EDS, eds_service_name: canary-eds }
endpoints:
  - cluster_name: stable
    endpoints:
      - locality: { zone: a }
        load_balancing_weight: 3
        lb_endpoints:
          - { address: "10.0.0.1:80", health_status: HEALTHY, load_balancing_weight: 2 }
          - { address: "[::1]:80" }
      - priority: 1
        lb_endpoints: [{ address: "10.0.0.2:80", health_status: DRAINING }]
"#;

fn errors(yaml: &str) -> Vec<String> {
    match MeshConfig::from_yaml(yaml) {
        Ok(_) => panic!("expected {yaml} to be rejected"),
        Err(ConfigError::Parse(e)) => panic!("expected validation errors, got parse error {e}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn good_document_parses_with_defaults() {
    let config = MeshConfig::from_yaml(GOOD).unwrap();
    assert_eq!(config.listeners.len(), 2);
    let stable = &config.clusters[1];
    assert_eq!(stable.connect_timeout, std::time::Duration::from_secs(5));
    assert_eq!(stable.protocol, mesh_core::Protocol::Http1);
    assert_eq!(config.clusters[0].connect_timeout.as_millis(), 250);
    assert_eq!(config.endpoints[0].endpoints[1].priority, 1);
}

#[test]
fn dump_round_trips() {
    let config = MeshConfig::from_yaml(GOOD).unwrap();
    let again = MeshConfig::from_yaml(&config.to_yaml()).unwrap();
    assert_eq!(config, again);
}

#[test]
fn bad_regex_names_the_field() {
    let yaml = GOOD.replace(r#""[0-9]+""#, r#""[0-9""#);
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "route_configs[0].virtual_hosts[0].routes[0].match.headers[1].safe_regex_match.regex: invalid regex \"[0-9\""
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let yaml = r#"
listeners:
  - name: a
    rds: nope
  - name: b
  - name: a
    rds: r
route_configs:
  - name: r
    virtual_hosts:
      - name: v
        domains: ["*.x.*", "ok"]
        routes:
          - match: { prefix: /, path: /x }
            route: { cluster: c }
          - match: { path: nope, headers: [{ name: "bad header", exact_match: a, prefix_match: b }] }
            route: { cluster: missing }
          - match: { prefix: / }
          - match: { prefix: /, headers: [{ name: n, range_match: { start: 5, end: 5 } }] }
            route:
              weighted_clusters: { clusters: [{ name: c, weight: 1 }], total_weight: 7 }
      - name: v
        domains: ["ok"]
clusters:
  - { name: c, connect_timeout: 0s }
  - { name: s, type: STATIC }
  - name: e
    load_assignment: { cluster_name: e }
endpoints:
  - cluster_name: c
    endpoints:
      - priority: 2
        load_balancing_weight: 0
        lb_endpoints: [{ address: "1.2.3.4:0", load_balancing_weight: 0 }]
"#;
    let errs = errors(yaml);
    let expected = [
        "listeners[2]: duplicate name \"a\" (first at listeners[0])",
        "listeners[0].rds: unknown route config \"nope\"",
        "listeners[1]: exactly one of rds and route_config must be set",
        "route_configs[0].virtual_hosts[0].domains[0]: domain \"*.x.*\": only one wildcard, at the start or the end, is allowed",
        "route_configs[0].virtual_hosts[0].routes[0].match: exactly one of prefix, path, safe_regex, path_separated_prefix must be set",
        "route_configs[0].virtual_hosts[0].routes[1].match.path: must start with '/'",
        "route_configs[0].virtual_hosts[0].routes[1].match.headers[0].name: must be a valid, non-empty header name",
        "route_configs[0].virtual_hosts[0].routes[1].match.headers[0]: at most one match specifier may be set",
        "route_configs[0].virtual_hosts[0].routes[2]: exactly one of route, redirect and direct_response must be set",
        "route_configs[0].virtual_hosts[0].routes[3].match.headers[0].range_match: start must be less than end",
        "route_configs[0].virtual_hosts[0].routes[3].route.weighted_clusters.total_weight: is 7 but the weights add up to 1",
        "route_configs[0].virtual_hosts[1].name: duplicate virtual host \"v\"",
        "route_configs[0].virtual_hosts[1].domains[0]: domain \"ok\" is used by more than one virtual host",
        "route_configs[0].virtual_hosts[0].routes[1].route.cluster: unknown cluster \"missing\"",
        "clusters[0].connect_timeout: must be greater than 0",
        "clusters[1].load_assignment: is required for a STATIC cluster",
        "clusters[2].load_assignment: is only for STATIC clusters; EDS clusters take endpoints from `endpoints`",
        "endpoints[0].endpoints[0].load_balancing_weight: must be at least 1",
        "endpoints[0].endpoints[0].lb_endpoints[0].load_balancing_weight: must be at least 1",
        "endpoints[0].endpoints[0].lb_endpoints[0].address: port must not be 0",
        "endpoints[0].endpoints: priorities must be contiguous from 0, found {2}",
    ];
    let mut got = errs.clone();
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unknown_fields_and_bad_types_are_parse_errors() {
    for yaml in [
        "clusters: [{ name: a, conect_timeout: 1s }]",
        "clusters: [{ name: a, connect_timeout: soon }]",
        "clusters: [{ name: a, lb_policy: FASTEST }]",
        "endpoints: [{ cluster_name: a, endpoints: [{ lb_endpoints: [{ address: not-an-ip }] }] }]",
        "listeners: {}",
    ] {
        match MeshConfig::from_yaml(yaml) {
            Err(ConfigError::Parse(_)) => {}
            other => panic!("{yaml}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn parse_errors_teach() {
    let parse = |yaml: &str| match MeshConfig::from_yaml_named(yaml, "/etc/mesh.yaml") {
        Err(ConfigError::Parse(e)) => e,
        other => panic!("{yaml}: expected a parse error, got {other:?}"),
    };
    // A near miss of a field name gets the field it probably meant; the file is named.
    let e = parse("clusters: [{ name: a, conect_timeout: 1s }]");
    assert!(e.contains("did you mean `connect_timeout`?"), "{e}");
    assert!(
        e.contains("/etc/mesh.yaml") && !e.contains("<input>"),
        "{e}"
    );
    assert_eq!(
        e.matches("expected one of").count(),
        1,
        "the expected fields are listed once: {e}"
    );
    assert!(
        e.contains("^ unknown field `conect_timeout`"),
        "the snippet still points: {e}"
    );
    // Nothing close: no guess.
    let e = parse("clusters: [{ name: a, zzzzzzzz: 1 }]");
    assert!(!e.contains("did you mean"), "{e}");
    // A hostname where an ip:port goes says so and points at DNS clusters.
    let yaml = "endpoints: [{ cluster_name: a, endpoints: [{ lb_endpoints: [{ address: \"localhost:8081\" }] }] }]";
    let e = parse(yaml);
    assert!(
        e.contains("address \"localhost:8081\" is not a socket address"),
        "{e}"
    );
    assert!(e.contains("STRICT_DNS or LOGICAL_DNS"), "{e}");
    assert!(e.contains("hostname: localhost, port: 8081"), "{e}");
    let e = parse(
        "endpoints: [{ cluster_name: a, endpoints: [{ lb_endpoints: [{ address: \"10.0.0.1\" }] }] }]",
    );
    assert!(e.contains("the port is missing"), "{e}");
}

#[test]
fn upstream_tls_names_known_providers_and_verifies_servers() {
    let good = r#"
certificate_providers:
  default:
    file_watcher: { certificate_file: c.pem, private_key_file: k.pem, ca_certificate_file: ca.pem }
clusters:
  - name: a
    transport_socket:
      sni: a.example
      common_tls_context:
        tls_certificate_provider_instance: { instance_name: default }
        validation_context:
          ca_certificate_provider_instance: { instance_name: default }
          match_subject_alt_names: [{ prefix: "spiffe://cluster.local/ns/a/", ignore_case: true }]
          match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: "spiffe://td/x" } }]
"#;
    let config = MeshConfig::from_yaml(good).unwrap();
    assert!(config.clusters[0].transport_socket.is_some());
    assert_eq!(MeshConfig::from_yaml(&config.to_yaml()).unwrap(), config);

    // Unknown provider, no validation context, an empty prefix (matches everything).
    let errs = errors(
        r#"
certificate_providers:
  default: { file_watcher: { ca_certificate_file: ca.pem } }
clusters:
  - name: a
    transport_socket:
      common_tls_context:
        tls_certificate_provider_instance: { instance_name: other }
        validation_context:
          ca_certificate_provider_instance: { instance_name: default }
          match_subject_alt_names: [{ prefix: "" }]
  - name: b
    transport_socket: { common_tls_context: {} }
"#,
    );
    assert_eq!(
        errs,
        [
            "clusters[0].transport_socket.common_tls_context.validation_context.match_subject_alt_names[0]: prefix, suffix and contains must not be empty",
            "clusters[0].transport_socket: unknown certificate provider instance \"other\" (configured: [\"default\"])",
            "clusters[1].transport_socket.common_tls_context.validation_context: must be set: a TLS cluster verifies its endpoints' certificates",
        ]
    );
}

#[test]
fn certificate_providers_need_a_file_and_the_key_with_the_certificate() {
    let errs = errors(
        r#"
certificate_providers:
  a: { file_watcher: { certificate_file: c.pem } }
  b: { file_watcher: { refresh_interval: 0s } }
  c: { file_watcher: { ca_certificate_file: ca.pem }, external: {} }
  d: { inline: { certificate_chain: "-----BEGIN CERTIFICATE-----" } }
"#,
    );
    assert_eq!(
        errs,
        [
            "certificate_providers.a.file_watcher: certificate_file and private_key_file must be given together",
            "certificate_providers.b.file_watcher: names no file (a certificate, roots or a SPIFFE bundle map is needed)",
            "certificate_providers.b.file_watcher.refresh_interval: must be greater than 0",
            "certificate_providers.c: exactly one of file_watcher, external and inline must be set",
            "certificate_providers.d.inline: certificate_chain and private_key must be given together",
        ]
    );
}

#[test]
fn inline_keys_never_show_in_dumps_or_debug() {
    let p: mesh_core::config::tls::CertificateProvider = serde_saphyr::from_str(
        "inline: { certificate_chain: CHAIN, private_key: \"-----BEGIN PRIVATE KEY-----\" }",
    )
    .unwrap();
    let dumped = serde_saphyr::to_string(&p).unwrap();
    assert!(
        dumped.contains("CHAIN") && dumped.contains("[redacted]") && !dumped.contains("PRIVATE"),
        "{dumped}"
    );
    assert!(!format!("{p:?}").contains("PRIVATE KEY"), "{p:?}");
}

#[test]
fn traffic_policy_parses_in_envoy_shapes() {
    let yaml = r#"
clusters:
  - name: a
    circuit_breakers:
      thresholds:
        - { max_requests: 10, retry_budget: { budget_percent: { value: 25.0 }, min_retry_concurrency: 2 } }
    outlier_detection: { consecutive_5xx: 3, interval: 1s, base_ejection_time: 2s }
  - name: shadow
listeners:
  - name: l
    http_filters:
      - name: envoy.filters.http.fault
        fault:
          abort: { http_status: 503, percentage: { numerator: 50 } }
          delay: { fixed_delay: 0.1s, percentage: { numerator: 10, denominator: TEN_THOUSAND } }
      - name: rl
        local_ratelimit:
          token_bucket: { max_tokens: 10, fill_interval: 1s }
          filter_enabled: { numerator: 100 }
          filter_enforced: { numerator: 100 }
    route_config:
      request_headers_to_add: [{ header: { key: x-rc, value: "1" } }]
      virtual_hosts:
        - name: v
          domains: ["*"]
          retry_policy: { retry_on: "5xx,unavailable", num_retries: 2 }
          routes:
            - match: { prefix: /old, query_parameters: [{ name: q, string_match: { exact: "1" } }] }
              redirect: { path_redirect: /new, response_code: FOUND }
            - match: { path: /health, grpc: {} }
              direct_response: { status: 200, body: { inline_string: ok } }
            - match: { prefix: /api, runtime_fraction: { default_value: { numerator: 50 } } }
              typed_per_filter_config:
                envoy.filters.http.fault: { disabled: true }
              route:
                cluster: a
                prefix_rewrite: /v2
                retry_policy:
                  retry_on: "5xx,retriable-status-codes"
                  retriable_status_codes: [409]
                  per_try_timeout: 0.5s
                  retry_back_off: { base_interval: 0.01s }
                  retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
                hedge_policy: { hedge_on_per_try_timeout: true }
                request_mirror_policies: [{ cluster: shadow }]
                max_stream_duration: { grpc_timeout_header_max: 0s }
"#;
    let config = MeshConfig::from_yaml(yaml).unwrap();
    let cb = config.clusters[0].circuit_breakers.as_ref().unwrap();
    assert_eq!(cb.default_priority().unwrap().max_requests, Some(10));
    let vh = &config.listeners[0]
        .route_config
        .as_ref()
        .unwrap()
        .virtual_hosts[0];
    let retry = vh.routes[2]
        .route
        .as_ref()
        .unwrap()
        .retry_policy
        .as_ref()
        .unwrap();
    assert!(retry.avoids_previous_hosts());
    assert_eq!(
        retry.backoff(),
        (Duration::from_millis(10), Duration::from_millis(100))
    );
    assert_eq!(vh.retry_policy.as_ref().unwrap().max_retries(), 2);
    // The document round-trips through its own dump format.
    assert_eq!(MeshConfig::from_yaml(&config.to_yaml()).unwrap(), config);
}

#[test]
fn traffic_policy_problems_name_their_fields() {
    let yaml = r#"
clusters:
  - name: a
    circuit_breakers:
      thresholds: [{ retry_budget: { budget_percent: { value: 120.0 } } }, {}]
    outlier_detection: { max_ejection_percent: 101, interval: 0s }
listeners:
  - name: l
    http_filters:
      - name: f
        fault: { abort: { http_status: 99, grpc_status: 14 }, delay: {} }
      - name: f
        local_ratelimit: { token_bucket: { max_tokens: 0, fill_interval: 0.01s } }
    route_config:
      virtual_hosts:
        - name: v
          domains: ["*"]
          routes:
            - match: { prefix: / }
              route:
                cluster: a
                prefix_rewrite: /x
                regex_rewrite: { pattern: { regex: "(" }, substitution: y }
                retry_policy: { retry_on: "5xx,bogus", retriable_status_codes: [99], per_try_timeout: 0s }
            - match: { prefix: / }
              redirect: { path_redirect: /a, prefix_rewrite: /b }
            - match: { prefix: / }
              direct_response: { status: 99 }
              request_headers_to_add: [{ header: { key: ":path", value: x } }]
"#;
    let mut errs = errors(yaml);
    errs.sort();
    let r = "listeners[0].route_config.virtual_hosts[0].routes";
    let mut want = vec![
        "clusters[0].circuit_breakers.thresholds[0].retry_budget.budget_percent.value: must be between 0 and 100".to_owned(),
        "clusters[0].circuit_breakers.thresholds[1].priority: more than one entry for Default".into(),
        "clusters[0].outlier_detection.max_ejection_percent: must be at most 100".into(),
        "clusters[0].outlier_detection.interval: must be greater than 0".into(),
        "listeners[0].http_filters[0].fault.delay: exactly one of fixed_delay and header_delay must be set".into(),
        "listeners[0].http_filters[0].fault.abort: exactly one of http_status, grpc_status and header_abort must be set".into(),
        "listeners[0].http_filters[0].fault.abort.http_status: must be in [200, 600)".into(),
        "listeners[0].http_filters[1].name: duplicate filter \"f\"".into(),
        "listeners[0].http_filters[1].local_ratelimit.token_bucket.max_tokens: must be greater than 0".into(),
        "listeners[0].http_filters[1].local_ratelimit.token_bucket.fill_interval: must be at least 50ms (Envoy's minimum)".into(),
        format!("{r}[0].route: at most one of prefix_rewrite and regex_rewrite may be set"),
        format!("{r}[0].route.regex_rewrite.pattern.regex: invalid regex \"(\": unclosed group"),
        format!("{r}[0].route.retry_policy.retry_on: unknown retry condition \"bogus\""),
        format!("{r}[0].route.retry_policy.retriable_status_codes[0]: 99 is not an HTTP status"),
        format!("{r}[0].route.retry_policy.per_try_timeout: must be greater than 0 (leave it unset for none)"),
        format!("{r}[1].redirect: at most one of path_redirect, prefix_rewrite and regex_rewrite may be set"),
        format!("{r}[2].direct_response.status: must be in [200, 600)"),
        format!("{r}[2].request_headers_to_add[0].header.key: \":path\" cannot be mutated"),
    ];
    want.sort();
    assert_eq!(errs, want);
}

#[test]
fn load_balancing_settings_are_checked() {
    let ok = r#"
clusters:
  - name: a
    lb_policy: MAGLEV
    maglev_lb_config: { table_size: 65537 }
    common_lb_config: { healthy_panic_threshold: { value: 25.0 }, locality_weighted_lb_config: {} }
  - { name: b, lb_policy: PEAK_EWMA, peak_ewma_lb_config: { decay: 5s, default_rtt: 0.01s } }
  - { name: c, lb_policy: LEAST_REQUEST, least_request_lb_config: { choice_count: 3 } }
  - name: d
    lb_policy: CLIENT_SIDE_WEIGHTED_ROUND_ROBIN
    client_side_weighted_round_robin_lb_config:
      blackout_period: 0s
      weight_update_period: 0.01s
      error_utilization_penalty: 2.5
      metric_names_for_computing_utilization: [named_metrics.gpu]
  - name: e
    lb_policy: CLIENT_SIDE_WEIGHTED_ROUND_ROBIN
    client_side_weighted_round_robin_lb_config:
      enable_oob_load_report: true
      oob_reporting_period: 0.25s
  - name: f
    lb_policy: CLIENT_SIDE_WEIGHTED_ROUND_ROBIN
    client_side_weighted_round_robin_lb_config: { enable_oob_load_report: true, oob_reporting_period: 0s }
listeners:
  - name: l
    route_config:
      virtual_hosts:
        - name: v
          domains: ["*"]
          routes:
            - match: { prefix: / }
              route:
                cluster: a
                hash_policy:
                  - { header: { header_name: x-user }, terminal: true }
                  - { cookie: { name: session } }
"#;
    let config = MeshConfig::from_yaml(ok).unwrap();
    let wrr = config.clusters[3]
        .client_side_weighted_round_robin_lb_config
        .as_ref()
        .unwrap();
    assert_eq!(
        wrr.periods(),
        (
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(180),
            std::time::Duration::from_millis(100)
        ),
        "defaults apply and the update period is raised to 100ms"
    );
    assert_eq!(wrr.error_utilization_penalty.map(|p| p.0), Some(2.5));
    let oob = |i: usize| {
        config.clusters[i]
            .client_side_weighted_round_robin_lb_config
            .as_ref()
            .unwrap()
            .oob_period()
    };
    assert_eq!(oob(3), None, "per-response reports unless enabled");
    assert_eq!(oob(4), Some(std::time::Duration::from_millis(250)));
    assert_eq!(
        oob(5),
        Some(std::time::Duration::from_secs(10)),
        "0 is the default"
    );
    let bad = r#"
clusters:
  - { name: a, lb_policy: MAGLEV, maglev_lb_config: { table_size: 65536 } }
  - { name: b, lb_policy: RING_HASH, ring_hash_lb_config: { minimum_ring_size: 10, maximum_ring_size: 5 } }
  - name: c
    lb_policy: CLIENT_SIDE_WEIGHTED_ROUND_ROBIN
    client_side_weighted_round_robin_lb_config:
      error_utilization_penalty: -1
      metric_names_for_computing_utilization: [""]
listeners:
  - name: l
    route_config:
      virtual_hosts:
        - name: v
          domains: ["*"]
          routes:
            - match: { prefix: / }
              route: { cluster: a, hash_policy: [{ header: { header_name: x }, cookie: { name: y } }] }
"#;
    let mut errs = errors(bad);
    errs.sort();
    assert_eq!(
        errs,
        [
            "clusters[0].maglev_lb_config.table_size: 65536 must be a prime below 5000011",
            "clusters[1].ring_hash_lb_config: need 1 <= minimum_ring_size <= maximum_ring_size <= 8388608",
            "clusters[2].client_side_weighted_round_robin_lb_config.error_utilization_penalty: -1 must be a finite number >= 0",
            "clusters[2].client_side_weighted_round_robin_lb_config.metric_names_for_computing_utilization[0]: must not be empty",
            "listeners[0].route_config.virtual_hosts[0].routes[0].route.hash_policy[0]: exactly one of header, cookie, query_parameter must be set",
        ]
    );
}

#[test]
fn system_roots_are_for_clusters_with_a_server_name() {
    // gRFC A82: the OS roots verify a cluster's server; `sni` (or a SAN matcher) names it.
    let good = r#"
clusters:
  - name: api
    transport_socket:
      sni: api.example.com
      common_tls_context: { validation_context: { system_root_certs: {} } }
"#;
    let config = MeshConfig::from_yaml(good).unwrap();
    let v = config.clusters[0]
        .transport_socket
        .as_ref()
        .unwrap()
        .common_tls_context
        .validation_context
        .as_ref()
        .unwrap();
    assert!(v.uses_system_roots());
    assert_eq!(MeshConfig::from_yaml(&config.to_yaml()).unwrap(), config);

    let errs = errors(
        r#"
certificate_providers:
  default: { file_watcher: { certificate_file: c.pem, private_key_file: k.pem, ca_certificate_file: ca.pem } }
clusters:
  - name: anyone
    transport_socket: { common_tls_context: { validation_context: { system_root_certs: {} } } }
servers:
  - name: s
    transport_socket:
      common_tls_context:
        tls_certificate_provider_instance: { instance_name: default }
        validation_context: { system_root_certs: {} }
"#,
    );
    assert_eq!(
        errs,
        [
            "clusters[0].transport_socket.sni: system_root_certs needs sni or SAN matchers (otherwise any publicly trusted certificate would pass)",
            "servers[0].transport_socket.common_tls_context.validation_context.system_root_certs: is not supported on servers (gRFC A82): client certificates are verified against a provider's roots",
        ]
    );
}

#[test]
fn inbound_route_overrides_name_the_servers_filters() {
    let errs = errors(
        r#"
servers:
  - name: s
    http_filters:
      - name: rbac
        rbac: {}
      - name: jwt
        jwt_authn: {}
    route_config:
      virtual_hosts:
        - name: v
          domains: []
          routes:
            - match: { prefix: / }
              typed_per_filter_config:
                nope: { disabled: true }
                rbac: { jwt_authn: { disabled: true } }
                jwt: { jwt_authn: { requirement_name: strict } }
"#,
    );
    assert_eq!(
        errs,
        [
            "servers[0].http_filters[1]: the jwt_authn filter must come before the RBAC and fault filters",
            "servers[0].route_config.virtual_hosts[0].domains: must name at least one domain",
            "servers[0].route_config.virtual_hosts[0].routes[0].typed_per_filter_config.jwt.jwt_authn.requirement_name: no requirement \"strict\" in the filter's requirement_map",
            "servers[0].route_config.virtual_hosts[0].routes[0].typed_per_filter_config.nope: no HTTP filter named \"nope\" on this server",
            "servers[0].route_config.virtual_hosts[0].routes[0].typed_per_filter_config.rbac.jwt_authn: \"rbac\" is not the JWT filter",
        ]
    );
}
