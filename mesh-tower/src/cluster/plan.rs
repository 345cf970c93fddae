//! How a cluster's endpoints are split for picking: priority levels with Envoy's load
//! computation (overprovisioning factor, spill-over to the next level as health drops), panic
//! mode, and optional locality weighting inside a level.
//!
//! Envoy's rules, in brief: a level's *health* is `min(100, factor × healthy / total)` percent
//! (factor 1.4 by default, so a level at 72% healthy keeps all its traffic); levels take load
//! in order, each at most its health, normalised so the loads add up to 100 whenever any
//! endpoint is healthy. When the normalised total health falls below the panic threshold (50%
//! by default), health no longer filters: every endpoint of a level (except DRAINING ones) is
//! eligible, since sending some requests to doubtful endpoints beats overloading the few left.
//! With `locality_weighted_lb_config`, a level first draws a locality by `weight × its
//! availability` and then balances inside it.

use crate::balance::{self, Balance, EndpointInfo, PickContext};
use mesh_core::{Cluster, HealthStatus};

/// One balancer over a subset of the cluster's endpoints.
#[derive(Debug)]
pub(crate) struct Group {
    /// Indices into the cluster's endpoint list.
    index: Vec<usize>,
    endpoints: Vec<EndpointInfo>,
    balancer: Box<dyn Balance>,
}

#[cfg(test)]
thread_local! {
    /// Groups (balancers: ring-hash rings, Maglev tables, …) built on this thread (tests).
    static GROUPS_BUILT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Group {
    fn new(cluster: &Cluster, all: &[EndpointInfo], index: Vec<usize>) -> Self {
        #[cfg(test)]
        GROUPS_BUILT.with(|n| n.set(n.get() + 1));
        let endpoints: Vec<EndpointInfo> = index.iter().map(|&i| all[i].clone()).collect();
        let balancer = balance::for_cluster(cluster, &endpoints);
        Self {
            index,
            endpoints,
            balancer,
        }
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let i = self.balancer.pick(&self.endpoints, ctx)?;
        self.index.get(i).copied()
    }
}

/// One priority level.
#[derive(Debug)]
struct Level {
    /// The level's eligible endpoints: the healthy ones, or in panic mode every one but the
    /// DRAINING ones. Only the group the plan uses is built (a ring-hash ring or Maglev
    /// table is built once per update, not twice).
    group: Group,
    /// With locality weighting: (cumulative effective weight, group of the locality's healthy
    /// endpoints).
    localities: Vec<(f64, Group)>,
    /// Zone-aware routing, when configured and applicable to this level.
    zone: Option<ZonePlan>,
}

/// Zone-aware routing of one level: how much stays in the caller's zone, and where the rest
/// spills.
#[derive(Debug)]
struct ZonePlan {
    enabled: f64,
    local_share: f64,
    local: Group,
    /// (cumulative residual capacity, group of that zone's healthy endpoints).
    residual: Vec<(f64, Group)>,
}

/// The caller's side of zone-aware routing: its zone, and how its own cluster's endpoints are
/// spread over zones (a lone client counts as 100% in its zone).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LocalView {
    pub(crate) zone: String,
    pub(crate) shares: Vec<(String, f64)>,
}

/// The pick plan of a cluster.
#[derive(Debug)]
pub(crate) struct Plan {
    levels: Vec<Level>,
    /// Cumulative load per level, out of 100.
    loads: Vec<u32>,
    pub(crate) panic: bool,
    /// (healthy, total) endpoints per level and the overprovisioning factor they were
    /// weighed with: what an aggregate cluster weighs this one by.
    counts: Vec<(usize, usize)>,
    factor: u32,
}

/// Envoy's priority loads: health per level from `(healthy, total)`, the overprovisioning
/// factor (percent), and whether the cluster is in panic under `panic_threshold` (percent).
pub(crate) fn priority_loads(
    levels: &[(usize, usize)],
    factor: u32,
    panic_threshold: f64,
) -> (Vec<u32>, bool) {
    let health: Vec<u32> = levels
        .iter()
        .map(|&(healthy, total)| {
            if total == 0 {
                0
            } else {
                ((u64::from(factor) * healthy as u64 / total as u64).min(100)) as u32
            }
        })
        .collect();
    let total_health = health.iter().sum::<u32>().min(100);
    let panic = f64::from(total_health) < panic_threshold;
    if panic || total_health == 0 {
        // Panic: spread by endpoint count, as Envoy does when every level is in panic.
        let hosts: usize = levels.iter().map(|l| l.1).sum();
        let mut loads: Vec<u32> = levels
            .iter()
            .map(|l| (l.1 * 100).checked_div(hosts).unwrap_or(0) as u32)
            .collect();
        fix_rounding(&mut loads, levels);
        return (loads, true);
    }
    let mut remaining = 100u32;
    let mut loads: Vec<u32> = health
        .iter()
        .map(|h| {
            let load = (h * 100 / total_health).min(remaining);
            remaining -= load;
            load
        })
        .collect();
    // Rounding leftovers go to the first level with health.
    if remaining > 0
        && let Some(i) = health.iter().position(|h| *h > 0)
    {
        loads[i] += remaining;
    }
    (loads, false)
}

