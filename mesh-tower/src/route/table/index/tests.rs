//! The index against the scan it replaces: seeded random route configs and requests, the
//! same route (or none) from both, every time.

use super::super::Table;
use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::RouteConfig;

const SEGMENTS: &[&str] = &["/a", "/ab", "/A", "/api", "/v1", "/x.y", "/", "/api/", "/b"];
const VALUES: &[&str] = &["1", "2", "3", "10", "x"];

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn random_path(rng: &mut fastrand::Rng) -> String {
    let mut p = String::new();
    for _ in 0..rng.usize(0..4) {
        p.push_str(pick(rng, SEGMENTS));
    }
    if rng.u8(..4) == 0 {
        p = p.to_ascii_uppercase();
    }
    p
}

/// One route's `match` as YAML flow mapping.
fn random_match(rng: &mut fastrand::Rng) -> String {
    let mut path = random_path(rng);
    let path = match rng.u8(..8) {
        0..=2 => format!("prefix: \"{path}\""),
        3 | 4 => {
            if path.is_empty() {
                path.push('/');
            }
            format!("path: \"{path}\"")
        }
        5 => {
            if !path.starts_with('/') || path.ends_with('/') {
                path = format!("/p{}", path.trim_end_matches('/'));
            }
            format!("path_separated_prefix: \"{path}\"")
        }
        _ => {
            let re = match rng.u8(..4) {
                0 => format!("{}.*", regex::escape(&path)),
                1 => "/[a-z]+".to_owned(),
                2 => "/api/v[0-9]+(/.*)?".to_owned(),
                _ => format!(".*{}", regex::escape(&path)),
            };
            format!("safe_regex: {{ regex: '{re}' }}")
        }
    };
    let case = if rng.u8(..4) == 0 {
        ", case_sensitive: false"
    } else {
        ""
    };
    let mut headers = Vec::new();
    // A quarter are Istio-like header routes under `/`, so lists get header buckets.
    let path = if rng.u8(..4) == 0 {
        headers.push(format!(
            "{{ name: x-a, exact_match: \"{}\" }}",
            pick(rng, VALUES)
        ));
        "prefix: \"/\"".to_owned()
    } else {
        path
    };
    for _ in 0..rng.usize(0..3) {
        let name = if rng.bool() { "x-a" } else { "x-b" };
        let v = pick(rng, VALUES);
        let m = match rng.u8(..6) {
            0..=2 => format!("exact_match: \"{v}\""),
            3 => format!("prefix_match: \"{v}\""),
            4 => "present_match: true".to_owned(),
            _ => format!("exact_match: \"{v}\", invert_match: true"),
        };
        headers.push(format!("{{ name: {name}, {m} }}"));
    }
    let query = if rng.u8(..8) == 0 {
        ", query_parameters: [{ name: q, present_match: true }]"
    } else {
        ""
    };
    format!(
        "{{ {path}{case}, headers: [{}]{query} }}",
        headers.join(", ")
    )
}

fn random_table(rng: &mut fastrand::Rng) -> (Table, usize) {
    let n = rng.usize(super::MIN_ROUTES..120);
    let mut routes = String::new();
    for i in 0..n {
        routes.push_str(&format!(
            "      - {{ name: r{i}, match: {}, route: {{ cluster: c }} }}\n",
            random_match(rng)
        ));
    }
    let yaml = format!(
        "name: t\nvirtual_hosts:\n  - name: v\n    domains: [\"*\"]\n    routes:\n{routes}"
    );
    let rc: RouteConfig = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let mut errors = mesh_core::error::Errors::new();
    rc.validate(&mesh_core::FieldPath::root(), &mut errors);
    errors
        .into_result()
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    (Table::compile(&rc, &[]).unwrap(), n)
}

fn random_headers(rng: &mut fastrand::Rng) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in ["x-a", "x-b"] {
        for _ in 0..rng.usize(0..3) {
            let v = HeaderValue::from_static(pick(rng, VALUES));
            h.append(HeaderName::from_static(name), v);
        }
    }
    h
}

