//! One token: decoded (header, payload, signature), its time and audience checks, and its
//! signature verified against a JWKS with ring. Checks and their order follow Envoy's
//! `jwt_authn` (the oracle), so the same token fails with the same status in both.

use super::error::JwtError;
use base64::Engine as _;
use mesh_core::config::jwt::{Jwk, JwkKey};
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};

/// A key ready to verify with.
#[derive(Debug)]
pub(crate) struct Key {
    kid: Option<String>,
    alg: Option<String>,
    kind: KeyKind,
}

#[derive(Debug)]
enum KeyKind {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point (`04 ‖ x ‖ y`) and its curve's size.
    Ec {
        point: Vec<u8>,
        p384: bool,
    },
    Ed25519(Vec<u8>),
    Hmac(Vec<u8>),
}

impl Key {
    pub(crate) fn new(jwk: &Jwk) -> Self {
        let kind = match &jwk.key {
            JwkKey::Rsa { n, e } => KeyKind::Rsa {
                n: n.clone(),
                e: e.clone(),
            },
            JwkKey::Ec { crv, x, y } => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                KeyKind::Ec {
                    point,
                    p384: crv == "P-384",
                }
            }
            JwkKey::Ed25519 { x } => KeyKind::Ed25519(x.clone()),
            JwkKey::Oct { k } => KeyKind::Hmac(k.clone()),
        };
        Self {
            kid: jwk.kid.clone(),
            alg: jwk.alg.clone(),
            kind,
        }
    }

    /// Whether this key may verify a token signed with `alg` (by key type, and by the key's
    /// own `alg` when it names one).
    fn fits(&self, alg: &str) -> bool {
        let family = match &self.kind {
            KeyKind::Rsa { .. } => alg.starts_with("RS") || alg.starts_with("PS"),
            KeyKind::Ec { p384, .. } => alg == if *p384 { "ES384" } else { "ES256" },
            KeyKind::Ed25519(_) => alg == "EdDSA",
            KeyKind::Hmac(_) => alg.starts_with("HS"),
        };
        family && self.alg.as_deref().is_none_or(|a| a == alg)
    }

    fn verify(&self, alg: &str, message: &[u8], sig: &[u8]) -> bool {
        use signature as s;
        match &self.kind {
            KeyKind::Rsa { n, e } => {
                let params: &s::RsaParameters = match alg {
                    "RS256" => &s::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &s::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &s::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &s::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &s::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &s::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                s::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            KeyKind::Ec { point, p384 } => {
                let alg: &s::EcdsaVerificationAlgorithm = if *p384 {
                    &s::ECDSA_P384_SHA384_FIXED
                } else {
                    &s::ECDSA_P256_SHA256_FIXED
                };
                UnparsedPublicKey::new(alg, point)
                    .verify(message, sig)
                    .is_ok()
            }
            KeyKind::Ed25519(x) => UnparsedPublicKey::new(&s::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            KeyKind::Hmac(k) => {
                let alg = match alg {
                    "HS256" => ring::hmac::HMAC_SHA256,
                    "HS384" => ring::hmac::HMAC_SHA384,
                    "HS512" => ring::hmac::HMAC_SHA512,
                    _ => return false,
                };
                ring::hmac::verify(&ring::hmac::Key::new(alg, k), message, sig).is_ok()
            }
        }
    }
}

/// The algorithms verified (`none` and ES512 are not).
const ALGS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

/// A token taken apart; nothing about it is trusted yet.
#[derive(Debug)]
pub(crate) struct Token<'a> {
    alg: String,
    kid: Option<String>,
    /// `header.payload`: what the signature covers.
    signed: &'a str,
    signature: Vec<u8>,
    pub(crate) payload: Map<String, Value>,
    pub(crate) iss: Option<String>,
    pub(crate) limits: Limits,
}

/// What is checked on every use of a token, verified or remembered: its audience and its
/// validity period.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    aud: Vec<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

fn b64(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

fn time(payload: &Map<String, Value>, claim: &str) -> Result<Option<u64>, JwtError> {
    match payload.get(claim) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or(JwtError::BadClaim(if claim == "exp" {
                "exp"
            } else {
                "nbf"
            })),
    }
}

impl<'a> Token<'a> {
    /// Decodes `text` (`header.payload.signature`).
    pub(crate) fn parse(text: &'a str) -> Result<Self, JwtError> {
        let mut parts = text.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::BadFormat);
        };
        let header: Map<String, Value> = b64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::BadHeader)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::BadHeader)?;
        if !ALGS.contains(&alg) {
            return Err(JwtError::UnsupportedAlg);
        }
        let payload: Map<String, Value> = b64(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::BadPayload)?;
        let signature = b64(s).ok_or(JwtError::BadSignatureEncoding)?;
        let string = |c: &str| -> Result<Option<String>, JwtError> {
            match payload.get(c) {
                None => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.clone())),
                Some(_) => Err(JwtError::BadClaim(if c == "iss" { "iss" } else { "sub" })),
            }
        };
        let iss = string("iss")?;
        string("sub")?;
        let aud = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| {
                    a.as_str()
                        .map(str::to_owned)
                        .ok_or(JwtError::BadClaim("aud"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(JwtError::BadClaim("aud")),
        };
        Ok(Self {
            alg: alg.to_owned(),
            kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
            signed: &text[..h.len() + 1 + p.len()],
            signature,
            limits: Limits {
                exp: time(&payload, "exp")?,
                nbf: time(&payload, "nbf")?,
                aud,
            },
            iss,
            payload,
        })
    }

    /// The signature against `keys`: keys whose `kid` and algorithm fit are tried in order.
    pub(crate) fn verify(&self, keys: &[Key]) -> Result<(), JwtError> {
        let mut tried = false;
        for key in keys {
            let kid_ok = match (&self.kid, &key.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            };
            if !kid_ok || !key.fits(&self.alg) {
                continue;
            }
            tried = true;
            if key.verify(&self.alg, self.signed.as_bytes(), &self.signature) {
                return Ok(());
            }
        }
        Err(if tried {
            JwtError::VerificationFailed
        } else {
            JwtError::NoMatchingKey
        })
    }
}

impl Limits {
    /// `exp` and `nbf` against `now` (seconds since the epoch), with `skew` either way.
    pub(crate) fn check_time(&self, now: u64, skew: u64, need_exp: bool) -> Result<(), JwtError> {
        if need_exp && self.exp.is_none() {
            return Err(JwtError::MissingExp);
        }
        if self.nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if self.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
            return Err(JwtError::Expired);
        }
        Ok(())
    }

    /// Whether `aud` names one of `allowed` (empty: anything goes).
    pub(crate) fn audience_allowed(&self, allowed: &[String]) -> bool {
        allowed.is_empty() || self.aud.iter().any(|a| allowed.contains(a))
    }
}
