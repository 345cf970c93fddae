//! The JWT filter compiled: providers with their keys and token locations, rules with their
//! request matchers, requirements as a tree. Built when the server's config changes; a
//! request that no rule selects costs the rule walk and nothing else.

use super::cache::{Remembered, TokenCache};
use super::error::JwtError;
use super::locate::{Location, extract};
use super::token::{Key, Token};
use super::{VerifiedJwt, VerifiedToken};
use crate::route::inbound::{InboundTable, overrides};
use crate::route::table::{RequestMatcher, compile_match};
use http::{HeaderName, HeaderValue, Request};
use mesh_core::config::jwt::{JwtAuthn, JwtProvider, JwtRequirement, parse_jwks};
use mesh_core::config::server::Server;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A JWT filter ready to check requests. Build it when the config changes.
#[derive(Debug, Default)]
pub struct JwtEngine {
    providers: Vec<Provider>,
    rules: Vec<(RequestMatcher, Option<Req>)>,
    bypass_cors: bool,
    /// Every provider's token locations, each once (where `allow_missing` looks).
    all_locations: Vec<Location>,
    /// Some rule requires something (else every request passes unchecked).
    active: bool,
    /// The server's inbound routes and, per route number, what that route asks.
    routes: Option<(InboundTable, Vec<PerRoute>)>,
}

/// A route's override of the filter.
#[derive(Debug)]
enum PerRoute {
    /// None: the filter's rules decide.
    Rules,
    /// `disabled`: no check.
    Off,
    /// `requirement_name`: this requirement.
    Requires(Req),
}

#[derive(Debug)]
struct Provider {
    name: Arc<str>,
    issuer: String,
    audiences: Vec<String>,
    keys: Vec<Key>,
    locations: Vec<Location>,
    forward: bool,
    payload_header: Option<HeaderName>,
    metadata_key: Option<Arc<str>>,
    space_delimited: Vec<String>,
    claim_headers: Vec<(HeaderName, String)>,
    skew: u64,
    require_exp: bool,
    /// Verified tokens remembered (`jwt_cache_config`).
    cache: Option<TokenCache>,
}

#[derive(Debug)]
enum Req {
    /// A provider's token, with audiences replacing the provider's.
    Provider(usize, Option<Vec<String>>),
    Any {
        children: Vec<Req>,
        allow_missing: bool,
        allow_failed: bool,
    },
    All(Vec<Req>),
    /// Tokens found anywhere, verified by their issuer's provider.
    ByIssuer {
        allow_failed: bool,
    },
}

/// Tokens found for a requirement, and what verifying them gave.
#[derive(Default)]
struct Outcome {
    verified: Vec<VerifiedToken>,
    /// Headers to remove (tokens verified and not forwarded).
    strip: Vec<HeaderName>,
    /// Headers to set for the handler.
    set: Vec<(HeaderName, HeaderValue)>,
}

impl JwtEngine {
    /// Compiles a (validated) filter. Keys given by `filename` are read now.
    pub fn new(filter: &JwtAuthn) -> Result<Self, String> {
        let names: Vec<&String> = filter.providers.keys().collect();
        let providers: Vec<Provider> = filter
            .providers
            .iter()
            .map(|(name, p)| provider(name, p).map_err(|e| format!("provider {name:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let named = |n: &str| {
            let r = filter
                .requirement_map
                .get(n)
                .ok_or_else(|| format!("no requirement {n:?} in requirement_map"))?;
            requirement(r, &names)
        };
        let rules: Vec<(RequestMatcher, Option<Req>)> = filter
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = compile_match(&r.matcher).map_err(|e| format!("rules[{i}]: {e}"))?;
                let req = match (&r.requires, &r.requirement_name) {
                    (Some(q), _) => Some(requirement(q, &names)),
                    (None, Some(n)) => Some(named(n)),
                    (None, None) => None,
                };
                Ok((m, req.transpose().map_err(|e| format!("rules[{i}]: {e}"))?))
            })
            .collect::<Result<_, String>>()?;
        let active = rules.iter().any(|(_, r)| r.is_some());
        let mut all_locations: Vec<Location> = Vec::new();
        for l in providers.iter().flat_map(|p: &Provider| &p.locations) {
            if !all_locations.contains(l) {
                all_locations.push(l.clone());
            }
        }
        Ok(Self {
            providers,
            rules,
            bypass_cors: filter.bypass_cors_preflight,
            all_locations,
            active,
            routes: None,
        })
    }

