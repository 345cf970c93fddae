//! The RBAC engine: policies compiled once per config change into matchers that evaluate a
//! request without allocating (regexes built, strings folded, CIDRs parsed, header names
//! resolved), then the gRFC A41 evaluation.

use super::audit::{AuditEvent, AuditSink, emit, principal};
use super::error::{Denied, Refused};
use crate::jwt::VerifiedJwt;
use crate::matcher::metadata::MetaMatch;
use crate::policy::headers::{HeaderKind, HeaderRule, compile_header, compile_kind};
use crate::route::inbound::{InboundTable, authority, overrides};
use crate::tls::PeerInfo;
use http::{HeaderMap, Request};
use mesh_core::config::rbac::{
    AuditCondition, CidrRange, Permission, Policy, Principal, RbacAction, RbacFilter,
};
use mesh_core::config::route::{HeaderMatcher, StringMatcher};
use mesh_core::config::server::Server;
use std::net::IpAddr;
use std::sync::Arc;

/// One or more RBAC filters in the order of the filter chain (Istio sends a `DENY` filter, then
/// an `ALLOW` one). Cheap to evaluate; build it when the config changes.
#[derive(Default)]
pub struct RbacEngine {
    filters: Vec<Compiled>,
    sink: Option<AuditSink>,
    /// The server's inbound routes, and per route number its own filters (`None`: the
    /// filter-level ones), when the server has a route config.
    routes: Option<(InboundTable, Vec<Option<Vec<Compiled>>>)>,
}

impl std::fmt::Debug for RbacEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacEngine")
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Compiled {
    name: Arc<str>,
    allow: bool,
    policies: Vec<(Arc<str>, Rule)>,
    /// (log denials, log allowed requests), when a logger is configured.
    audit: Option<(bool, bool)>,
}

#[derive(Debug)]
struct Rule {
    permissions: Vec<Perm>,
    principals: Vec<Prin>,
    /// The path prefixes the rule can match at all (`None`: any path).
    paths: Option<paths::Paths>,
}

mod paths;

#[derive(Debug)]
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(Header),
    Path(HeaderKind),
    DestinationIp(Cidr),
    DestinationPort(u16),
    DestinationPorts(u32, u32),
    ServerName(HeaderKind),
    Never,
}

#[derive(Debug)]
enum Prin {
    Any,
    And(Vec<Prin>),
    Or(Vec<Prin>),
    Not(Box<Prin>),
    Authenticated(Option<HeaderKind>),
    RemoteIp(Cidr),
    Header(Header),
    Path(HeaderKind),
    Metadata(MetaMatch),
}

#[derive(Debug)]
enum Header {
    /// `:method` equal to a method (compared as `http::Method`, no string compare).
    MethodIs(http::Method, bool),
    Method(HeaderKind, bool),
    Path(HeaderKind, bool),
    Authority(HeaderKind, bool),
    /// `te` never matches (A41: hop-by-hop).
    Te,
    Regular(HeaderRule),
}

#[derive(Debug)]
struct Cidr {
    ip: IpAddr,
    len: u32,
}

