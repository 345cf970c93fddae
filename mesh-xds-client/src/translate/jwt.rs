//! `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication` → the mesh's [`JwtAuthn`].
//!
//! NACKed with the field path (never silently weakened): `remote_jwks` (keys must come
//! inline), `subjects`, `max_lifetime`, filter-state rules,
//! `extract_only_without_validation`, claim paths, and metadata outputs other than the
//! payload. Ignored because they change no decision: `stat_prefix`, `clear_route_cache`.

use super::route::route_match;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as pb;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::config::jwt::{
    ClaimToHeader, JwksSource, JwtAuthn, JwtCacheConfig, JwtHeader, JwtProvider, JwtRequirement,
    JwtRule, NormalizePayload, ProviderWithAudiences, RequirementList,
};
use mesh_core::error::{Errors, FieldPath};
use mesh_core::policy::Empty;
use prost::Message;

/// The filter's type URL.
pub const JWT_AUTHN: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// A JWT filter's typed config.
pub fn filter(any: &Any, path: &FieldPath, errors: &mut Errors) -> Option<JwtAuthn> {
    let m = match pb::JwtAuthentication::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(path, format!("cannot decode JwtAuthentication: {e}"));
            return None;
        }
    };
    let unsupported = |ok: bool, field: &str, errors: &mut Errors| {
        errors.check(ok, &path.field(field), "is not supported");
    };
    unsupported(m.filter_state_rules.is_none(), "filter_state_rules", errors);
    let mut providers: Vec<_> = m.providers.iter().collect();
    providers.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = JwtAuthn {
        bypass_cors_preflight: m.bypass_cors_preflight,
        ..JwtAuthn::default()
    };
    for (name, p) in providers {
        let pp = path.field("providers").field(name);
        out.providers.insert(name.clone(), provider(p, &pp, errors));
    }
    for (name, r) in &m.requirement_map {
        let rp = path.field("requirement_map").field(name);
        out.requirement_map
            .insert(name.clone(), requirement(r, &rp, errors, 0));
    }
    for (i, r) in m.rules.iter().enumerate() {
        let rp = path.field("rules").index(i);
        let matcher = match &r.r#match {
            Some(m) => route_match(m, &rp.field("match"), errors),
            None => {
                errors.push(&rp.field("match"), "is required");
                continue;
            }
        };
        use pb::requirement_rule::RequirementType as T;
        let (requires, requirement_name) = match &r.requirement_type {
            None => (None, None),
            Some(T::Requires(q)) => (Some(requirement(q, &rp.field("requires"), errors, 0)), None),
            Some(T::RequirementName(n)) => (None, Some(n.clone())),
        };
        out.rules.push(JwtRule {
            matcher,
            requires,
            requirement_name,
        });
    }
    Some(out)
}