    /// The engine of a server: its JWT filter (none: nothing checked), and when it has
    /// inbound routes, each route's `PerRouteConfig` (a route's own, else its virtual
    /// host's): `disabled`, or a `requirement_name` of the filter's `requirement_map`. A
    /// request no route serves passes here; the RBAC layer refuses it.
    pub fn for_server(server: &Server) -> Result<Self, String> {
        let Some(f) = server.http_filters.iter().find(|f| f.jwt_authn.is_some()) else {
            return Ok(Self::default());
        };
        let filter = f.jwt_authn.as_ref().expect("found by it");
        let mut engine = Self::new(filter)?;
        let Some(routes) = &server.route_config else {
            return Ok(engine);
        };
        let names: Vec<&String> = filter.providers.keys().collect();
        let per_route = overrides(routes, &f.name)
            .into_iter()
            .map(|o| {
                let named = o
                    .and_then(|o| o.jwt_authn.as_ref())
                    .and_then(|p| p.requirement_name.as_ref());
                Ok(match (o, named) {
                    (None, _) => PerRoute::Rules,
                    (Some(_), Some(n)) => PerRoute::Requires(requirement(
                        filter
                            .requirement_map
                            .get(n)
                            .ok_or_else(|| format!("no requirement {n:?}"))?,
                        &names,
                    )?),
                    (Some(_), None) => PerRoute::Off,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        engine.active |= per_route.iter().any(|p| matches!(p, PerRoute::Requires(_)));
        engine.routes = Some((InboundTable::compile(routes)?, per_route));
        Ok(engine)
    }

    /// How many verified tokens the providers' caches hold.
    #[cfg(test)]
    pub(crate) fn cached_tokens(&self) -> usize {
        self.providers
            .iter()
            .filter_map(|p| p.cache.as_ref())
            .map(TokenCache::len)
            .sum()
    }

    /// Whether any rule may ask for a token.
    pub fn is_empty(&self) -> bool {
        !self.active
    }

    /// Checks `req` at `now` (seconds since the epoch). On success the verified tokens are in
    /// its extensions ([`VerifiedJwt`]) and tokens not forwarded are removed.
    pub fn check<B>(&self, req: &mut Request<B>, now: u64) -> Result<(), JwtError> {
        let Some(requirement) = self.requirement_for(req) else {
            return Ok(());
        };
        let mut out = Outcome::default();
        self.eval(requirement, req, now, &mut out)?;
        if out.verified.is_empty() {
            return Ok(());
        }
        let headers = req.headers_mut();
        for h in &out.strip {
            headers.remove(h);
        }
        for (h, v) in out.set {
            headers.insert(h, v);
        }
        req.extensions_mut().insert(VerifiedJwt {
            tokens: out.verified,
        });
        Ok(())
    }

    fn requirement_for<B>(&self, req: &Request<B>) -> Option<&Req> {
        if self.is_empty() {
            return None;
        }
        if let Some((table, per_route)) = &self.routes {
            match table.find(req).map(|n| &per_route[n]) {
                Ok(PerRoute::Rules) => {}
                Ok(PerRoute::Requires(r)) => return Some(r),
                Ok(PerRoute::Off) | Err(_) => return None,
            }
        }
        let h = req.headers();
        if self.bypass_cors
            && req.method() == http::Method::OPTIONS
            && h.contains_key(http::header::ORIGIN)
            && h.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let (path, query) = (req.uri().path(), req.uri().query());
        self.rules
            .iter()
            .find(|(m, _)| m.matches(path, query, h))
            .and_then(|(_, r)| r.as_ref())
    }

    fn eval<B>(
        &self,
        r: &Req,
        req: &Request<B>,
        now: u64,
        out: &mut Outcome,
    ) -> Result<(), JwtError> {
        match r {
            Req::Provider(i, audiences) => {
                let p = &self.providers[*i];
                let tokens = extract(&p.locations, req);
                if tokens.is_empty() {
                    return Err(JwtError::Missing);
                }
                // Every token found must verify: a good one must not vouch for a bad one.
                for (loc, text) in tokens {
                    let aud = audiences.as_deref().unwrap_or(&p.audiences);
                    self.accept(p, loc, text, aud, now, out)?;
                }
                Ok(())
            }
            Req::All(children) => children
                .iter()
                .try_for_each(|c| self.eval(c, req, now, out)),
            Req::Any {
                children,
                allow_missing,
                allow_failed,
            } => {
                // Envoy's aggregation: a "real" failure beats an unknown issuer, which beats
                // a missing token; the last of a kind wins.
                let mut status = JwtError::Missing;
                for c in children {
                    let mut attempt = Outcome::default();
                    match self.eval(c, req, now, &mut attempt) {
                        Ok(()) => {
                            out.merge(attempt);
                            return Ok(());
                        }
                        Err(e) => {
                            let weak = |e: JwtError| {
                                matches!(e, JwtError::Missing | JwtError::UnknownIssuer)
                            };
                            if !weak(e) || status == JwtError::Missing {
                                status = e;
                            }
                        }
                    }
                }
                if *allow_failed || (*allow_missing && status.is_missing()) {
                    Ok(())
                } else {
                    Err(status)
                }
            }
            Req::ByIssuer { allow_failed } => {
                for (loc, text) in extract(&self.all_locations, req) {
                    // A token's issuer must be one whose provider looks where it was found
                    // (Envoy's rule: a location belongs to its providers' issuers).
                    let found = Token::parse(text).and_then(|t| {
                        let iss = t.iss.as_deref().unwrap_or("");
                        self.providers
                            .iter()
                            .find(|p| {
                                (p.issuer.is_empty() || p.issuer == iss)
                                    && p.locations.contains(loc)
                            })
                            .ok_or(JwtError::UnknownIssuer)
                    });
                    let result =
                        found.and_then(|p| self.accept(p, loc, text, &p.audiences, now, out));
                    if let Err(e) = result
                        && !allow_failed
                    {
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }

    /// Verifies one token for provider `p`, in Envoy's order: format, issuer, time,
    /// audience, signature.
    fn accept(
        &self,
        p: &Provider,
        loc: &Location,
        text: &str,
        audiences: &[String],
        now: u64,
        out: &mut Outcome,
    ) -> Result<(), JwtError> {
        let token = match p.cache.as_ref().and_then(|c| c.get(text)) {
            Some(r) => {
                r.limits.check_time(now, p.skew, p.require_exp)?;
                if !r.limits.audience_allowed(audiences) {
                    return Err(JwtError::AudienceNotAllowed);
                }
                r
            }
            None => {
                let token = Token::parse(text)?;
                if !p.issuer.is_empty() && token.iss.as_deref() != Some(p.issuer.as_str()) {
                    return Err(JwtError::UnknownIssuer);
                }
                token.limits.check_time(now, p.skew, p.require_exp)?;
                if !token.limits.audience_allowed(audiences) {
                    return Err(JwtError::AudienceNotAllowed);
                }
                token.verify(&p.keys)?;
                let claims = Arc::new(token.payload);
                let metadata = p
                    .metadata_key
                    .is_some()
                    .then(|| Arc::new(normalized(&claims, &p.space_delimited)));
                let r = Arc::new(Remembered {
                    claims,
                    metadata,
                    limits: token.limits,
                });
                if let Some(c) = &p.cache {
                    c.put(text, r.clone());
                }
                r
            }
        };
        if let (false, Location::Header(h, _)) = (p.forward, loc) {
            out.strip.push(h.clone());
        }
        if let Some(h) = &p.payload_header
            && let Some(v) = text
                .split('.')
                .nth(1)
                .and_then(|b| HeaderValue::from_str(b).ok())
        {
            out.set.push((h.clone(), v));
        }
        for (h, claim) in &p.claim_headers {
            let value = claim_path(&token.claims, claim).and_then(|v| match v {
                Value::String(s) => HeaderValue::from_str(s).ok(),
                Value::Number(_) | Value::Bool(_) => HeaderValue::from_str(&v.to_string()).ok(),
                _ => None,
            });
            if let Some(v) = value {
                out.set.push((h.clone(), v));
            }
        }
        out.verified.push(VerifiedToken {
            provider: p.name.clone(),
            claims: token.claims.clone(),
            metadata: p.metadata_key.clone().zip(token.metadata.clone()),
        });
        Ok(())
    }
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.verified.extend(other.verified);
        self.strip.extend(other.strip);
        self.set.extend(other.set);
    }
}

/// A claim by name; `a.b` walks into objects.
fn claim_path<'a>(payload: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut v = payload.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// The payload as RBAC sees it: space-delimited claims split into lists.
fn normalized(claims: &Map<String, Value>, split: &[String]) -> Value {
    let mut out = claims.clone();
    for name in split {
        if let Some(Value::String(s)) = out.get(name) {
            let list = s
                .split(' ')
                .filter(|w| !w.is_empty())
                .map(|w| Value::String(w.to_owned()))
                .collect();
            out.insert(name.clone(), Value::Array(list));
        }
    }
    Value::Object(out)
}

fn provider(name: &str, p: &JwtProvider) -> Result<Provider, String> {
    let src = p.local_jwks.as_ref().ok_or("no local_jwks")?;
    let text = match (&src.inline_string, &src.filename) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).map_err(|e| format!("local_jwks file {f:?}: {e}"))?
        }
        (None, None) => return Err("local_jwks is empty".into()),
    };
    let keys = parse_jwks(&text)?.iter().map(Key::new).collect();
    let header = |n: &str| HeaderName::try_from(n).map_err(|e| format!("{n:?}: {e}"));
    let mut locations = Vec::new();
    for h in &p.from_headers {
        locations.push(Location::Header(header(&h.name)?, h.value_prefix.clone()));
    }
    locations.extend(p.from_params.iter().cloned().map(Location::Param));
    locations.extend(p.from_cookies.iter().cloned().map(Location::Cookie));
    if p.from_headers.is_empty() && p.from_params.is_empty() {
        locations.push(Location::Header(
            http::header::AUTHORIZATION,
            "Bearer ".into(),
        ));
        locations.push(Location::Param("access_token".into()));
    }
    Ok(Provider {
        name: Arc::from(name),
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        keys,
        locations,
        forward: p.forward,
        payload_header: p
            .forward_payload_header
            .as_deref()
            .map(header)
            .transpose()?,
        metadata_key: p.payload_in_metadata.as_deref().map(Arc::from),
        space_delimited: p
            .normalize_payload_in_metadata
            .as_ref()
            .map(|n| n.space_delimited_claims.clone())
            .unwrap_or_default(),
        claim_headers: p
            .claim_to_headers
            .iter()
            .map(|c| Ok((header(&c.header_name)?, c.claim_name.clone())))
            .collect::<Result<_, String>>()?,
        skew: u64::from(p.clock_skew_seconds.unwrap_or(60)),
        require_exp: p.require_expiration,
        cache: p.jwt_cache_config.as_ref().map(TokenCache::new),
    })
}

fn requirement(r: &JwtRequirement, names: &[&String]) -> Result<Req, String> {
    let index = |n: &str| {
        names
            .iter()
            .position(|p| p.as_str() == n)
            .ok_or_else(|| format!("unknown provider {n:?}"))
    };
    if let Some(p) = &r.provider_name {
        return Ok(Req::Provider(index(p)?, None));
    }
    if let Some(p) = &r.provider_and_audiences {
        return Ok(Req::Provider(
            index(&p.provider_name)?,
            Some(p.audiences.clone()),
        ));
    }
    if let Some(list) = &r.requires_any {
        let (mut children, mut allow_missing, mut allow_failed) = (Vec::new(), false, false);
        for c in &list.requirements {
            if c.allow_missing.is_some() {
                allow_missing = true;
            } else if c.allow_missing_or_failed.is_some() {
                allow_failed = true;
            } else {
                children.push(requirement(c, names)?);
            }
        }
        return Ok(Req::Any {
            children,
            allow_missing,
            allow_failed,
        });
    }
    if let Some(list) = &r.requires_all {
        let children = list.requirements.iter().map(|c| requirement(c, names));
        return Ok(Req::All(children.collect::<Result<_, _>>()?));
    }
    if r.allow_missing_or_failed.is_some() {
        return Ok(Req::ByIssuer { allow_failed: true });
    }
    if r.allow_missing.is_some() {
        return Ok(Req::ByIssuer {
            allow_failed: false,
        });
    }
    Err("empty requirement".into())
}
