//! Envoy's header matchers, compiled: used by route matching and by the policies that match
//! headers (faults, retries).

use http::{HeaderMap, HeaderName};
use mesh_core::config::route::{HeaderMatch, HeaderMatcher, REGEX_SIZE_LIMIT};
use regex::Regex;
use std::borrow::Cow;

#[derive(Debug)]
pub(crate) struct HeaderRule {
    name: HeaderName,
    pub(crate) kind: HeaderKind,
    invert: bool,
}

#[derive(Debug)]
pub(crate) enum HeaderKind {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
    Range(i64, i64),
    Present(bool),
}

pub(crate) fn full_regex(re: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {re:?}: {e}"))
}

/// One value matcher, compiled: patterns folded for `ignore_case`, regexes built (anchored).
pub(crate) fn compile_kind(m: HeaderMatch<'_>) -> Result<HeaderKind, String> {
    let fold = |s: &str, ic: bool| {
        if ic {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    Ok(match m {
        HeaderMatch::Exact(v, ic) => HeaderKind::Exact(fold(v, ic), ic),
        HeaderMatch::Prefix(v, ic) => HeaderKind::Prefix(fold(v, ic), ic),
        HeaderMatch::Suffix(v, ic) => HeaderKind::Suffix(fold(v, ic), ic),
        HeaderMatch::Contains(v, ic) => HeaderKind::Contains(fold(v, ic), ic),
        HeaderMatch::Regex(re) => HeaderKind::Regex(full_regex(re)?),
        HeaderMatch::Range(r) => HeaderKind::Range(r.start, r.end),
        HeaderMatch::Present(p) => HeaderKind::Present(p),
    })
}

pub(crate) fn compile_header(h: &HeaderMatcher) -> Result<HeaderRule, String> {
    let name = HeaderName::try_from(h.name.as_str()).map_err(|e| e.to_string())?;
    let kind = compile_kind(h.header_match().ok_or("several header match specifiers")?)?;
    Ok(HeaderRule {
        name,
        kind,
        invert: h.invert_match,
    })
}

impl HeaderRule {
    /// Envoy's semantics: several values are joined with `,`; a missing header matches only
    /// `present_match: false` (or, inverted, `present_match: true`).
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return match self.kind {
                HeaderKind::Present(p) => p == self.invert,
                _ => false,
            };
        };
        let joined;
        let value: &[u8] = match values.next() {
            None => first.as_bytes(),
            Some(second) => {
                let mut all = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    all.push(b',');
                    all.extend_from_slice(v.as_bytes());
                }
                joined = all;
                &joined
            }
        };
        let value = String::from_utf8_lossy(value);
        self.kind.matches(&value) != self.invert
    }
}

impl HeaderKind {
    pub(crate) fn matches(&self, value: &str) -> bool {
        let eq = |a: &str, b: &str, ic: bool| {
            if ic {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        fn lower(v: &str, ic: bool) -> Cow<'_, str> {
            if ic {
                Cow::Owned(v.to_ascii_lowercase())
            } else {
                Cow::Borrowed(v)
            }
        }
        match self {
            HeaderKind::Exact(x, ic) => eq(value, x, *ic),
            HeaderKind::Prefix(x, ic) => lower(value, *ic).starts_with(x.as_str()),
            HeaderKind::Suffix(x, ic) => lower(value, *ic).ends_with(x.as_str()),
            HeaderKind::Contains(x, ic) => lower(value, *ic).contains(x.as_str()),
            HeaderKind::Regex(re) => re.is_match(value),
            HeaderKind::Range(start, end) => {
                value.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
            }
            HeaderKind::Present(p) => *p,
        }
    }
}

/// The raw (not percent-decoded, as Envoy compares) value of the first query parameter named
/// `name`; a parameter without `=` has the empty value.
pub(crate) fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}