#[test]
fn the_index_picks_the_route_the_scan_picks() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_2026);
    let (mut cases, mut matched, mut indexed) = (0, 0, 0);
    for _ in 0..100 {
        let (table, n) = random_table(&mut rng);
        indexed += usize::from(n >= super::MIN_ROUTES);
        for _ in 0..100 {
            let path = random_path(&mut rng);
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            let query = rng.bool().then_some("q=1");
            let headers = random_headers(&mut rng);
            let by_index = table
                .route("h", &path, query, &headers)
                .ok()
                .map(|r| r.name.clone());
            let by_scan = table.route_by_scan("h", &path, query, &headers);
            assert_eq!(
                by_index, by_scan,
                "path {path:?} query {query:?} headers {headers:?}"
            );
            cases += 1;
            matched += usize::from(by_scan.is_some());
        }
    }
    assert_eq!(indexed, 100, "every table was indexed");
    // The cases exercise both outcomes, not only misses.
    assert!(
        matched > cases / 4 && matched < cases,
        "{matched} of {cases} matched"
    );
}

#[test]
fn header_buckets_keep_routes_in_order() {
    // Routes 0..8 need x-a = their number; route 3 again later with more conditions; a
    // catch-all at the end. Bucketing must not let a later route win.
    let mut routes = String::new();
    for i in 0..8 {
        routes.push_str(&format!(
            "      - {{ name: r{i}, match: {{ prefix: /, headers: [{{ name: x-a, exact_match: \"{i}\" }}] }}, route: {{ cluster: c }} }}\n"
        ));
    }
    routes.push_str("      - { name: early, match: { prefix: /a }, route: { cluster: c } }\n");
    routes.push_str("      - { name: late3, match: { prefix: /, headers: [{ name: x-a, exact_match: \"3\" }] }, route: { cluster: c } }\n");
    for i in 0..4 {
        routes.push_str(&format!(
            "      - {{ name: pad{i}, match: {{ path: /pad{i} }}, route: {{ cluster: c }} }}\n"
        ));
    }
    routes.push_str("      - { name: last, match: { prefix: / }, route: { cluster: c } }\n");
    let yaml = format!(
        "name: t\nvirtual_hosts:\n  - name: v\n    domains: [\"*\"]\n    routes:\n{routes}"
    );
    let rc: RouteConfig = serde_saphyr::from_str(&yaml).unwrap();
    let table = Table::compile(&rc, &[]).unwrap();
    let route = |path: &str, x_a: Option<&'static str>| {
        let mut h = HeaderMap::new();
        if let Some(v) = x_a {
            h.insert("x-a", HeaderValue::from_static(v));
        }
        table.route("h", path, None, &h).unwrap().name.to_string()
    };
    assert_eq!(route("/b", Some("3")), "r3");
    assert_eq!(route("/a", Some("9")), "early");
    assert_eq!(route("/a", Some("7")), "r7");
    assert_eq!(route("/b", Some("9")), "last");
    assert_eq!(route("/pad2", None), "pad2");
    assert_eq!(route("/pad2x", None), "last");
}

#[test]
fn a_regex_is_a_candidate_only_under_its_literal_prefix() {
    use super::literal_prefix;
    let prefix = |p: &str| literal_prefix(p).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(prefix("/api/v[0-9]+/.*").as_deref(), Some("/api/v"));
    assert_eq!(prefix("/api\\.v1/x").as_deref(), Some("/api.v1/x"));
    assert_eq!(prefix("/ab?c").as_deref(), Some("/a"));
    assert_eq!(prefix("/ab*").as_deref(), Some("/a"));
    assert_eq!(prefix("/ab+").as_deref(), Some("/a"));
    assert_eq!(prefix("/a{2}").as_deref(), Some("/"));
    assert_eq!(prefix("/a(b|c)").as_deref(), Some("/a"));
    assert_eq!(prefix("(?i)/abc").as_deref(), Some(""));
    assert_eq!(prefix("/a|/b"), None);
    assert_eq!(prefix("/a[|]b").as_deref(), Some("/a"));
    assert_eq!(prefix("\\d+/x").as_deref(), Some(""));
    // Every case the prefix gives agrees with the regex: a path the regex matches starts
    // with the prefix.
    let mut rng = fastrand::Rng::with_seed(3);
    for p in ["/api/v[0-9]+/.*", "/ab?c", "/a(b|c)", "/x\\.y+", "/a{2}"] {
        let re = crate::policy::headers::full_regex(p).unwrap();
        let pre = prefix(p).unwrap();
        for _ in 0..2000 {
            let s: String = (0..rng.usize(0..6))
                .map(|_| ["/", "a", "b", "c", "api", "v", "1", "x", ".", "y"][rng.usize(..10)])
                .collect();
            if re.is_match(&s) {
                assert!(s.starts_with(&pre), "{p}: {s:?} matches but lacks {pre:?}");
            }
        }
    }
}
