//! DNS clusters against a name server on loopback (our own small responder built on
//! hickory-proto): STRICT_DNS balances over every address a name resolves to, follows the
//! records when they change (TTL respected), and LOGICAL_DNS uses the first address only.

mod support;

use bytes::Bytes;
use hickory_resolver::proto::op::{Message, OpCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record};
use http_body_util::Empty;
use mesh_examples::backend::{Backend, Mode};
use mesh_tower::cluster::DnsResolver;
use mesh_tower::{Mesh, ServedBy};
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use support::*;
use tokio::net::UdpSocket;
use tower::ServiceExt;

/// Name → (addresses, TTL seconds); shared so a test can change the records.
type Zone = Arc<Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>>;

async fn name_server(zone: Zone) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                break;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, OpCode::Query);
            reply.metadata.authoritative = true;
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            for q in &query.queries {
                reply.add_query(q.clone());
                let name = q.name().to_string();
                let found = zone
                    .lock()
                    .unwrap()
                    .get(name.trim_end_matches('.'))
                    .cloned();
                if let (Some((ips, ttl)), hickory_resolver::proto::rr::RecordType::A) =
                    (found, q.query_type())
                {
                    for ip in ips {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            ttl,
                            RData::A(A(ip)),
                        ));
                    }
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

async fn served_by(
    svc: &mesh_tower::MeshService<Empty<Bytes>>,
) -> Result<SocketAddr, mesh_tower::MeshError> {
    let req = http::Request::get("http://web/")
        .body(Empty::new())
        .unwrap();
    let res = svc.clone().oneshot(req).await?;
    Ok(res.extensions().get::<ServedBy>().unwrap().endpoint)
}

async fn mesh(zone: &Zone, cluster_yaml: &str) -> (Mesh, mesh_tower::MeshService<Empty<Bytes>>) {
    let ns = name_server(zone.clone()).await;
    let yaml = format!(
        r#"
listeners:
  - name: web
    route_config:
      virtual_hosts: [{{ name: web, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: ext }} }}] }}]
clusters:
  - {cluster_yaml}
"#
    );
    let store = mesh_core::Store::new();
    store
        .replace(mesh_core::MeshConfig::from_yaml(&yaml).unwrap())
        .unwrap();
    let mesh = Mesh::builder()
        .store(store)
        .dns_resolver(DnsResolver::with_nameserver(ns))
        .build()
        .await
        .unwrap();
    let web = mesh.channel::<Empty<Bytes>>("xds:///web");
    (mesh, web)
}

/// Sends requests until `f` holds for the set of endpoints that answered the last `window`.
async fn until_served(
    web: &mesh_tower::MeshService<Empty<Bytes>>,
    window: usize,
    f: impl Fn(&BTreeSet<SocketAddr>) -> bool,
) -> BTreeSet<SocketAddr> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let mut seen = BTreeSet::new();
            for _ in 0..window {
                if let Ok(ep) = served_by(web).await {
                    seen.insert(ep);
                }
            }
            if f(&seen) {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("traffic reached the expected endpoints")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_follows_the_records_and_logical_dns_takes_the_first() {
    let first = Backend::start_on("127.0.0.2:0".parse().unwrap(), Mode::default())
        .await
        .unwrap();
    let port = first.addr().port();
    let second = Backend::start_on(
        SocketAddr::new([127, 0, 0, 3].into(), port),
        Mode::default(),
    )
    .await
    .unwrap();
    let third = Backend::start_on(
        SocketAddr::new([127, 0, 0, 4].into(), port),
        Mode::default(),
    )
    .await
    .unwrap();
    let zone: Zone = Arc::default();
    zone.lock().unwrap().insert(
        "api.mesh.test".into(),
        (
            vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            1,
        ),
    );
    let cluster = format!(
        "{{ name: ext, type: STRICT_DNS, respect_dns_ttl: true, dns_lookup_family: V4_ONLY, dns_endpoints: [{{ hostname: api.mesh.test, port: {port} }}] }}"
    );
    let (_mesh, web) = mesh(&zone, &cluster).await;
    let both: BTreeSet<_> = [first.addr(), second.addr()].into();
    until_served(&web, 20, |s| *s == both).await;

    // The record changes; after its 1 s TTL the cluster follows.
    zone.lock().unwrap().insert(
        "api.mesh.test".into(),
        (vec![Ipv4Addr::new(127, 0, 0, 4)], 1),
    );
    let only_third: BTreeSet<_> = [third.addr()].into();
    until_served(&web, 10, |s| *s == only_third).await;

    // LOGICAL_DNS: one logical host, the first address.
    zone.lock().unwrap().insert(
        "one.mesh.test".into(),
        (
            vec![Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 2)],
            30,
        ),
    );
    let cluster = format!(
        "{{ name: ext, type: LOGICAL_DNS, dns_endpoints: [{{ hostname: one.mesh.test, port: {port} }}] }}"
    );
    let (_mesh, web) = mesh(&zone, &cluster).await;
    let only_second: BTreeSet<_> = [second.addr()].into();
    let seen = until_served(&web, 20, |s| !s.is_empty()).await;
    assert_eq!(seen, only_second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_fails_requests_with_the_reason() {
    let zone: Zone = Arc::default();
    let (_mesh, web) = mesh(
        &zone,
        "{ name: ext, type: STRICT_DNS, dns_refresh_rate: 0.05s, dns_endpoints: [{ hostname: nowhere.mesh.test, port: 80 }] }",
    )
    .await;
    let err = tokio::time::timeout(PATIENCE, async {
        loop {
            let e = served_by(&web).await.unwrap_err();
            if e.to_string().contains("resolving") {
                return e;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the resolution error reaches the request");
    assert_eq!(err.kind(), mesh_tower::ErrorKind::NoEndpoint);
    assert!(err.to_string().contains("nowhere.mesh.test"), "{err}");
}

/// An aggregate whose first cluster is down and whose last resort is a DNS name: after
/// `wait_ready` (which looks the name up, as Envoy does when the cluster is added), the very
/// first request is served by the DNS cluster instead of failing with "no address resolved
/// yet" because nothing had asked for the name before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ready_resolves_an_aggregates_last_resort_before_the_first_request() {
    let backend = mesh_examples::backend::Backend::start().await.unwrap();
    let zone: Zone = Arc::default();
    zone.lock()
        .unwrap()
        .insert("last.test".into(), (vec![Ipv4Addr::LOCALHOST], 60));
    let clusters = format!(
        r#"{{ name: ext, cluster_type: {{ name: envoy.clusters.aggregate, typed_config: {{ clusters: [down, last] }} }} }}
  - {{ name: down, type: STATIC, load_assignment: {{ cluster_name: down, endpoints: [{{ lb_endpoints: [{{ address: "127.0.0.1:1", health_status: UNHEALTHY }}] }}] }} }}
  - {{ name: last, type: STRICT_DNS, dns_endpoints: [{{ hostname: last.test, port: {} }}] }}"#,
        backend.addr().port()
    );
    let (mesh, web) = mesh(&zone, &clusters).await;
    mesh.wait_ready("xds:///web", PATIENCE).await.unwrap();
    assert_eq!(served_by(&web).await.unwrap(), backend.addr());
}
