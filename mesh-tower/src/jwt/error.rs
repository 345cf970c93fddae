//! Why a token was refused.

use std::fmt;

/// A request the JWT filter refused. The caller sees [`message`](Self::message) with status
/// [`status`](Self::status), as from Envoy's `jwt_authn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// No token where the provider looks (`Authorization: Bearer`, by default).
    Missing,
    /// Not three base64url parts separated by dots.
    BadFormat,
    /// The header is not base64url JSON with an `alg`.
    BadHeader,
    /// `alg` is `none` or one not supported.
    UnsupportedAlg,
    /// The payload is not base64url JSON.
    BadPayload,
    /// The signature is not base64url.
    BadSignatureEncoding,
    /// A registered claim has the wrong type (`exp` not an integer, `aud` not strings, …).
    BadClaim(&'static str),
    /// `iss` is not the provider's.
    UnknownIssuer,
    /// No `exp` while the provider requires one.
    MissingExp,
    /// `exp` has passed (beyond the clock skew).
    Expired,
    /// `nbf` is still ahead (beyond the clock skew).
    NotYetValid,
    /// `aud` names none of the allowed audiences.
    AudienceNotAllowed,
    /// No key of the JWKS fits the token's `kid` and `alg`.
    NoMatchingKey,
    /// The signature does not verify.
    VerificationFailed,
}

impl JwtError {
    /// The HTTP status: 403 for a token for someone else (audience), 401 otherwise.
    pub fn status(self) -> u16 {
        match self {
            JwtError::AudienceNotAllowed => 403,
            _ => 401,
        }
    }

    /// What the caller is told (Envoy's words).
    pub fn message(self) -> &'static str {
        match self {
            JwtError::Missing => "Jwt is missing",
            JwtError::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            JwtError::BadHeader => "Jwt header is an invalid JSON",
            JwtError::UnsupportedAlg => "Jwt header [alg] is not supported",
            JwtError::BadPayload => "Jwt payload is an invalid JSON",
            JwtError::BadSignatureEncoding => "Jwt signature is an invalid Base64url encoded",
            JwtError::BadClaim(_) => "Jwt payload has a claim of the wrong type",
            JwtError::UnknownIssuer => "Jwt issuer is not configured",
            JwtError::MissingExp => "Jwt is missing expiration",
            JwtError::Expired => "Jwt is expired",
            JwtError::NotYetValid => "Jwt not yet valid",
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            JwtError::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::VerificationFailed => "Jwt verification fails",
        }
    }

    /// Whether this is the "no token" outcome, which `allow_missing` lets through.
    pub(crate) fn is_missing(self) -> bool {
        self == JwtError::Missing
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::BadClaim(c) => write!(f, "{} ({c})", self.message()),
            _ => f.write_str(self.message()),
        }
    }
}

impl std::error::Error for JwtError {}
