//! Envoy's `MetadataMatcher` over a request's dynamic metadata, for RBAC `metadata`
//! principals and access logs' `metadata_filter`.
//!
//! Why only the JWT filter's: in-process, the only dynamic metadata a request gathers is the
//! payload of the tokens the JWT filter verified, stored under the provider's
//! `payload_in_metadata` key as Envoy stores it (filter `envoy.filters.http.jwt_authn`).
//! Matchers naming any other filter find nothing (gRPC's A41 rule for all metadata).
//!
//! Why a type on the response ([`DynamicMetadata`]): an access log sits outside the checks
//! and never sees the request the JWT filter passed on, so the filter puts what it stored on
//! the answer, where the log reads it (only when a provider stores a payload).

use super::headers::{HeaderKind, compile_kind};
use mesh_core::config::jwt::JWT_AUTHN_FILTER;
use mesh_core::config::listener::MetadataLogFilter;
use mesh_core::config::metadata::{MetadataMatcher, ValueMatcher};
use mesh_core::config::route::StringMatcher;
use serde_json::Value;
use std::sync::Arc;

/// What holds JWT payloads by their `payload_in_metadata` key.
pub(crate) trait Payloads {
    /// The payload stored under `key` (the last token's that stores one there).
    fn payload(&self, key: &str) -> Option<&Value>;
}

/// The JWT filter's dynamic metadata, carried on the response for what sits outside it.
#[derive(Clone, Debug)]
pub(crate) struct DynamicMetadata(pub(crate) Arc<[(Arc<str>, Arc<Value>)]>);

impl Payloads for DynamicMetadata {
    fn payload(&self, key: &str) -> Option<&Value> {
        (self.0.iter().rev())
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
}

/// The value at `path` (the first key names the payload) in `source`, if there is one.
fn lookup<'a, P: Payloads>(source: Option<&'a P>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = source?.payload(first)?;
    for key in rest {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

/// A compiled RBAC metadata matcher.
#[derive(Debug)]
pub(crate) enum MetaMatch {
    /// The JWT filter's payload at `path`.
    Jwt {
        path: Vec<String>,
        value: ValueMatch,
        invert: bool,
    },
    /// Another filter's metadata: there is none.
    Never,
}

impl MetaMatch {
    pub(crate) fn compile(m: &MetadataMatcher) -> Result<Self, String> {
        if m.filter != JWT_AUTHN_FILTER {
            return Ok(MetaMatch::Never);
        }
        Ok(MetaMatch::Jwt {
            path: m.path.iter().map(|s| s.key.clone()).collect(),
            value: ValueMatch::compile(&m.value)?,
            invert: m.invert,
        })
    }

    pub(crate) fn matches<P: Payloads>(&self, source: Option<&P>) -> bool {
        let MetaMatch::Jwt {
            path,
            value,
            invert,
        } = self
        else {
            return false;
        };
        value.matches(lookup(source, path)) != *invert
    }
}

/// A compiled access log `metadata_filter`, read as Envoy reads it: a value that is there
/// must match (`invert` is not consulted); one that is not passes per
/// `match_if_key_not_found`.
#[derive(Debug)]
pub(crate) struct LogMetadata {
    /// The JWT filter's path (empty: another filter's, or no matcher: never there).
    path: Vec<String>,
    value: Option<ValueMatch>,
    if_not_found: bool,
}

impl LogMetadata {
    pub(crate) fn compile(f: &MetadataLogFilter) -> Result<Self, String> {
        let (path, value) = match &f.matcher {
            Some(m) if m.filter == JWT_AUTHN_FILTER => (
                m.path.iter().map(|s| s.key.clone()).collect(),
                Some(ValueMatch::compile(&m.value)?),
            ),
            Some(m) => (Vec::new(), Some(ValueMatch::compile(&m.value)?)),
            None => (Vec::new(), None),
        };
        Ok(Self {
            path,
            value,
            if_not_found: f.match_if_key_not_found,
        })
    }

    pub(crate) fn matches<P: Payloads>(&self, source: Option<&P>) -> bool {
        match lookup(source, &self.path) {
            found @ Some(_) => self.value.as_ref().is_some_and(|v| v.matches(found)),
            None => self.if_not_found,
        }
    }
}

#[derive(Debug)]
pub(crate) enum ValueMatch {
    String(HeaderKind),
    List(Box<ValueMatch>),
    Or(Vec<ValueMatch>),
    Present(bool),
    Bool(bool),
    Null,
}

fn string(m: &StringMatcher) -> Result<HeaderKind, String> {
    compile_kind(
        m.as_header_match()
            .ok_or("a string matcher needs exactly one kind")?,
    )
}

impl ValueMatch {
    fn compile(v: &ValueMatcher) -> Result<Self, String> {
        Ok(if let Some(s) = &v.string_match {
            ValueMatch::String(string(s)?)
        } else if let Some(l) = &v.list_match {
            ValueMatch::List(Box::new(Self::compile(&l.one_of)?))
        } else if let Some(o) = &v.or_match {
            ValueMatch::Or(
                (o.value_matchers.iter())
                    .map(Self::compile)
                    .collect::<Result<_, _>>()?,
            )
        } else if let Some(p) = v.present_match {
            ValueMatch::Present(p)
        } else if let Some(b) = v.bool_match {
            ValueMatch::Bool(b)
        } else if v.null_match.is_some() {
            ValueMatch::Null
        } else {
            return Err("a value matcher with no field set".into());
        })
    }

    /// Envoy's reading: a matcher of one kind fails on a value of another; `present_match`
    /// matches only a value that exists (and only when `true`).
    fn matches(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (ValueMatch::Present(want), v) => *want && v.is_some(),
            (_, None) => false,
            (ValueMatch::String(m), Some(Value::String(s))) => m.matches(s),
            (ValueMatch::List(one), Some(Value::Array(items))) => {
                items.iter().any(|i| one.matches(Some(i)))
            }
            (ValueMatch::Or(any), v) => any.iter().any(|m| m.matches(v)),
            (ValueMatch::Bool(b), Some(Value::Bool(x))) => b == x,
            (ValueMatch::Null, Some(Value::Null)) => true,
            _ => false,
        }
    }
}
