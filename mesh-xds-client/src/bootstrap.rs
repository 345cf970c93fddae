//! The gRPC xDS bootstrap: where the control plane is and who we are.
//!
//! This is the file gRPC's proxyless xDS reads (`GRPC_XDS_BOOTSTRAP` names a file,
//! `GRPC_XDS_BOOTSTRAP_CONFIG` holds the JSON inline) and the one Istio's proxyless injection
//! writes, so a service using this crate drops into such a mesh unchanged:
//!
//! ```json
//! {"xds_servers":[{"server_uri":"127.0.0.1:18000","channel_creds":[{"type":"insecure"}],
//!   "server_features":["xds_v3"]}],
//!  "node":{"id":"app-1","cluster":"app","locality":{"zone":"a"}},
//!  "client_default_listener_resource_name_template":"%s"}
//! ```
//!
//! `certificate_providers` (the `file_watcher` plugin, as Istio's agent writes it) become the
//! mesh's certificate provider instances, which clusters' TLS contexts name. One server feature of our
//! own: `"delta_ads"` selects the Delta protocol (istiod's preferred) for that server;
//! `"ignore_resource_deletion"` is gRFC A53's.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Env var naming the bootstrap file.
pub const BOOTSTRAP_ENV: &str = "GRPC_XDS_BOOTSTRAP";
/// Env var holding the bootstrap JSON inline.
pub const BOOTSTRAP_CONFIG_ENV: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";
/// Our server feature selecting Delta ADS.
pub const FEATURE_DELTA: &str = "delta_ads";
/// gRFC A53: keep resources the server deletes.
pub const FEATURE_IGNORE_RESOURCE_DELETION: &str = "ignore_resource_deletion";
/// Our server feature selecting REST-JSON polling (Envoy's `api_type: REST`; needs the
/// `json` feature): `server_uri` is the server's base URL.
pub const FEATURE_REST_JSON: &str = "rest_json";

/// A parsed, checked bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Bootstrap {
    /// Control planes; the first is used.
    pub xds_servers: Vec<XdsServer>,
    /// Who we are.
    #[serde(default)]
    pub node: Node,
    /// Listener name for a target: `%s` is replaced by the target's name.
    #[serde(default)]
    pub client_default_listener_resource_name_template: Option<String>,
    /// Listener name template for xDS-enabled servers (kept; not used by clients).
    #[serde(default)]
    pub server_listener_resource_name_template: Option<String>,
    /// Federation authorities (gRFC A47): `xdstp://{authority}/…` names are fetched from the
    /// authority's servers; targets `xds://{authority}/name` use its listener template.
    #[serde(default)]
    pub authorities: BTreeMap<String, Authority>,
    /// Certificate provider plugin instances, for TLS contexts.
    #[serde(default)]
    pub certificate_providers: BTreeMap<String, CertificateProvider>,
}

/// One control plane.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct XdsServer {
    /// `host:port`, `dns:///host:port`, `unix:///path`, or an `http(s)://` URI.
    pub server_uri: String,
    /// Credentials, in order of preference; the first one we support is used.
    #[serde(default)]
    pub channel_creds: Vec<ChannelCreds>,
    /// Server features (`xds_v3`, `ignore_resource_deletion`, `delta_ads`, …).
    #[serde(default)]
    pub server_features: Vec<String>,
}

/// Channel credentials: `insecure`, or `tls` with an optional CA file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ChannelCreds {
    /// `insecure`, `tls`, `google_default`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Type-specific config (`tls`: `ca_certificate_file`).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// Envoy's `Node`, as the bootstrap spells it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Node {
    /// Node id (control planes key snapshots by it).
    #[serde(default)]
    pub id: String,
    /// Service cluster.
    #[serde(default)]
    pub cluster: String,
    /// Where this node runs (zone-aware routing uses it).
    #[serde(default)]
    pub locality: Option<Locality>,
    /// Opaque metadata (Istio puts its labels here).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A node's locality.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Locality {
    /// Region.
    #[serde(default)]
    pub region: String,
    /// Zone.
    #[serde(default)]
    pub zone: String,
    /// Sub-zone.
    #[serde(default)]
    pub sub_zone: String,
}

/// A federation authority.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Authority {
    /// Its servers (empty: the top-level ones).
    #[serde(default)]
    pub xds_servers: Vec<XdsServer>,
    /// Listener name template for targets of this authority.
    #[serde(default)]
    pub client_listener_resource_name_template: Option<String>,
}

/// A certificate provider instance.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CertificateProvider {
    /// Plugin (`file_watcher`).
    pub plugin_name: String,
    /// Plugin config.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// Why a bootstrap cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Neither env var is set.
    #[error(
        "no xDS bootstrap: set {BOOTSTRAP_ENV} (a file) or {BOOTSTRAP_CONFIG_ENV} (inline JSON)"
    )]
    NotConfigured,
    /// The file could not be read.
    #[error("xDS bootstrap {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON is malformed or breaks a rule.
    #[error("xDS bootstrap: {0}")]
    Invalid(String),
}

