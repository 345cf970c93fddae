//! Envoy's header and string matchers, compiled: a leaf module that route matching, the
//! policies (faults, retries, hashing), RBAC, JWT and access log filters all use.
//!
//! Why a module of its own: the matchers depend on nothing else of the mesh, and the
//! request-path modules that use them must not depend on one another through them.

pub(crate) mod glob;
pub(crate) mod headers;
pub(crate) mod metadata;
