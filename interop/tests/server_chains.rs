//! grpc-go as the oracle for choosing a filter chain per connection (gRFC A36): one
//! go-control-plane listener with several chains (matched on the server address the caller
//! reached, the caller's address and its source type; mTLS on some, plaintext on others; a
//! different RBAC policy on each), served by grpc-go's `xds.NewGRPCServer` and by ours, with
//! and without a default chain. Loopback has many addresses: callers bind 127.0.0.1, .2, .4
//! or .5 and reach the wildcard listener at 127.0.0.1, .3 or .4, over mTLS or plaintext, and
//! each call must end the same way at both servers.

mod support;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_examples::pki::DevCa;
use mesh_interop::gocp::GrpcGoServer;
use mesh_xds_client::{XdsMesh, build};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;

const TEMPLATE: &str = "xds.istio.io/grpc/lds/inbound/%s";

fn cidr(a: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: a.into(),
        prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value { value: len }),
    }
}

/// RBAC allowing only `method` (`None`: allowing nothing).
fn only(method: Option<&str>) -> Rbac {
    let policies = method.map(|p| {
        let path = pb::Permission {
            rule: Some(pb::permission::Rule::UrlPath(m::PathMatcher {
                rule: Some(m::path_matcher::Rule::Path(m::StringMatcher {
                    match_pattern: Some(m::string_matcher::MatchPattern::Exact(p.into())),
                    ..Default::default()
                })),
            })),
        };
        let anyone = pb::Principal {
            identifier: Some(pb::principal::Identifier::Any(true)),
        };
        (
            "only".to_owned(),
            pb::Policy {
                permissions: vec![path],
                principals: vec![anyone],
                ..Default::default()
            },
        )
    });
    Rbac {
        rules: Some(pb::Rbac {
            action: pb::rbac::Action::Allow as i32,
            policies: policies.into_iter().collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One chain: its name, match, mTLS or not, RBAC (none: no filter).
fn chain(
    name: &str,
    matched: lds::FilterChainMatch,
    mtls: bool,
    rbac: Option<Rbac>,
) -> lds::FilterChain {
    let tls = mtls.then(|| build::downstream_mtls("default"));
    let filters = rbac
        .iter()
        .map(|r| build::rbac_filter("envoy.filters.http.rbac", r))
        .collect();
    let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
    let mut c = build::server_listener("x", any, tls, filters)
        .filter_chains
        .remove(0);
    c.name = name.into();
    c.filter_chain_match = Some(matched);
    c
}

fn listener(addr: SocketAddr, default: bool) -> envoy_types::pb::google::protobuf::Any {
    let name = TEMPLATE.replace("%s", &addr.to_string());
    let hello = "/helloworld.Greeter/SayHello";
    let again = "/helloworld.Greeter/SayHelloAgain";
    let loopback = || vec![cidr("127.0.0.0", 8)];
    let chains = vec![
        chain(
            "to-3",
            lds::FilterChainMatch {
                prefix_ranges: vec![cidr("127.0.0.3", 32)],
                ..Default::default()
            },
            true,
            Some(only(Some(again))),
        ),
        chain(
            "from-2",
            lds::FilterChainMatch {
                prefix_ranges: loopback(),
                source_prefix_ranges: vec![cidr("127.0.0.2", 32)],
                ..Default::default()
            },
            true,
            Some(only(None)),
        ),
        chain(
            "from-4-or-5-plaintext",
            lds::FilterChainMatch {
                prefix_ranges: loopback(),
                source_prefix_ranges: vec![cidr("127.0.0.4", 32), cidr("127.0.0.5", 32)],
                ..Default::default()
            },
            false,
            None,
        ),
        chain(
            "external-from-2",
            lds::FilterChainMatch {
                prefix_ranges: loopback(),
                source_type: lds::filter_chain_match::ConnectionSourceType::External as i32,
                source_prefix_ranges: vec![cidr("127.0.0.2", 32)],
                ..Default::default()
            },
            false,
            None,
        ),
        chain(
            "to-4-local",
            lds::FilterChainMatch {
                prefix_ranges: vec![cidr("127.0.0.4", 32)],
                source_type: lds::filter_chain_match::ConnectionSourceType::SameIpOrLoopback as i32,
                transport_protocol: "raw_buffer".into(),
                ..Default::default()
            },
            true,
            Some(only(Some(hello))),
        ),
        // Never chosen on loopback: to-4-local names the source type, which beats ANY
        // before source ranges are looked at.
        chain(
            "to-4-from-5",
            lds::FilterChainMatch {
                prefix_ranges: vec![cidr("127.0.0.4", 32)],
                source_prefix_ranges: vec![cidr("127.0.0.5", 32)],
                transport_protocol: "raw_buffer".into(),
                ..Default::default()
            },
            false,
            None,
        ),
    ];
    let mut l =
        build::server_listener(&name, addr, Some(build::downstream_mtls("default")), vec![]);
    l.default_filter_chain = default.then(|| l.filter_chains.remove(0));
    l.filter_chains = chains;
    build::any(&l)
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// No answer: the connection was refused, closed, or its handshake failed.
    Refused,
    /// `PERMISSION_DENIED`.
    Denied,
    /// Any other status: the call reached the handler.
    Served,
}

/// One unary call on a fresh HTTP/2 connection from `from` to `to`, over mTLS or plaintext.
async fn call(
    from: &str,
    to: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
) -> Outcome {
    match try_call(from, to, tls, method).await {
        Ok(7) => Outcome::Denied,
        Ok(_) => Outcome::Served,
        Err(_) => Outcome::Refused,
    }
}

async fn try_call(
    from: &str,
    to: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
) -> Result<u32, mesh_core::BoxError> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse()?)?;
    let tcp = socket.connect(to).await?;
    let req =
        support::grpc_server::hello_request(method).body(support::grpc_server::hello_body())?;
    let res = match tls {
        Some(tls) => {
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            tx.send_request(req).await?
        }
        None => {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await?;
            tokio::spawn(conn);
            tx.send_request(req).await?
        }
    };
    support::grpc_server::status(res).await
}

/// A free port on the wildcard address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_chooses_filter_chains_as_grpc_go_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("filter chain oracle root");
    let files = support::grpc_server::server_files(
        &ca,
        dir.path(),
        "spiffe://cluster.local/ns/shop/sa/greeter",
    );
    let variants = [true, false]; // with and without a default chain
    let cp = mesh_interop::gocp::GoControlPlane::start();
    let mut ours = Vec::new();
    let mut mesh_listeners = Vec::new();
    for default in variants {
        let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        ours.push(listener(addr, default));
        mesh_listeners.push((l, addr));
    }
    cp.set("mesh", "1", &ours).await;
    let mut go = Vec::new();
    for (i, default) in variants.into_iter().enumerate() {
        let addr: SocketAddr = format!("0.0.0.0:{}", free_port()).parse().unwrap();
        let node = format!("go-{i}");
        cp.set(&node, "1", &[listener(addr, default)]).await;
        let path = dir.path().join(format!("{node}.json"));
        std::fs::write(
            &path,
            support::grpc_server::bootstrap(cp.ads, &node, TEMPLATE, &files).to_string(),
        )
        .unwrap();
        go.push((GrpcGoServer::start(&path, addr), addr.port()));
    }
    let mesh = support::grpc_server::mesh(cp.ads, TEMPLATE, &files).await;
    let mut servers = Vec::new();
    for (listener, addr) in mesh_listeners {
        let server = mesh.xds_server(addr, support::PATIENCE).await.unwrap();
        let echo = tower::service_fn(move |req| mesh_examples::echo::handle(addr, req));
        tokio::spawn(server.clone().serve(listener, echo));
        servers.push((server, addr.port()));
    }

    let mtls = support::client_tls(
        &ca,
        Some(&ca.issue_spiffe("spiffe://cluster.local/ns/shop/sa/frontend")),
        b"h2",
    );
    let (mut cases, mut seen, mut disagreements) =
        (0, std::collections::BTreeMap::new(), Vec::new());
    for (v, default) in variants.into_iter().enumerate() {
        for from in ["127.0.0.1", "127.0.0.2", "127.0.0.4", "127.0.0.5"] {
            for to in ["127.0.0.1", "127.0.0.3", "127.0.0.4"] {
                for tls in [Some(mtls.clone()), None] {
                    for method in ["SayHello", "SayHelloAgain"] {
                        let path = format!("/helloworld.Greeter/{method}");
                        let at = |port: u16| format!("{to}:{port}").parse().unwrap();
                        let theirs = call(from, at(go[v].1), tls.clone(), &path).await;
                        let mine = call(from, at(servers[v].1), tls.clone(), &path).await;
                        cases += 1;
                        *seen.entry(theirs).or_insert(0) += 1;
                        if theirs != mine {
                            disagreements.push(format!(
                                "default chain {default}, {from} -> {to}, {}, {method}: grpc-go {theirs:?}, mesh {mine:?}",
                                if tls.is_some() { "mTLS" } else { "plaintext" }
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "filter chain oracle: {cases} cases (grpc-go's outcomes {seen:?}), {} disagreements",
        disagreements.len()
    );
    assert_eq!(
        seen.len(),
        3,
        "the matrix exercises every outcome: {seen:?}"
    );
    assert!(
        disagreements.is_empty(),
        "{} of {cases} cases disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // Without a default chain, ours closed the connections no chain matched, and said so.
    assert!(servers[1].0.stats().unmatched > 0);
    assert_eq!(servers[0].0.stats().unmatched, 0);
}
