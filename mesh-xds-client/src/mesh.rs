//! Building a [`Mesh`] fed by an xDS client.

use crate::bootstrap::Bootstrap;
use crate::client::{ClientError, XdsClient, XdsClientBuilder};
use mesh_tower::Mesh;
use mesh_tower::telemetry::{AccessLog, LogFormat, Telemetry, Workload};
use std::future::Future;
use std::path::Path;

/// xDS constructors and accessors for [`Mesh`]. With the trait in scope:
///
/// ```no_run
/// use mesh_tower::Mesh;
/// use mesh_xds_client::XdsMesh;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::from_bootstrap_env().await?;      // GRPC_XDS_BOOTSTRAP(_CONFIG)
/// let channel = mesh.channel::<tonic::body::Body>("xds:///greeter:50051");
/// # Ok(()) }
/// ```
pub trait XdsMesh: Sized {
    /// A mesh configured by the control plane named in `GRPC_XDS_BOOTSTRAP` (a file) or
    /// `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON).
    fn from_bootstrap_env() -> impl Future<Output = Result<Self, ClientError>> + Send;

    /// A mesh configured by the control plane named in a bootstrap file.
    fn from_bootstrap(
        path: impl AsRef<Path> + Send,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send;

    /// A mesh fed by a client built in code. It records Istio's request metrics
    /// ([`mesh_tower::telemetry`]) as the workload the bootstrap's node metadata describes, and
    /// writes access logs when `MESH_ACCESS_LOG` is `stdout` or a file path (as Istio's
    /// `accessLogFile`), in Envoy's format strings when `MESH_ACCESS_LOG_FORMAT` gives one
    /// (`accessLogFormat`; `MESH_ACCESS_LOG_ENCODING=JSON` for a JSON format).
    fn from_xds(
        builder: XdsClientBuilder,
    ) -> impl Future<Output = Result<Self, ClientError>> + Send;

    /// The xDS client feeding this mesh, if any.
    fn xds_client(&self) -> Option<&XdsClient>;

    /// An xDS-enabled server (gRFC A36) for `addr`: the listener named by the bootstrap's
    /// `server_listener_resource_name_template`, awaited for at most `patience` (its TLS and
    /// RBAC then follow the control plane).
    fn xds_server(
        &self,
        addr: std::net::SocketAddr,
        patience: std::time::Duration,
    ) -> impl Future<Output = Result<mesh_tower::server::MeshServer, ClientError>> + Send;

    /// The effective config plus, per xDS resource, its version, last update, state and last
    /// NACK error (the data CSDS serves), as JSON.
    fn xds_config_dump(&self) -> serde_json::Value;
}

impl XdsMesh for Mesh {
    async fn from_bootstrap_env() -> Result<Self, ClientError> {
        Self::from_xds(XdsClientBuilder::from_bootstrap(Bootstrap::from_env()?)).await
    }

    async fn from_bootstrap(path: impl AsRef<Path> + Send) -> Result<Self, ClientError> {
        Self::from_xds(XdsClientBuilder::from_bootstrap(Bootstrap::from_file(
            path,
        )?))
        .await
    }

    async fn from_xds(builder: XdsClientBuilder) -> Result<Self, ClientError> {
        // The node's zone (and its cluster, as Envoy's local cluster) drive zone-aware routing.
        let node = builder.node().clone();
        let builder_telemetry = builder.records_telemetry();
        // The client and the mesh's own control work share one control runtime.
        let control = builder.control_runtime();
        let client = builder.control(control.clone()).start()?;
        let store = client.store().clone();
        let telemetry = if builder_telemetry {
            Some(telemetry(&node)?)
        } else {
            None
        };
        let mut mesh = Mesh::builder()
            .store(store)
            .control(control)
            .extension(client);
        if let Some(t) = telemetry {
            mesh = mesh.telemetry(t);
        }
        if let Some(zone) = node
            .locality
            .as_ref()
            .map(|l| l.zone.clone())
            .filter(|z| !z.is_empty())
        {
            let cluster = (!node.cluster.is_empty()).then_some(node.cluster.as_str());
            mesh = mesh.local_zone(zone, cluster);
        }
        let mesh = mesh
            .build()
            .await
            .map_err(|e| ClientError::Config(e.to_string()))?;
        // Clusters that ask for load reports (LRS) get the mesh's counts.
        if let Some(client) = mesh.xds_client() {
            client.report_load(mesh.load_reporter());
        }
        Ok(mesh)
    }

