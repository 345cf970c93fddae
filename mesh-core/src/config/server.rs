//! Servers: the inbound half. A server is what the application listens with, and its config
//! says how connections are secured and which requests may reach the handler.
//!
//! It is the static form of gRFC A36's server listener (Envoy's `Listener` with a socket
//! address, a `DownstreamTlsContext` and an HTTP connection manager whose filters run before
//! the application): one name the application refers to (`mesh.server("echo")`), TLS, and
//! the inbound HTTP filters in chain order: JWT request authentication
//! ([`jwt`](super::jwt)), then RBAC ([`rbac`](super::rbac)); filters run in the order listed,
//! as Envoy runs them.
//!
//! The top-level TLS, filters, limits and routes are the server's default chain. A server
//! that treats some connections differently lists `filter_chains`, each with a match on the
//! connection's addresses and its own settings ([`filter_chain`](super::filter_chain)); a
//! connection none matches gets the default chain, or is closed with `close_unmatched`.

use super::filter_chain::FilterChain;
use super::inbound::InboundRoutes;
use super::jwt::JwtAuthn;
use super::rbac::RbacFilter;
use super::tls::DownstreamTls;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// One server.
///
/// ```
/// let yaml = r#"
/// name: echo
/// address: 0.0.0.0:8443
/// transport_socket:
///   require_client_certificate: true
///   common_tls_context:
///     tls_certificate_provider_instance: { instance_name: default }
///     validation_context: { ca_certificate_provider_instance: { instance_name: default } }
/// http_filters:
///   - name: envoy.filters.http.rbac
///     rbac:
///       rules:
///         policies:
///           shop-only:
///             permissions: [{ any: true }]
///             principals: [{ authenticated: { principal_name: { prefix: "spiffe://cluster.local/ns/shop/" } } }]
/// "#;
/// let s: mesh_core::config::server::Server = serde_saphyr::from_str(yaml).unwrap();
/// assert_eq!(s.http_filters[0].rbac.as_ref().unwrap().rules.as_ref().unwrap().policies.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The name the application serves under.
    pub name: String,
    /// Where to listen (`ip:port`), when the application does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// TLS for accepted connections; plaintext without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<DownstreamTls>,
    /// Inbound HTTP filters, in order, before the application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_filters: Vec<ServerHttpFilter>,
    /// Limits on what callers may send (defaults apply when absent).
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: Limits,
    /// Which requests are served, and per-route filter overrides (none: every request, under
    /// the filters' own configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_config: Option<InboundRoutes>,
    /// Or the routes come from this route config (RDS; its `inbound` routes). Until it is
    /// there, no request is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<String>,
    /// How long a draining connection (the server stopped serving, or its TLS or limits
    /// changed) may finish its requests before it is closed (default 10 minutes, gRPC Java's
    /// `drainGraceTime`, Envoy's `--drain-time-s`).
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_grace_period: Option<std::time::Duration>,
    /// Chains chosen per connection by its addresses (gRFC A36); the top-level settings are
    /// the default chain, for connections none of these matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_chains: Vec<FilterChain>,
    /// Close connections no chain of `filter_chains` matches instead of serving them with
    /// the top-level settings (an xDS listener without a `default_filter_chain`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub close_unmatched: bool,
    /// The top-level chain's access log (its HttpConnectionManager's `access_log`):
    /// requests it serves are written there instead of the mesh-wide log (first entry only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<crate::config::listener::AccessLogConfig>,
}

fn is_default(l: &Limits) -> bool {
    *l == Limits::default()
}

/// Limits on untrusted callers. Each refusal is logged with the limit's name and counted.
///
/// ```
/// let l: mesh_core::config::server::Limits =
///     serde_saphyr::from_str("{ max_request_headers_kb: 16, request_headers_timeout: 2s }").unwrap();
/// assert_eq!(l.max_concurrent_streams, 100);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Request headers larger than this are refused (Envoy's HCM `max_request_headers_kb`,
    /// default 60): HTTP/1.1 gets 431, HTTP/2 the header list limit in SETTINGS.
    pub max_request_headers_kb: u32,
    /// Concurrent streams per HTTP/2 connection (announced in SETTINGS).
    pub max_concurrent_streams: u32,
    /// How long a caller may take to send a request's headers (slow clients); `0s` turns the
    /// limit off (Envoy's `request_headers_timeout`, off by default there).
    #[serde(with = "crate::duration")]
    pub request_headers_timeout: std::time::Duration,
    /// HTTP/2 streams a caller may open and reset before the server sees them (the
    /// CVE-2023-44487 "rapid reset" attack): beyond it the connection is closed.
    pub max_pending_accept_reset_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_headers_kb: 60,
            max_concurrent_streams: 100,
            request_headers_timeout: std::time::Duration::from_secs(10),
            max_pending_accept_reset_streams: 20,
        }
    }
}

