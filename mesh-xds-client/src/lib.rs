//! # mesh-xds-client
//!
//! The xDS client that keeps a [`mesh_core::Store`] configured from a control plane (istiod,
//! go-control-plane-based servers, …): the gRPC bootstrap file, ADS over both the
//! State-of-the-World and the Delta protocol, the LDS → RDS → CDS → EDS cascade driven by the
//! store's interest, and translation of Envoy's protos into mesh-core config (the only place
//! in the project where protobuf types appear).
//!
//! | module | what |
//! |---|---|
//! | [`bootstrap`] | the gRPC xDS bootstrap (`GRPC_XDS_BOOTSTRAP`) |
//! | [`ads`] | the ADS protocol as a sans-IO state machine (SotW and Delta) |
//! | [`client`] | the streams, reconnects, the cascade, writes to the store |
//! | [`federation`] | which control plane serves a name (gRFC A47 `xdstp://` names) |
//! | [`translate`] | Envoy protos → mesh-core config, with field paths |
//! | [`build`] | proto builders for tests and fake control planes |
//!
//! ```no_run
//! use mesh_tower::Mesh;
//! use mesh_xds_client::XdsMesh;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = Mesh::from_bootstrap_env().await?;
//! println!("{}", mesh.xds_config_dump());
//! # Ok(()) }
//! ```

pub mod ads;
pub mod bootstrap;
pub mod build;
pub mod client;
pub mod csds;
pub mod federation;
#[cfg(feature = "json")]
pub mod files;
#[cfg(feature = "json")]
pub mod json;
mod mesh;
pub mod otlp;
pub mod translate;

pub use client::{ClientError, XdsClient, XdsClientBuilder};
pub use mesh::XdsMesh;
