//! Subject alternative names: reading them from a certificate and matching them the way
//! gRFC A29 and Envoy do.
//!
//! The rules, because each one closes a hole: an empty matcher list accepts any verified
//! certificate, but a certificate without SANs then matches nothing else; IP SANs compare in
//! RFC 5952 text form (so `::1` and `0:0::1` are one address); an `exact` matcher meets a
//! `*.` DNS SAN as a one-label wildcard; `ignore_case` applies to all but regexes, which match
//! whole values.

use mesh_core::config::route::{HeaderMatch, StringMatcher};
use mesh_core::config::tls::{CertificateValidationContext, SanType};
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;

/// One subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct San {
    /// Its kind.
    pub kind: SanType,
    /// Its value (IP addresses in RFC 5952 form).
    pub value: String,
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SanType::Dns => "DNS",
            SanType::Uri => "URI",
            SanType::Email => "email",
            SanType::IpAddress => "IP",
        };
        write!(f, "{kind}:{}", self.value)
    }
}

/// The leaf's serial, SANs and validity.
pub(crate) fn parse_leaf(der: &CertificateDer<'_>) -> Result<super::LeafInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a parsable X.509 certificate: {e}"))?;
    let mut sans = Vec::new();
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName extension: {e}"))?;
    for name in ext.iter().flat_map(|e| &e.value.general_names) {
        let san = match name {
            GeneralName::DNSName(v) => San {
                kind: SanType::Dns,
                value: (*v).to_owned(),
            },
            GeneralName::URI(v) => San {
                kind: SanType::Uri,
                value: (*v).to_owned(),
            },
            GeneralName::RFC822Name(v) => San {
                kind: SanType::Email,
                value: (*v).to_owned(),
            },
            GeneralName::IPAddress(b) => match ip_from_bytes(b) {
                Some(ip) => San {
                    kind: SanType::IpAddress,
                    value: ip.to_string(),
                },
                None => continue,
            },
            _ => continue,
        };
        sans.push(san);
    }
    let time = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs < 0 {
            SystemTime::UNIX_EPOCH
        } else {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        }
    };
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(super::LeafInfo {
        serial,
        sans,
        subject: rfc2253(cert.subject()),
        not_before: time(&cert.validity().not_before),
        not_after: time(&cert.validity().not_after),
    })
}

/// A distinguished name as RFC 2253 writes it (and Envoy's RBAC matches it): the RDNs last
/// first, separated by `,`, multi-valued ones joined by `+`, special characters escaped.
pub(crate) fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(atv.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&atv.attr_type().to_id_string()),
            }
            out.push('=');
            let value = atv.as_str().unwrap_or_default();
            let last = value.chars().count().saturating_sub(1);
            for (k, c) in value.chars().enumerate() {
                let edge = (k == 0 && (c == '#' || c == ' ')) || (k == last && c == ' ');
                if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    out
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The SPIFFE ID of a certificate: its URI SANs must be exactly one `spiffe://` ID.
pub(crate) fn spiffe_id(sans: &[San]) -> Option<&str> {
    let mut uris = sans.iter().filter(|s| s.kind == SanType::Uri);
    let one = uris.next()?;
    if uris.next().is_some() || trust_domain(&one.value).is_none() {
        return None;
    }
    Some(&one.value)
}

/// The trust domain of a SPIFFE ID (`spiffe://<domain>/<path>`), if it is one.
pub(crate) fn trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next()?;
    let ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    ok.then_some(domain)
}

/// The compiled SAN checks of one validation context.
#[derive(Debug, Default)]
pub(crate) struct SanMatchers {
    any: Vec<Matcher>,
    typed: Vec<(SanType, Matcher)>,
}

#[derive(Debug)]
enum Matcher {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(regex::Regex),
}

impl SanMatchers {
    /// Compiles the context's matchers (validation has checked them).
    pub(crate) fn new(v: Option<&CertificateValidationContext>) -> Self {
        let Some(v) = v else { return Self::default() };
        Self {
            any: v
                .match_subject_alt_names
                .iter()
                .filter_map(Matcher::new)
                .collect(),
            typed: v
                .match_typed_subject_alt_names
                .iter()
                .filter_map(|m| Some((m.san_type, Matcher::new(&m.matcher)?)))
                .collect(),
        }
    }

