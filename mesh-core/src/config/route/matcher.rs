//! Request matchers: path, headers, query parameters, gRPC and runtime fraction.

use super::{is_false, is_true, yes};
use crate::error::{Errors, FieldPath};
use crate::policy::Empty;
use crate::policy::RuntimeFractionalPercent;
use serde::{Deserialize, Serialize};

/// Regexes from untrusted config are compiled with this size limit (bytes of compiled program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Envoy's `RouteMatch`. Exactly one of `prefix`, `path`, `safe_regex`, `path_separated_prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Path equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path (without query) fully matches this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RegexMatcher>,
    /// Path equals this or starts with it followed by `/`, `?` or `#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_separated_prefix: Option<String>,
    /// Whether prefix/path matching is case sensitive (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub case_sensitive: bool,
    /// All of these must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    /// All of these must match the query string.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Matches only this share of requests (drawn per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    /// Matches only gRPC requests (`content-type: application/grpc*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Empty>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            prefix: Some("/".into()),
            path: None,
            safe_regex: None,
            path_separated_prefix: None,
            case_sensitive: true,
            headers: Vec::new(),
            query_parameters: Vec::new(),
            runtime_fraction: None,
            grpc: None,
        }
    }
}

/// The path specifier of a validated [`RouteMatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatch<'a> {
    /// `prefix`
    Prefix(&'a str),
    /// `path`
    Exact(&'a str),
    /// `safe_regex`
    Regex(&'a str),
    /// `path_separated_prefix`
    SeparatedPrefix(&'a str),
}

impl RouteMatch {
    /// The one path specifier that is set, or `None` when zero or several are (invalid).
    pub fn path_match(&self) -> Option<PathMatch<'_>> {
        let mut found = None;
        let mut count = 0;
        if let Some(p) = &self.prefix {
            found = Some(PathMatch::Prefix(p));
            count += 1;
        }
        if let Some(p) = &self.path {
            found = Some(PathMatch::Exact(p));
            count += 1;
        }
        if let Some(r) = &self.safe_regex {
            found = Some(PathMatch::Regex(&r.regex));
            count += 1;
        }
        if let Some(p) = &self.path_separated_prefix {
            found = Some(PathMatch::SeparatedPrefix(p));
            count += 1;
        }
        if count == 1 { found } else { None }
    }
}

/// Envoy's `RegexMatcher` (RE2 syntax; we compile with the `regex` crate, which shares RE2's
/// guarantees: no backreferences, linear time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcher {
    /// The regular expression.
    pub regex: String,
}

/// Envoy's `Int64Range`: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int64Range {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

/// Envoy's `StringMatcher`: exactly one of the match fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    /// Equals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Fully matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex: Option<RegexMatcher>,
    /// Compare ignoring ASCII case (not for `safe_regex`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_case: bool,
}

/// Envoy's `HeaderMatcher`. At most one match field; none means "present".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    /// Header name (case-insensitive; stored lowercase by validation's rule).
    pub name: String,
    /// Value equals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<String>,
    /// Value starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_match: Option<String>,
    /// Value ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix_match: Option<String>,
    /// Value contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains_match: Option<String>,
    /// Value fully matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_regex_match: Option<RegexMatcher>,
    /// Value parses as an integer in `[start, end)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_match: Option<Int64Range>,
    /// Header present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
    /// The general string matcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_match: Option<StringMatcher>,
    /// Invert the result.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert_match: bool,
}

