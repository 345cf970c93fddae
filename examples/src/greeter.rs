//! The classic greeter, as tonic-build generates it (see `build.rs`), and a server for it.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// `helloworld.HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `helloworld.HelloReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/helloworld.Greeter.rs"));
}

pub use generated::greeter_client::GreeterClient;
pub use generated::greeter_server::{Greeter, GreeterServer};

/// Greets with the server's own address, so callers can tell which endpoint answered.
#[derive(Clone, Debug)]
pub struct AddressGreeter {
    addr: SocketAddr,
}

impl AddressGreeter {
    /// A greeter that names `addr` in its replies.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

#[tonic::async_trait]
impl Greeter for AddressGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let name = request.into_inner().name;
        Ok(tonic::Response::new(HelloReply {
            message: format!("hello {name} from {}", self.addr),
        }))
    }
}

/// Starts a greeter server on `127.0.0.1:0`; aborting the handle stops it.
pub async fn spawn_server() -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let svc = GreeterServer::new(AddressGreeter { addr });
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    Ok((addr, task))
}

/// Greets with the caller's SPIFFE ID, as the mesh's TLS acceptor verified it: a server that
/// knows who called.
#[derive(Clone, Debug)]
pub struct IdentityGreeter {
    /// This server's own SPIFFE ID, for the reply.
    pub me: String,
}

#[tonic::async_trait]
impl Greeter for IdentityGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let caller = request
            .extensions()
            .get::<mesh_tower::tls::PeerInfo>()
            .and_then(|p| p.identity.as_ref())
            .and_then(|id| id.spiffe_id().map(str::to_owned))
            .ok_or_else(|| tonic::Status::unauthenticated("no verified client identity"))?;
        let name = request.into_inner().name;
        Ok(tonic::Response::new(HelloReply {
            message: format!("hello {name} ({caller}) from {}", self.me),
        }))
    }
}

/// The identity greeter behind a mesh server: its TLS, its metrics (when the mesh records
/// them) and its RBAC layer on every call (the tonic way: `Server::builder().layer(..)` and
/// `serve_with_incoming`). Needs a TLS server.
pub async fn spawn_mesh_server(
    server: &mesh_tower::server::MeshServer,
    me: &str,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let tls = server
        .tls()
        .ok_or_else(|| std::io::Error::other("the server has no TLS"))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = GreeterServer::new(IdentityGreeter { me: me.to_owned() });
    // Metrics outside RBAC (a refused call is counted too); none when the mesh records none.
    let layers = tower::ServiceBuilder::new()
        .layer(server.metrics_layer())
        .layer(server.rbac_layer());
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(layers)
            .add_service(svc)
            .serve_with_incoming(tls.incoming(listener))
            .await;
    });
    Ok((addr, task))
}

/// Starts an [`IdentityGreeter`] on `127.0.0.1:0` behind mesh TLS; aborting the handle stops it.
pub async fn spawn_tls_server(
    tls: mesh_tower::tls::ServerTls,
    me: &str,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = GreeterServer::new(IdentityGreeter { me: me.to_owned() });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tls.incoming(listener))
            .await;
    });
    Ok((addr, task))
}
