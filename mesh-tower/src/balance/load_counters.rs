//! Per-endpoint request counts for load reports (LRS; see `cluster::load`), kept with the
//! endpoint's other stats so they survive config updates.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-endpoint request counts since the last report (the mesh counts; a load reporter
/// takes them).
///
/// ```
/// let counters = mesh_tower::balance::LoadCounters::default();
/// assert!(format!("{counters:?}").contains("issued: 0"));
/// ```
#[derive(Debug, Default)]
pub struct LoadCounters {
    issued: AtomicU64,
    succeeded: AtomicU64,
    errored: AtomicU64,
}

impl LoadCounters {
    pub(crate) fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ok: bool) {
        let c = if ok { &self.succeeded } else { &self.errored };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn take(&self) -> (u64, u64, u64) {
        (
            self.issued.swap(0, Ordering::Relaxed),
            self.succeeded.swap(0, Ordering::Relaxed),
            self.errored.swap(0, Ordering::Relaxed),
        )
    }
}