/// One inbound HTTP filter: a name and exactly one config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerHttpFilter {
    /// The filter's name (`envoy.filters.http.rbac`; Istio also sends `….rbac.DENY`).
    pub name: String,
    /// Authorization (`envoy.filters.http.rbac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<RbacFilter>,
    /// Request authentication (`envoy.filters.http.jwt_authn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_authn: Option<JwtAuthn>,
    /// Local rate limiting of callers (`envoy.filters.http.local_ratelimit`), the same
    /// token bucket as the client side's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ratelimit: Option<crate::policy::LocalRateLimit>,
    /// Fault injection (`envoy.filters.http.fault`), the same delays and aborts as the
    /// client side's, applied to requests the other filters let through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::policy::HttpFault>,
}

impl Server {
    /// The RBAC filters, in chain order, with their names.
    pub fn rbac_filters(&self) -> impl Iterator<Item = (&str, &RbacFilter)> {
        self.http_filters
            .iter()
            .filter_map(|f| f.rbac.as_ref().map(|r| (f.name.as_str(), r)))
    }

    /// The local rate limit filter, if any (at most one: validation refuses more).
    pub fn local_ratelimit(&self) -> Option<&crate::policy::LocalRateLimit> {
        self.http_filters
            .iter()
            .find_map(|f| f.local_ratelimit.as_ref())
    }

    /// The fault filter, if any (at most one: validation refuses more).
    pub fn fault(&self) -> Option<&crate::policy::HttpFault> {
        self.http_filters.iter().find_map(|f| f.fault.as_ref())
    }

    /// The JWT filter, if any (at most one: validation refuses more).
    pub fn jwt_authn(&self) -> Option<&JwtAuthn> {
        self.http_filters.iter().find_map(|f| f.jwt_authn.as_ref())
    }

    /// Every chain as a server of its own: index 0 is the top-level (default) chain, then
    /// `filter_chains` in order. Each has the server's name, address and drain period, and
    /// no chains of its own.
    pub fn chains(&self) -> Vec<Server> {
        let top = Server {
            filter_chains: Vec::new(),
            close_unmatched: false,
            ..self.clone()
        };
        let mut out = Vec::with_capacity(1 + self.filter_chains.len());
        for c in &self.filter_chains {
            out.push(Server {
                transport_socket: c.transport_socket.clone(),
                http_filters: c.http_filters.clone(),
                limits: c.limits.clone(),
                route_config: c.route_config.clone(),
                rds: c.rds.clone(),
                access_log: c.access_log.clone(),
                ..top.clone()
            });
        }
        out.insert(0, top);
        out
    }