/// The match kind of a validated [`HeaderMatcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMatch<'a> {
    /// Equals.
    Exact(&'a str, bool),
    /// Starts with (`bool`: ignore case).
    Prefix(&'a str, bool),
    /// Ends with.
    Suffix(&'a str, bool),
    /// Contains.
    Contains(&'a str, bool),
    /// Fully matches the regex.
    Regex(&'a str),
    /// Integer in range.
    Range(Int64Range),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

impl HeaderMatcher {
    /// The one match kind that is set (`Present(true)` when none is), or `None` when several are.
    pub fn header_match(&self) -> Option<HeaderMatch<'_>> {
        let mut found = Vec::with_capacity(1);
        if let Some(v) = &self.exact_match {
            found.push(HeaderMatch::Exact(v, false));
        }
        if let Some(v) = &self.prefix_match {
            found.push(HeaderMatch::Prefix(v, false));
        }
        if let Some(v) = &self.suffix_match {
            found.push(HeaderMatch::Suffix(v, false));
        }
        if let Some(v) = &self.contains_match {
            found.push(HeaderMatch::Contains(v, false));
        }
        if let Some(v) = &self.safe_regex_match {
            found.push(HeaderMatch::Regex(&v.regex));
        }
        if let Some(r) = self.range_match {
            found.push(HeaderMatch::Range(r));
        }
        if let Some(p) = self.present_match {
            found.push(HeaderMatch::Present(p));
        }
        if let Some(s) = &self.string_match {
            found.push(s.as_header_match()?);
        }
        match found.len() {
            0 => Some(HeaderMatch::Present(true)),
            1 => found.pop(),
            _ => None,
        }
    }
}

impl StringMatcher {
    /// The one match kind that is set, or `None` when none or several are.
    pub fn as_header_match(&self) -> Option<HeaderMatch<'_>> {
        let ic = self.ignore_case;
        let set = [
            self.exact.as_deref().map(|v| HeaderMatch::Exact(v, ic)),
            self.prefix.as_deref().map(|v| HeaderMatch::Prefix(v, ic)),
            self.suffix.as_deref().map(|v| HeaderMatch::Suffix(v, ic)),
            self.contains
                .as_deref()
                .map(|v| HeaderMatch::Contains(v, ic)),
            self.safe_regex
                .as_ref()
                .map(|r| HeaderMatch::Regex(&r.regex)),
        ];
        let mut it = set.into_iter().flatten();
        let first = it.next()?;
        if it.next().is_some() {
            None
        } else {
            Some(first)
        }
    }
}

impl HeaderMatcher {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let name_ok = !self.name.is_empty() && http_token(&self.name);
        errors.check(
            name_ok,
            &path.field("name"),
            "must be a valid, non-empty header name",
        );
        match self.header_match() {
            None => errors.push(path, "at most one match specifier may be set"),
            Some(HeaderMatch::Regex(r)) => {
                let field = if self.safe_regex_match.is_some() {
                    path.field("safe_regex_match").field("regex")
                } else {
                    path.field("string_match")
                        .field("safe_regex")
                        .field("regex")
                };
                check_regex(r, &field, errors);
            }
            Some(HeaderMatch::Range(r)) => errors.check(
                r.start < r.end,
                &path.field("range_match"),
                "start must be less than end",
            ),
            Some(_) => {}
        }
    }
}

pub(crate) fn http_token(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;\\\"/[]?={}".contains(&b))
}

pub(crate) fn check_regex(regex: &str, path: &FieldPath, errors: &mut Errors) {
    if let Err(e) = regex::RegexBuilder::new(regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        // The regex crate's last line is the reason ("error: unclosed group").
        let text = e.to_string();
        let last = text.lines().last().unwrap_or("").trim();
        let reason = last.strip_prefix("error: ").unwrap_or(last);
        errors.push(path, format!("invalid regex {regex:?}: {reason}"));
    }
}

/// Envoy's `QueryParameterMatcher`: a parameter present (no matcher), or its value matching.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterMatcher {
    /// Parameter name (exact, case-sensitive).
    pub name: String,
    /// The (first) value matches this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_match: Option<StringMatcher>,
    /// The parameter is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
}

impl QueryParameterMatcher {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.name.is_empty(),
            &path.field("name"),
            "must not be empty",
        );
        match (&self.string_match, self.present_match) {
            (Some(_), Some(_)) => errors.push(
                path,
                "at most one of string_match and present_match may be set",
            ),
            (Some(s), None) => match s.as_header_match() {
                None => errors.push(
                    &path.field("string_match"),
                    "exactly one pattern must be set",
                ),
                Some(HeaderMatch::Regex(r)) => check_regex(
                    r,
                    &path
                        .field("string_match")
                        .field("safe_regex")
                        .field("regex"),
                    errors,
                ),
                Some(_) => {}
            },
            _ => {}
        }
    }
}

impl RouteMatch {
    pub(crate) fn validate(&self, mp: &FieldPath, errors: &mut Errors) {
        match self.path_match() {
            None => errors.push(
                mp,
                "exactly one of prefix, path, safe_regex, path_separated_prefix must be set",
            ),
            Some(PathMatch::Exact(p)) => {
                errors.check(p.starts_with('/'), &mp.field("path"), "must start with '/'")
            }
            Some(PathMatch::SeparatedPrefix(p)) => {
                let f = mp.field("path_separated_prefix");
                errors.check(p.starts_with('/'), &f, "must start with '/'");
                errors.check(
                    !p.ends_with('/') && !p.contains(['?', '#']),
                    &f,
                    "must not end with '/' or contain '?' or '#'",
                );
            }
            Some(PathMatch::Regex(r)) => {
                check_regex(r, &mp.field("safe_regex").field("regex"), errors)
            }
            Some(PathMatch::Prefix(_)) => {}
        }
        for (i, h) in self.headers.iter().enumerate() {
            h.validate(&mp.field("headers").index(i), errors);
        }
        for (i, q) in self.query_parameters.iter().enumerate() {
            q.validate(&mp.field("query_parameters").index(i), errors);
        }
    }
}
