//! Istio's label names and where their values come from.

use crate::stats::UNKNOWN;
use metrics::Label;

/// The local workload, as Istio's labels name it. From the bootstrap's node metadata
/// ([`Workload::from_node_metadata`]) or by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// `WORKLOAD_NAME` (a Deployment's name, not a pod's).
    pub name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `CLUSTER_ID` (Istio's cluster, e.g. `Kubernetes`).
    pub cluster: Option<String>,
    /// The `app` label.
    pub app: Option<String>,
    /// The `version` label.
    pub version: Option<String>,
    /// `service.istio.io/canonical-name` (default: `app`, then the workload name).
    pub canonical_service: Option<String>,
    /// `service.istio.io/canonical-revision` (default: `version`, then `latest`).
    pub canonical_revision: Option<String>,
    /// This workload's own identity (its certificate's SPIFFE ID), reported as the local
    /// principal on mTLS requests.
    pub principal: Option<String>,
}

impl Workload {
    /// The workload Istio's agent describes in a bootstrap's `node.metadata`: `WORKLOAD_NAME`,
    /// `NAMESPACE`, `CLUSTER_ID`, `LABELS` (`app`, `version`, the canonical name and
    /// revision), and `SERVICE_ACCOUNT` for the principal
    /// (`spiffe://<TRUST_DOMAIN or cluster.local>/ns/<namespace>/sa/<account>`). Missing keys
    /// stay unset (reported as `unknown`).
    ///
    /// ```
    /// let meta = serde_json::json!({
    ///     "WORKLOAD_NAME": "reviews-v2", "NAMESPACE": "bookinfo", "SERVICE_ACCOUNT": "reviews",
    ///     "LABELS": { "app": "reviews", "version": "v2" },
    /// });
    /// let w = mesh_tower::telemetry::Workload::from_node_metadata(&meta);
    /// assert_eq!(w.canonical_revision(), "v2");
    /// assert_eq!(w.principal.as_deref(), Some("spiffe://cluster.local/ns/bookinfo/sa/reviews"));
    /// ```
    pub fn from_node_metadata(meta: &serde_json::Value) -> Workload {
        let s =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let labels = meta.get("LABELS").cloned().unwrap_or_default();
        let namespace = s(meta, "NAMESPACE").unwrap_or_default();
        let trust_domain = s(meta, "TRUST_DOMAIN").unwrap_or_else(|| "cluster.local".into());
        let principal = s(meta, "SERVICE_ACCOUNT")
            .filter(|_| !namespace.is_empty())
            .map(|sa| format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}"));
        Workload {
            name: s(meta, "WORKLOAD_NAME").unwrap_or_default(),
            cluster: s(meta, "CLUSTER_ID"),
            app: s(&labels, "app"),
            version: s(&labels, "version"),
            canonical_service: s(&labels, "service.istio.io/canonical-name"),
            canonical_revision: s(&labels, "service.istio.io/canonical-revision"),
            namespace,
            principal,
        }
    }

    /// The canonical service: the label, else `app`, else the workload name.
    pub fn canonical_service(&self) -> &str {
        self.canonical_service
            .as_deref()
            .or(self.app.as_deref())
            .unwrap_or(or_unknown(&self.name))
    }

    /// The canonical revision: the label, else `version`, else `latest`.
    pub fn canonical_revision(&self) -> &str {
        self.canonical_revision
            .as_deref()
            .or(self.version.as_deref())
            .unwrap_or("latest")
    }

    pub(crate) fn labels(&self, side: &'static [&'static str; 7]) -> Vec<Label> {
        let values = [
            or_unknown(&self.name),
            or_unknown(&self.namespace),
            self.app.as_deref().unwrap_or(UNKNOWN),
            self.version.as_deref().unwrap_or(UNKNOWN),
            self.canonical_service(),
            self.canonical_revision(),
            self.cluster.as_deref().unwrap_or(UNKNOWN),
        ];
        side.iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v.to_owned()))
            .collect()
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { UNKNOWN } else { s }
}

const SOURCE: [&str; 7] = [
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
];

const DESTINATION: [&str; 7] = [
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
];

/// The local workload's labels as the source of a call (client side).
pub(crate) fn local_source(w: &Workload) -> Vec<Label> {
    w.labels(&SOURCE)
}

/// The local workload's labels as the destination of a call (server side).
pub(crate) fn local_destination(w: &Workload) -> Vec<Label> {
    w.labels(&DESTINATION)
}

/// A peer we know nothing about but, perhaps, its namespace.
pub(crate) fn unknown_peer(
    side: &'static [&'static str; 7],
    namespace: Option<&str>,
) -> Vec<Label> {
    side.iter()
        .enumerate()
        .map(|(i, k)| {
            let v = match (i, namespace) {
                (1, Some(ns)) => ns,
                _ => UNKNOWN,
            };
            Label::new(*k, v.to_owned())
        })
        .collect()
}

pub(crate) fn source_side() -> &'static [&'static str; 7] {
    &SOURCE
}

pub(crate) fn destination_side() -> &'static [&'static str; 7] {
    &DESTINATION
}

/// The destination service (host, name, namespace) a client cluster stands for: Istio names
/// its clusters `outbound|<port>|<subset>|<host>`, and a Kubernetes host is
/// `<name>.<namespace>.svc.<domain>`. Any other cluster is its own service.
pub(crate) fn service_of_cluster(cluster: &str) -> [String; 3] {
    let host = match cluster.split('|').collect::<Vec<_>>().as_slice() {
        [_, _, _, host] if !host.is_empty() => *host,
        _ => cluster,
    };
    service_of_host(host)
}

/// Host, name and namespace of a service host (`reviews.bookinfo.svc.cluster.local`).
pub(crate) fn service_of_host(host: &str) -> [String; 3] {
    let mut parts = host.split('.');
    let (name, ns, svc) = (parts.next(), parts.next(), parts.next());
    match (name, ns, svc) {
        (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => {
            [host.to_owned(), name.to_owned(), ns.to_owned()]
        }
        _ => [host.to_owned(), host.to_owned(), UNKNOWN.to_owned()],
    }
}

/// The namespace in a SPIFFE ID of Istio's form (`spiffe://<td>/ns/<ns>/sa/<sa>`).
pub(crate) fn spiffe_namespace(id: &str) -> Option<&str> {
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("ns"), Some(ns)) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

/// The workload istiod describes in an endpoint's metadata
/// (`<workload>;<namespace>;<canonical service>;<canonical revision>;<cluster>`). Istio's
/// proxies report its canonical service and revision as the app and version too.
pub(crate) fn workload_descriptor(s: &str) -> Option<Workload> {
    let mut parts = s.split(';');
    let (name, namespace, service, revision, cluster) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    Some(Workload {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        cluster: some(cluster),
        app: some(service),
        version: some(revision).or_else(|| Some("latest".into())),
        canonical_service: some(service),
        canonical_revision: some(revision),
        principal: None,
    })
}