/// Makes panic-mode loads add up to 100 (rounding leftovers to the largest level).
fn fix_rounding(loads: &mut [u32], levels: &[(usize, usize)]) {
    let sum: u32 = loads.iter().sum();
    if sum == 100 || sum == 0 {
        return;
    }
    if let Some((i, _)) = levels.iter().enumerate().max_by_key(|(_, l)| l.1) {
        loads[i] = loads[i] + 100 - sum.min(100);
    }
}

/// Where the caller runs, for zone-aware routing: its zone and, optionally, the cluster it
/// belongs to (whose endpoints tell how callers are spread over zones).
#[derive(Clone, Debug)]
pub(crate) struct LocalZone {
    pub(crate) zone: String,
    pub(crate) cluster: Option<String>,
}

impl LocalZone {
    /// The caller-side shares from the current config.
    pub(crate) fn view(&self, snap: &mesh_core::Snapshot) -> LocalView {
        let mut counts: Vec<(String, f64)> = Vec::new();
        if let Some(c) = self.cluster.as_deref().and_then(|n| snap.cluster(n))
            && let Some(cla) = snap.endpoints_for(c)
        {
            for (_, loc, ep) in cla.iter_endpoints() {
                if !ep.health_status.is_usable() {
                    continue;
                }
                match counts.iter_mut().find(|(z, _)| *z == loc.locality.zone) {
                    Some((_, n)) => *n += 1.0,
                    None => counts.push((loc.locality.zone.clone(), 1.0)),
                }
            }
        }
        let total: f64 = counts.iter().map(|c| c.1).sum();
        let shares = if total > 0.0 {
            counts.into_iter().map(|(z, n)| (z, n / total)).collect()
        } else {
            vec![(self.zone.clone(), 1.0)]
        };
        LocalView {
            zone: self.zone.clone(),
            shares,
        }
    }
}

impl Plan {
    /// A plan over `endpoints` (all of a cluster's, any health) for `cluster`.
    pub(crate) fn new(
        cluster: &Cluster,
        endpoints: &[EndpointInfo],
        factor: u32,
        local: Option<&LocalView>,
    ) -> Self {
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let common = cluster.common_lb_config.as_ref();
        let panic_threshold = common
            .and_then(|c| c.healthy_panic_threshold)
            .map_or(50.0, |p| p.value);
        let by_locality = common.is_some_and(|c| c.locality_weighted_lb_config.is_some());
        let in_levels: Vec<Vec<usize>> = priorities
            .iter()
            .map(|p| {
                (0..endpoints.len())
                    .filter(|&i| endpoints[i].priority == *p)
                    .collect()
            })
            .collect();
        let healthy_of = |in_level: &[usize]| -> Vec<usize> {
            in_level
                .iter()
                .copied()
                .filter(|&i| endpoints[i].health_status.is_usable())
                .collect()
        };
        let counts: Vec<(usize, usize)> = in_levels
            .iter()
            .map(|l| (healthy_of(l).len(), l.len()))
            .collect();
        // Whether the cluster is in panic decides which group each level needs.
        let (loads, panic) = priority_loads(&counts, factor, panic_threshold);
        let mut levels = Vec::new();
        for in_level in &in_levels {
            if panic {
                let all: Vec<usize> = in_level
                    .iter()
                    .copied()
                    .filter(|&i| endpoints[i].health_status != HealthStatus::Draining)
                    .collect();
                levels.push(Level {
                    group: Group::new(cluster, endpoints, all),
                    localities: Vec::new(),
                    zone: None,
                });
                continue;
            }
            let healthy = healthy_of(in_level);
            let localities = if by_locality {
                locality_groups(cluster, endpoints, in_level, factor)
            } else {
                Vec::new()
            };
            // Envoy applies zone-aware routing to the first level only.
            let zone = match (common.and_then(|c| c.zone_aware_lb_config.as_ref()), local) {
                (Some(z), Some(view)) if levels.is_empty() => {
                    zone_plan(cluster, endpoints, &healthy, z, view)
                }
                _ => None,
            };
            levels.push(Level {
                zone,
                group: Group::new(cluster, endpoints, healthy),
                localities,
            });
        }
        let mut sum = 0;
        let loads = loads
            .into_iter()
            .map(|l| {
                sum += l;
                sum
            })
            .collect();
        Self {
            levels,
            loads,
            panic,
            counts,
            factor,
        }
    }

    /// (healthy, total) endpoints per level, and the overprovisioning factor (percent).
    pub(crate) fn level_counts(&self) -> (&[(usize, usize)], u32) {
        (&self.counts, self.factor)
    }

    /// An empty plan (no cluster).
    pub(crate) fn empty() -> Self {
        Self {
            levels: Vec::new(),
            loads: Vec::new(),
            panic: false,
            counts: Vec::new(),
            factor: mesh_core::config::endpoint::DEFAULT_OVERPROVISIONING_FACTOR,
        }
    }

