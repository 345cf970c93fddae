//! Filter chains: a server that treats connections differently by where they come from and
//! which of its addresses they reach (gRFC A36, Envoy's `FilterChainMatch`).
//!
//! Why: one port often serves callers that deserve different treatment: mTLS with strict
//! authorization for the mesh, plaintext health checks from the node's own address, a
//! stricter policy for a partner's address range. Envoy and gRPC choose a chain per
//! connection, once, when it is accepted; the chain fixes the connection's TLS, limits and
//! HTTP filters. This module holds the chains' config, its validation (two chains that would
//! tie for a connection are refused, as Envoy and gRPC refuse them) and the choice itself,
//! [`ChainSelector`], a pure function of the connection's addresses.
//!
//! The choice follows Envoy's order, each stage keeping only the most specific candidates
//! and never going back: destination address (longest matching `prefix_ranges`; a chain
//! without them matches every address, least specifically), then `transport_protocol`
//! (`raw_buffer` beats unset), then `source_type` (a chain
//! naming the connection's type beats `ANY`), then `source_prefix_ranges` (longest), then
//! `source_ports` (a listed port beats none listed). What is left is the chain; if nothing
//! is left the server's default chain (the top-level settings) serves the connection, or,
//! without one, it is closed unanswered. gRPC Java and Go consider destination ranges only
//! when the listener is bound to a wildcard address; this follows Envoy and always does,
//! which differs only for a chain whose ranges exclude the address the server listens on.

use super::inbound::InboundRoutes;
use super::rbac::CidrRange;
use super::server::{Limits, ServerHttpFilter};
use super::tls::DownstreamTls;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// One filter chain: which connections it takes, and what they get.
///
/// ```
/// let yaml = r#"
/// name: from-node
/// filter_chain_match:
///   source_type: SAME_IP_OR_LOOPBACK
///   source_prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }]
/// "#;
/// let c: mesh_core::config::filter_chain::FilterChain = serde_saphyr::from_str(yaml).unwrap();
/// assert!(c.transport_socket.is_none(), "plaintext for the node's own callers");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChain {
    /// A name for logs and errors (optional).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Which connections take this chain (empty: every connection).
    #[serde(default, skip_serializing_if = "is_default_match")]
    pub filter_chain_match: FilterChainMatch,
    /// TLS for its connections; plaintext without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<DownstreamTls>,
    /// Its inbound HTTP filters, in order (as the server's top-level `http_filters`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_filters: Vec<ServerHttpFilter>,
    /// Limits on its callers.
    #[serde(default, skip_serializing_if = "is_default_limits")]
    pub limits: Limits,
    /// Its inbound routes (none: every request, under the filters' own configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_config: Option<InboundRoutes>,
    /// Or its routes come from this route config (RDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<String>,
    /// Its access log (as the server's top-level `access_log`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<crate::config::listener::AccessLogConfig>,
}

fn is_default_match(m: &FilterChainMatch) -> bool {
    *m == FilterChainMatch::default()
}

fn is_default_limits(l: &Limits) -> bool {
    *l == Limits::default()
}

/// Envoy's `FilterChainMatch`, the fields a server in the application's process can see.
/// (Envoy's `destination_port`, `server_names`, `application_protocols` and a
/// `transport_protocol` other than `raw_buffer` need a listener filter or a port range the
/// process does not have: gRPC never matches chains that set them, and the xDS client drops
/// such chains.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChainMatch {
    /// The server's own address the connection reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_ranges: Vec<CidrRange>,
    /// `raw_buffer` or empty: every connection is `raw_buffer` to the server (it has no TLS
    /// inspector), so a chain saying so beats one that does not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transport_protocol: String,
    /// Whether the caller is on this host.
    #[serde(default, skip_serializing_if = "is_any")]
    pub source_type: SourceType,
    /// The caller's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_prefix_ranges: Vec<CidrRange>,
    /// The caller's port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ports: Vec<u16>,
}

fn is_any(t: &SourceType) -> bool {
    *t == SourceType::Any
}

/// Envoy's `ConnectionSourceType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceType {
    /// Any caller.
    #[default]
    Any,
    /// A caller on this host: its address is the server's own, or a loopback address.
    SameIpOrLoopback,
    /// A caller elsewhere.
    External,
}

/// An IP range in normal form: the address masked to its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    fn new(r: &CidrRange) -> Option<Self> {
        let (ip, len) = r.parsed()?;
        let len = u8::try_from(len).ok()?;
        Some(Self {
            addr: mask(ip.to_canonical(), len),
            len,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.addr.is_ipv4() == ip.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// How specifically a list of ranges matches `ip`: the longest matching prefix, `-1` for no
/// ranges (matches anything, least specifically), `None` when no range matches.
fn specificity(ranges: &[Prefix], ip: IpAddr) -> Option<i16> {
    if ranges.is_empty() {
        return Some(-1);
    }
    ranges
        .iter()
        .filter(|p| p.contains(ip))
        .map(|p| i16::from(p.len))
        .max()
}

/// A point of the match space: destination, `raw_buffer`, source type, source, port (0: any).
type Point = (Option<Prefix>, bool, SourceType, Option<Prefix>, u16);

/// One chain's match, compiled.
#[derive(Clone, Debug)]
struct Compiled {
    dst: Vec<Prefix>,
    raw_buffer: bool,
    source_type: SourceType,
    src: Vec<Prefix>,
    ports: Vec<u16>,
}

impl Compiled {
    fn new(m: &FilterChainMatch) -> Self {
        Self {
            dst: m.prefix_ranges.iter().filter_map(Prefix::new).collect(),
            raw_buffer: m.transport_protocol == "raw_buffer",
            source_type: m.source_type,
            src: m
                .source_prefix_ranges
                .iter()
                .filter_map(Prefix::new)
                .collect(),
            ports: m.source_ports.clone(),
        }
    }

    /// Every (destination, source type, source, port) point this match covers: two chains
    /// sharing one would tie for some connection.
    fn points(&self) -> Vec<Point> {
        let opt = |v: &[Prefix]| -> Vec<Option<Prefix>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().copied().map(Some).collect()
            }
        };
        let ports = if self.ports.is_empty() {
            vec![0]
        } else {
            self.ports.clone()
        };
        let mut out = Vec::new();
        for d in opt(&self.dst) {
            for s in opt(&self.src) {
                for p in &ports {
                    out.push((d, self.raw_buffer, self.source_type, s, *p));
                }
            }
        }
        out
    }
}

