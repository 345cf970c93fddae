//! Where tokens are found in a request: headers (after a prefix), query parameters, cookies.

use crate::policy::headers::query_param;
use http::{HeaderName, Request};

/// A place a provider looks for its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    Header(HeaderName, String),
    Param(String),
    Cookie(String),
}

/// Tokens at `locations`, in order, borrowed from the request.
pub(super) fn extract<'l, 'r, B>(
    locations: &'l [Location],
    req: &'r Request<B>,
) -> Vec<(&'l Location, &'r str)> {
    let mut found = Vec::new();
    for loc in locations {
        match loc {
            Location::Header(name, prefix) => {
                for v in req.headers().get_all(name) {
                    if let Some(t) = v.to_str().ok().and_then(|v| after_prefix(v, prefix)) {
                        found.push((loc, t));
                    }
                }
            }
            Location::Param(name) => {
                if let Some(t) = query_param(req.uri().query(), name).filter(|t| !t.is_empty()) {
                    found.push((loc, t));
                }
            }
            Location::Cookie(name) => {
                let cookies = req.headers().get_all(http::header::COOKIE);
                let hit = cookies
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|c| c.trim().strip_prefix(name.as_str())?.strip_prefix('='));
                if let Some(t) = hit.filter(|t| !t.is_empty()) {
                    found.push((loc, t));
                }
            }
        }
    }
    found
}

/// The token after `prefix` in a header value: the run of base64url characters and dots that
/// follows it (Envoy's reading, so `Bearer <token>, …` works).
fn after_prefix<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let start = if prefix.is_empty() {
        0
    } else {
        value.find(prefix)? + prefix.len()
    };
    let rest = &value[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}
