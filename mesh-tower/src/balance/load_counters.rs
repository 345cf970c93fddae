//! Per-endpoint request counts for load reports (LRS; see `cluster::load`), kept with the
//! endpoint's other stats so they survive config updates.

use std::sync::Mutex;
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
    /// Named metrics from the endpoint's per-response ORCA reports (gRFC A64): per name,
    /// reports carrying it and their sum. A lock, taken only for responses that carry
    /// named metrics to a reporting cluster.
    named: Mutex<Vec<NamedMetric>>,
}

/// One named metric's reports since the last load report (gRFC A64).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamedMetric {
    /// The metric's key in the ORCA reports.
    pub name: String,
    /// Requests whose report carried it.
    pub requests: u64,
    /// The sum of its values.
    pub total: f64,
}

impl LoadCounters {
    pub(crate) fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ok: bool) {
        let c = if ok { &self.succeeded } else { &self.errored };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one response's named metrics.
    pub(crate) fn named(&self, metrics: &[(String, f64)]) {
        if metrics.is_empty() {
            return;
        }
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        for (name, value) in metrics {
            match named.iter_mut().find(|m| m.name == *name) {
                Some(m) => {
                    m.requests += 1;
                    m.total += value;
                }
                None => named.push(NamedMetric {
                    name: name.clone(),
                    requests: 1,
                    total: *value,
                }),
            }
        }
    }

    /// The named metrics since the last call (cleared).
    pub(crate) fn take_named(&self) -> Vec<NamedMetric> {
        std::mem::take(&mut *self.named.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn take(&self) -> (u64, u64, u64) {
        (
            self.issued.swap(0, Ordering::Relaxed),
            self.succeeded.swap(0, Ordering::Relaxed),
            self.errored.swap(0, Ordering::Relaxed),
        )
    }
}
