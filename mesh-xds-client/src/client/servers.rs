//! Each control plane's connection settings, and how the client talks to it: an ADS stream
//! over gRPC (the default), REST-JSON polling (Envoy's `api_type: REST`, server feature
//! [`FEATURE_REST_JSON`](crate::bootstrap::FEATURE_REST_JSON)), or a watched directory of
//! resource files (`file://` URIs, Envoy's `path_config_source`). The last two need the
//! `json` feature and speak SotW.

use super::ClientError;
use crate::bootstrap::{Credentials, XdsServer};
use std::path::PathBuf;
use std::time::Duration;

/// How the client talks to one control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    /// An ADS stream (SotW or Delta) over gRPC.
    Grpc,
    /// REST-JSON polling: `POST <uri>/v3/discovery:<type>` every refresh delay.
    #[cfg(feature = "json")]
    Rest,
    /// The resource files under this path, read again every refresh delay.
    #[cfg(feature = "json")]
    Files(PathBuf),
}

#[derive(Debug)]
pub(super) struct Settings {
    pub(super) uri: String,
    pub(super) tls: Option<Tls>,
    pub(super) backoff: (Duration, Duration),
    pub(super) token: Option<PathBuf>,
    pub(super) transport: Transport,
    /// REST and files: how often to poll.
    #[cfg_attr(not(feature = "json"), allow(dead_code))]
    pub(super) refresh: Duration,
}

impl Settings {
    /// The settings for `server`, with the client's backoff, token file and refresh delay.
    pub(super) fn new(
        server: &XdsServer,
        backoff: (Duration, Duration),
        token: Option<PathBuf>,
        refresh: Duration,
    ) -> Result<Self, ClientError> {
        let transport = transport_of(server)?;
        let tls = match transport {
            Transport::Grpc => tls_for(server)?,
            // Polling and files have no TLS of their own: asked for, it is refused rather
            // than silently dropped.
            #[cfg(feature = "json")]
            _ => match tls_for(server)? {
                None => None,
                Some(_) => {
                    return Err(ClientError::Config(format!(
                        "{}: TLS credentials are only supported for gRPC control planes",
                        server.server_uri
                    )));
                }
            },
        };
        Ok(Self {
            uri: endpoint_uri(&server.server_uri, tls.is_some()),
            tls,
            backoff,
            token,
            transport,
            refresh,
        })
    }
}

/// The transport a server's URI and features ask for.
pub(super) fn transport_of(server: &XdsServer) -> Result<Transport, ClientError> {
    let uri = &server.server_uri;
    let file = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("file:"));
    let rest = server.has_feature(crate::bootstrap::FEATURE_REST_JSON);
    #[cfg(feature = "json")]
    {
        if let Some(path) = file {
            return Ok(Transport::Files(PathBuf::from(path)));
        }
        if rest {
            return Ok(Transport::Rest);
        }
    }
    if file.is_some() || rest {
        return Err(ClientError::Config(format!(
            "{uri}: resource files and REST-JSON control planes need mesh-xds-client's `json` \
             feature"
        )));
    }
    Ok(Transport::Grpc)
}

impl Transport {
    /// Whether it speaks only SotW (REST and files).
    pub(super) fn sotw_only(&self) -> bool {
        *self != Transport::Grpc
    }

    /// Whether resources come from files.
    pub(super) fn is_files(&self) -> bool {
        #[cfg(feature = "json")]
        if let Transport::Files(_) = self {
            return true;
        }
        false
    }
}

/// The TLS settings for a server's credentials.
fn tls_for(server: &XdsServer) -> Result<Option<Tls>, ClientError> {
    Ok(match server.credentials()? {
        Credentials::Insecure => None,
        Credentials::Tls { ca_file: None } => {
            return Err(ClientError::Config(format!(
                "{}: tls channel_creds need config.ca_certificate_file (system roots are not used)",
                server.server_uri
            )));
        }
        Credentials::Tls {
            ca_file: Some(path),
        } => Some(Tls {
            ca_pem: std::fs::read(&path)
                .map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?,
            domain: server_host(&server.server_uri),
        }),
    })
}

/// TLS to the control plane: the CA to trust and the name to verify (and send as SNI).
#[derive(Debug)]
pub(super) struct Tls {
    pub(super) ca_pem: Vec<u8>,
    pub(super) domain: String,
}

fn endpoint_uri(server_uri: &str, tls: bool) -> String {
    let s = server_uri.strip_prefix("dns:///").unwrap_or(server_uri);
    if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("unix:") {
        s.to_owned()
    } else if tls {
        format!("https://{s}")
    } else {
        format!("http://{s}")
    }
}

/// The host part of a server URI (`dns:///istiod.istio-system.svc:15012` → `istiod.istio-system.svc`).
fn server_host(server_uri: &str) -> String {
    let s = server_uri.strip_prefix("dns:///").unwrap_or(server_uri);
    let s = s.split("://").nth(1).unwrap_or(s);
    let authority = s.split('/').next().unwrap_or(s);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_matches(['[', ']']).to_owned()
        }
        _ => authority.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_uris_become_endpoints_and_tls_names() {
        assert_eq!(
            endpoint_uri("127.0.0.1:18000", false),
            "http://127.0.0.1:18000"
        );
        assert_eq!(
            endpoint_uri("dns:///istiod.istio-system.svc:15012", true),
            "https://istiod.istio-system.svc:15012"
        );
        assert_eq!(
            endpoint_uri("unix:///etc/istio/proxy/XDS", false),
            "unix:///etc/istio/proxy/XDS"
        );
        assert_eq!(
            server_host("dns:///istiod.istio-system.svc:15012"),
            "istiod.istio-system.svc"
        );
        assert_eq!(server_host("https://cp.example:443/x"), "cp.example");
        assert_eq!(server_host("[::1]:18000"), "::1");
    }
}