fn provider(p: &pb::JwtProvider, path: &FieldPath, errors: &mut Errors) -> JwtProvider {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier as D;
    use pb::jwt_provider::JwksSourceSpecifier as S;
    let jwks = match &p.jwks_source_specifier {
        Some(S::LocalJwks(ds)) => match &ds.specifier {
            Some(D::InlineString(s)) => Some(JwksSource {
                inline_string: Some(s.clone()),
                filename: None,
            }),
            Some(D::InlineBytes(b)) => Some(JwksSource {
                inline_string: Some(String::from_utf8_lossy(b).into_owned()),
                filename: None,
            }),
            Some(D::Filename(f)) => Some(JwksSource {
                inline_string: None,
                filename: Some(f.clone()),
            }),
            _ => {
                errors.push(
                    &path.field("local_jwks"),
                    "only inline or file keys are supported",
                );
                None
            }
        },
        Some(S::RemoteJwks(_)) => {
            errors.push(
                &path.field("remote_jwks"),
                "is not supported: give the keys inline (local_jwks)",
            );
            None
        }
        None => None,
    };
    let check = |ok: bool, field: &str, errors: &mut Errors| {
        errors.check(ok, &path.field(field), "is not supported");
    };
    check(p.subjects.is_none(), "subjects", errors);
    check(p.max_lifetime.is_none(), "max_lifetime", errors);
    check(
        p.header_in_metadata.is_empty(),
        "header_in_metadata",
        errors,
    );
    check(
        p.failed_status_in_metadata.is_empty(),
        "failed_status_in_metadata",
        errors,
    );
    check(
        !p.pad_forward_payload_header,
        "pad_forward_payload_header",
        errors,
    );
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        errors.check(
            c.claim_path.is_empty(),
            &path.field("claim_to_headers").index(i).field("claim_path"),
            "is not supported (use claim_name)",
        );
    }
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    JwtProvider {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        local_jwks: jwks,
        forward: p.forward,
        from_headers: p
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.value_prefix.clone(),
            })
            .collect(),
        from_params: p.from_params.clone(),
        from_cookies: p.from_cookies.clone(),
        forward_payload_header: some(&p.forward_payload_header),
        payload_in_metadata: some(&p.payload_in_metadata),
        normalize_payload_in_metadata: p.normalize_payload_in_metadata.as_ref().map(|n| {
            NormalizePayload {
                space_delimited_claims: n.space_delimited_claims.clone(),
            }
        }),
        claim_to_headers: p
            .claim_to_headers
            .iter()
            .map(|c| ClaimToHeader {
                header_name: c.header_name.clone(),
                claim_name: c.claim_name.clone(),
            })
            .collect(),
        // Envoy's default when unset (0 on the wire) is 60 s.
        clock_skew_seconds: (p.clock_skew_seconds != 0).then_some(p.clock_skew_seconds),
        require_expiration: p.require_expiration,
        jwt_cache_config: p.jwt_cache_config.as_ref().map(|c| JwtCacheConfig {
            jwt_cache_size: c.jwt_cache_size,
            jwt_max_token_size: c.jwt_max_token_size,
        }),
    }
}

fn requirement(
    r: &pb::JwtRequirement,
    path: &FieldPath,
    errors: &mut Errors,
    depth: usize,
) -> JwtRequirement {
    use pb::jwt_requirement::RequiresType as T;
    let mut out = JwtRequirement::default();
    if depth > mesh_core::config::jwt::MAX_REQUIREMENT_DEPTH {
        errors.push(path, "nested too deep");
        return out;
    }
    let list = |l: &[pb::JwtRequirement], field: &str, errors: &mut Errors| RequirementList {
        requirements: l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cp = path.field(field).field("requirements").index(i);
                requirement(c, &cp, errors, depth + 1)
            })
            .collect(),
    };
    match &r.requires_type {
        Some(T::ProviderName(n)) => out.provider_name = Some(n.clone()),
        Some(T::ProviderAndAudiences(p)) => {
            out.provider_and_audiences = Some(ProviderWithAudiences {
                provider_name: p.provider_name.clone(),
                audiences: p.audiences.clone(),
            })
        }
        Some(T::RequiresAny(l)) => {
            out.requires_any = Some(list(&l.requirements, "requires_any", errors))
        }
        Some(T::RequiresAll(l)) => {
            out.requires_all = Some(list(&l.requirements, "requires_all", errors))
        }
        Some(T::AllowMissingOrFailed(_)) => out.allow_missing_or_failed = Some(Empty {}),
        Some(T::AllowMissing(_)) => out.allow_missing = Some(Empty {}),
        Some(T::ExtractOnlyWithoutValidation(_)) => errors.push(
            &path.field("extract_only_without_validation"),
            "is not supported",
        ),
        None => errors.push(path, "a requirement must be set"),
    }
    out
}

/// The per-route type URL.
pub const JWT_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";

/// A route's `PerRouteConfig`.
pub fn per_route(
    any: &Any,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<mesh_core::config::inbound::JwtPerRoute> {
    use pb::per_route_config::RequirementSpecifier as S;
    let m = match pb::PerRouteConfig::decode(&*any.value) {
        Ok(m) => m,
        Err(e) => {
            errors.push(path, format!("cannot decode PerRouteConfig: {e}"));
            return None;
        }
    };
    let mut out = mesh_core::config::inbound::JwtPerRoute::default();
    match m.requirement_specifier {
        Some(S::Disabled(d)) => out.disabled = d,
        Some(S::RequirementName(n)) => out.requirement_name = Some(n),
        None => errors.push(path, "a requirement_specifier must be set"),
    }
    Some(out)
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
