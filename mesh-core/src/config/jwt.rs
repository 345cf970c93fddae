//! Request authentication: Envoy's JWT filter (`envoy.filters.http.jwt_authn`).
//!
//! Why: mTLS says which *workload* calls; a JSON Web Token says which *user* or *client* the
//! call is made for (Istio's `RequestAuthentication`). No proxyless peer verifies tokens, so a
//! mesh without sidecars had to do it in every handler. Here the server does it before RBAC,
//! and RBAC principals can match the verified claims (`metadata` principals, as istiod writes
//! them for `requestPrincipals` and `request.auth.claims`).
//!
//! The shapes are Envoy's `JwtAuthentication`, field for field, so the same YAML configures
//! Envoy (our oracle) and istiod's output reads the same. Keys come inline or from a file
//! (`local_jwks`); fetching a remote JWKS is not done (istiod inlines keys by default).

use super::route::RouteMatch;
use crate::error::{Errors, FieldPath};
use crate::policy::Empty;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The filter's name; RBAC `metadata` principals read verified payloads under it.
pub const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";

/// Nesting deeper than this is refused: requirements are evaluated recursively.
pub const MAX_REQUIREMENT_DEPTH: usize = 16;

/// The filter's config (`envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`).
///
/// ```
/// let yaml = r#"
/// providers:
///   corp:
///     issuer: https://issuer.example
///     audiences: [orders]
///     local_jwks: { inline_string: '{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"}]}' }
///     payload_in_metadata: payload
/// rules:
///   - match: { prefix: /admin }
///     requires: { provider_name: corp }
///   - match: { prefix: / }
///     requires: { requires_any: { requirements: [{ provider_name: corp }, { allow_missing: {} }] } }
/// "#;
/// let f: mesh_core::config::jwt::JwtAuthn = serde_saphyr::from_str(yaml).unwrap();
/// let mut errors = mesh_core::error::Errors::new();
/// f.validate(&mesh_core::FieldPath::root(), &mut errors);
/// assert!(errors.into_result().is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthn {
    /// Token issuers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, JwtProvider>,
    /// Which requests need which tokens: the first rule whose match fits decides; a request
    /// no rule matches is not checked.
    #[serde(default)]
    pub rules: Vec<JwtRule>,
    /// Named requirements, for rules' `requirement_name` and routes' per-route config.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requirement_map: BTreeMap<String, JwtRequirement>,
    /// CORS preflights (`OPTIONS` with `origin` and `access-control-request-method`) pass
    /// unchecked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass_cors_preflight: bool,
}

/// One issuer (`JwtProvider`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// The `iss` tokens must carry (empty: any).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// The token's `aud` must name one of these (empty: not checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The verification keys, a JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_jwks: Option<JwksSource>,
    /// Keep the token in the request after verifying it (default: removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward: bool,
    /// Headers carrying the token (default: `Authorization: Bearer …`, then the
    /// `access_token` query parameter, when neither this nor `from_params` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Put the verified payload (base64url) in this request header for the handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_payload_header: Option<String>,
    /// Where RBAC `metadata` principals find the verified payload (the first path key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_in_metadata: Option<String>,
    /// Claims to split on spaces (`scope`) before RBAC sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize_payload_in_metadata: Option<NormalizePayload>,
    /// Copy claims into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Tolerance on `exp` and `nbf` (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_seconds: Option<u32>,
    /// Refuse tokens without `exp`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_expiration: bool,
    /// Remember verified tokens (Envoy's cache; absent: every request verifies its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_cache_config: Option<JwtCacheConfig>,
}

/// `jwt_cache_config`: verified tokens are remembered, so a token seen again skips its
/// signature check (its time and audience are still checked on every request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtCacheConfig {
    /// How many tokens (0: Envoy's default, 100).
    #[serde(default)]
    pub jwt_cache_size: u32,
    /// Longer tokens are not cached (0: Envoy's default, 4096 bytes).
    #[serde(default)]
    pub jwt_max_token_size: u32,
}

/// A JWKS document (`local_jwks`): exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSource {
    /// The document itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_string: Option<String>,
    /// A file holding it, read when the server's policy is compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A header carrying a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    /// The header's name.
    pub name: String,
    /// Text before the token (`"Bearer "`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value_prefix: String,
}