    fn xds_client(&self) -> Option<&XdsClient> {
        self.extension::<XdsClient>()
    }

    async fn xds_server(
        &self,
        addr: std::net::SocketAddr,
        patience: std::time::Duration,
    ) -> Result<mesh_tower::server::MeshServer, ClientError> {
        let client = self
            .xds_client()
            .ok_or_else(|| ClientError::Config("this mesh has no xDS client".into()))?;
        let name = client
            .bootstrap()
            .server_listener_name(addr)
            .map_err(ClientError::Config)?;
        self.server_when_ready(&name, patience)
            .await
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    fn xds_config_dump(&self) -> serde_json::Value {
        let config = serde_json::to_value(self.config_dump()).unwrap_or_default();
        let resources: serde_json::Map<String, serde_json::Value> = self
            .xds_client()
            .map(|c| c.resource_status())
            .unwrap_or_default()
            .into_iter()
            .map(|(ty, by_name)| {
                (
                    ty.short().to_owned(),
                    serde_json::to_value(by_name).unwrap_or_default(),
                )
            })
            .collect();
        let status = self.source_status().borrow().clone();
        serde_json::json!({
            "config": config,
            "xds": resources,
            "source": {
                "source": status.source,
                "applied": status.applied,
                "rejected": status.rejected,
                "last_error": status.last_error,
            },
        })
    }
}

/// Istio's request metrics, labelled with the workload the node metadata describes (Istio's
/// agent writes WORKLOAD_NAME, NAMESPACE, LABELS, … there); access logs as Istio's mesh
/// settings say: `MESH_ACCESS_LOG` (`accessLogFile`: `stdout` or a file path),
/// `MESH_ACCESS_LOG_FORMAT` (`accessLogFormat`: Envoy's format strings) and
/// `MESH_ACCESS_LOG_ENCODING` (`accessLogEncoding`: `TEXT`, the default, or `JSON`).
fn telemetry(node: &crate::bootstrap::Node) -> Result<Telemetry, ClientError> {
    let meta = serde_json::Value::Object(node.metadata.clone().unwrap_or_default());
    let telemetry = Telemetry::new(Workload::from_node_metadata(&meta));
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let telemetry = match tracer(telemetry.workload(), &var)? {
        Some(t) => telemetry.with_tracer(t),
        None => telemetry,
    };
    let log = match var("MESH_ACCESS_LOG") {
        None => return Ok(telemetry),
        Some(v) if v == "stdout" || v == "/dev/stdout" => AccessLog::stdout(),
        Some(path) => AccessLog::file(&path)
            .map_err(|e| ClientError::Config(format!("MESH_ACCESS_LOG {path:?}: {e}")))?,
    };
    let format = access_log_format(
        var("MESH_ACCESS_LOG_FORMAT").as_deref(),
        var("MESH_ACCESS_LOG_ENCODING").as_deref(),
    )?;
    Ok(telemetry.with_access_log(match format {
        Some(f) => log.with_format(f),
        None => log,
    }))
}

/// Traces as OpenTelemetry's environment says: exported over OTLP/gRPC to
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (or `OTEL_EXPORTER_OTLP_ENDPOINT`), sampled by
/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, propagated as `OTEL_PROPAGATORS`
/// says, as service `OTEL_SERVICE_NAME` (default: the workload's name). No endpoint: no
/// tracing.
fn tracer(
    workload: &Workload,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Option<mesh_tower::trace::Tracer>, ClientError> {
    use mesh_tower::trace::{Propagation, Tracer};
    let Some(endpoint) =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    let sampler = sampler(
        var("OTEL_TRACES_SAMPLER").as_deref(),
        var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )?;
    let propagation = match var("OTEL_PROPAGATORS") {
        Some(p) => Propagation::from_otel(&p)
            .map_err(|e| ClientError::Config(format!("OTEL_PROPAGATORS: {e}")))?,
        None => Propagation::W3C,
    };
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| workload.name.clone());
    let exporter = crate::otlp::OtlpExporter::start(
        &endpoint,
        &[
            ("service.name", &service),
            ("service.namespace", &workload.namespace),
        ],
    )?;
    Ok(Some(
        Tracer::new(sampler, exporter).with_propagation(propagation),
    ))
}

/// OpenTelemetry's sampler names. The mesh always follows a caller's decision (the
/// `parentbased_` forms); the plain forms are taken as their parent-based ones.
fn sampler(
    name: Option<&str>,
    arg: Option<&str>,
) -> Result<mesh_tower::trace::Sampler, ClientError> {
    use mesh_tower::trace::Sampler;
    let ratio = || -> Result<f64, ClientError> {
        match arg {
            None => Ok(1.0),
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ClientError::Config(format!(
                        "OTEL_TRACES_SAMPLER_ARG {a:?}: a ratio from 0 to 1"
                    ))
                }),
        }
    };
    Ok(match name.map(|n| n.trim_start_matches("parentbased_")) {
        None | Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::Ratio(ratio()?),
        Some(other) => {
            return Err(ClientError::Config(format!(
                "OTEL_TRACES_SAMPLER {other:?}: always_on, always_off or traceidratio (parentbased_ or not)"
            )));
        }
    })
}

