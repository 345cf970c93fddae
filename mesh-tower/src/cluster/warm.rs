//! Warming a target's clusters before its first call.
//!
//! Cluster state is made on first use (a mesh with thousands of clusters pays only for those
//! it calls), so a DNS cluster starts resolving when the first request needs it, and that
//! request fails with "no address resolved yet". Envoy resolves a DNS cluster when the
//! cluster is added; gRPC resolves before its channel is ready. [`Mesh::wait_ready`] does the
//! same for its target once the config is complete: it makes the state of every cluster the
//! target's routes name (an aggregate's flattened clusters included) and waits for each DNS
//! cluster's first lookup, so the first call after it finds addresses — above all the DNS
//! last resort of an aggregate, needed exactly when the clusters before it are down.
//!
//! [`Mesh::wait_ready`]: crate::Mesh::wait_ready

use super::registry::Registry;
use mesh_core::Snapshot;
use mesh_core::config::listener::RouteSource;
use std::sync::Arc;

/// The clusters a request to `listener` may go to: those its routes name, an aggregate
/// replaced by its flattened clusters; each once, in route order.
pub(crate) fn clusters_of(snap: &Snapshot, listener: &str) -> Vec<String> {
    let rc = match snap.listener(listener).and_then(|l| l.route_source()) {
        Some(RouteSource::Inline(rc)) => rc,
        Some(RouteSource::Rds(name)) => match snap.route_config(name) {
            Some(rc) => rc,
            None => return Vec::new(),
        },
        None => return Vec::new(),
    };
    let mut out: Vec<String> = Vec::new();
    let named = rc
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter_map(|r| r.route.as_ref())
        .flat_map(|a| a.cluster_names());
    for name in named {
        let leaves = match snap.aggregate_leaves(name) {
            Some(Ok(leaves)) => leaves,
            Some(Err(_)) => Vec::new(),
            None => vec![name.to_owned()],
        };
        for leaf in leaves {
            if !out.contains(&leaf) {
                out.push(leaf);
            }
        }
    }
    out
}

/// Makes the state of `listener`'s clusters and waits for their DNS clusters' first lookups.
pub(crate) async fn warm(registry: &Registry, snap: &Snapshot, listener: &str) {
    let handles: Vec<_> = clusters_of(snap, listener)
        .into_iter()
        .map(|name| registry.get(&Arc::from(name)))
        .collect();
    for h in handles {
        h.first_lookup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_clusters_include_its_aggregates_flattened_once_each() {
        let yaml = r#"
listeners:
  - name: web
    route_config:
      virtual_hosts:
        - name: web
          domains: ["*"]
          routes:
            - { match: { prefix: /a }, route: { cluster: top } }
            - { match: { prefix: /b }, route: { weighted_clusters: { clusters: [{ name: c2, weight: 1 }, { name: solo, weight: 1 }] } } }
clusters:
  - { name: top, cluster_type: { name: envoy.clusters.aggregate, typed_config: { clusters: [mid, c3] } } }
  - { name: mid, cluster_type: { name: envoy.clusters.aggregate, typed_config: { clusters: [c1, c2] } } }
  - { name: c1 }
  - { name: c2 }
  - { name: c3 }
  - { name: solo }
"#;
        let store = mesh_core::Store::new();
        store
            .replace(mesh_core::MeshConfig::from_yaml(yaml).unwrap())
            .unwrap();
        assert_eq!(
            clusters_of(&store.load(), "web"),
            ["c1", "c2", "c3", "solo"]
        );
        assert!(clusters_of(&store.load(), "nowhere").is_empty());
    }
}
