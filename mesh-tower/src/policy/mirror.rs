//! The compiled policy of the [`mirror`](crate::mirror) layer, built once per route when the
//! route table compiles and read by the layer per request.

use mesh_core::policy::FractionalPercent;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// One compiled mirror policy.
#[derive(Clone, Debug)]
pub struct MirrorPolicy {
    /// The shadow cluster.
    pub cluster: Arc<str>,
    /// Share of requests mirrored (`None`: all).
    pub fraction: Option<FractionalPercent>,
}

/// Counts of mirrored requests.
#[derive(Debug, Default)]
pub struct MirrorStats {
    pub(crate) sent: AtomicU64,
    pub(crate) skipped: AtomicU64,
}
