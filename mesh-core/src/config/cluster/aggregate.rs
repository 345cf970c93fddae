//! Aggregate clusters (Envoy's `envoy.clusters.aggregate`, gRFC A37): failover across whole
//! clusters, each with its own discovery, balancing, TLS and limits.
//!
//! Why a cluster of clusters: priorities inside one cluster fail over between endpoints that
//! share a configuration; an aggregate fails over to a cluster configured differently (an
//! EDS cluster first, a DNS name as the last resort; another region with longer timeouts).
//! The aggregate only names its clusters, in priority order; a request picks one by their
//! health (Envoy's priority loads over all their levels in that order) and that cluster's own
//! balancer picks the endpoint.

use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

/// Envoy's name of the aggregate cluster type.
pub const AGGREGATE_CLUSTER: &str = "envoy.clusters.aggregate";
/// The type URL of its config (`envoy.extensions.clusters.aggregate.v3.ClusterConfig`).
pub const AGGREGATE_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig";

/// Envoy's `Cluster.cluster_type` (a custom cluster); only the aggregate cluster exists here.
///
/// ```
/// let yaml = r#"
/// clusters:
///   - name: web
///     cluster_type:
///       name: envoy.clusters.aggregate
///       typed_config: { clusters: [web-primary, web-dns] }
///   - { name: web-primary }
///   - name: web-dns
///     type: STRICT_DNS
///     dns_endpoints: [{ hostname: web.example, port: 80 }]
/// "#;
/// let config = mesh_core::MeshConfig::from_yaml(yaml).unwrap();
/// assert_eq!(config.clusters[0].aggregate(), Some(&["web-primary".to_owned(), "web-dns".to_owned()][..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterType {
    /// The type's name: `envoy.clusters.aggregate`.
    pub name: String,
    /// Its config.
    pub typed_config: AggregateConfig,
}

/// `envoy.extensions.clusters.aggregate.v3.ClusterConfig`: the clusters, in priority order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The config's type URL, when written out (`AGGREGATE_CONFIG_TYPE`).
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub type_url: Option<String>,
    /// The clusters, highest priority first.
    pub clusters: Vec<String>,
}

impl ClusterType {
    /// An aggregate of `clusters`, highest priority first.
    pub fn aggregate(clusters: Vec<String>) -> Self {
        Self {
            name: AGGREGATE_CLUSTER.into(),
            typed_config: AggregateConfig {
                type_url: None,
                clusters,
            },
        }
    }

    /// Checks the type of cluster `own` (an aggregate may not name itself); `path` locates
    /// the `cluster_type` field.
    pub(crate) fn validate(&self, own: &str, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            self.name == AGGREGATE_CLUSTER,
            &path.field("name"),
            format!(
                "custom cluster type {:?} is not supported (only {AGGREGATE_CLUSTER})",
                self.name
            ),
        );
        let config = path.field("typed_config");
        if let Some(t) = &self.typed_config.type_url {
            errors.check(
                t == AGGREGATE_CONFIG_TYPE,
                &config.field("@type"),
                format!("must be {AGGREGATE_CONFIG_TYPE}"),
            );
        }
        let clusters = &self.typed_config.clusters;
        errors.check(
            !clusters.is_empty(),
            &config.field("clusters"),
            "must name at least one cluster",
        );
        for (i, name) in clusters.iter().enumerate() {
            let at = config.field("clusters").index(i);
            if name.is_empty() {
                errors.push(&at, "must not be empty");
            } else if name == own {
                errors.push(&at, "an aggregate cluster cannot contain itself");
            } else if clusters[..i].contains(name) {
                errors.push(&at, format!("{name:?} is listed twice"));
            }
        }
    }
}

/// How deep aggregates may nest (gRPC's limit): deeper graphs are refused.
pub const MAX_AGGREGATE_DEPTH: usize = 16;

