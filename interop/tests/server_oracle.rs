//! grpc-go as the oracle for the server side (gRFC A36 + A41): go-control-plane serves one
//! server listener per policy to grpc-go's `xds.NewGRPCServer` and the same listener to our
//! server, each with the same RBAC filters and Istio STRICT's mTLS. A matrix of callers (the
//! namespace's SPIFFE ID, another namespace's, another trust domain's, a DNS-only
//! certificate, no certificate) × gRPC calls (methods, headers) × policies must end the same
//! way with both: refused at the handshake, `PERMISSION_DENIED`, or served.

mod support;

use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_examples::pki::{DevCa, Issued};
use mesh_interop::gocp::GrpcGoServer;
use mesh_xds_client::{XdsMesh, build};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;

const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/greeter";
const TEMPLATE: &str = "xds.istio.io/grpc/lds/inbound/%s";

fn string(p: m::string_matcher::MatchPattern) -> m::StringMatcher {
    m::StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

fn exact(v: &str) -> m::StringMatcher {
    string(m::string_matcher::MatchPattern::Exact(v.into()))
}

fn prefix(v: &str) -> m::StringMatcher {
    string(m::string_matcher::MatchPattern::Prefix(v.into()))
}

fn regex(v: &str) -> m::StringMatcher {
    string(m::string_matcher::MatchPattern::SafeRegex(
        m::RegexMatcher {
            regex: v.into(),
            ..Default::default()
        },
    ))
}

fn principal(i: pb::principal::Identifier) -> pb::Principal {
    pb::Principal {
        identifier: Some(i),
    }
}

fn authenticated(name: Option<m::StringMatcher>) -> pb::Principal {
    principal(pb::principal::Identifier::Authenticated(
        pb::principal::Authenticated {
            principal_name: name,
        },
    ))
}

fn permission(r: pb::permission::Rule) -> pb::Permission {
    pb::Permission { rule: Some(r) }
}

fn path(v: m::StringMatcher) -> pb::Permission {
    permission(pb::permission::Rule::UrlPath(m::PathMatcher {
        rule: Some(m::path_matcher::Rule::Path(v)),
    }))
}

fn header(name: &str, v: Option<&str>) -> pb::Permission {
    use envoy_types::pb::envoy::config::route::v3::{
        HeaderMatcher, header_matcher::HeaderMatchSpecifier as H,
    };
    permission(pb::permission::Rule::Header(HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(match v {
            Some(v) => H::StringMatch(exact(v)),
            None => H::PresentMatch(true),
        }),
        ..Default::default()
    }))
}

fn any_permission() -> pb::Permission {
    permission(pb::permission::Rule::Any(true))
}

