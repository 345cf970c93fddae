//! Request authentication on the server side: Envoy's JWT filter (`jwt_authn`).
//!
//! Why in-process: mTLS proves which workload calls, not for whom. Istio's
//! `RequestAuthentication` has the sidecar verify end-user tokens; without a sidecar, and
//! with no proxyless peer doing it, every handler would. Here the server verifies tokens
//! before RBAC and before the handler: signatures (RS/PS 256–512, ES256/384, EdDSA, HS
//! 256–512, by ring) against the provider's JWKS, `iss`, `aud`, `exp`/`nbf` with clock skew.
//! A request with a bad token is answered `401` (`403` for a token meant for another
//! audience) with Envoy's message and a `www-authenticate` header; gRPC callers get
//! `UNAUTHENTICATED` / `PERMISSION_DENIED`. A missing token fails only where a rule requires
//! one (`allow_missing` lets it through, for RBAC to decide).
//!
//! What the handler gets: the verified tokens' claims in the request's extensions
//! ([`VerifiedJwt`]), and RBAC `metadata` principals match them (under the provider's
//! `payload_in_metadata` key), so `requestPrincipals` and `request.auth.claims` policies work.
//! Tokens are removed from the request unless the provider says `forward: true`.
//!
//! Where we differ from Envoy: keys come only from `local_jwks` (no remote fetch), and the
//! filter's per-route override is not read. `interop/tests/jwt_oracle.rs` holds us to Envoy's
//! statuses on the same config and tokens.

mod cache;
mod engine;
mod error;
mod future;
mod layer;
mod locate;
mod token;

pub use engine::JwtEngine;
pub use error::JwtError;
pub use future::ResponseFuture;
pub use layer::JwtLayer;

use crate::matcher::metadata::{DynamicMetadata, Payloads};
use crate::refusal::{RefusalBody, RefusalFuture};
use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Verifies tokens as the JWT filter's rules require; passes allowed requests to `S`.
///
/// ```
/// use base64::Engine as _;
/// use mesh_core::config::jwt::JwtAuthn;
/// use mesh_tower::jwt::{JwtEngine, JwtLayer, VerifiedJwt};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let filter: JwtAuthn = serde_saphyr::from_str(r#"
/// providers:
///   corp:
///     issuer: https://issuer.example
///     local_jwks: { inline_string: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}' }
/// rules: [{ match: { prefix: / }, requires: { provider_name: corp } }]
/// "#).unwrap();
/// let handler = tower::service_fn(|req: http::Request<()>| async move {
///     let who = req.extensions().get::<VerifiedJwt>().and_then(|j| j.subject()).unwrap_or("-").to_owned();
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(who))))
/// });
/// let svc = JwtLayer::new(JwtEngine::new(&filter).unwrap()).layer(handler);
///
/// // An HS256 token for alice, signed with the provider's key.
/// let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
/// let signed = format!("{}.{}", b64(br#"{"alg":"HS256"}"#),
///     b64(br#"{"iss":"https://issuer.example","sub":"alice"}"#));
/// let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
/// let token = format!("{signed}.{}", b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref()));
///
/// let req = http::Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap();
/// assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
/// let res = svc.oneshot(http::Request::get("/").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 401, "no token");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Jwt<S> {
    inner: S,
    engine: Arc<ArcSwap<JwtEngine>>,
}

/// The tokens a request carried that the JWT filter verified, in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct VerifiedJwt {
    tokens: Vec<VerifiedToken>,
}

/// One verified token.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    provider: Arc<str>,
    claims: Arc<Map<String, Value>>,
    /// (`payload_in_metadata` key, the payload as RBAC sees it).
    metadata: Option<(Arc<str>, Arc<Value>)>,
}

impl VerifiedJwt {
    /// Every verified token, in the order they were checked.
    pub fn tokens(&self) -> &[VerifiedToken] {
        &self.tokens
    }

    /// A claim of the first token that has it.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.tokens.iter().find_map(|t| t.claims.get(name))
    }

    /// The first token's `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.claim("iss").and_then(Value::as_str)
    }

    /// The first token's `sub`.
    pub fn subject(&self) -> Option<&str> {
        self.claim("sub").and_then(Value::as_str)
    }

    /// The payloads stored as dynamic metadata, for what sits outside the filter (access
    /// logs); `None` when no provider stores one.
    fn dynamic_metadata(&self) -> Option<DynamicMetadata> {
        let stored: Arc<[_]> = (self.tokens.iter())
            .filter_map(|t| t.metadata.clone())
            .collect();
        (!stored.is_empty()).then_some(DynamicMetadata(stored))
    }
}

/// What RBAC `metadata` principals of the JWT filter see under `key` (the last token whose
/// provider stores its payload there).
impl Payloads for VerifiedJwt {
    fn payload(&self, key: &str) -> Option<&Value> {
        self.tokens
            .iter()
            .rev()
            .find_map(|t| t.metadata.as_ref().filter(|(k, _)| &**k == key))
            .map(|(_, v)| &**v)
    }
}

impl VerifiedToken {
    /// The provider that verified it.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Its payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

impl<S, B, ResBody> Service<Request<B>> for Jwt<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<RefusalBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let engine = self.engine.load();
        if engine.is_empty() {
            return RefusalFuture::inner(self.inner.call(req));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match engine.check(&mut req, now) {
            Ok(()) => {
                // What the filter stored rides on the answer for the access log outside.
                let stored =
                    (req.extensions().get::<VerifiedJwt>()).and_then(VerifiedJwt::dynamic_metadata);
                RefusalFuture::inner(self.inner.call(req)).attaching(stored)
            }
            Err(e) => {
                tracing::debug!(path = req.uri().path(), error = %e, "token refused");
                RefusalFuture::denied(refusal(&req, e))
            }
        }
    }
}

/// Envoy's answer: the message, and `www-authenticate` naming the request's URL.
fn refusal<B>(req: &Request<B>, e: JwtError) -> Response<crate::body::MeshBody> {
    let grpc = crate::grpc::is_grpc(req.headers());
    let mut res = crate::grpc::local_answer(grpc, e.status(), None, e.message());
    let host = crate::route::inbound::authority(req);
    let mut challenge = format!("Bearer realm=\"http://{host}{}\"", req.uri().path());
    if !e.is_missing() {
        challenge.push_str(", error=\"invalid_token\"");
    }
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    res
}

#[cfg(test)]
mod tests;
