//! Round robin: each endpoint in turn.
//!
//! The position is one atomic counter, so concurrent picks never contend on a lock. A new
//! endpoint list starts at a random position (as gRPC's round robin does) so that many clients
//! updated at once do not all hit the first endpoint together.
//!
//! Endpoint weights are not applied yet (as in gRPC's `round_robin`); the weighted variant
//! comes with the load-balancing work.

use super::{Balance, EndpointInfo, PickContext};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Round-robin picker.
///
/// ```
/// use mesh_tower::balance::RoundRobin;
/// let rr = RoundRobin::starting_at(0);
/// assert_eq!((rr.next_index(3), rr.next_index(3), rr.next_index(3), rr.next_index(3)), (Some(0), Some(1), Some(2), Some(0)));
/// ```
#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A picker over `n` endpoints starting at a random position.
    pub fn new(n: usize) -> Self {
        Self::starting_at(if n == 0 { 0 } else { fastrand::usize(..n) })
    }

    /// A picker starting at `start` (for deterministic tests).
    pub fn starting_at(start: usize) -> Self {
        Self {
            next: AtomicUsize::new(start),
        }
    }

    /// The next index among `n` endpoints.
    pub fn next_index(&self, n: usize) -> Option<usize> {
        if n == 0 {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % n)
    }
}

impl Balance for RoundRobin {
    fn pick(&self, endpoints: &[EndpointInfo], _: &PickContext<'_>) -> Option<usize> {
        self.next_index(endpoints.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn spreads_evenly_across_endpoints() {
        let rr = RoundRobin::new(7);
        let mut counts = HashMap::new();
        for _ in 0..7 * 100 {
            *counts.entry(rr.next_index(7).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 7);
        assert!(counts.values().all(|&c| c == 100), "{counts:?}");
    }

    #[test]
    fn empty_list_picks_nothing() {
        assert_eq!(RoundRobin::new(0).next_index(0), None);
    }

    #[test]
    fn survives_counter_wraparound() {
        let rr = RoundRobin::starting_at(usize::MAX);
        assert_eq!(rr.next_index(3), Some(usize::MAX % 3));
        assert_eq!(rr.next_index(3), Some(0));
    }
}
