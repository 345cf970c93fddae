//! Matching request metadata: Envoy's `MetadataMatcher` and `ValueMatcher`.
//!
//! In Envoy, filters leave "dynamic metadata" on a request for later filters to read. In
//! process there is one such producer: the JWT filter, whose verified payloads RBAC
//! `metadata` principals match (istiod writes `requestPrincipals` and `request.auth.claims`
//! this way). A matcher naming any other filter never matches, as gRPC's A41 says of all
//! metadata.

use super::route::StringMatcher;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

/// Envoy's `type.matcher.v3.MetadataMatcher`.
///
/// ```
/// let m: mesh_core::config::metadata::MetadataMatcher = serde_saphyr::from_str(r#"
/// filter: envoy.filters.http.jwt_authn
/// path: [{ key: payload }, { key: sub }]
/// value: { string_match: { exact: alice } }
/// "#).unwrap();
/// assert_eq!(m.path.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataMatcher {
    /// Whose metadata (only `envoy.filters.http.jwt_authn` has any here).
    pub filter: String,
    /// Keys walked into it.
    pub path: Vec<PathSegment>,
    /// What the value found must be.
    pub value: ValueMatcher,
    /// Match when the value does not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// One key of a metadata path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSegment {
    /// The key.
    pub key: String,
}

/// Envoy's `ValueMatcher`: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatcher {
    /// A string value matching this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_match: Option<StringMatcher>,
    /// A list with an element matching `one_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_match: Option<ListMatcher>,
    /// Any of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or_match: Option<OrMatcher>,
    /// `true`: the value exists; `false`: it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present_match: Option<bool>,
    /// A boolean value equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bool_match: Option<bool>,
    /// A null value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_match: Option<crate::policy::Empty>,
}

/// `list_match`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListMatcher {
    /// An element must match this.
    pub one_of: Box<ValueMatcher>,
}

/// `or_match`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrMatcher {
    /// The alternatives.
    pub value_matchers: Vec<ValueMatcher>,
}

/// Deeper nesting is refused (evaluation recurses).
pub const MAX_VALUE_DEPTH: usize = 8;

impl MetadataMatcher {
    /// Checks the matcher; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        errors.check(
            !self.path.is_empty(),
            &path.field("path"),
            "must name at least one key",
        );
        self.value.validate(&path.field("value"), errors, 0);
    }
}

impl ValueMatcher {
    fn validate(&self, path: &FieldPath, errors: &mut Errors, depth: usize) {
        if depth > MAX_VALUE_DEPTH {
            errors.push(path, format!("nested deeper than {MAX_VALUE_DEPTH}"));
            return;
        }
        let n = [
            self.string_match.is_some(),
            self.list_match.is_some(),
            self.or_match.is_some(),
            self.present_match.is_some(),
            self.bool_match.is_some(),
            self.null_match.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if n != 1 {
            errors.push(
                path,
                "exactly one of string_match, list_match, or_match, present_match, \
                 bool_match, null_match must be set",
            );
            return;
        }
        if let Some(m) = &self.string_match {
            super::rbac::string(m, &path.field("string_match"), errors);
        }
        if let Some(l) = &self.list_match {
            l.one_of
                .validate(&path.field("list_match").field("one_of"), errors, depth + 1);
        }
        if let Some(o) = &self.or_match {
            let op = path.field("or_match").field("value_matchers");
            errors.check(!o.value_matchers.is_empty(), &op, "must not be empty");
            for (i, v) in o.value_matchers.iter().enumerate() {
                v.validate(&op.index(i), errors, depth + 1);
            }
        }
    }
}