    /// The index (into the cluster's endpoints) of the pick.
    pub(crate) fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if self.levels.is_empty() {
            return None;
        }
        // One level (the common case) needs no draw. Otherwise hash policies pick the level from
        // the hash too, so a key stays put (Envoy does this).
        let level = if self.levels.len() == 1 {
            0
        } else {
            let r = ctx.hash.unwrap_or_else(|| fastrand::u64(..));
            let point = (r % 100) as u32;
            self.loads
                .partition_point(|c| *c <= point)
                .min(self.levels.len() - 1)
        };
        let l = &self.levels[level];
        if self.panic {
            return l.group.pick(ctx);
        }
        if let Some(z) = &l.zone
            && fastrand::f64() < z.enabled
        {
            if fastrand::f64() < z.local_share {
                if let Some(p) = z.local.pick(ctx) {
                    return Some(p);
                }
            } else if let Some(total) = z.residual.last().map(|x| x.0)
                && total > 0.0
            {
                let at = fastrand::f64() * total;
                let i = z
                    .residual
                    .partition_point(|(c, _)| *c <= at)
                    .min(z.residual.len() - 1);
                if let Some(p) = z.residual[i].1.pick(ctx) {
                    return Some(p);
                }
            }
        }
        if !l.localities.is_empty() {
            let total = l.localities.last().map_or(0.0, |x| x.0);
            if total > 0.0 {
                let at = fastrand::f64() * total;
                let i = l
                    .localities
                    .partition_point(|(c, _)| *c <= at)
                    .min(l.localities.len() - 1);
                if let Some(p) = l.localities[i].1.pick(ctx) {
                    return Some(p);
                }
            }
        }
        l.group.pick(ctx)
    }
}

/// Envoy's zone-aware split for the healthy endpoints of a level: all traffic stays in the
/// caller's zone when that zone holds at least the caller's share of upstream endpoints;
/// otherwise the local zone takes what its share allows (`upstream% / local%`) and the rest
/// spills to zones with spare capacity (`upstream% − local%`), in proportion to it.
fn zone_plan(
    cluster: &Cluster,
    endpoints: &[EndpointInfo],
    healthy: &[usize],
    config: &mesh_core::config::cluster::ZoneAwareConfig,
    view: &LocalView,
) -> Option<ZonePlan> {
    let min = config.min_cluster_size.unwrap_or(6) as usize;
    if healthy.len() < min || healthy.is_empty() {
        return None;
    }
    let mut zones: Vec<&str> = Vec::new();
    for &i in healthy {
        let z = endpoints[i].locality.zone.as_str();
        if !zones.contains(&z) {
            zones.push(z);
        }
    }
    let upstream = |z: &str| {
        healthy
            .iter()
            .filter(|&&i| endpoints[i].locality.zone == z)
            .count() as f64
            / healthy.len() as f64
    };
    let local_of = |z: &str| {
        view.shares
            .iter()
            .find(|(name, _)| name == z)
            .map_or(0.0, |(_, s)| *s)
    };
    let here = view.zone.as_str();
    let (u_here, l_here) = (upstream(here), local_of(here));
    let members = |z: &str| -> Vec<usize> {
        healthy
            .iter()
            .copied()
            .filter(|&i| endpoints[i].locality.zone == z)
            .collect()
    };
    let local = Group::new(cluster, endpoints, members(here));
    let local_share = if l_here <= 0.0 || u_here >= l_here {
        if u_here > 0.0 { 1.0 } else { 0.0 }
    } else {
        u_here / l_here
    };
    let mut sum = 0.0;
    let residual = zones
        .iter()
        .filter(|z| **z != here)
        .filter_map(|z| {
            let spare = upstream(z) - local_of(z);
            (spare > 0.0).then(|| {
                sum += spare;
                (sum, Group::new(cluster, endpoints, members(z)))
            })
        })
        .collect();
    Some(ZonePlan {
        enabled: config.routing_enabled.map_or(1.0, |p| p.value / 100.0),
        local_share,
        local,
        residual,
    })
}

/// Locality groups of a level with their cumulative effective weights
/// (`weight × min(1, factor × healthy / total)`).
fn locality_groups(
    cluster: &Cluster,
    endpoints: &[EndpointInfo],
    in_level: &[usize],
    factor: u32,
) -> Vec<(f64, Group)> {
    let mut order: Vec<&std::sync::Arc<mesh_core::Locality>> = Vec::new();
    for &i in in_level {
        if !order.iter().any(|l| ***l == *endpoints[i].locality) {
            order.push(&endpoints[i].locality);
        }
    }
    let mut sum = 0.0;
    let mut out = Vec::new();
    for loc in order {
        let members: Vec<usize> = in_level
            .iter()
            .copied()
            .filter(|&i| *endpoints[i].locality == **loc)
            .collect();
        let healthy: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| endpoints[i].health_status.is_usable())
            .collect();
        let weight = members.first().map_or(0, |&i| endpoints[i].locality_weight) as f64;
        let avail = (f64::from(factor) / 100.0 * healthy.len() as f64
            / members.len().max(1) as f64)
            .min(1.0);
        sum += weight * avail;
        out.push((sum, Group::new(cluster, endpoints, healthy)));
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