/// The credentials we will use for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Plaintext.
    Insecure,
    /// TLS, trusting this CA file (or the system roots).
    Tls {
        /// PEM CA bundle.
        ca_file: Option<PathBuf>,
    },
}

impl Bootstrap {
    /// Reads `GRPC_XDS_BOOTSTRAP` (a file) or else `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON).
    pub fn from_env() -> Result<Self, BootstrapError> {
        if let Some(path) = std::env::var_os(BOOTSTRAP_ENV).filter(|p| !p.is_empty()) {
            return Self::from_file(path);
        }
        match std::env::var(BOOTSTRAP_CONFIG_ENV) {
            Ok(json) if !json.is_empty() => Self::from_json(&json),
            _ => Err(BootstrapError::NotConfigured),
        }
    }

    /// Reads a bootstrap file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BootstrapError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Parses and checks bootstrap JSON.
    pub fn from_json(json: &str) -> Result<Self, BootstrapError> {
        let b: Bootstrap =
            serde_json::from_str(json).map_err(|e| BootstrapError::Invalid(e.to_string()))?;
        if b.xds_servers.is_empty() {
            return Err(BootstrapError::Invalid(
                "xds_servers: must not be empty".into(),
            ));
        }
        check_servers("xds_servers", &b.xds_servers)?;
        for (name, authority) in &b.authorities {
            let path = format!("authorities[{name:?}]");
            check_servers(&format!("{path}.xds_servers"), &authority.xds_servers)?;
            let prefix = format!("xdstp://{name}/");
            if let Some(t) = &authority.client_listener_resource_name_template
                && !t.starts_with(&prefix)
            {
                return Err(BootstrapError::Invalid(format!(
                    "{path}.client_listener_resource_name_template: {t:?} must start with {prefix:?}"
                )));
            }
        }
        Ok(b)
    }

    /// The `certificate_providers` the mesh can run: `file_watcher` instances (checked as
    /// gRPC does: certificate and key together, at least one file, a positive refresh).
    /// Other plugins are skipped with a warning; a TLS context naming one is NACKed.
    pub fn mesh_certificate_providers(
        &self,
    ) -> Result<mesh_core::config::tls::CertificateProviders, BootstrapError> {
        #[derive(Deserialize)]
        struct FileWatcherJson {
            certificate_file: Option<String>,
            private_key_file: Option<String>,
            ca_certificate_file: Option<String>,
            spiffe_trust_bundle_map_file: Option<String>,
            refresh_interval: Option<String>,
        }
        let mut out = mesh_core::config::tls::CertificateProviders::new();
        for (name, p) in &self.certificate_providers {
            let path = format!("certificate_providers[{name:?}]");
            if name.starts_with(mesh_core::config::tls::SDS_PREFIX) {
                return Err(BootstrapError::Invalid(format!(
                    "{path}: the prefix {:?} is reserved for SDS secrets",
                    mesh_core::config::tls::SDS_PREFIX
                )));
            }
            if p.plugin_name != "file_watcher" {
                tracing::warn!(instance = %name, plugin = %p.plugin_name, "certificate provider plugin not supported; skipped");
                continue;
            }
            let config = p.config.clone().unwrap_or_default();
            let json: FileWatcherJson = serde_json::from_value(config)
                .map_err(|e| BootstrapError::Invalid(format!("{path}.config: {e}")))?;
            let refresh_interval = match &json.refresh_interval {
                Some(t) => mesh_core::duration::parse(t).map_err(|e| {
                    BootstrapError::Invalid(format!("{path}.config.refresh_interval: {e}"))
                })?,
                None => mesh_core::config::tls::DEFAULT_REFRESH_INTERVAL,
            };
            let provider = mesh_core::config::tls::CertificateProvider {
                file_watcher: Some(mesh_core::config::tls::FileWatcher {
                    certificate_file: json.certificate_file,
                    private_key_file: json.private_key_file,
                    ca_certificate_file: json.ca_certificate_file,
                    spiffe_trust_bundle_map_file: json.spiffe_trust_bundle_map_file,
                    refresh_interval,
                }),
                external: None,
                inline: None,
            };
            let mut errors = mesh_core::error::Errors::new();
            provider.validate(&mesh_core::FieldPath::new(&path), &mut errors);
            errors
                .into_result()
                .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
            out.insert(name.clone(), provider);
        }
        Ok(out)
    }

