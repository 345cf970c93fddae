//! Virtual hosts by domain, in Envoy's precedence: exact, longest `*.suffix`, longest
//! `prefix.*`, then `*`. Shared by the client's route tables and servers' inbound routes.
//!
//! Wildcards are found by hash lookups of the host's own suffixes (prefixes), one per distinct
//! wildcard length, longest first: the cost follows the number of lengths, not of domains.

use std::collections::HashMap;

/// Domains compiled to virtual host indexes.
#[derive(Debug, Default)]
pub(crate) struct Domains {
    exact: HashMap<String, usize>,
    /// `*.foo.com` style, by the part after `*`.
    suffix: Wildcards,
    /// `foo.*` style, by the part before `*`.
    prefix: Wildcards,
    any: Option<usize>,
}

/// One kind of wildcard: its fixed parts, and their distinct lengths longest first.
#[derive(Debug, Default)]
struct Wildcards {
    parts: HashMap<String, usize>,
    lengths: Vec<usize>,
}

impl Wildcards {
    fn add(&mut self, part: &str, vhost: usize) {
        // The first virtual host to claim a domain keeps it.
        self.parts.entry(part.to_owned()).or_insert(vhost);
        if !self.lengths.contains(&part.len()) {
            self.lengths.push(part.len());
        }
    }

    fn finish(&mut self) {
        self.lengths.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// The longest part that `part_of(host, len)` gives, where the wildcard covers at least
    /// one character (`*.foo.com` does not match `.foo.com`).
    fn find(&self, host: &str, part_of: impl Fn(&str, usize) -> Option<&str>) -> Option<usize> {
        self.lengths
            .iter()
            .filter(|&&l| host.len() > l)
            .find_map(|&l| part_of(host, l).and_then(|p| self.parts.get(p)).copied())
    }
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
                    out.suffix.add(s, i);
                } else if let Some(p) = d.strip_suffix('*') {
                    out.prefix.add(p, i);
                } else {
                    out.exact.entry(d).or_insert(i);
                }
            }
        }
        out.suffix.finish();
        out.prefix.finish();
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
        self.suffix
            .find(host, |h, l| h.get(h.len() - l..))
            .or_else(|| self.prefix.find(host, |h, l| h.get(..l)))
            .or(self.any)
    }
}

fn strip_port(host: &str) -> Option<&str> {
    let (h, port) = host.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::Domains;

    /// Envoy's precedence written as a scan: exact, longest suffix wildcard, longest prefix
    /// wildcard, `*`; the first virtual host wins among equals.
    fn scan(vhosts: &[Vec<String>], host: &str) -> Option<usize> {
        let all = || {
            vhosts
                .iter()
                .enumerate()
                .flat_map(|(i, ds)| ds.iter().map(move |d| (i, d.as_str())))
        };
        if let Some((i, _)) = all().find(|(_, d)| *d == host) {
            return Some(i);
        }
        let best = |parts: Vec<(usize, &str)>, fits: &dyn Fn(&str) -> bool| {
            let mut best: Option<(usize, usize)> = None;
            for (i, p) in parts {
                if host.len() > p.len() && fits(p) && best.is_none_or(|(_, l)| p.len() > l) {
                    best = Some((i, p.len()));
                }
            }
            best.map(|b| b.0)
        };
        let suffixes = all()
            .filter(|(_, d)| *d != "*")
            .filter_map(|(i, d)| d.strip_prefix('*').map(|s| (i, s)))
            .collect();
        let prefixes = all()
            .filter(|(_, d)| *d != "*" && !d.starts_with('*'))
            .filter_map(|(i, d)| d.strip_suffix('*').map(|p| (i, p)))
            .collect();
        best(suffixes, &|s| host.ends_with(s))
            .or_else(|| best(prefixes, &|p| host.starts_with(p)))
            .or_else(|| all().find(|(_, d)| *d == "*").map(|(i, _)| i))
    }

    #[test]
    fn the_index_agrees_with_envoys_precedence_as_a_scan() {
        const PARTS: &[&str] = &["a", "b", "a.b", "b.a", ".a", "a.", "ab", ""];
        let mut rng = fastrand::Rng::with_seed(7);
        let word = |rng: &mut fastrand::Rng| {
            (0..rng.usize(1..4))
                .map(|_| PARTS[rng.usize(..PARTS.len())])
                .collect::<String>()
        };
        for _ in 0..500 {
            let vhosts: Vec<Vec<String>> = (0..rng.usize(1..6))
                .map(|_| {
                    (0..rng.usize(1..4))
                        .map(|_| match rng.u8(..6) {
                            0 => format!("*{}", word(&mut rng)),
                            1 => format!("{}*", word(&mut rng)),
                            2 if rng.u8(..4) == 0 => "*".to_owned(),
                            _ => word(&mut rng),
                        })
                        .collect()
                })
                .collect();
            let index = Domains::new(vhosts.iter().map(|v| v.as_slice()));
            for _ in 0..50 {
                let host = word(&mut rng);
                assert_eq!(
                    index.index(&host),
                    scan(&vhosts, &host),
                    "{host:?} in {vhosts:?}"
                );
            }
        }
    }
}
