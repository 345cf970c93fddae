//! Round robin: each endpoint in turn.
//!
//! The position is one atomic counter, so concurrent picks never contend on a lock. A new
//! endpoint list starts at a random position (as gRPC's round robin does) so that many clients
//! updated at once do not all hit the first endpoint together.
//!
//! Endpoint weights are applied as Envoy's round robin applies them: unequal weights give a
//! schedule of one weighted round (earliest deadline first), which picks walk with the same
//! counter; equal weights need no schedule.

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
    /// With unequal weights: the order of one weighted round, as an earliest-deadline-first
    /// scheduler (Envoy's) would produce it; picks walk it with the same atomic counter.
    schedule: Option<Vec<u32>>,
}

/// Longest weighted round kept; heavier weight sets are scaled down to fit (proportions kept
/// to within 1/4096 of the total).
const MAX_SCHEDULE: u64 = 4096;

impl RoundRobin {
    /// A picker over `n` endpoints starting at a random position.
    pub fn new(n: usize) -> Self {
        Self::starting_at(if n == 0 { 0 } else { fastrand::usize(..n) })
    }

    /// A picker starting at `start` (for deterministic tests).
    pub fn starting_at(start: usize) -> Self {
        Self {
            next: AtomicUsize::new(start),
            schedule: None,
        }
    }

    /// A picker honouring `load_balancing_weight`: each endpoint appears in a round in
    /// proportion to its weight, spread out (earliest deadline first) rather than bunched.
    pub fn weighted(weights: &[u32]) -> Self {
        let n = weights.len();
        if weights.windows(2).all(|w| w[0] == w[1]) {
            return Self::new(n);
        }
        let total: u64 = weights.iter().map(|w| u64::from((*w).max(1))).sum();
        let scale = if total > MAX_SCHEDULE {
            MAX_SCHEDULE as f64 / total as f64
        } else {
            1.0
        };
        let slots: Vec<u64> = weights
            .iter()
            .map(|w| ((f64::from((*w).max(1)) * scale).round() as u64).max(1))
            .collect();
        let len: u64 = slots.iter().sum();
        // EDF: endpoint i's k-th turn is due at k / w_i; ties go to the lower index.
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u32)>> = slots
            .iter()
            .enumerate()
            .map(|(i, w)| std::cmp::Reverse((len / w, i as u32)))
            .collect();
        let mut turns = vec![1u64; n];
        let mut schedule = Vec::with_capacity(len as usize);
        while (schedule.len() as u64) < len {
            let std::cmp::Reverse((_, i)) = heap.pop().expect("non-empty");
            schedule.push(i);
            let i = i as usize;
            turns[i] += 1;
            heap.push(std::cmp::Reverse((turns[i] * len / slots[i], i as u32)));
        }
        Self {
            next: AtomicUsize::new(fastrand::usize(..schedule.len().max(1))),
            schedule: Some(schedule),
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
        match &self.schedule {
            None => self.next_index(endpoints.len()),
            Some(s) => self
                .next_index(s.len())
                .map(|i| s[i] as usize)
                .filter(|i| *i < endpoints.len()),
        }
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
    fn weights_are_honoured_and_spread() {
        let rr = RoundRobin::weighted(&[1, 3, 6]);
        let s = rr.schedule.as_ref().unwrap();
        assert_eq!(s.len(), 10);
        let count = |i: u32| s.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2)), (1, 3, 6));
        // Spread: the heaviest never takes more than two turns in a row.
        assert!(
            s.windows(3).all(|w| !(w[0] == 2 && w[1] == 2 && w[2] == 2)),
            "{s:?}"
        );
        let big = RoundRobin::weighted(&[1000, 9000]);
        let s = big.schedule.as_ref().unwrap();
        let share = s.iter().filter(|&&x| x == 1).count() as f64 / s.len() as f64;
        assert!((share - 0.9).abs() < 0.01, "scaled to fit: {share}");
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
