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

#[cfg(test)]
mod tests {
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
        assert_eq!(
            errors(&agg("[inner]")),
            [format!(
                "{at}.typed_config.clusters[0]: \"inner\" is an aggregate cluster: aggregates do not nest"
            )]
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
}
