//! Maglev (Envoy's `MAGLEV`): consistent hashing with a lookup table, O(1) per pick.
//!
//! Each endpoint fills slots of a prime-sized table (65537 by default) along its own
//! permutation (offset and skip from `xxHash64` of its address with seeds 0 and 1); heavier
//! endpoints take turns more often. A request's hash indexes the table directly. Built as Envoy
//! builds it — endpoints sorted by address, the same permutations and weighted turn-taking — so
//! keys agree with Envoy's picks. Compared with the ring, lookups are faster and the spread is
//! more even; key movement on membership change is slightly higher.

use super::{Balance, EndpointInfo, PickContext};
use std::net::SocketAddr;
use xxhash_rust::xxh64::xxh64;

/// Envoy's default table size (prime).
pub const DEFAULT_TABLE_SIZE: u64 = 65537;

/// A built Maglev table.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table for endpoints `(address, weight)`; `size` must be prime (validation
    /// checks it with [`mesh_core::config::cluster::is_prime`]).
    pub fn new(endpoints: &[(SocketAddr, u32)], size: u64) -> Self {
        if endpoints.is_empty() || size < 2 {
            return Self { table: Vec::new() };
        }
        let total: f64 = endpoints.iter().map(|(_, w)| f64::from((*w).max(1))).sum();
        // Sorted by the hash key, as Envoy does, so the table does not depend on EDS order.
        let mut entries: Vec<(String, u32, f64)> = endpoints
            .iter()
            .enumerate()
            .map(|(i, (a, w))| (a.to_string(), i as u32, f64::from((*w).max(1)) / total))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        struct Build {
            index: u32,
            offset: u64,
            skip: u64,
            weight: f64,
            target: f64,
            next: u64,
        }
        let max_weight = entries.iter().map(|e| e.2).fold(0.0, f64::max);
        let mut builds: Vec<Build> = entries
            .iter()
            .map(|(key, index, weight)| Build {
                index: *index,
                offset: xxh64(key.as_bytes(), 0) % size,
                skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
                weight: *weight,
                target: 0.0,
                next: 0,
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < size {
            for b in builds.iter_mut() {
                if filled >= size {
                    break;
                }
                if (iteration as f64) * b.weight < b.target {
                    continue;
                }
                b.target += max_weight;
                let mut c = (b.offset + b.skip * b.next) % size;
                while table[c as usize] != u32::MAX {
                    b.next += 1;
                    c = (b.offset + b.skip * b.next) % size;
                }
                table[c as usize] = b.index;
                b.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Self { table }
    }

    /// The endpoint for `hash`; `attempt > 0` perturbs the hash as Envoy does for retries.
    pub fn index_for(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let h = if attempt > 0 {
            hash ^ (u64::MAX - u64::from(attempt) + 1)
        } else {
            hash
        };
        Some(self.table[(h % self.table.len() as u64) as usize] as usize)
    }
}

impl Balance for Maglev {
    fn pick(&self, _: &[EndpointInfo], ctx: &PickContext<'_>) -> Option<usize> {
        let hash = ctx.hash.unwrap_or_else(|| fastrand::u64(..));
        self.index_for(hash, ctx.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16, w: u32) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| (SocketAddr::from(([10, 0, 0, 1], 8000 + i)), w))
            .collect()
    }

    #[test]
    fn slots_follow_weights() {
        let mut eps = addrs(3, 1);
        eps[2].1 = 2;
        let m = Maglev::new(&eps, DEFAULT_TABLE_SIZE);
        let mut counts = [0usize; 3];
        for i in &m.table {
            counts[*i as usize] += 1;
        }
        let share = |c: usize| c as f64 / DEFAULT_TABLE_SIZE as f64;
        assert!((share(counts[2]) - 0.5).abs() < 0.01, "{counts:?}");
        assert!((share(counts[0]) - 0.25).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn adding_one_endpoint_moves_about_a_share_of_keys() {
        let before = Maglev::new(&addrs(10, 1), DEFAULT_TABLE_SIZE);
        let after = Maglev::new(&addrs(11, 1), DEFAULT_TABLE_SIZE);
        let moved = (0..10_000u64)
            .filter(|k| {
                let h = xxh64(&k.to_le_bytes(), 0);
                before.index_for(h, 0) != after.index_for(h, 0)
            })
            .count();
        assert!((700..=1500).contains(&moved), "{moved}");
    }

    #[test]
    fn order_of_endpoints_does_not_matter() {
        let eps = addrs(5, 1);
        let mut rev = eps.clone();
        rev.reverse();
        let (a, b) = (Maglev::new(&eps, 251), Maglev::new(&rev, 251));
        for h in 0..251u64 {
            let (i, j) = (a.index_for(h, 0).unwrap(), b.index_for(h, 0).unwrap());
            assert_eq!(eps[i].0, rev[j].0);
        }
        let is_prime = mesh_core::config::cluster::is_prime;
        assert!(is_prime(65537) && !is_prime(65536));
    }
}
