//! Aggregate clusters (gRFC A37, Envoy's `envoy.clusters.aggregate`): which of its clusters a
//! request goes to.
//!
//! Why a step of its own before the pick: the clusters of an aggregate differ in everything
//! but their role (discovery, balancer, TLS, limits), so the request must become a request to
//! one of them, with that cluster's circuit breaker, connections and balancer, as Envoy hands
//! it to the chosen cluster's load balancer. The choice is Envoy's: every priority level of
//! every cluster in the aggregate's order makes one list, each level's health is its
//! cluster's overprovisioning factor times its healthy share, and the priority loads over
//! that list say how much each level takes (all to the first while it is healthy enough,
//! spilling to the next as its health drops). Nothing is allocated: the levels go in a fixed
//! array on the stack.

use super::registry::{ClusterHandle, Registry};
use std::sync::Arc;

/// Levels considered, over all the aggregate's clusters together; later ones are ignored.
pub(crate) const MAX_LEVELS: usize = 32;

/// The cluster of `children` a request goes to, drawn by `r` (a random number, or the
/// request's hash so a key stays put); `None` when none of them has an endpoint.
pub(crate) fn choose(
    registry: &Registry,
    children: &[Arc<str>],
    panic_threshold: f64,
    r: u64,
) -> Option<Arc<ClusterHandle>> {
    // (child, health in percent, endpoints) per level.
    let mut levels = [(0usize, 0u32, 0usize); MAX_LEVELS];
    let mut n = 0;
    for (i, name) in children.iter().enumerate() {
        let state = registry.get(name).current();
        let (counts, factor) = state.level_counts();
        for &(healthy, total) in counts {
            if n == MAX_LEVELS {
                break;
            }
            let health = match total {
                0 => 0,
                _ => (u64::from(factor) * healthy as u64 / total as u64).min(100) as u32,
            };
            levels[n] = (i, health, total);
            n += 1;
        }
    }
    let level = pick_level(&levels[..n], panic_threshold, r)?;
    Some(registry.get(&children[levels[level].0]))
}

/// Envoy's priority loads over `levels` (health percent and endpoints of each), drawn by `r`:
/// the level's index. In panic (total health under the threshold, or none), by endpoint
/// count, as Envoy spreads load when every level is in panic.
fn pick_level(levels: &[(usize, u32, usize)], panic_threshold: f64, r: u64) -> Option<usize> {
    let total_health = levels.iter().map(|l| l.1).sum::<u32>().min(100);
    if total_health == 0 || f64::from(total_health) < panic_threshold {
        let hosts: usize = levels.iter().map(|l| l.2).sum();
        if hosts == 0 {
            return None;
        }
        let mut at = (r % hosts as u64) as usize;
        return levels.iter().position(|l| {
            let here = at < l.2;
            at = at.saturating_sub(l.2);
            here
        });
    }
    let point = (r % 100) as u32;
    // Each level's load, in order, the rounding leftover to the first level with health.
    let first = levels.iter().position(|l| l.1 > 0)?;
    let mut loads = [0u32; MAX_LEVELS];
    let mut remaining = 100u32;
    for (i, l) in levels.iter().enumerate() {
        let load = (l.1 * 100 / total_health).min(remaining);
        loads[i] = load;
        remaining -= load;
    }
    loads[first] += remaining;
    let mut cumulative = 0;
    for (i, load) in loads[..levels.len()].iter().enumerate() {
        cumulative += load;
        if point < cumulative {
            return Some(i);
        }
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of 100 evenly spread draws each level takes.
    fn shares(levels: &[(usize, u32, usize)]) -> Vec<usize> {
        let mut out = vec![0; levels.len()];
        for r in 0..100 {
            out[pick_level(levels, 50.0, r).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn the_first_healthy_cluster_takes_all_then_spills_as_its_health_drops() {
        // Primary fully healthy (140% capped at 100): all of it.
        assert_eq!(shares(&[(0, 100, 4), (1, 100, 2)]), [100, 0]);
        // Primary 1 of 4 healthy: 1.4 × 25% = 35%; the secondary takes the rest.
        assert_eq!(shares(&[(0, 35, 4), (1, 100, 2)]), [35, 65]);
        // Primary down, secondary down, the DNS last resort healthy.
        assert_eq!(shares(&[(0, 0, 4), (1, 0, 2), (2, 100, 1)]), [0, 0, 100]);
        // Two levels of the first cluster come before the second cluster's.
        assert_eq!(shares(&[(0, 70, 2), (0, 20, 2), (1, 100, 1)]), [70, 20, 10]);
    }

    #[test]
    fn in_panic_load_follows_endpoint_counts_and_nothing_means_none() {
        assert_eq!(shares(&[(0, 14, 10), (1, 0, 10)]), [50, 50]);
        assert_eq!(pick_level(&[(0, 0, 0), (1, 0, 0)], 50.0, 7), None);
        assert_eq!(pick_level(&[], 50.0, 7), None);
    }
}