fn rbac(
    action: pb::rbac::Action,
    policies: Vec<(&str, Vec<pb::Permission>, Vec<pb::Principal>)>,
) -> Rbac {
    Rbac {
        rules: Some(pb::Rbac {
            action: action as i32,
            policies: policies
                .into_iter()
                .map(|(n, permissions, principals)| {
                    (
                        n.to_owned(),
                        pb::Policy {
                            permissions,
                            principals,
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A policy: (name, RBAC filters in chain order, inline routes; none: Istio's one `/`).
type Policy = (
    &'static str,
    Vec<(&'static str, Rbac)>,
    Option<Vec<rds::Route>>,
);

fn route(
    path: &str,
    headers: Vec<rds::HeaderMatcher>,
    action: rds::route::Action,
    per_filter: Option<Rbac>,
) -> rds::Route {
    rds::Route {
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Path(path.into())),
            headers,
            ..Default::default()
        }),
        action: Some(action),
        typed_per_filter_config: per_filter
            .map(|rbac| {
                let per_route =
                    envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute {
                        // `rbac` present without rules: the filter is off for the route. (An
                        // RBACPerRoute without `rbac`, Envoy's way to say so, makes grpc-go's
                        // parser panic and NACK the listener.)
                        rbac: Some(rbac),
                    };
                [("envoy.filters.http.rbac".to_owned(), build::any(&per_route))].into()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn present(name: &str, present: bool) -> rds::HeaderMatcher {
    rds::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::PresentMatch(
            present,
        )),
        ..Default::default()
    }
}

/// Per-route policy (A36 + A41): the filter's policy lets the frontend in; SayHelloAgain's
/// route lets only the other namespace in (`RBACPerRoute`); SayHello with `x-role` turns RBAC
/// off (`RBACPerRoute` without rules); SayHelloAgain with `x-block` matches a forwarding
/// route; SayHello with `x-block` matches no route.
fn per_route_policy() -> Policy {
    use pb::rbac::Action::Allow;
    let non_forwarding = || rds::route::Action::NonForwardingAction(Default::default());
    let other_ns = rbac(
        Allow,
        vec![(
            "other-ns",
            vec![any_permission()],
            vec![authenticated(Some(regex(".*/ns/other/.*")))],
        )],
    );
    let forward = rds::route::Action::Route(rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(
            "elsewhere".into(),
        )),
        ..Default::default()
    });
    (
        "per-route",
        vec![(
            "envoy.filters.http.rbac",
            rbac(
                Allow,
                vec![(
                    "frontend",
                    vec![any_permission()],
                    vec![authenticated(Some(exact(
                        "spiffe://cluster.local/ns/shop/sa/frontend",
                    )))],
                )],
            ),
        )],
        Some(vec![
            route(
                "/helloworld.Greeter/SayHelloAgain",
                vec![present("x-block", true)],
                forward,
                None,
            ),
            route(
                "/helloworld.Greeter/SayHelloAgain",
                vec![],
                non_forwarding(),
                Some(other_ns),
            ),
            route(
                "/helloworld.Greeter/SayHello",
                vec![present("x-role", true)],
                non_forwarding(),
                Some(Rbac::default()),
            ),
            route(
                "/helloworld.Greeter/SayHello",
                vec![present("x-block", false)],
                non_forwarding(),
                None,
            ),
        ]),
    )
}

/// The policies.
fn policies() -> Vec<Policy> {
    filter_policies()
        .into_iter()
        .map(|(name, filters)| (name, filters, None))
        .chain([per_route_policy(), {
            // The same routes by RDS (a route config of their own).
            let (_, filters, routes) = per_route_policy();
            ("per-route (RDS)", filters, routes)
        }])
        .collect()
}

/// The policies with Istio's one route (`/`, no overrides).
fn filter_policies() -> Vec<(&'static str, Vec<(&'static str, Rbac)>)> {
    use pb::rbac::Action::{Allow, Deny};
    let say_hello = || path(exact("/helloworld.Greeter/SayHello"));
    vec![
        (
            "allow-frontend",
            vec![(
                "envoy.filters.http.rbac",
                rbac(
                    Allow,
                    vec![(
                        "frontend",
                        vec![any_permission()],
                        vec![authenticated(Some(exact(
                            "spiffe://cluster.local/ns/shop/sa/frontend",
                        )))],
                    )],
                ),
            )],
        ),
        (
            "deny-other-namespace",
            vec![(
                "envoy.filters.http.rbac",
                rbac(
                    Deny,
                    vec![(
                        "other-ns",
                        vec![path(prefix("/helloworld."))],
                        vec![authenticated(Some(regex(".*/ns/other/.*")))],
                    )],
                ),
            )],
        ),
        (
            "istio-deny-then-allow",
            vec![
                (
                    "envoy.filters.http.rbac.DENY",
                    rbac(
                        Deny,
                        vec![(
                            "blocked",
                            vec![header("x-block", None)],
                            vec![principal(pb::principal::Identifier::Any(true))],
                        )],
                    ),
                ),
                (
                    "envoy.filters.http.rbac",
                    rbac(
                        Allow,
                        vec![(
                            "trust-domain",
                            vec![say_hello()],
                            vec![authenticated(Some(prefix("spiffe://cluster.local/")))],
                        )],
                    ),
                ),
            ],
        ),
        (
            "admin-header-any-certificate",
            vec![(
                "envoy.filters.http.rbac",
                rbac(
                    Allow,
                    vec![(
                        "admins",
                        vec![permission(pb::permission::Rule::AndRules(
                            pb::permission::Set {
                                rules: vec![header("x-role", Some("admin")), say_hello()],
                            },
                        ))],
                        vec![authenticated(None)],
                    )],
                ),
            )],
        ),
        (
            "deny-without-certificate",
            vec![(
                "envoy.filters.http.rbac",
                rbac(
                    Deny,
                    vec![(
                        "anonymous",
                        vec![any_permission()],
                        vec![principal(pb::principal::Identifier::NotId(Box::new(
                            authenticated(Some(regex(".+"))),
                        )))],
                    )],
                ),
            )],
        ),
    ]
}

/// (label, method path, extra metadata).
/// A call of the matrix: label, method path, metadata.
type Call = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CALLS: [Call; 4] = [
    ("SayHello", "/helloworld.Greeter/SayHello", &[]),
    (
        "SayHello x-role: admin",
        "/helloworld.Greeter/SayHello",
        &[("x-role", "admin")],
    ),
    (
        "SayHello x-block",
        "/helloworld.Greeter/SayHello",
        &[("x-block", "1")],
    ),
    ("SayHelloAgain", "/helloworld.Greeter/SayHelloAgain", &[]),
];

/// The listener of `policy` at `addr`, and its route config when it comes by RDS.
fn listener(addr: SocketAddr, policy: &Policy) -> Vec<envoy_types::pb::google::protobuf::Any> {
    let (label, filters, routes) = policy;
    let name = TEMPLATE.replace("%s", &addr.to_string());
    let tls = Some(build::downstream_mtls("default"));
    let filters = filters
        .iter()
        .map(|(n, r)| build::rbac_filter(n, r))
        .collect();
    match routes {
        None => vec![build::any(&build::server_listener(
            &name, addr, tls, filters,
        ))],
        Some(r) if label.ends_with("(RDS)") => {
            let rc = format!("inbound-{}", addr.port());
            vec![
                build::any(&build::server_listener_with_rds(
                    &name, addr, tls, filters, &rc,
                )),
                build::any(&build::inbound_route_config(&rc, r.clone())),
            ]
        }
        Some(r) => vec![build::any(&build::server_listener_with_routes(
            &name,
            addr,
            tls,
            filters,
            r.clone(),
        ))],
    }
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The connection failed (a client certificate refused surfaces on TLS 1.3 after the
    /// client's side of the handshake, so anywhere before the response).
    Refused,
    /// `PERMISSION_DENIED`.
    Denied,
    /// `UNAVAILABLE`: no inbound route serves the call (A36).
    Unavailable,
    /// Any other status: the call reached the handler (whose answer is not compared: our
    /// echo knows only SayHello).
    Served,
}

/// One unary gRPC call on a fresh mTLS HTTP/2 connection.
async fn call(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    metadata: &[(&str, &str)],
) -> Outcome {
    match try_call(addr, tls, method, metadata).await {
        Ok(7) => Outcome::Denied,
        Ok(14) => Outcome::Unavailable,
        Ok(_) => Outcome::Served,
        Err(_) => Outcome::Refused,
    }
}

async fn try_call(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<u32, mesh_core::BoxError> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = support::grpc_server::hello_request(method);
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let res = tx
        .send_request(req.body(support::grpc_server::hello_body())?)
        .await?;
    support::grpc_server::status(res).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_authorizes_as_grpc_go_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("server oracle root");
    let files = support::grpc_server::server_files(&ca, dir.path(), SERVER_ID);
    let policies = policies();
    // Below the ephemeral range: a port taken from `bind(":0")` and released could be handed
    // out again to the mesh listeners bound next (a CI run failed with "address in use").
    let go_addrs: Vec<SocketAddr> = policies
        .iter()
        .map(|_| support::envoy::free_port())
        .collect();
    let mut mesh_listeners = Vec::new();
    for _ in &policies {
        mesh_listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let mesh_addrs: Vec<SocketAddr> = mesh_listeners
        .iter()
        .map(|l| l.local_addr().unwrap())
        .collect();

    let cp = mesh_interop::gocp::GoControlPlane::start();
    let ours: Vec<_> = policies
        .iter()
        .zip(&mesh_addrs)
        .flat_map(|(p, a)| listener(*a, p))
        .collect();
    cp.set("mesh", "1", &ours).await;
    let mut go_servers = Vec::new();
    for (i, (p, a)) in policies.iter().zip(&go_addrs).enumerate() {
        let node = format!("go-{i}");
        cp.set(&node, "1", &listener(*a, p)).await;
        let path = dir.path().join(format!("{node}.json"));
        std::fs::write(
            &path,
            support::grpc_server::bootstrap(cp.ads, &node, TEMPLATE, &files).to_string(),
        )
        .unwrap();
        go_servers.push(GrpcGoServer::start(&path, *a));
    }
    let mesh = support::grpc_server::mesh(cp.ads, TEMPLATE, &files).await;
    for (listener, addr) in mesh_listeners.into_iter().zip(&mesh_addrs) {
        let server = mesh.xds_server(*addr, support::PATIENCE).await.unwrap();
        let addr = *addr;
        let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
        tokio::spawn(server.serve(listener, echo));
    }

    let callers: Vec<(&str, Option<Issued>)> = vec![
        (
            "frontend (ns shop)",
            Some(ca.issue_spiffe("spiffe://cluster.local/ns/shop/sa/frontend")),
        ),
        (
            "reviews (ns other)",
            Some(ca.issue_spiffe("spiffe://cluster.local/ns/other/sa/reviews")),
        ),
        (
            "other trust domain",
            Some(ca.issue_spiffe("spiffe://example.org/ns/shop/sa/frontend")),
        ),
        (
            "DNS-only certificate",
            Some(ca.issue(&mesh_examples::pki::LeafSpec {
                uris: &[],
                dns: &["client.shop.svc"],
                validity: None,
            })),
        ),
        ("no certificate", None),
    ];
    let (mut cases, mut seen, mut disagreements) =
        (0, std::collections::BTreeMap::new(), Vec::new());
    for (who, cert) in &callers {
        let tls = support::client_tls(&ca, cert.as_ref(), b"h2");
        for (p, (policy, _, _)) in policies.iter().enumerate() {
            for (label, method, metadata) in CALLS {
                let theirs = call(go_addrs[p], tls.clone(), method, metadata).await;
                let mine = call(mesh_addrs[p], tls.clone(), method, metadata).await;
                cases += 1;
                *seen.entry(format!("{theirs:?}")).or_insert(0) += 1;
                if theirs != mine {
                    disagreements.push(format!(
                        "{policy} / {who} / {label}: grpc-go {theirs:?}, mesh {mine:?}"
                    ));
                }
            }
        }
    }
    eprintln!(
        "server oracle: {cases} cases (grpc-go's outcomes {seen:?}), {} disagreements",
        disagreements.len()
    );
    for o in ["Refused", "Denied", "Unavailable", "Served"] {
        assert!(seen.contains_key(o), "the matrix exercises {o}: {seen:?}");
    }
    assert!(
        disagreements.is_empty(),
        "{} of {cases} cases disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
