//! Config validation: good documents pass, bad ones fail with the exact field path.

use mesh_core::{ConfigError, MeshConfig};

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
        "route_configs[0].virtual_hosts[0].routes[2].route: a route action is required",
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
fn unenforced_policies_are_refused_not_ignored() {
    let yaml = r#"
clusters:
  - name: a
    circuit_breakers: { max_requests: 10 }
listeners:
  - name: l
    route_config:
      virtual_hosts:
        - name: v
          domains: ["*"]
          routes:
            - match: { prefix: / }
              route: { cluster: a, retry_policy: { retry_on: 5xx } }
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("clusters[0].circuit_breakers: is not supported yet"))
    );
    assert!(errs.iter().any(|e| e
        .starts_with("listeners[0].route_config.virtual_hosts[0].routes[0].route.retry_policy: is not supported yet")));
}