/// `normalize_payload_in_metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizePayload {
    /// Claims whose string value is a space-separated list.
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
}

/// `claim_to_headers` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The header to set.
    pub header_name: String,
    /// The claim (`a.b` for a nested one).
    pub claim_name: String,
}

/// A rule: requests matching `match` need `requires` (none: nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    /// Which requests (a route match: path, headers, query parameters).
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// What they need; absent (and no `requirement_name`): no token is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<JwtRequirement>,
    /// What they need, by its name in `requirement_map` (instead of `requires`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement_name: Option<String>,
}

/// What a request needs (`JwtRequirement`): exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRequirement {
    /// A valid token from this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    /// A valid token from this provider, for these audiences instead of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_and_audiences: Option<ProviderWithAudiences>,
    /// Any of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_any: Option<RequirementList>,
    /// All of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_all: Option<RequirementList>,
    /// Whatever tokens come are verified by issuer; bad or missing ones pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_missing_or_failed: Option<Empty>,
    /// Whatever tokens come are verified by issuer; a missing one passes, a bad one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_missing: Option<Empty>,
}

/// `provider_and_audiences`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderWithAudiences {
    /// The provider.
    pub provider_name: String,
    /// Audiences that replace the provider's.
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// A list of requirements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementList {
    /// The requirements (at least two, as Envoy requires).
    pub requirements: Vec<JwtRequirement>,
}

/// One key of a JWKS, decoded (public material only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`.
    pub kid: Option<String>,
    /// `alg`, when the key names one.
    pub alg: Option<String>,
    /// The key.
    pub key: JwkKey,
}

/// A key's material by type (`kty`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwkKey {
    /// `RSA`: modulus and exponent, big-endian.
    Rsa {
        /// `n`
        n: Vec<u8>,
        /// `e`
        e: Vec<u8>,
    },
    /// `EC`: the curve (`P-256`, `P-384`) and the point.
    Ec {
        /// `crv`
        crv: String,
        /// `x`
        x: Vec<u8>,
        /// `y`
        y: Vec<u8>,
    },
    /// `OKP` with `crv: Ed25519`.
    Ed25519 {
        /// `x`
        x: Vec<u8>,
    },
    /// `oct`: an HMAC secret.
    Oct {
        /// `k`
        k: Vec<u8>,
    },
}

/// Decodes a JWKS document; every key must be usable (Envoy refuses the config otherwise).
pub fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("JWKS has no \"keys\" array")?;
    if keys.is_empty() {
        return Err("JWKS has no keys".into());
    }
    keys.iter()
        .enumerate()
        .map(|(i, k)| jwk(k).map_err(|e| format!("keys[{i}]: {e}")))
        .collect()
}

fn jwk(k: &serde_json::Value) -> Result<Jwk, String> {
    let s = |name: &str| k.get(name).and_then(|v| v.as_str());
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let v = s(name).ok_or_else(|| format!("missing {name:?}"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|e| format!("{name:?} is not base64url: {e}"))
    };
    let key = match s("kty").ok_or("missing \"kty\"")? {
        "RSA" => JwkKey::Rsa {
            n: bytes("n")?,
            e: bytes("e")?,
        },
        "EC" => {
            let crv = s("crv").ok_or("missing \"crv\"")?;
            let len = match crv {
                "P-256" => 32,
                "P-384" => 48,
                other => return Err(format!("EC curve {other:?} is not supported")),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            JwkKey::Ec {
                crv: crv.to_owned(),
                x,
                y,
            }
        }
        "OKP" => match s("crv") {
            Some("Ed25519") => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err("Ed25519 \"x\" must be 32 bytes".into());
                }
                JwkKey::Ed25519 { x }
            }
            other => return Err(format!("OKP curve {other:?} is not supported")),
        },
        "oct" => JwkKey::Oct { k: bytes("k")? },
        other => return Err(format!("key type {other:?} is not supported")),
    };
    Ok(Jwk {
        kid: s("kid").map(str::to_owned),
        alg: s("alg").map(str::to_owned),
        key,
    })
}

