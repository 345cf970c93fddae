//! # mesh-xds-client
//!
//! The xDS client that keeps a [`mesh_core::Store`] configured from a control plane (istiod,
//! go-control-plane-based servers, …): the gRPC bootstrap file, ADS over both the
//! State-of-the-World and the Delta protocol, the LDS → RDS → CDS → EDS cascade driven by the
//! store's interest, and translation of Envoy's protos into mesh-core config (the only place
//! in the project where protobuf types appear).
//!
//! **Status:** not implemented yet. Until it lands, configure the mesh from a YAML file
//! (`mesh_tower::Mesh::from_file`) or write to the store directly; the store API is the seam
//! this client will use:
//!
//! ```
//! use mesh_core::{Store, ResourceKind};
//! let store = Store::new();
//! // What the data plane needs: the xDS client subscribes to exactly these listeners.
//! let _guard = store.register_interest(ResourceKind::Listener, "greeter");
//! assert!(store.interest().borrow().contains(ResourceKind::Listener, "greeter"));
//! ```