/// Chooses a connection's chain: Envoy's and gRPC's most-specific-match, stage by stage.
///
/// ```
/// use mesh_core::config::filter_chain::{ChainSelector, FilterChainMatch};
/// use mesh_core::config::rbac::CidrRange;
/// let partner = FilterChainMatch {
///     source_prefix_ranges: vec![CidrRange { address_prefix: "10.1.0.0".into(), prefix_len: 16 }],
///     ..Default::default()
/// };
/// let s = ChainSelector::new(&[partner]);
/// let local = "10.0.0.5:8443".parse().unwrap();
/// assert_eq!(s.select(local, "10.1.2.3:40000".parse().unwrap()), Some(0));
/// assert_eq!(s.select(local, "10.2.2.3:40000".parse().unwrap()), None, "the default chain's");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ChainSelector {
    chains: Vec<Compiled>,
}

impl ChainSelector {
    /// A selector over these chains' matches (in their order).
    pub fn new(matches: &[FilterChainMatch]) -> Self {
        Self {
            chains: matches.iter().map(Compiled::new).collect(),
        }
    }

    /// Whether there is nothing to choose from.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The index of the chain a connection from `remote` to our `local` address takes;
    /// `None`: no chain matches (the default chain serves it, if there is one).
    pub fn select(&self, local: SocketAddr, remote: SocketAddr) -> Option<usize> {
        let (dst, src) = (local.ip().to_canonical(), remote.ip().to_canonical());
        let mut cand: Vec<usize> = (0..self.chains.len()).collect();
        // Destination address: the longest matching prefix.
        best_by(&mut cand, |i| specificity(&self.chains[i].dst, dst));
        // Transport protocol: `raw_buffer` named beats unset.
        best_by(&mut cand, |i| Some(i16::from(self.chains[i].raw_buffer)));
        // Source type: a chain naming the connection's type beats ANY.
        let kind = if src == dst || src.is_loopback() {
            SourceType::SameIpOrLoopback
        } else {
            SourceType::External
        };
        best_by(&mut cand, |i| match self.chains[i].source_type {
            t if t == kind => Some(1),
            SourceType::Any => Some(0),
            _ => None,
        });
        // Source address, then source port.
        best_by(&mut cand, |i| specificity(&self.chains[i].src, src));
        best_by(&mut cand, |i| {
            let ports = &self.chains[i].ports;
            if ports.is_empty() {
                Some(0)
            } else {
                ports.contains(&remote.port()).then_some(1)
            }
        });
        // Validation refuses chains that could tie, so at most one is left.
        match cand.as_slice() {
            [i] => Some(*i),
            _ => None,
        }
    }
}

/// Keeps the candidates with the highest score (`None`: not a candidate).
fn best_by(cand: &mut Vec<usize>, score: impl Fn(usize) -> Option<i16>) {
    let best = cand.iter().filter_map(|&i| score(i)).max();
    cand.retain(|&i| best.is_some() && score(i) == best);
}

/// Checks a server's chains: each chain's match, and that no two could tie for a connection
/// (Envoy and gRPC refuse such listeners: "multiple filter chains with the same matching
/// rules"). The chains' own settings are checked by the server. `path_of` locates chain `i`
/// (the xDS client's chains keep their places in the listener).
pub fn validate(chains: &[FilterChain], path_of: &dyn Fn(usize) -> FieldPath, errors: &mut Errors) {
    let mut owners = HashMap::new();
    for (i, c) in chains.iter().enumerate() {
        let mp = path_of(i).field("filter_chain_match");
        let m = &c.filter_chain_match;
        for (field, ranges) in [
            ("prefix_ranges", &m.prefix_ranges),
            ("source_prefix_ranges", &m.source_prefix_ranges),
        ] {
            for (j, r) in ranges.iter().enumerate() {
                errors.check(
                    Prefix::new(r).is_some(),
                    &mp.field(field).index(j),
                    format!("{}/{} is not an IP range", r.address_prefix, r.prefix_len),
                );
            }
        }
        errors.check(
            m.transport_protocol.is_empty() || m.transport_protocol == "raw_buffer",
            &mp.field("transport_protocol"),
            "must be raw_buffer or empty (a server in the application sees no other)",
        );
        errors.check(
            !m.source_ports.contains(&0),
            &mp.field("source_ports"),
            "port 0 never matches a connection",
        );
        for point in Compiled::new(m).points() {
            if let Some(first) = owners.insert(point, i)
                && first != i
            {
                errors.push(
                    &mp,
                    format!(
                        "matches the same connections as {} (two chains would tie)",
                        path_of(first)
                    ),
                );
                break;
            }
        }
    }
}

#[cfg(test)]
#[path = "filter_chain_tests.rs"]
mod tests;