impl JwtAuthn {
    /// Checks the filter; `path` locates it.
    pub fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        for (name, p) in &self.providers {
            p.validate(&path.field("providers").field(name), errors);
        }
        for (name, req) in &self.requirement_map {
            req.validate(self, &path.field("requirement_map").field(name), errors, 0);
        }
        for (i, r) in self.rules.iter().enumerate() {
            let rp = path.field("rules").index(i);
            r.matcher.validate(&rp.field("match"), errors);
            if let Some(req) = &r.requires {
                req.validate(self, &rp.field("requires"), errors, 0);
            }
            if let Some(n) = &r.requirement_name {
                errors.check(
                    r.requires.is_none(),
                    &rp,
                    "at most one of requires and requirement_name",
                );
                errors.check(
                    self.requirement_map.contains_key(n),
                    &rp.field("requirement_name"),
                    format!("no requirement {n:?} in requirement_map"),
                );
            }
        }
    }
}

impl JwtProvider {
    fn validate(&self, path: &FieldPath, errors: &mut Errors) {
        match &self.local_jwks {
            None => errors.push(
                &path.field("local_jwks"),
                "must be set (remote_jwks is not supported: give the keys inline or in a file)",
            ),
            Some(src) => {
                let jp = path.field("local_jwks");
                match (&src.inline_string, &src.filename) {
                    (Some(text), None) => {
                        if let Err(e) = parse_jwks(text) {
                            errors.push(&jp.field("inline_string"), e);
                        }
                    }
                    (None, Some(f)) => {
                        errors.check(!f.is_empty(), &jp.field("filename"), "must not be empty")
                    }
                    _ => errors.push(&jp, "exactly one of inline_string and filename must be set"),
                }
            }
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            errors.check(
                http::HeaderName::try_from(h.name.as_str()).is_ok(),
                &path.field("from_headers").index(i).field("name"),
                format!("{:?} is not a header name", h.name),
            );
        }
        for (i, c) in self.claim_to_headers.iter().enumerate() {
            let cp = path.field("claim_to_headers").index(i);
            errors.check(
                http::HeaderName::try_from(c.header_name.as_str()).is_ok(),
                &cp.field("header_name"),
                format!("{:?} is not a header name", c.header_name),
            );
            errors.check(
                !c.claim_name.is_empty(),
                &cp.field("claim_name"),
                "must not be empty",
            );
        }
        if let Some(h) = &self.forward_payload_header {
            errors.check(
                http::HeaderName::try_from(h.as_str()).is_ok(),
                &path.field("forward_payload_header"),
                format!("{h:?} is not a header name"),
            );
        }
    }
}

impl JwtRequirement {
    fn validate(&self, filter: &JwtAuthn, path: &FieldPath, errors: &mut Errors, depth: usize) {
        if depth > MAX_REQUIREMENT_DEPTH {
            errors.push(path, format!("nested deeper than {MAX_REQUIREMENT_DEPTH}"));
            return;
        }
        let set = [
            self.provider_name.is_some(),
            self.provider_and_audiences.is_some(),
            self.requires_any.is_some(),
            self.requires_all.is_some(),
            self.allow_missing_or_failed.is_some(),
            self.allow_missing.is_some(),
        ];
        if set.iter().filter(|b| **b).count() != 1 {
            errors.push(
                path,
                "exactly one of provider_name, provider_and_audiences, requires_any, \
                 requires_all, allow_missing_or_failed, allow_missing must be set",
            );
            return;
        }
        let known = |name: &str, field: FieldPath, errors: &mut Errors| {
            errors.check(
                filter.providers.contains_key(name),
                &field,
                format!("unknown provider {name:?}"),
            )
        };
        if let Some(p) = &self.provider_name {
            known(p, path.field("provider_name"), errors);
        }
        if let Some(p) = &self.provider_and_audiences {
            known(
                &p.provider_name,
                path.field("provider_and_audiences").field("provider_name"),
                errors,
            );
        }
        for (field, list) in [
            ("requires_any", &self.requires_any),
            ("requires_all", &self.requires_all),
        ] {
            let Some(list) = list else { continue };
            let lp = path.field(field).field("requirements");
            errors.check(
                list.requirements.len() >= 2,
                &lp,
                "needs at least two requirements",
            );
            for (i, r) in list.requirements.iter().enumerate() {
                r.validate(filter, &lp.index(i), errors, depth + 1);
            }
        }
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
