//! Virtual hosts by domain, in Envoy's precedence: exact, longest `*.suffix`, longest
//! `prefix.*`, then `*`. Shared by the client's route tables and servers' inbound routes.

use std::collections::HashMap;

/// Domains compiled to virtual host indexes.
#[derive(Debug, Default)]
pub(crate) struct Domains {
    exact: HashMap<String, usize>,
    /// `*.foo.com` style, longest first.
    suffix: Vec<(String, usize)>,
    /// `foo.*` style, longest first.
    prefix: Vec<(String, usize)>,
    any: Option<usize>,
}

impl Domains {
    /// Builds the index: `vhosts` gives each virtual host's domains, in config order (the
    /// first to claim a domain keeps it).
    pub(crate) fn new<'a>(vhosts: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut out = Self::default();
        for (i, domains) in vhosts.into_iter().enumerate() {
            for d in domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    out.any.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    out.suffix.push((s.to_owned(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    out.prefix.push((p.to_owned(), i));
                } else {
                    out.exact.entry(d).or_insert(i);
                }
            }
        }
        // Longest wildcard first; stable sort keeps config order among equals.
        out.suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        out.prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        out
    }

    /// The virtual host for `host`. A host with a port that matches nothing is retried
    /// without the port.
    pub(crate) fn find(&self, host: &str) -> Option<usize> {
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        self.index(host)
            .or_else(|| strip_port(host).and_then(|h| self.index(h)))
    }

    fn index(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        // A wildcard never matches the empty string: `*.foo.com` does not match `.foo.com`.
        let suffix = self
            .suffix
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()));
        if let Some((_, i)) = suffix {
            return Some(*i);
        }
        let prefix = self
            .prefix
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()));
        prefix.map(|(_, i)| *i).or(self.any)
    }
}

fn strip_port(host: &str) -> Option<&str> {
    let (h, port) = host.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')).then_some(h)
}