    /// The route configs its chains name through `rds`.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        (self.rds.iter())
            .chain(self.filter_chains.iter().filter_map(|c| c.rds.as_ref()))
            .map(String::as_str)
    }

    /// This server with each `rds` replaced by the routes it names (`lookup` finds a route
    /// config's server routes): what requests meet. A route config not there (yet) serves
    /// no request, as gRPC serves none before its RDS arrives.
    pub fn resolved<'a>(&self, lookup: impl Fn(&str) -> Option<&'a InboundRoutes>) -> Server {
        let mut out = self.clone();
        let fill = |rds: &mut Option<String>, routes: &mut Option<InboundRoutes>| {
            if let Some(name) = rds.take() {
                *routes = Some(lookup(&name).cloned().unwrap_or_default());
            }
        };
        fill(&mut out.rds, &mut out.route_config);
        for c in &mut out.filter_chains {
            fill(&mut c.rds, &mut c.route_config);
        }
        out
    }

    /// Every chain's TLS settings (the top-level chain's first).
    pub fn transport_sockets(&self) -> impl Iterator<Item = &DownstreamTls> {
        self.transport_socket.iter().chain(
            self.filter_chains
                .iter()
                .filter_map(|c| c.transport_socket.as_ref()),
        )
    }

    /// Every chain's TLS settings, to edit.
    pub fn transport_sockets_mut(&mut self) -> impl Iterator<Item = &mut DownstreamTls> {
        self.transport_socket.iter_mut().chain(
            self.filter_chains
                .iter_mut()
                .filter_map(|c| c.transport_socket.as_mut()),
        )
    }

    /// Checks this server; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.name.is_empty(),
            &path.field("name"),
            "must not be empty",
        );
        if let Some(a) = &self.address {
            errors.check(
                a.parse::<std::net::SocketAddr>().is_ok(),
                &path.field("address"),
                format!("{a:?} is not ip:port"),
            );
        }
        self.validate_chain(path, errors);
        let cp = path.field("filter_chains");
        super::filter_chain::validate(&self.filter_chains, &|i| cp.index(i), errors);
        for (i, c) in self.chains().iter().skip(1).enumerate() {
            c.validate_chain(&cp.index(i), errors);
        }
        errors.check(
            !self.close_unmatched || !self.filter_chains.is_empty(),
            &path.field("close_unmatched"),
            "needs filter_chains (without them every connection would be closed)",
        );
    }

    /// Checks one chain's settings (this server's top-level ones).
    fn validate_chain(&self, path: &FieldPath, errors: &mut Errors) {
        if let Some(t) = &self.transport_socket {
            t.validate(&path.field("transport_socket"), errors);
        }
        crate::config::listener::AccessLogConfig::validate_all(
            &self.access_log,
            &path.field("access_log"),
            errors,
        );
        let lp = path.field("limits");
        errors.check(
            (1..=8192).contains(&self.limits.max_request_headers_kb),
            &lp.field("max_request_headers_kb"),
            "must be between 1 and 8192",
        );
        errors.check(
            self.limits.max_concurrent_streams >= 1,
            &lp.field("max_concurrent_streams"),
            "must be at least 1",
        );
        let mut names = HashSet::new();
        let (mut seen_rbac, mut seen_jwt, mut seen_rl, mut seen_fault) =
            (false, false, false, false);
        for (i, f) in self.http_filters.iter().enumerate() {
            let fp = path.field("http_filters").index(i);
            errors.check(!f.name.is_empty(), &fp.field("name"), "must not be empty");
            if !names.insert(f.name.as_str()) {
                errors.push(&fp.field("name"), format!("duplicate filter {:?}", f.name));
            }
            let set = usize::from(f.rbac.is_some())
                + usize::from(f.jwt_authn.is_some())
                + usize::from(f.local_ratelimit.is_some())
                + usize::from(f.fault.is_some());
            if set != 1 {
                errors.push(
                    &fp,
                    "exactly one filter config (rbac, jwt_authn, local_ratelimit or fault) must be set",
                );
                continue;
            }
            // The order the server runs them in: rate limit, JWT, RBAC, fault.
            if let Some(l) = &f.local_ratelimit {
                errors.check(
                    !seen_rbac && !seen_jwt && !seen_fault,
                    &fp,
                    "the local_ratelimit filter must come before the JWT, RBAC and fault filters",
                );
                errors.check(
                    !seen_rl,
                    &fp,
                    "only one local_ratelimit filter is supported",
                );
                seen_rl = true;
                l.validate(&fp.field("local_ratelimit"), errors)
            } else if let Some(r) = &f.rbac {
                errors.check(
                    !seen_fault,
                    &fp,
                    "the RBAC filters must come before the fault filter",
                );
                seen_rbac = true;
                r.validate(&fp.field("rbac"), errors)
            } else if let Some(j) = &f.jwt_authn {
                // RBAC reads the verified claims, so it must run after the JWT filter;
                // Istio always orders them so.
                errors.check(
                    !seen_rbac && !seen_fault,
                    &fp,
                    "the jwt_authn filter must come before the RBAC and fault filters",
                );
                errors.check(!seen_jwt, &fp, "only one jwt_authn filter is supported");
                seen_jwt = true;
                j.validate(&fp.field("jwt_authn"), errors)
            } else if let Some(fault) = &f.fault {
                errors.check(!seen_fault, &fp, "only one fault filter is supported");
                seen_fault = true;
                fault.validate(&fp.field("fault"), errors)
            }
        }
        errors.check(
            self.route_config.is_none() || self.rds.is_none(),
            &path.field("rds"),
            "route_config and rds are exclusive",
        );
        if let Some(r) = &self.route_config {
            let filters = self
                .http_filters
                .iter()
                .map(|f| (f.name.as_str(), f))
                .collect();
            r.validate(&filters, &path.field("route_config"), errors);
        }
    }
}
