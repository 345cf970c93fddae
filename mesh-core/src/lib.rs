//! # mesh-core
//!
//! The middle tier of the in-process service mesh: validated configuration types modelled on
//! Envoy's v3 resources, and the live [`Store`] that serves them to the data plane.
//!
//! ```text
//! config sources (YAML file, xDS client) ──▶ mesh-core (validate, Store) ──▶ mesh-tower (requests)
//! ```
//!
//! This crate does no IO and knows nothing of protobuf, tower or tonic. Config sources translate
//! into these types (rejecting what they cannot honour, with a [`FieldPath`]), and the data plane
//! reads them lock-free.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | [`MeshConfig`] and the listener / route / cluster / endpoint types |
//! | [`policy`] | retry, circuit-breaker, outlier and TLS policy types |
//! | [`store`] | [`Store`]: snapshots, per-name change notification, interest |
//! | [`error`] | [`ConfigError`], [`ValidationError`], [`FieldPath`] |
//! | [`duration`] | Envoy-style duration strings (`"0.25s"`) |
//!
//! ```
//! use mesh_core::{MeshConfig, Store};
//! let store = Store::new();
//! let bad = "clusters: [{ name: a, connect_timeout: 0s }]";
//! let err = MeshConfig::from_yaml(bad).unwrap_err();
//! assert_eq!(err.to_string(), "clusters[0].connect_timeout: must be greater than 0");
//! assert_eq!(store.version(), 0); // nothing applied
//! ```

pub mod cel;
pub mod config;
pub mod duration;
pub mod error;
pub mod policy;
pub mod store;

pub use config::MeshConfig;
pub use config::cluster::{Cluster, DiscoveryType, LbPolicy, Protocol};
pub use config::endpoint::{
    ClusterLoadAssignment, HealthStatus, LbEndpoint, Locality, LocalityLbEndpoints,
};
pub use config::listener::Listener;
pub use config::route::{Route, RouteAction, RouteConfig, RouteMatch, VirtualHost};
pub use error::{ConfigError, FieldPath, ValidationError};
pub use store::{Absence, Interest, InterestGuard, ResourceKind, Snapshot, SourceStatus, Store};

/// The error type of services and sources throughout the mesh crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
