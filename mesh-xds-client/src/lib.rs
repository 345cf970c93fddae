//! # mesh-xds-client
//!
//! The xDS client that keeps a [`mesh_core::Store`] configured from a control plane (istiod,
//! go-control-plane-based servers, …): the gRPC bootstrap file, ADS over both the
//! State-of-the-World and the Delta protocol, the LDS → RDS → CDS → EDS cascade driven by the
//! store's interest, and translation of Envoy's protos into mesh-core config (the only place
//! in the project where protobuf types appear).

pub mod ads;
pub mod bootstrap;
pub mod build;
pub mod client;
mod mesh;
pub mod translate;

pub use client::{ClientError, XdsClient, XdsClientBuilder};
pub use mesh::XdsMesh;