impl RbacEngine {
    /// Compiles `filters` (name, config) in chain order. Filters without rules and `LOG`
    /// filters are dropped (A41). Fails on what validation would refuse.
    pub fn new<'a>(
        filters: impl IntoIterator<Item = (&'a str, &'a RbacFilter)>,
    ) -> Result<Self, String> {
        let mut out = Vec::new();
        for (name, f) in filters {
            let Some(rules) = &f.rules else { continue };
            let allow = match rules.action {
                RbacAction::Allow => true,
                RbacAction::Deny => false,
                RbacAction::Log => continue,
            };
            let policies = rules
                .policies
                .iter()
                .map(|(n, p)| Ok((Arc::from(n.as_str()), rule(p)?)))
                .collect::<Result<_, String>>()
                .map_err(|e| format!("RBAC filter {name:?}: {e}"))?;
            let audit = rules
                .audit_logging_options
                .as_ref()
                .filter(|a| a.logger_configs.iter().any(|l| l.stdout.is_some()))
                .and_then(|a| match a.audit_condition {
                    AuditCondition::None => None,
                    AuditCondition::OnDeny => Some((true, false)),
                    AuditCondition::OnAllow => Some((false, true)),
                    AuditCondition::OnDenyAndAllow => Some((true, true)),
                });
            out.push(Compiled {
                name: Arc::from(name),
                allow,
                policies,
                audit,
            });
        }
        Ok(Self {
            filters: out,
            sink: None,
            routes: None,
        })
    }

    /// The engine of a server: its RBAC filters, and when it has inbound routes, each
    /// route's filters with its `RBACPerRoute` overrides (a route's own, else its virtual
    /// host's; an override without `rules`, or `disabled`, turns that filter off there).
    pub fn for_server(server: &Server) -> Result<Self, String> {
        let mut engine = Self::new(server.rbac_filters())?;
        let Some(routes) = &server.route_config else {
            return Ok(engine);
        };
        let table = InboundTable::compile(routes)?;
        let filters: Vec<(&str, &RbacFilter)> = server.rbac_filters().collect();
        let by_filter: Vec<_> = filters
            .iter()
            .map(|(name, _)| overrides(routes, name))
            .collect();
        let count: usize = routes.virtual_hosts.iter().map(|v| v.routes.len()).sum();
        let mut per_route = Vec::with_capacity(count);
        for n in 0..count {
            if by_filter.iter().all(|o| o[n].is_none()) {
                per_route.push(None);
                continue;
            }
            let mut chain = Vec::new();
            for ((name, base), o) in filters.iter().zip(&by_filter) {
                match o[n] {
                    Some(o) if o.disabled => {}
                    Some(o) => chain.extend(o.rbac.as_ref().map(|r| (*name, r))),
                    None => chain.push((*name, *base)),
                }
            }
            per_route.push(Some(Self::new(chain)?.filters));
        }
        engine.routes = Some((table, per_route));
        Ok(engine)
    }

    /// Sends audit events to `sink` instead of stdout.
    pub fn with_audit_sink(mut self, sink: AuditSink) -> Self {
        self.sink = Some(sink);
        self
    }

    fn audit(&self, f: &Compiled, cx: &Cx<'_>, matched: Option<&Arc<str>>, authorized: bool) {
        let Some((on_deny, on_allow)) = f.audit else {
            return;
        };
        if authorized && on_allow || !authorized && on_deny {
            let event = AuditEvent {
                rpc_method: cx.req.path.to_owned(),
                principal: principal(cx.peer),
                policy_name: f.name.to_string(),
                matched_rule: matched.map(|m| m.to_string()).unwrap_or_default(),
                authorized,
            };
            emit(self.sink.as_ref(), &event);
        }
    }

    /// Whether nothing applies (no filter and no routes: everything passes).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.routes.is_none()
    }

    /// Finds the request's inbound route (when the server has routes), then runs that
    /// route's filters in order: an `ALLOW` filter no policy of which matches, or a `DENY`
    /// filter one policy of which matches, refuses the request. The peer comes from the
    /// request's [`PeerInfo`] extension (none: no TLS, no addresses).
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Refused> {
        let filters = match &self.routes {
            None => &self.filters,
            Some((table, per_route)) => {
                let n = table.find(req).map_err(Refused::NoRoute)?;
                per_route[n].as_ref().unwrap_or(&self.filters)
            }
        };
        self.run(filters, req).map_err(Refused::Denied)
    }

    fn run<B>(&self, filters: &[Compiled], req: &Request<B>) -> Result<(), Denied> {
        let cx = Cx {
            req: Parts {
                method: req.method(),
                path: req.uri().path(),
                path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                authority: authority(req),
                headers: req.headers(),
            },
            peer: req.extensions().get::<PeerInfo>(),
            extensions: req.extensions(),
            head: paths::Head::of(req.uri().path()),
        };
        for f in filters {
            let matched = f.policies.iter().find(|(_, r)| r.matches(&cx));
            if f.audit.is_some() {
                let authorized = f.allow == matched.is_some();
                self.audit(f, &cx, matched.map(|(n, _)| n), authorized);
            }
            match (f.allow, matched) {
                (true, Some(_)) | (false, None) => {}
                (true, None) => {
                    return Err(Denied {
                        filter: f.name.clone(),
                        policy: None,
                    });
                }
                (false, Some((policy, _))) => {
                    return Err(Denied {
                        filter: f.name.clone(),
                        policy: Some(policy.clone()),
                    });
                }
            }
        }
        Ok(())
    }
}

