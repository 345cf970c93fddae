//! `metadata` principals: Envoy's `MetadataMatcher` over what the JWT filter verified.
//!
//! Why here and only for the JWT filter: in-process, the only "dynamic metadata" a request
//! carries is the payload of the tokens the JWT filter verified ([`VerifiedJwt`]), stored
//! under the provider's `payload_in_metadata` key as Envoy stores it. Matchers naming any
//! other filter never match (gRPC's A41 rule for all metadata).

use crate::jwt::VerifiedJwt;
use crate::policy::headers::HeaderKind;
use mesh_core::config::jwt::JWT_AUTHN_FILTER;
use mesh_core::config::metadata::{MetadataMatcher, ValueMatcher};
use serde_json::Value;

/// A compiled metadata matcher.
#[derive(Debug)]
pub(super) enum MetaMatch {
    /// The JWT filter's payload at `path`.
    Jwt {
        path: Vec<String>,
        value: ValueMatch,
        invert: bool,
    },
    /// Another filter's metadata: there is none.
    Never,
}

#[derive(Debug)]
pub(super) enum ValueMatch {
    String(HeaderKind),
    List(Box<ValueMatch>),
    Or(Vec<ValueMatch>),
    Present(bool),
    Bool(bool),
    Null,
}

impl MetaMatch {
    pub(super) fn compile(
        m: &MetadataMatcher,
        string: impl Fn(&mesh_core::config::route::StringMatcher) -> Result<HeaderKind, String> + Copy,
    ) -> Result<Self, String> {
        if m.filter != JWT_AUTHN_FILTER {
            return Ok(MetaMatch::Never);
        }
        Ok(MetaMatch::Jwt {
            path: m.path.iter().map(|s| s.key.clone()).collect(),
            value: value(&m.value, string)?,
            invert: m.invert,
        })
    }

    pub(super) fn matches(&self, jwt: Option<&VerifiedJwt>) -> bool {
        let MetaMatch::Jwt {
            path,
            value,
            invert,
        } = self
        else {
            return false;
        };
        let found = path.split_first().and_then(|(first, rest)| {
            let mut v = jwt?.metadata(first)?;
            for key in rest {
                v = v.as_object()?.get(key)?;
            }
            Some(v)
        });
        value.matches(found) != *invert
    }
}

fn value(
    v: &ValueMatcher,
    string: impl Fn(&mesh_core::config::route::StringMatcher) -> Result<HeaderKind, String> + Copy,
) -> Result<ValueMatch, String> {
    Ok(if let Some(s) = &v.string_match {
        ValueMatch::String(string(s)?)
    } else if let Some(l) = &v.list_match {
        ValueMatch::List(Box::new(value(&l.one_of, string)?))
    } else if let Some(o) = &v.or_match {
        ValueMatch::Or(
            o.value_matchers
                .iter()
                .map(|m| value(m, string))
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

impl ValueMatch {
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
