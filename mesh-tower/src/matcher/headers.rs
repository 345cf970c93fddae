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
    /// A regex of a shape compared without the engine (see `glob.rs`).
    Glob(Box<super::glob::Glob>),
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
        HeaderMatch::Regex(re) => match super::glob::Glob::new(re, full_regex(re)?) {
            Ok(glob) => HeaderKind::Glob(Box::new(glob)),
            Err(re) => HeaderKind::Regex(re),
        },
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
        let Some(value) = header_value(headers, &self.name) else {
            return match self.kind {
                HeaderKind::Present(p) => p == self.invert,
                _ => false,
            };
        };
        self.kind.matches(&value) != self.invert
    }

    /// `(name, value)` when the rule is a plain case-sensitive `exact` match: it matches
    /// exactly the requests whose [`header_value`] for `name` is `value` (route indexes
    /// bucket routes by it).
    pub(crate) fn exact(&self) -> Option<(&HeaderName, &str)> {
        match &self.kind {
            HeaderKind::Exact(v, false) if !self.invert => Some((&self.name, v)),
            _ => None,
        }
    }
}

/// A header's value as matchers see it: several values joined with `,`, invalid UTF-8
/// replaced (borrowed, without allocating, in the usual case of one valid value).
pub(crate) fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    Some(match values.next() {
        None => String::from_utf8_lossy(first.as_bytes()),
        Some(second) => {
            let mut all = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(values) {
                all.push(b',');
                all.extend_from_slice(v.as_bytes());
            }
            Cow::Owned(String::from_utf8_lossy(&all).into_owned())
        }
    })
}

impl HeaderKind {
    /// Whether `value` matches; patterns with `ignore_case` are stored folded, so values are
    /// compared folded, without allocating.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            HeaderKind::Exact(x, ic) => fold_eq(v, x.as_bytes(), *ic),
            HeaderKind::Prefix(x, ic) => v
                .get(..x.len())
                .is_some_and(|h| fold_eq(h, x.as_bytes(), *ic)),
            HeaderKind::Suffix(x, ic) => v
                .len()
                .checked_sub(x.len())
                .is_some_and(|at| fold_eq(&v[at..], x.as_bytes(), *ic)),
            HeaderKind::Contains(x, false) => value.contains(x.as_str()),
            HeaderKind::Contains(x, true) => {
                x.is_empty()
                    || v.windows(x.len())
                        .any(|w| w.eq_ignore_ascii_case(x.as_bytes()))
            }
            HeaderKind::Regex(re) => re.is_match(value),
            HeaderKind::Glob(g) => g.matches(value),
            HeaderKind::Range(start, end) => {
                value.parse::<i64>().is_ok_and(|n| *start <= n && n < *end)
            }
            HeaderKind::Present(p) => *p,
        }
    }
}

fn fold_eq(a: &[u8], b: &[u8], ic: bool) -> bool {
    if ic {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
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
