//! Header mutations: Envoy's `HeaderValueOption` lists at route-config, virtual-host, route and
//! weighted-cluster level.

use crate::config::route::http_token;
use crate::error::{Errors, FieldPath};
use serde::{Deserialize, Serialize};

/// Envoy's `HeaderValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    /// Header name.
    pub key: String,
    /// Value (Envoy's format substitutions such as `%UPSTREAM_HOST%` are not interpreted).
    #[serde(default)]
    pub value: String,
}

/// Envoy's `HeaderValueOption.HeaderAppendAction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppendAction {
    /// Add another value (Envoy's default).
    #[default]
    AppendIfExistsOrAdd,
    /// Add only if the header is absent.
    AddIfAbsent,
    /// Replace any values, or add.
    OverwriteIfExistsOrAdd,
    /// Replace only if present.
    OverwriteIfExists,
}

/// Envoy's `HeaderValueOption`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOption {
    /// The header.
    pub header: HeaderValue,
    /// What to do when the header exists.
    #[serde(default)]
    pub append_action: AppendAction,
    /// Add the header even when its value is empty (skipped otherwise, as Envoy does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_empty_value: bool,
}

/// The four mutation lists of one config level, borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeaderMutations<'a> {
    /// `request_headers_to_add`
    pub request_add: &'a [HeaderValueOption],
    /// `request_headers_to_remove`
    pub request_remove: &'a [String],
    /// `response_headers_to_add`
    pub response_add: &'a [HeaderValueOption],
    /// `response_headers_to_remove`
    pub response_remove: &'a [String],
}

impl HeaderMutations<'_> {
    /// Whether this level changes nothing.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }

    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        for (field, list) in [
            ("request_headers_to_add", self.request_add),
            ("response_headers_to_add", self.response_add),
        ] {
            for (i, h) in list.iter().enumerate() {
                h.validate(&path.field(field).index(i), errors);
            }
        }
        for (field, list) in [
            ("request_headers_to_remove", self.request_remove),
            ("response_headers_to_remove", self.response_remove),
        ] {
            for (i, name) in list.iter().enumerate() {
                check_mutable(name, &path.field(field).index(i), errors);
            }
        }
    }
}

impl HeaderValueOption {
    pub(crate) fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        let hp = path.field("header");
        check_mutable(&self.header.key, &hp.field("key"), errors);
        errors.check(
            self.header
                .value
                .bytes()
                .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            &hp.field("value"),
            "is not a valid header value",
        );
    }
}

/// Names Envoy refuses to mutate: pseudo-headers and `host` (use `host_rewrite_literal`).
fn check_mutable(name: &str, path: &FieldPath, errors: &mut Errors) {
    if name.is_empty() || !http_token(name) {
        errors.push(path, format!("{name:?} is not a valid header name"));
    } else if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        errors.push(path, format!("{name:?} cannot be mutated"));
    }
}

/// Generates `fn mutations(&self) -> HeaderMutations` for a type with the four fields.
macro_rules! impl_mutations {
    ($($t:ty),*) => {$(
        impl $t {
            /// This level's header mutations.
            pub fn mutations(&self) -> $crate::config::headers::HeaderMutations<'_> {
                $crate::config::headers::HeaderMutations {
                    request_add: &self.request_headers_to_add,
                    request_remove: &self.request_headers_to_remove,
                    response_add: &self.response_headers_to_add,
                    response_remove: &self.response_headers_to_remove,
                }
            }
        }
    )*};
}
pub(crate) use impl_mutations;
