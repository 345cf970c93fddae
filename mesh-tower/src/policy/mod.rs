//! The compiled per-route policy: what the route layer decides and what each policy layer
//! reads from that decision.
//!
//! Why a module of its own: the route table compiles every policy of a route once (fault,
//! rate limit, rewrites, mirrors, retries, local answers, hash policy, header matchers) and the
//! layers behind it read them per request. Kept in the layers' own modules, those types made
//! the route module and every layer depend on each other. Here they sit below both, so the
//! module graph reads top-down: mesh → route → layers → cluster → balance / connect →
//! policy / endpoint / body. The layers re-export their policy types, so their public paths
//! are unchanged.

pub(crate) mod fault;
pub mod hash;
// Header matchers live in `matcher` (access logs use them too); kept reachable here.
pub(crate) use crate::matcher::headers;
pub(crate) mod local;
pub(crate) mod mirror;
pub(crate) mod ratelimit;
pub(crate) mod retry;
pub(crate) mod rewrite;
pub(crate) mod route;

pub use route::{RouteDecision, RoutePolicy};
