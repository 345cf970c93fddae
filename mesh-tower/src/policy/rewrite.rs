//! The compiled policy of the [`rewrite`](crate::rewrite) layer, built once per route when the
//! route table compiles and read by the layer per request.

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Request, Uri, header};
use mesh_core::config::headers::{AppendAction, HeaderMutations};
use mesh_core::config::route::{REGEX_SIZE_LIMIT, RegexMatchAndSubstitute};
use regex::Regex;

/// A compiled path rewrite.
#[derive(Debug)]
pub enum PathRewrite {
    /// Replace the first `n` bytes (the matched prefix) with the string.
    Prefix(usize, String),
    /// Replace the whole path (redirects' `path_redirect`).
    Whole(String),
    /// Replace every match of the regex with the substitution (`\1` → `$1` style).
    Regex(Regex, String),
}

impl PathRewrite {
    /// `prefix_rewrite` for a route whose match was `matched` (prefix or exact path).
    pub fn prefix(matched: Option<&str>, replacement: &str) -> Self {
        Self::Prefix(matched.map_or(0, str::len), replacement.to_owned())
    }

    /// `regex_rewrite`.
    pub fn regex(r: &RegexMatchAndSubstitute) -> Result<Self, String> {
        let re = regex::RegexBuilder::new(&r.pattern.regex)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        // RE2 substitutions write `\1`; the regex crate writes `${1}`.
        let mut sub = String::with_capacity(r.substitution.len());
        let mut chars = r.substitution.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some(d)) if d.is_ascii_digit() => {
                    sub.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                ('$', _) => sub.push_str("$$"),
                _ => sub.push(c),
            }
        }
        Ok(Self::Regex(re, sub))
    }

    /// The rewritten path (without query).
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Prefix(n, with) => {
                let rest = path.get(*n..).unwrap_or("");
                format!("{with}{rest}")
            }
            PathRewrite::Whole(p) => p.clone(),
            PathRewrite::Regex(re, sub) => re.replace_all(path, sub.as_str()).into_owned(),
        }
    }
}

/// One header operation.
#[derive(Debug)]
enum Op {
    Remove(HeaderName),
    Add(HeaderName, HeaderValue, AppendAction),
}

/// An ordered list of header operations for one direction.
#[derive(Debug, Default)]
pub struct HeaderOps(Vec<Op>);

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push_level(
        &mut self,
        remove: &[String],
        add: &[mesh_core::config::headers::HeaderValueOption],
    ) -> Result<(), String> {
        for r in remove {
            self.0.push(Op::Remove(
                HeaderName::try_from(r.as_str()).map_err(|e| e.to_string())?,
            ));
        }
        for a in add {
            if a.header.value.is_empty() && !a.keep_empty_value {
                continue;
            }
            let name = HeaderName::try_from(a.header.key.as_str()).map_err(|e| e.to_string())?;
            let value =
                HeaderValue::try_from(a.header.value.as_str()).map_err(|e| e.to_string())?;
            self.0.push(Op::Add(name, value, a.append_action));
        }
        Ok(())
    }

    /// Applies the operations in order.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for op in &self.0 {
            match op {
                Op::Remove(n) => {
                    headers.remove(n);
                }
                Op::Add(n, v, action) => match action {
                    AppendAction::AppendIfExistsOrAdd => {
                        headers.append(n.clone(), v.clone());
                    }
                    AppendAction::AddIfAbsent => {
                        if !headers.contains_key(n) {
                            headers.insert(n.clone(), v.clone());
                        }
                    }
                    AppendAction::OverwriteIfExistsOrAdd => {
                        headers.insert(n.clone(), v.clone());
                    }
                    AppendAction::OverwriteIfExists => {
                        if headers.contains_key(n) {
                            headers.insert(n.clone(), v.clone());
                        }
                    }
                },
            }
        }
    }
}

/// Header mutations for both directions.
#[derive(Debug, Default)]
pub struct Mutations {
    /// On the request.
    pub request: HeaderOps,
    /// On the response.
    pub response: HeaderOps,
}

impl Mutations {
    /// Compiles levels, most specific first.
    pub fn compile(levels: &[HeaderMutations<'_>]) -> Result<Self, String> {
        let mut m = Mutations::default();
        for l in levels {
            m.request.push_level(l.request_remove, l.request_add)?;
            m.response.push_level(l.response_remove, l.response_add)?;
        }
        Ok(m)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// A route's compiled rewrite.
#[derive(Debug, Default)]
pub struct Rewrite {
    /// Path rewrite.
    pub path: Option<PathRewrite>,
    /// New authority.
    pub host: Option<Authority>,
    /// Route, virtual host and route config mutations.
    pub headers: Mutations,
}

impl Rewrite {
    /// Whether the rewrite changes nothing.
    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.host.is_none() && self.headers.is_empty()
    }

    pub(crate) fn apply_request<B>(&self, cluster_level: Option<&Mutations>, req: &mut Request<B>) {
        if let Some(c) = cluster_level {
            c.request.apply(req.headers_mut());
        }
        self.headers.request.apply(req.headers_mut());
        if self.path.is_none() && self.host.is_none() {
            return;
        }
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        if let Some(rw) = &self.path
            && let Some(pq) = &parts.path_and_query
        {
            let mut new = rw.apply(pq.path());
            if !new.starts_with('/') {
                new.insert(0, '/');
            }
            if let Some(q) = pq.query() {
                new.push('?');
                new.push_str(q);
            }
            if let Ok(pq) = PathAndQuery::try_from(new) {
                parts.path_and_query = Some(pq);
            }
        }
        if let Some(host) = &self.host {
            parts.authority = Some(host.clone());
            if let Ok(v) = HeaderValue::from_str(host.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    }
}