    /// The server listener resource name for `addr` (gRFC A36): the
    /// `server_listener_resource_name_template` with `%s` = `ip:port` (`[::]:8080` for IPv6).
    pub fn server_listener_name(&self, addr: std::net::SocketAddr) -> Result<String, String> {
        let template = self
            .server_listener_resource_name_template
            .as_deref()
            .ok_or("the bootstrap has no server_listener_resource_name_template (gRFC A36)")?;
        Ok(template.replace("%s", &addr.to_string()))
    }

    /// The listener resource name for a target (gRFC A47).
    ///
    /// A plain name (`xds:///name`) goes through `client_default_listener_resource_name_template`
    /// (`%s` by default). A target with an authority, `xds://{authority}/name`, needs that
    /// authority in `authorities` and goes through its `client_listener_resource_name_template`
    /// (default `xdstp://{authority}/envoy.config.listener.v3.Listener/%s`). The name is
    /// percent-encoded when the template is an `xdstp:` URI.
    pub fn listener_name(&self, target: &str) -> Result<String, String> {
        let (template, name) = match target.strip_prefix("xds://") {
            None => (
                Cow::Borrowed(
                    self.client_default_listener_resource_name_template
                        .as_deref()
                        .unwrap_or("%s"),
                ),
                target,
            ),
            Some(rest) => {
                let (authority, name) = rest.split_once('/').unwrap_or((rest, ""));
                if authority.is_empty() {
                    return self.listener_name(name);
                }
                let Some(a) = self.authorities.get(authority) else {
                    return Err(format!(
                        "target {target:?}: authority {authority:?} is not in the bootstrap's authorities"
                    ));
                };
                let template = match &a.client_listener_resource_name_template {
                    Some(t) => Cow::Borrowed(t.as_str()),
                    None => Cow::Owned(format!(
                        "xdstp://{authority}/envoy.config.listener.v3.Listener/%s"
                    )),
                };
                (template, name)
            }
        };
        Ok(if template.starts_with("xdstp:") {
            template.replace("%s", &percent_encode_path(name))
        } else {
            template.replace("%s", name)
        })
    }
}

fn check_servers(path: &str, servers: &[XdsServer]) -> Result<(), BootstrapError> {
    for (i, server) in servers.iter().enumerate() {
        if server.server_uri.is_empty() {
            return Err(BootstrapError::Invalid(format!(
                "{path}[{i}].server_uri: must not be empty"
            )));
        }
        if let Err(BootstrapError::Invalid(e)) = server.credentials() {
            return Err(BootstrapError::Invalid(format!(
                "{path}[{i}].channel_creds: {e}"
            )));
        }
    }
    Ok(())
}

impl XdsServer {
    /// The first supported credentials (gRPC semantics), or an error naming what was offered.
    pub fn credentials(&self) -> Result<Credentials, BootstrapError> {
        for c in &self.channel_creds {
            match c.kind.as_str() {
                "insecure" => return Ok(Credentials::Insecure),
                "tls" => {
                    let ca_file = c
                        .config
                        .as_ref()
                        .and_then(|v| v.get("ca_certificate_file"))
                        .and_then(|v| v.as_str())
                        .map(PathBuf::from);
                    return Ok(Credentials::Tls { ca_file });
                }
                _ => continue,
            }
        }
        let offered: Vec<&str> = self.channel_creds.iter().map(|c| c.kind.as_str()).collect();
        Err(BootstrapError::Invalid(format!(
            "none supported (offered {offered:?}; supported: insecure, tls)"
        )))
    }

    /// Whether a server feature is listed.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.server_features.iter().any(|f| f == feature)
    }
}

