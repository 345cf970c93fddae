//! The validated mesh configuration: what a file holds and what the store serves.
//!
//! [`MeshConfig`] is the whole document: listeners, route configs, clusters and endpoint sets, as
//! lists of named resources (Envoy's shapes). The same document is the embedded default (a YAML
//! file), the format of the config dump, and what the xDS client assembles resource by resource.

mod access_log;
pub mod cluster;
pub mod endpoint;
pub mod filter_chain;
pub mod headers;
pub mod inbound;
pub mod jwt;
pub mod listener;
pub mod metadata;
pub mod rbac;
pub mod route;
pub mod server;
pub mod tls;

use crate::error::{ConfigError, Errors, FieldPath};
use cluster::Cluster;
use endpoint::ClusterLoadAssignment;
use listener::{Listener, RouteSource};
use route::{ClusterSpecifier, RouteConfig};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A whole mesh config document.
///
/// ```
/// let yaml = r#"
/// listeners:
///   - name: greeter
///     route_config:
///       virtual_hosts:
///         - name: all
///           domains: ["*"]
///           routes:
///             - match: { prefix: "/" }
///               route: { cluster: greeter }
/// clusters:
///   - name: greeter
///     type: STATIC
///     protocol: HTTP2
///     load_assignment:
///       cluster_name: greeter
///       endpoints:
///         - lb_endpoints:
///             - address: "127.0.0.1:50051"
/// "#;
/// let config = mesh_core::MeshConfig::from_yaml(yaml).unwrap();
/// assert_eq!(config.clusters[0].name, "greeter");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// API listeners, one per target.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Route configs referenced by listeners through `rds`.
    #[serde(default)]
    pub route_configs: Vec<RouteConfig>,
    /// Clusters.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Endpoint sets of `EDS` clusters, by cluster (or EDS service) name.
    #[serde(default)]
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// Certificate provider instances TLS contexts name (the bootstrap's, under xDS).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub certificate_providers: tls::CertificateProviders,
    /// Servers: the inbound side (TLS and authorization before the application).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<server::Server>,
}

impl MeshConfig {
    /// Parses YAML and validates the result; an invalid document is rejected whole.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_yaml_named(text, "<input>")
    }

    /// [`from_yaml`](Self::from_yaml) for a document read from `name` (a file path), which
    /// parse errors then point at instead of `<input>`.
    pub fn from_yaml_named(text: &str, name: &str) -> Result<Self, ConfigError> {
        let config: MeshConfig = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Parse(parse_message(&e.to_string(), name)))?;
        config.validate()?;
        Ok(config)
    }

    /// Renders as YAML (the config-dump format; [`MeshConfig::from_yaml`] reads it back).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every resource and every reference between them. All problems are reported, each
    /// with its field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Errors::new();
        let root = FieldPath::root();

        unique_names(
            &self.listeners,
            |l| &l.name,
            &root.field("listeners"),
            &mut errors,
        );
        let route_names = unique_names(
            &self.route_configs,
            |r| &r.name,
            &root.field("route_configs"),
            &mut errors,
        );
        let cluster_names = unique_names(
            &self.clusters,
            |c| &c.name,
            &root.field("clusters"),
            &mut errors,
        );
        unique_names(
            &self.endpoints,
            |e| &e.cluster_name,
            &root.field("endpoints"),
            &mut errors,
        );

        for (i, l) in self.listeners.iter().enumerate() {
            let p = root.field("listeners").index(i);
            l.validate(&p, &mut errors);
            match l.route_source() {
                Some(RouteSource::Rds(name)) if !name.is_empty() && !route_names.contains(name) => {
                    errors.push(&p.field("rds"), format!("unknown route config {name:?}"))
                }
                Some(RouteSource::Inline(rc)) => {
                    check_cluster_refs(rc, &p.field("route_config"), &cluster_names, &mut errors)
                }
                _ => {}
            }
        }
        for (i, rc) in self.route_configs.iter().enumerate() {
            let p = root.field("route_configs").index(i);
            errors.check(!rc.name.is_empty(), &p.field("name"), "must not be empty");
            rc.validate(&p, &mut errors);
            check_cluster_refs(rc, &p, &cluster_names, &mut errors);
        }
        // An EDS cluster with no `endpoints` entry is allowed: it has no endpoints, and requests
        // to it fail with a "no endpoint" error naming the cluster.
        for (i, c) in self.clusters.iter().enumerate() {
            let p = root.field("clusters").index(i);
            c.validate(&p, &mut errors);
            // An aggregate's clusters must be in the document; nested aggregates flatten
            // (gRFC A37) within the depth limit, to at least one cluster that is not one.
            for (j, name) in c.aggregate().unwrap_or_default().iter().enumerate() {
                let at = p
                    .field("cluster_type")
                    .field("typed_config")
                    .field("clusters")
                    .index(j);
                if !name.is_empty() && !self.clusters.iter().any(|o| o.name == *name) {
                    errors.push(&at, format!("unknown cluster {name:?}"));
                }
            }
            if c.aggregate()
                .is_some_and(|l| !l.is_empty() && !l.contains(&c.name))
                && let Err(e) = cluster::flatten_aggregate(&c.name, |n| {
                    let found = self.clusters.iter().find(|o| o.name == n);
                    found.and_then(|o| o.aggregate()).map(<[String]>::to_vec)
                })
            {
                errors.push(&p.field("cluster_type"), e);
            }
            if let Some(tls) = &c.transport_socket {
                tls::check_instances(
                    tls.provider_names(),
                    &self.certificate_providers,
                    &p.field("transport_socket"),
                    &mut errors,
                );
            }
        }
        unique_names(
            &self.servers,
            |s| &s.name,
            &root.field("servers"),
            &mut errors,
        );
        for (i, s) in self.servers.iter().enumerate() {
            let p = root.field("servers").index(i);
            s.validate(&p, &mut errors);
            for name in s.rds_names() {
                let found = self.route_configs.iter().find(|rc| rc.name == name);
                errors.check(
                    found.is_some_and(|rc| rc.inbound.is_some()),
                    &p,
                    format!("rds {name:?}: no route config of that name with inbound routes"),
                );
            }
            let chains = s.filter_chains.iter().enumerate();
            let tls = (s.transport_socket.iter().map(|t| (p.clone(), t))).chain(chains.filter_map(
                |(j, c)| {
                    let cp = p.field("filter_chains").index(j);
                    c.transport_socket.as_ref().map(|t| (cp, t))
                },
            ));
            for (cp, t) in tls {
                tls::check_instances(
                    t.provider_names(),
                    &self.certificate_providers,
                    &cp.field("transport_socket"),
                    &mut errors,
                );
            }
        }
        for (name, p) in &self.certificate_providers {
            p.validate(
                &root.field("certificate_providers").field(name),
                &mut errors,
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            e.validate(&root.field("endpoints").index(i), &mut errors);
        }
        errors.into_result()
    }
}

