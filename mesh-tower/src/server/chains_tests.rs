//! Filter chains (gRFC A36): each connection gets the chain its addresses select, for its
//! life; the chains' policies change in place, a change to which chains there are drains.
//! Loopback has many addresses (127.0.0.0/8): callers bind 127.0.0.2 and reach 127.0.0.3 to
//! stand for other hosts and other server addresses.

use super::Serving;
use bytes::Bytes;
use http_body_util::Empty;
use std::net::SocketAddr;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

/// A server `s` whose default chain serves everyone; `from-2` (callers at 127.0.0.2) allows
/// `allow_from_2`'s paths only; `to-3` (callers reaching 127.0.0.3) allows `/open` only.
fn config(allow_from_2: &str, extra: &str) -> mesh_core::MeshConfig {
    let only = |path: &str| {
        format!(
            "[{{ name: envoy.filters.http.rbac, rbac: {{ rules: {{ policies: {{ p: {{ permissions: [{{ url_path: {{ path: {{ exact: {path} }} }} }}], principals: [{{ any: true }}] }} }} }} }} }}]"
        )
    };
    mesh_core::MeshConfig::from_yaml(&format!(
        r#"
servers:
  - name: s
    drain_grace_period: 30s
    filter_chains:
      - name: from-2
        filter_chain_match: {{ source_prefix_ranges: [{{ address_prefix: 127.0.0.2, prefix_len: 32 }}] }}
        http_filters: {}
      - name: to-3
        filter_chain_match: {{ prefix_ranges: [{{ address_prefix: 127.0.0.3, prefix_len: 32 }}] }}
        http_filters: {}
{extra}"#,
        only(allow_from_2),
        only("/open"),
    ))
    .unwrap()
}

use super::drain_tests::Sender;

/// An HTTP/2 connection from `from` (port chosen by the system) to `to`'s port on `to_ip`.
async fn connect(from: &str, to_ip: &str, port: u16) -> (Sender, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let to: SocketAddr = format!("{to_ip}:{port}").parse().unwrap();
    super::drain_tests::h2_over(socket.connect(to).await.unwrap()).await
}

async fn status(tx: &mut Sender, path: &str) -> u16 {
    let req = http::Request::get(format!("http://s{path}"))
        .body(Empty::new())
        .unwrap();
    tx.send_request(req).await.unwrap().status().as_u16()
}

async fn serve(server: super::MeshServer) -> u16 {
    // The wildcard address, so that callers can reach it at 127.0.0.3 too.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ok = tower::service_fn(|_req: http::Request<crate::server::Incoming>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            Bytes::from_static(b"ok"),
        )))
    });
    tokio::spawn(server.serve(listener, ok));
    port
}

#[tokio::test]
async fn each_connection_gets_the_chain_its_addresses_select() {
    let mesh = crate::Mesh::from_config(config("/none", "")).await.unwrap();
    let server = mesh.server("s").unwrap();
    let port = serve(server.clone()).await;

    let (mut local, _c1) = connect("127.0.0.1", "127.0.0.1", port).await;
    assert_eq!(status(&mut local, "/x").await, 200, "the default chain");
    let (mut from2, _c2) = connect("127.0.0.2", "127.0.0.1", port).await;
    assert_eq!(status(&mut from2, "/x").await, 403, "from-2");
    // The destination is matched first: to-3 wins over from-2 for a caller at .2, and its
    // source range is never looked at again.
    let (mut from2_to3, _c3) = connect("127.0.0.2", "127.0.0.3", port).await;
    assert_eq!(status(&mut from2_to3, "/x").await, 403, "to-3");
    assert_eq!(status(&mut from2_to3, "/open").await, 200, "to-3");

    // A new policy for from-2, same chains: it applies to the open connection at once.
    mesh.store().replace(config("/x", "")).unwrap();
    let changed = async {
        while status(&mut from2, "/x").await != 200 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, changed)
        .await
        .expect("from-2's new policy reaches its open connection");
    assert_eq!(status(&mut from2, "/open").await, 403, "still from-2's");
    assert_eq!(server.stats().unmatched, 0);
}

#[tokio::test]
async fn new_chains_drain_old_connections_and_unmatched_ones_are_closed() {
    let mesh = crate::Mesh::from_config(config("/x", "")).await.unwrap();
    let server = mesh.server("s").unwrap();
    let port = serve(server.clone()).await;
    let (mut from2, old) = connect("127.0.0.2", "127.0.0.1", port).await;
    assert_eq!(status(&mut from2, "/x").await, 200);

    // Without a default chain, a connection no chain takes is closed unanswered.
    mesh.store()
        .replace(config("/x", "    close_unmatched: true\n"))
        .unwrap();
    tokio::time::timeout(PATIENCE, old)
        .await
        .expect("a change to the chains drains the connections")
        .unwrap();
    assert_eq!(*server.serving().borrow(), Serving::Serving);
    let tcp = async {
        loop {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let mut tcp = socket
                .connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap();
            // Closed unanswered: the server reads nothing and writes nothing.
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 1];
            if tcp.read(&mut buf).await.unwrap_or(0) == 0 && server.stats().unmatched > 0 {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, tcp)
        .await
        .expect("an unmatched connection is closed and counted");
    let (mut from2, _c) = connect("127.0.0.2", "127.0.0.1", port).await;
    assert_eq!(status(&mut from2, "/x").await, 200, "from-2 still serves");
}