    /// The server must be `name`: a DNS SAN equal to it (a `*.` wildcard covering one label
    /// counts, case ignored), or an IP SAN equal to it when it is an address. What a TLS
    /// client checks against a public CA's certificate.
    pub(crate) fn server_name(name: &str) -> Self {
        let kind = if name.parse::<IpAddr>().is_ok() {
            SanType::IpAddress
        } else {
            SanType::Dns
        };
        Self {
            any: Vec::new(),
            typed: vec![(kind, Matcher::Exact(name.to_owned(), true))],
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.any.is_empty() && self.typed.is_empty()
    }

    /// Whether some SAN passes some matcher (true for no matchers).
    pub(crate) fn accept(&self, sans: &[San]) -> bool {
        if self.is_empty() {
            return true;
        }
        sans.iter().any(|san| {
            self.any.iter().any(|m| m.matches(san))
                || self
                    .typed
                    .iter()
                    .any(|(kind, m)| *kind == san.kind && m.matches(san))
        })
    }

    /// The matchers, for error messages.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self.any.iter().map(|m| m.to_string()).collect();
        parts.extend(self.typed.iter().map(|(k, m)| format!("{k:?} {m}")));
        parts.join(", ")
    }
}

impl Matcher {
    fn new(m: &StringMatcher) -> Option<Self> {
        Some(match m.as_header_match()? {
            HeaderMatch::Exact(v, ic) => Matcher::Exact(v.to_owned(), ic),
            HeaderMatch::Prefix(v, ic) => Matcher::Prefix(v.to_owned(), ic),
            HeaderMatch::Suffix(v, ic) => Matcher::Suffix(v.to_owned(), ic),
            HeaderMatch::Contains(v, ic) => Matcher::Contains(v.to_owned(), ic),
            HeaderMatch::Regex(r) => Matcher::Regex(regex::Regex::new(&format!("^(?:{r})$")).ok()?),
            _ => return None,
        })
    }

    fn matches(&self, san: &San) -> bool {
        let v = san.value.as_str();
        match self {
            Matcher::Exact(p, ic) if san.kind == SanType::Dns && v.starts_with("*.") => {
                wildcard_matches(v, p, *ic)
            }
            Matcher::Exact(p, ic) if san.kind == SanType::IpAddress => {
                // Compare addresses, whatever text form the matcher uses.
                match p.parse::<IpAddr>() {
                    Ok(ip) => ip.to_string() == v,
                    Err(_) => eq(v, p, *ic),
                }
            }
            Matcher::Exact(p, ic) => eq(v, p, *ic),
            Matcher::Prefix(p, ic) => v.len() >= p.len() && eq(&v[..p.len()], p, *ic),
            Matcher::Suffix(p, ic) => v.len() >= p.len() && eq(&v[v.len() - p.len()..], p, *ic),
            Matcher::Contains(p, true) => v.to_ascii_lowercase().contains(&p.to_ascii_lowercase()),
            Matcher::Contains(p, false) => v.contains(p.as_str()),
            Matcher::Regex(r) => r.is_match(v),
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// `*.example.com` matches `a.example.com`, not `example.com` or `a.b.example.com`.
fn wildcard_matches(san: &str, name: &str, ignore_case: bool) -> bool {
    let suffix = &san[1..]; // ".example.com"
    let Some(split) = name.find('.') else {
        return false;
    };
    split > 0 && eq(&name[split..], suffix, ignore_case)
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, v, ic) = match self {
            Matcher::Exact(v, ic) => ("exact", v.as_str(), *ic),
            Matcher::Prefix(v, ic) => ("prefix", v.as_str(), *ic),
            Matcher::Suffix(v, ic) => ("suffix", v.as_str(), *ic),
            Matcher::Contains(v, ic) => ("contains", v.as_str(), *ic),
            Matcher::Regex(r) => ("regex", r.as_str(), false),
        };
        let ic = if ic { " (ignore case)" } else { "" };
        write!(f, "{kind} {v:?}{ic}")
    }
}