/// gRFC A47: the target is percent-encoded when substituted into an `xdstp:` template
/// (`/` kept, as in a path).
fn percent_encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO_LIKE: &str = r#"{
      "xds_servers": [{"server_uri": "unix:///etc/istio/proxy/XDS",
                       "channel_creds": [{"type": "google_default"}, {"type": "insecure"}],
                       "server_features": ["xds_v3", "delta_ads"]}],
      "node": {"id": "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local",
               "cluster": "app", "locality": {"region": "r", "zone": "z"},
               "metadata": {"ISTIO_VERSION": "1.24", "GENERATOR": "grpc"}},
      "certificate_providers": {"default": {"plugin_name": "file_watcher",
         "config": {"certificate_file": "/var/run/secrets/cert-chain.pem", "refresh_interval": "900s"}}},
      "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
    }"#;

    #[test]
    fn parses_an_istio_style_bootstrap() {
        let b = Bootstrap::from_json(ISTIO_LIKE).unwrap();
        let s = &b.xds_servers[0];
        assert_eq!(
            s.credentials().unwrap(),
            Credentials::Insecure,
            "first supported creds win"
        );
        assert!(s.has_feature(FEATURE_DELTA));
        assert_eq!(b.node.locality.as_ref().unwrap().zone, "z");
        assert_eq!(
            b.certificate_providers["default"].plugin_name,
            "file_watcher"
        );
        assert_eq!(b.listener_name("greeter:50051").unwrap(), "greeter:50051");
    }

    #[test]
    fn listener_templates() {
        let mut b = Bootstrap::from_json(ISTIO_LIKE).unwrap();
        b.client_default_listener_resource_name_template =
            Some("xdstp://auth/envoy.config.listener.v3.Listener/%s".into());
        assert_eq!(
            b.listener_name("a b/c").unwrap(),
            "xdstp://auth/envoy.config.listener.v3.Listener/a%20b/c"
        );
        b.client_default_listener_resource_name_template = Some("prefix-%s".into());
        assert_eq!(b.listener_name("x").unwrap(), "prefix-x");
        assert_eq!(b.listener_name("xds:///x").unwrap(), "prefix-x");
    }

    #[test]
    fn targets_with_an_authority_use_its_template() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "top:1", "channel_creds": [{"type": "insecure"}]}],
                "authorities": {
                  "team-b": {"xds_servers": [{"server_uri": "b:1", "channel_creds": [{"type": "insecure"}]}]},
                  "tmpl": {"client_listener_resource_name_template": "xdstp://tmpl/envoy.config.listener.v3.Listener/svc/%s?env=prod"}
                }}"#,
        )
        .unwrap();
        assert_eq!(
            b.listener_name("xds://team-b/api v1").unwrap(),
            "xdstp://team-b/envoy.config.listener.v3.Listener/api%20v1"
        );
        assert_eq!(
            b.listener_name("xds://tmpl/api").unwrap(),
            "xdstp://tmpl/envoy.config.listener.v3.Listener/svc/api?env=prod"
        );
        let err = b.listener_name("xds://elsewhere/api").unwrap_err();
        assert!(
            err.contains("authority \"elsewhere\" is not in the bootstrap's authorities"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unusable_bootstraps_with_the_field() {
        for (json, want) in [
            (r#"{"xds_servers": []}"#, "xds_servers: must not be empty"),
            (
                r#"{"xds_servers": [{"server_uri": ""}]}"#,
                "xds_servers[0].server_uri: must not be empty",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "x:1", "channel_creds": [{"type": "google_default"}]}]}"#,
                "xds_servers[0].channel_creds: none supported",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "x:1", "channel_creds": [{"type": "insecure"}]}],
                    "authorities": {"b": {"xds_servers": [{"server_uri": ""}]}}}"#,
                "authorities[\"b\"].xds_servers[0].server_uri: must not be empty",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "x:1", "channel_creds": [{"type": "insecure"}]}],
                    "authorities": {"b": {"client_listener_resource_name_template": "xdstp://c/x/%s"}}}"#,
                "client_listener_resource_name_template: \"xdstp://c/x/%s\" must start with \"xdstp://b/\"",
            ),
            (r#"{"xds_servers": 3}"#, "invalid type"),
        ] {
            let err = Bootstrap::from_json(json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn file_watcher_providers_become_the_meshs() {
        let json = |config: &str| {
            format!(
                r#"{{"xds_servers": [{{"server_uri": "x:1", "channel_creds": [{{"type": "insecure"}}]}}],
                    "certificate_providers": {{"default": {{"plugin_name": "file_watcher", "config": {config}}},
                                              "vault": {{"plugin_name": "vault", "config": {{}}}}}}}}"#
            )
        };
        let istio = json(
            r#"{"certificate_file": "/etc/certs/cert-chain.pem", "private_key_file": "/etc/certs/key.pem",
                "ca_certificate_file": "/etc/certs/root-cert.pem", "refresh_interval": "900s"}"#,
        );
        let providers = Bootstrap::from_json(&istio)
            .unwrap()
            .mesh_certificate_providers()
            .unwrap();
        assert_eq!(
            providers.keys().collect::<Vec<_>>(),
            ["default"],
            "unknown plugins are skipped"
        );
        let fw = providers["default"].file_watcher.as_ref().unwrap();
        assert_eq!(fw.refresh_interval, std::time::Duration::from_secs(900));
        assert_eq!(
            fw.ca_certificate_file.as_deref(),
            Some("/etc/certs/root-cert.pem")
        );

        let half = json(r#"{"certificate_file": "/etc/certs/cert-chain.pem"}"#);
        let e = Bootstrap::from_json(&half)
            .unwrap()
            .mesh_certificate_providers()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "xDS bootstrap: certificate_providers[\"default\"].file_watcher: certificate_file and private_key_file must be given together"
        );
    }

    #[test]
    fn tls_creds_take_a_ca_file() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "istiod:15012",
                "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": "/ca.pem"}}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            b.xds_servers[0].credentials().unwrap(),
            Credentials::Tls {
                ca_file: Some("/ca.pem".into())
            }
        );
    }
}