/// Istio's `accessLogFormat` and `accessLogEncoding`: a text format gets its newline if it
/// lacks one, as Istio adds it.
fn access_log_format(
    format: Option<&str>,
    encoding: Option<&str>,
) -> Result<Option<LogFormat>, ClientError> {
    let bad = |e: String| ClientError::Config(format!("MESH_ACCESS_LOG_FORMAT: {e}"));
    match (format, encoding) {
        (None, None | Some("TEXT" | "JSON")) => Ok(None),
        (Some(f), None | Some("TEXT")) if f.ends_with('\n') => {
            LogFormat::text(f).map(Some).map_err(bad)
        }
        (Some(f), None | Some("TEXT")) => LogFormat::text(&format!("{f}\n")).map(Some).map_err(bad),
        (Some(f), Some("JSON")) => LogFormat::json(f).map(Some).map_err(bad),
        (_, Some(e)) => Err(ClientError::Config(format!(
            "MESH_ACCESS_LOG_ENCODING {e:?}: TEXT or JSON"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::access_log_format;

    #[test]
    fn opentelemetrys_sampler_settings_are_read() {
        use mesh_tower::trace::Sampler;
        assert_eq!(super::sampler(None, None).unwrap(), Sampler::AlwaysOn);
        assert_eq!(
            super::sampler(Some("parentbased_traceidratio"), Some("0.1")).unwrap(),
            Sampler::Ratio(0.1)
        );
        assert_eq!(
            super::sampler(Some("always_off"), None).unwrap(),
            Sampler::AlwaysOff
        );
        let e = super::sampler(Some("traceidratio"), Some("2")).unwrap_err();
        assert!(
            e.to_string().contains("OTEL_TRACES_SAMPLER_ARG \"2\""),
            "{e}"
        );
        assert!(super::sampler(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn istios_access_log_settings_choose_the_format() {
        assert!(access_log_format(None, None).unwrap().is_none());
        assert!(
            access_log_format(Some("%RESPONSE_CODE%"), None)
                .unwrap()
                .is_some()
        );
        assert!(
            access_log_format(Some("%RESPONSE_CODE%\n"), Some("TEXT"))
                .unwrap()
                .is_some()
        );
        assert!(
            access_log_format(Some(r#"{"code":"%RESPONSE_CODE%"}"#), Some("JSON"))
                .unwrap()
                .is_some()
        );
        let e = access_log_format(Some("%NOPE%"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MESH_ACCESS_LOG_FORMAT: %NOPE%"), "{e}");
        let e = access_log_format(None, Some("XML"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MESH_ACCESS_LOG_ENCODING \"XML\""), "{e}");
    }
}
