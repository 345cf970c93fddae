//! A route's `hash_policy`, compiled: the request hash consistent-hashing balancers use.
//!
//! Computed as Envoy computes it, so a key maps to the same endpoint through Envoy and through
//! this client: each policy hashes its input with xxHash64 (a header's values sorted and
//! hashed as one stream), policies combine as `rotl(previous, 1) ^ next`, and a `terminal`
//! policy that produced a hash ends the list. No policy producing a hash means no hash (the
//! balancer then picks a random point).

use http::{HeaderMap, HeaderName, header};
use mesh_core::config::route::HashPolicy as Config;
use xxhash_rust::xxh64::Xxh64;

/// A compiled hash policy list (empty: no hashing).
#[derive(Debug, Default)]
pub struct HashPolicy(Vec<(Source, bool)>);

#[derive(Debug)]
enum Source {
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

impl HashPolicy {
    /// Compiles a route's (validated) policies.
    pub fn new(policies: &[Config]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(policies.len());
        for p in policies {
            let source = match (&p.header, &p.cookie, &p.query_parameter) {
                (Some(h), _, _) => Source::Header(
                    HeaderName::try_from(h.header_name.as_str()).map_err(|e| e.to_string())?,
                ),
                (None, Some(c), _) => Source::Cookie(c.name.clone()),
                (None, None, Some(q)) => Source::Query(q.name.clone()),
                _ => return Err("hash policy without a source".into()),
            };
            out.push((source, p.terminal));
        }
        Ok(Self(out))
    }

    /// The request's hash, if any policy applies.
    pub fn hash(&self, headers: &HeaderMap, query: Option<&str>) -> Option<u64> {
        let mut hash: Option<u64> = None;
        for (source, terminal) in &self.0 {
            if let Some(next) = source.hash(headers, query) {
                let old = hash.map_or(0, |h| h.rotate_left(1));
                hash = Some(old ^ next);
            }
            if *terminal && hash.is_some() {
                break;
            }
        }
        hash
    }
}

impl Source {
    fn hash(&self, headers: &HeaderMap, query: Option<&str>) -> Option<u64> {
        match self {
            Source::Header(name) => {
                let mut values: Vec<&[u8]> =
                    headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
                if values.is_empty() {
                    return None;
                }
                values.sort_unstable();
                let mut h = Xxh64::new(0);
                for v in values {
                    h.update(v);
                }
                Some(h.digest())
            }
            Source::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| xxhash_rust::xxh64::xxh64(v.as_bytes(), 0))
                }),
            Source::Query(name) => super::headers::query_param(query, name)
                .map(|v| xxhash_rust::xxh64::xxh64(v.as_bytes(), 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::config::route::HashOn;

    fn policy(kind: &str, name: &str, terminal: bool) -> Config {
        let on = Some(HashOn {
            header_name: if kind == "header" {
                name.into()
            } else {
                String::new()
            },
            name: if kind == "header" {
                String::new()
            } else {
                name.into()
            },
        });
        Config {
            header: if kind == "header" { on.clone() } else { None },
            cookie: if kind == "cookie" { on.clone() } else { None },
            query_parameter: if kind == "query" { on } else { None },
            terminal,
        }
    }

    #[test]
    fn hashes_combine_like_envoy() {
        let xx = |s: &str| xxhash_rust::xxh64::xxh64(s.as_bytes(), 0);
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert(header::COOKIE, "a=1; session=s42".parse().unwrap());
        let one = HashPolicy::new(&[policy("header", "x-user", false)]).unwrap();
        assert_eq!(one.hash(&h, None), Some(xx("alice")));
        let two = HashPolicy::new(&[
            policy("header", "x-user", false),
            policy("cookie", "session", false),
        ])
        .unwrap();
        assert_eq!(
            two.hash(&h, None),
            Some(xx("alice").rotate_left(1) ^ xx("s42"))
        );
        let terminal = HashPolicy::new(&[
            policy("query", "id", true),
            policy("header", "x-user", false),
        ])
        .unwrap();
        assert_eq!(terminal.hash(&h, Some("a=b&id=7")), Some(xx("7")));
        assert_eq!(
            terminal.hash(&h, None),
            Some(xx("alice")),
            "no query: next policy"
        );
        assert_eq!(HashPolicy::default().hash(&h, None), None);
        // Several values of one header: sorted, hashed as one stream.
        let mut multi = HeaderMap::new();
        multi.append("x-user", "b".parse().unwrap());
        multi.append("x-user", "a".parse().unwrap());
        assert_eq!(one.hash(&multi, None), Some(xx("ab")));
    }
}
