//! # mesh-tower
//!
//! The in-process service mesh as tower services. A [`Mesh`] holds the live config (from a
//! YAML file, or from a control plane through `mesh-xds-client`) and hands out services that
//! route, balance and connect:
//!
//! ```text
//! MeshService ─▶ route (virtual host, route, cluster) ─▶ timeout ─▶ dispatch (cluster state,
//!             balancer pick) ─▶ endpoint connection (HTTP/1.1 pool | HTTP/2 shared) ─▶ connector
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`route`] | matching and the [`RouteDecision`](route::RouteDecision) later layers read |
//! | [`local`] | local answers: redirects and direct responses |
//! | [`ratelimit`] | local rate limiting (token buckets) |
//! | [`fault`] | fault injection: delays and aborts |
//! | [`rewrite`] | path and host rewrites, header mutations |
//! | [`timeout`] | the route timeout, the caller's `grpc-timeout` (gRFC A31) |
//! | [`retry`] | retries, hedging, replayable bodies |
//! | [`mirror`] | request mirroring |
//! | [`cluster`] | cluster state, endpoint pick, [`ServedBy`] |
//! | [`breaker`] | circuit breakers and retry budgets |
//! | [`outlier`] | outlier detection |
//! | [`balance`] | the balancer seam and its algorithms |
//! | [`connect`] | connectors and per-endpoint connections |
//! | [`control`] | where control work (config sources, refresh, DNS) runs |
//!
//! A tonic client takes a mesh channel unchanged:
//!
//! ```ignore
//! let mesh = Mesh::from_file("mesh.yaml").await?;
//! let mut greeter = GreeterClient::new(mesh.channel("xds:///greeter"));
//! let reply = greeter.say_hello(HelloRequest { name: "mesh".into() }).await?;
//! ```
//!
//! Requests the mesh cannot complete fail with a [`MeshError`] naming target, route, cluster and
//! reason; gRPC callers receive it as a status (UNAVAILABLE, DEADLINE_EXCEEDED, …).

pub mod admin;
pub mod balance;
mod body;
pub mod breaker;
pub mod cluster;
pub mod connect;
pub mod control;
mod draw;
mod endpoint;
mod error;
pub mod fault;
mod grpc;
pub mod jwt;
pub mod local;
mod matcher;
mod mesh;
pub mod mirror;
pub mod outlier;
mod policy;
pub mod ratelimit;
pub mod rbac;
pub mod refusal;
mod request;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod server;
mod source;
mod stats;
pub mod telemetry;
#[cfg(test)]
mod test_util;
pub mod timeout;
pub mod tls;
pub mod trace;
mod wire;

pub use body::MeshBody;

/// The request bodies the mesh can send: any `http_body::Body` that hyper's client connections
/// accept. Implemented for every such type; it only names the bounds once.
pub trait RequestBody:
    http_body::Body<Data: Send, Error: Into<mesh_core::BoxError>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<mesh_core::BoxError>,
{
}
pub use cluster::ServedBy;
pub use error::{ErrorKind, MeshError};
pub use mesh::{
    ChannelOptions, LocalReply, Mesh, MeshBuilder, MeshService, RECHECK, ResponseFuture,
    STARTUP_WAIT, WaitForReady,
};
pub use source::file::{FileError, Reload};
