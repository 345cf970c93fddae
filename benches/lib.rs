//! Benchmarks for the mesh (criterion micro benches in this folder; see docs/benchmarks.md).
//!
//! Shared helpers for the bench targets live here.

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