/// The clusters an aggregate's traffic goes to: its graph of clusters flattened depth-first
/// in priority order, aggregates replaced by their own clusters, each cluster once (where it
/// first appears), as gRPC flattens nested aggregates (gRFC A37). `lookup` gives a cluster's
/// own list when it is an aggregate (`Some`), `None` for any other cluster, and the name of
/// one not known yet stays in the list as a leaf (it serves nothing until it arrives).
///
/// An error when the graph is deeper than [`MAX_AGGREGATE_DEPTH`] or leads to no cluster
/// that is not an aggregate (a cycle of aggregates).
///
/// ```
/// use mesh_core::config::cluster::flatten_aggregate;
/// let lists = |n: &str| match n {
///     "top" => Some(vec!["mid".to_owned(), "c".to_owned()]),
///     "mid" => Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]),
///     _ => None,
/// };
/// assert_eq!(flatten_aggregate("top", lists).unwrap(), ["a", "b", "c"]);
/// ```
pub fn flatten_aggregate(
    name: &str,
    lookup: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<String>, String> {
    fn visit(
        name: &str,
        depth: usize,
        lookup: &dyn Fn(&str) -> Option<Vec<String>>,
        seen: &mut Vec<String>,
        leaves: &mut Vec<String>,
    ) -> Result<(), String> {
        if seen.iter().any(|s| s == name) {
            return Ok(());
        }
        seen.push(name.to_owned());
        match lookup(name) {
            None => leaves.push(name.to_owned()),
            Some(_) if depth >= MAX_AGGREGATE_DEPTH => {
                return Err(format!(
                    "aggregate clusters nest deeper than {MAX_AGGREGATE_DEPTH} at {name:?}"
                ));
            }
            Some(children) => {
                for c in &children {
                    visit(c, depth + 1, lookup, seen, leaves)?;
                }
            }
        }
        Ok(())
    }
    let (mut seen, mut leaves) = (Vec::new(), Vec::new());
    visit(name, 0, &lookup, &mut seen, &mut leaves)?;
    if leaves.is_empty() {
        return Err(format!(
            "aggregate cluster {name:?} leads to no cluster that is not an aggregate"
        ));
    }
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::flatten_aggregate;
    use crate::MeshConfig;

    /// The validation errors of a document with these clusters.
    fn errors(clusters: &str) -> Vec<String> {
        let yaml = format!("clusters:\n{clusters}");
        match MeshConfig::from_yaml(&yaml) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    const CHILDREN: &str = "  - { name: a }\n  - { name: b }\n  - { name: inner, cluster_type: { name: envoy.clusters.aggregate, typed_config: { clusters: [a] } } }\n";

    #[test]
    fn an_aggregate_names_clusters_of_the_document_once_each() {
        let agg = |list: &str| {
            format!(
                "{CHILDREN}  - name: agg\n    cluster_type: {{ name: envoy.clusters.aggregate, typed_config: {{ clusters: {list} }} }}\n"
            )
        };
        assert!(
            errors(&agg("[a, b]")).is_empty(),
            "{:?}",
            errors(&agg("[a, b]"))
        );
        let at = "clusters[3].cluster_type";
        assert_eq!(
            errors(&agg("[]")),
            [format!(
                "{at}.typed_config.clusters: must name at least one cluster"
            )]
        );
        assert_eq!(
            errors(&agg("[a, a]")),
            [format!(
                "{at}.typed_config.clusters[1]: \"a\" is listed twice"
            )]
        );
        assert_eq!(
            errors(&agg("[agg]")),
            [format!(
                "{at}.typed_config.clusters[0]: an aggregate cluster cannot contain itself"
            )]
        );
        assert_eq!(
            errors(&agg("[nowhere]")),
            [format!(
                "{at}.typed_config.clusters[0]: unknown cluster \"nowhere\""
            )]
        );
        // Nested aggregates flatten (gRFC A37); a cycle of aggregates serves nothing.
        assert!(errors(&agg("[inner, b]")).is_empty());
        let cycle = "  - { name: x, cluster_type: { name: envoy.clusters.aggregate, typed_config: { clusters: [y] } } }\n  - { name: y, cluster_type: { name: envoy.clusters.aggregate, typed_config: { clusters: [x] } } }\n";
        assert_eq!(
            errors(cycle),
            [
                "clusters[0].cluster_type: aggregate cluster \"x\" leads to no cluster that is not an aggregate",
                "clusters[1].cluster_type: aggregate cluster \"y\" leads to no cluster that is not an aggregate",
            ]
        );
    }

    #[test]
    fn only_the_aggregate_type_exists_and_it_has_no_endpoints() {
        let errs = errors(
            "  - { name: a }\n  - { name: x, cluster_type: { name: envoy.clusters.redis, typed_config: { clusters: [a] } } }\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with(
            "clusters[1].cluster_type.name: custom cluster type \"envoy.clusters.redis\""
        ));
        let errs = errors(
            "  - { name: a }\n  - { name: x, eds_service_name: e, cluster_type: { name: envoy.clusters.aggregate, typed_config: { clusters: [a] } } }\n",
        );
        assert_eq!(
            errs,
            [
                "clusters[1].cluster_type: an aggregate cluster has no endpoints of its own (no load_assignment or eds_service_name)"
            ]
        );
    }

    #[test]
    fn nested_aggregates_flatten_depth_first_once_each() {
        let graph = |n: &str| -> Option<Vec<String>> {
            let list: &[&str] = match n {
                "a" => &["b", "x", "c"],
                "b" => &["y", "c"],
                "c" => &["z", "x", "b"],
                "loop1" => &["loop2"],
                "loop2" => &["loop1"],
                _ => return None,
            };
            Some(list.iter().map(|s| s.to_string()).collect())
        };
        assert_eq!(flatten_aggregate("a", graph).unwrap(), ["y", "z", "x"]);
        assert_eq!(flatten_aggregate("plain", graph).unwrap(), ["plain"]);
        let e = flatten_aggregate("loop1", graph).unwrap_err();
        assert!(e.contains("no cluster that is not an aggregate"), "{e}");
        let deep = |n: &str| -> Option<Vec<String>> {
            let i: usize = n.strip_prefix('d')?.parse().ok()?;
            Some(vec![format!("d{}", i + 1)])
        };
        let e = flatten_aggregate("d0", deep).unwrap_err();
        assert!(e.contains("deeper than 16"), "{e}");
    }
}
