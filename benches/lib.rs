//! Benchmarks for the mesh (criterion micro benches in this folder; see docs/benchmarks.md).
//!
//! Shared helpers for the bench targets live here.

pub mod harness;
pub mod scale;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

/// An in-memory inner service that answers at once: isolates a layer's own cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Instant;

impl<B> tower_service::Service<http::Request<B>> for Instant {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

/// A route config with `n` routes on one virtual host, mixing prefix, header and regex
/// matches; the last route is the catch-all the benched request hits.
pub fn routes_yaml(n: usize) -> String {
    let mut routes = String::new();
    for i in 0..n.saturating_sub(1) {
        let m = match i % 3 {
            0 => format!("{{ prefix: /svc{i}/ }}"),
            1 => format!("{{ prefix: /, headers: [{{ name: x-route, exact_match: r{i} }}] }}"),
            _ => format!("{{ safe_regex: {{ regex: \"/api/v{i}/[a-z]+\" }} }}"),
        };
        routes.push_str(&format!(
            "        - {{ match: {m}, route: {{ cluster: c }} }}\n"
        ));
    }
    routes.push_str("        - { name: last, match: { prefix: / }, route: { cluster: c } }\n");
    format!(
        "clusters: [{{ name: c }}]\nlisteners:\n  - name: web\n    route_config:\n      virtual_hosts:\n        - name: web\n          domains: [\"web\", \"*.web.svc\"]\n          routes:\n{}",
        routes.replace("        - {", "            - {")
    )
}

/// A route config with `n` routes on one virtual host and no catch-all, cycling through the
/// match kinds Istio writes: a path prefix, an exact path, an exact header under `/`, a regex.
/// [`request_for_route`] builds a request that route `i` (and no earlier one) takes.
pub fn mixed_routes_yaml(n: usize) -> String {
    let mut routes = String::new();
    for i in 0..n {
        let m = match i % 4 {
            0 => format!("{{ prefix: /svc{i}/ }}"),
            1 => format!("{{ path: /exact{i} }}"),
            2 => format!("{{ prefix: /, headers: [{{ name: x-route, exact_match: r{i} }}] }}"),
            _ => format!("{{ safe_regex: {{ regex: \"/api/v{i}/[a-z]+\" }} }}"),
        };
        routes.push_str(&format!(
            "            - {{ name: r{i}, match: {m}, route: {{ cluster: c }} }}\n"
        ));
    }
    format!(
        "clusters: [{{ name: c }}]\nlisteners:\n  - name: web\n    route_config:\n      virtual_hosts:\n        - name: web\n          domains: [\"web\"]\n          routes:\n{routes}"
    )
}

/// A request for [`mixed_routes_yaml`]'s route `i`; `None`: one that no route takes.
pub fn request_for_route(i: Option<usize>) -> http::Request<()> {
    let (path, header) = match i {
        None => ("/nothing/here".to_owned(), "none".to_owned()),
        Some(i) => match i % 4 {
            0 => (format!("/svc{i}/x"), "none".to_owned()),
            1 => (format!("/exact{i}"), "none".to_owned()),
            2 => ("/anything".to_owned(), format!("r{i}")),
            _ => (format!("/api/v{i}/abc"), "none".to_owned()),
        },
    };
    http::Request::get(path)
        .header("x-route", header)
        .body(())
        .expect("a valid request")
}

/// An in-memory inner service answering with the mesh's response type, for the policy layers.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstantMesh;

impl<B> tower_service::Service<http::Request<B>> for InstantMesh {
    type Response = http::Response<mesh_tower::MeshBody>;
    type Error = mesh_tower::MeshError;
    type Future = Ready<Result<Self::Response, mesh_tower::MeshError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), mesh_tower::MeshError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        ready(Ok(http::Response::new(mesh_tower::MeshBody::empty())))
    }
}

/// One route with every policy layer configured but not firing (no fault drawn, bucket never
/// empty, no retry needed): the cost a production route pays on every request.
pub const POLICY_YAML: &str = r#"
clusters: [{ name: c }]
listeners:
  - name: web
    http_filters:
      - name: envoy.filters.http.fault
        fault: { abort: { http_status: 503, percentage: { numerator: 0 } } }
      - name: rl
        local_ratelimit:
          token_bucket: { max_tokens: 1000000000, fill_interval: 1s }
          filter_enabled: { numerator: 100 }
          filter_enforced: { numerator: 100 }
    route_config:
      request_headers_to_add: [{ header: { key: x-mesh, value: "1" } }]
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - match: { prefix: / }
              response_headers_to_add: [{ header: { key: x-served, value: mesh } }]
              route:
                cluster: c
                prefix_rewrite: /v2
                retry_policy: { retry_on: "5xx,reset,connect-failure", num_retries: 2 }
"#;

/// The same route with no policy at all: the bare route → cluster stack.
pub const BARE_YAML: &str = r#"
clusters: [{ name: c }]
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - match: { prefix: / }
              route: { cluster: c }
"#;