fn unique_names<'a, T>(
    items: &'a [T],
    name: impl Fn(&'a T) -> &'a String,
    path: &FieldPath,
    errors: &mut Errors,
) -> HashSet<&'a str> {
    let mut seen = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let n = name(item).as_str();
        if let Some(first) = seen.insert(n, i) {
            errors.push(
                &path.index(i),
                format!("duplicate name {n:?} (first at {path}[{first}])"),
            );
        }
    }
    seen.into_keys().collect()
}

fn check_cluster_refs(
    rc: &RouteConfig,
    path: &FieldPath,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) {
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        for (j, route) in vh.routes.iter().enumerate() {
            let Some(action) = &route.route else { continue };
            let rp = path
                .field("virtual_hosts")
                .index(i)
                .field("routes")
                .index(j)
                .field("route");
            match action.cluster_specifier() {
                Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() && !clusters.contains(c) => {
                    errors.push(&rp.field("cluster"), format!("unknown cluster {c:?}"))
                }
                Some(ClusterSpecifier::Weighted(w)) => {
                    for (k, cw) in w.clusters.iter().enumerate() {
                        if !cw.name.is_empty() && !clusters.contains(cw.name.as_str()) {
                            errors.push(
                                &rp.field("weighted_clusters")
                                    .field("clusters")
                                    .index(k)
                                    .field("name"),
                                format!("unknown cluster {:?}", cw.name),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A parser message made to teach: it names the document, and an unknown field gets the
/// nearest known one as a suggestion (`did you mean `connect_timeout`?`).
fn parse_message(message: &str, name: &str) -> String {
    // The parser repeats its message under the source snippet; the list of expected fields
    // is said once, on the first line.
    let mut out = String::with_capacity(message.len());
    for (i, line) in message.replace("<input>", name).lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match line.split_once(", expected one of ") {
            Some((head, _)) if i > 0 => out.push_str(head),
            _ => out.push_str(line),
        }
    }
    if let Some(rest) = message.split("unknown field `").nth(1)
        && let Some((field, rest)) = rest.split_once('`')
        && let Some(expected) = rest.split("expected one of ").nth(1)
    {
        let line = expected.lines().next().unwrap_or_default();
        let candidates = line
            .split(',')
            .map(|c| c.trim().trim_matches('`'))
            .filter(|c| !c.is_empty());
        let best = candidates
            .map(|c| (edit_distance(field, c), c))
            .min()
            .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < field.len());
        if let Some((_, c)) = best {
            out = format!("{out}\nhint: did you mean `{c}`?");
        }
    }
    out
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