struct Parts<'a> {
    method: &'a http::Method,
    path: &'a str,
    path_and_query: &'a str,
    authority: &'a str,
    headers: &'a HeaderMap,
}

struct Cx<'a> {
    req: Parts<'a>,
    peer: Option<&'a PeerInfo>,
    /// Where `metadata` principals find what the JWT filter verified (looked up only
    /// when one is evaluated).
    extensions: &'a http::Extensions,
    head: paths::Head,
}

impl Rule {
    fn matches(&self, cx: &Cx<'_>) -> bool {
        if let Some(p) = &self.paths
            && !paths::admits(p, cx.req.path, &cx.head)
        {
            return false;
        }
        self.permissions.iter().any(|p| p.matches(cx))
            && self.principals.iter().any(|p| p.matches(cx))
    }
}

impl Perm {
    fn matches(&self, cx: &Cx<'_>) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(v) => v.iter().all(|p| p.matches(cx)),
            Perm::Or(v) => v.iter().any(|p| p.matches(cx)),
            Perm::Not(p) => !p.matches(cx),
            Perm::Header(h) => h.matches(&cx.req),
            Perm::Path(m) => m.matches(cx.req.path),
            Perm::DestinationIp(c) => local(cx).is_some_and(|a| c.contains(a.ip())),
            Perm::DestinationPort(p) => local(cx).is_some_and(|a| a.port() == *p),
            Perm::DestinationPorts(start, end) => {
                local(cx).is_some_and(|a| (*start..*end).contains(&u32::from(a.port())))
            }
            // A41: the requested server name is taken as empty.
            Perm::ServerName(m) => m.matches(""),
            Perm::Never => false,
        }
    }
}

fn local(cx: &Cx<'_>) -> Option<std::net::SocketAddr> {
    cx.peer.and_then(|p| p.local_addr)
}

impl Prin {
    fn matches(&self, cx: &Cx<'_>) -> bool {
        match self {
            Prin::Any => true,
            Prin::And(v) => v.iter().all(|p| p.matches(cx)),
            Prin::Or(v) => v.iter().any(|p| p.matches(cx)),
            Prin::Not(p) => !p.matches(cx),
            Prin::Authenticated(name) => authenticated(name.as_ref(), cx.peer),
            Prin::RemoteIp(c) => cx
                .peer
                .and_then(|p| p.remote_addr)
                .is_some_and(|a| c.contains(a.ip())),
            Prin::Header(h) => h.matches(&cx.req),
            Prin::Path(m) => m.matches(cx.req.path),
            Prin::Metadata(m) => m.matches(cx.extensions.get::<VerifiedJwt>()),
        }
    }
}

/// A41: URI SANs if any, else DNS SANs, else the subject; `""` without a certificate. No
/// matcher: any TLS connection.
fn authenticated(name: Option<&HeaderKind>, peer: Option<&PeerInfo>) -> bool {
    let Some(peer) = peer.filter(|p| p.tls) else {
        return false;
    };
    let Some(m) = name else { return true };
    let Some(id) = &peer.identity else {
        return m.matches("");
    };
    use mesh_core::config::tls::SanType;
    for kind in [SanType::Uri, SanType::Dns] {
        let mut of_kind = id.sans().iter().filter(|s| s.kind == kind).peekable();
        if of_kind.peek().is_some() {
            return of_kind.any(|s| m.matches(&s.value));
        }
    }
    m.matches(id.subject())
}

