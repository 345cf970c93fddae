//! Config sources that live in this crate (the YAML file); the xDS client lives in
//! `mesh-xds-client` and writes to the same [`mesh_core::Store`].

pub(crate) mod file;