impl Header {
    fn matches(&self, r: &Parts<'_>) -> bool {
        match self {
            Header::MethodIs(m, invert) => (r.method == m) != *invert,
            Header::Method(k, invert) => k.matches(r.method.as_str()) != *invert,
            // Envoy's `:path` header carries the query.
            Header::Path(k, invert) => k.matches(r.path_and_query) != *invert,
            Header::Authority(k, invert) => k.matches(r.authority) != *invert,
            Header::Te => false,
            Header::Regular(h) => h.matches(r.headers),
        }
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer is compared as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.ip, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let (full, rest) = ((bits / 8) as usize, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

fn rule(p: &Policy) -> Result<Rule, String> {
    let permissions: Vec<Perm> = p.permissions.iter().map(perm).collect::<Result<_, _>>()?;
    Ok(Rule {
        paths: paths::required(&permissions),
        permissions,
        principals: p.principals.iter().map(prin).collect::<Result<_, _>>()?,
    })
}

fn perm(p: &Permission) -> Result<Perm, String> {
    Ok(if p.any.is_some() {
        Perm::Any
    } else if let Some(s) = &p.and_rules {
        Perm::And(s.rules.iter().map(perm).collect::<Result<_, _>>()?)
    } else if let Some(s) = &p.or_rules {
        Perm::Or(s.rules.iter().map(perm).collect::<Result<_, _>>()?)
    } else if let Some(n) = &p.not_rule {
        Perm::Not(Box::new(perm(n)?))
    } else if let Some(h) = &p.header {
        Perm::Header(header(h)?)
    } else if let Some(u) = &p.url_path {
        Perm::Path(string(&u.path)?)
    } else if let Some(c) = &p.destination_ip {
        Perm::DestinationIp(cidr(c)?)
    } else if let Some(port) = p.destination_port {
        Perm::DestinationPort(u16::try_from(port).map_err(|_| format!("port {port}"))?)
    } else if let Some(r) = &p.destination_port_range {
        Perm::DestinationPorts(r.start, r.end)
    } else if let Some(m) = &p.requested_server_name {
        Perm::ServerName(string(m)?)
    } else if p.metadata {
        Perm::Never
    } else {
        return Err("a permission with no field set".into());
    })
}

fn prin(p: &Principal) -> Result<Prin, String> {
    Ok(if p.any.is_some() {
        Prin::Any
    } else if let Some(s) = &p.and_ids {
        Prin::And(s.ids.iter().map(prin).collect::<Result<_, _>>()?)
    } else if let Some(s) = &p.or_ids {
        Prin::Or(s.ids.iter().map(prin).collect::<Result<_, _>>()?)
    } else if let Some(n) = &p.not_id {
        Prin::Not(Box::new(prin(n)?))
    } else if let Some(a) = &p.authenticated {
        Prin::Authenticated(a.principal_name.as_ref().map(string).transpose()?)
    } else if let Some(c) = p
        .source_ip
        .as_ref()
        .or(p.direct_remote_ip.as_ref())
        .or(p.remote_ip.as_ref())
    {
        // No proxy protocol, no trusted x-forwarded-for: all three are the connection's peer.
        Prin::RemoteIp(cidr(c)?)
    } else if let Some(h) = &p.header {
        Prin::Header(header(h)?)
    } else if let Some(u) = &p.url_path {
        Prin::Path(string(&u.path)?)
    } else if let Some(m) = &p.metadata {
        Prin::Metadata(MetaMatch::compile(m)?)
    } else {
        return Err("a principal with no field set".into());
    })
}

fn cidr(c: &CidrRange) -> Result<Cidr, String> {
    let (ip, len) = c
        .parsed()
        .ok_or_else(|| format!("{}/{} is not an IP range", c.address_prefix, c.prefix_len))?;
    Ok(Cidr { ip, len })
}

/// A string matcher as a header value matcher (the same five kinds, same folding).
fn string(m: &StringMatcher) -> Result<HeaderKind, String> {
    compile_kind(
        m.as_header_match()
            .ok_or("a string matcher needs exactly one kind")?,
    )
}

fn header(h: &HeaderMatcher) -> Result<Header, String> {
    let name = h.name.to_ascii_lowercase();
    let pseudo = |f: fn(HeaderKind, bool) -> Header| -> Result<Header, String> {
        let k = compile_kind(h.header_match().ok_or("several header match specifiers")?)?;
        Ok(f(k, h.invert_match))
    };
    match name.as_str() {
        ":method" => match pseudo(Header::Method)? {
            Header::Method(HeaderKind::Exact(m, false), invert) => {
                Ok(match http::Method::from_bytes(m.as_bytes()) {
                    Ok(method) => Header::MethodIs(method, invert),
                    Err(_) => Header::Method(HeaderKind::Exact(m, false), invert),
                })
            }
            other => Ok(other),
        },
        ":path" => pseudo(Header::Path),
        // Envoy aliases the two (A41).
        ":authority" | "host" => pseudo(Header::Authority),
        "te" => Ok(Header::Te),
        _ => compile_header(h).map(Header::Regular),
    }
}
