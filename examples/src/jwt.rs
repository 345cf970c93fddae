//! A development token issuer: keys of every kind the JWT filter verifies, their JWKS, and
//! tokens minted on demand. What [`pki::DevCa`](crate::pki::DevCa) is for certificates,
//! this is for `jwt_authn`: tests and examples need tokens without an identity provider.
//!
//! ```
//! let issuer = mesh_examples::jwt::DevIssuer::new("https://issuer.example");
//! let token = issuer.token("ES256", serde_json::json!({"sub": "alice", "aud": "orders"}));
//! assert_eq!(token.split('.').count(), 3);
//! assert!(issuer.jwks().contains("\"kty\":\"EC\""));
//! ```

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{Value, json};

/// Signing keys (RSA 2048, P-256, Ed25519, an HMAC secret) under one issuer name.
pub struct DevIssuer {
    issuer: String,
    rsa: sig::RsaKeyPair,
    ec: sig::EcdsaKeyPair,
    ed: sig::Ed25519KeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The HMAC secret of every [`DevIssuer`] (for `HS256` tokens).
pub const HMAC_SECRET: &[u8] = b"dev-issuer-hmac-secret";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl DevIssuer {
    /// An issuer named `issuer` (the `iss` of its tokens) with fresh EC and Ed25519 keys and
    /// a fixed RSA test key (ring cannot generate RSA keys).
    pub fn new(issuer: &str) -> Self {
        let rng = SystemRandom::new();
        let pem = include_str!("../../mesh-tower/src/jwt/testdata/rsa-2048-test-key.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("test key");
        let ec = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
        let ed = sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
        Self {
            issuer: issuer.to_owned(),
            rsa: sig::RsaKeyPair::from_pkcs8(&der).expect("RSA test key"),
            ec: sig::EcdsaKeyPair::from_pkcs8(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                ec.as_ref(),
                &rng,
            )
            .expect("P-256 key"),
            ed: sig::Ed25519KeyPair::from_pkcs8(ed.as_ref()).expect("Ed25519 key"),
            rng,
        }
    }

    /// The issuer name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys as a JWKS document (`kid`s `rsa`, `ec`, `ed`, `hmac`).
    pub fn jwks(&self) -> String {
        let rsa = sig::RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "n": b64(&rsa.n), "e": b64(&rsa.e)},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])},
            // The HMAC key before the Ed25519 one: Envoy stops at an Ed25519 key whose
            // signature length does not fit instead of trying the next key.
            {"kty": "oct", "kid": "hmac", "k": b64(HMAC_SECRET)},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(self.ed.public_key().as_ref())},
        ]})
        .to_string()
    }

    /// A token signed with `alg` (`RS256`, `PS256`, `ES256`, `EdDSA`, `HS256`; anything else
    /// gets a garbage signature), with `iss` set unless `claims` sets it, and `exp` one hour
    /// ahead unless `claims` sets it (`null` removes it).
    pub fn token(&self, alg: &str, claims: Value) -> String {
        self.token_with_header(json!({"alg": alg, "typ": "JWT"}), claims)
    }

    /// [`token`](Self::token) with the header given whole (to set `kid`, or to forge one).
    pub fn token_with_header(&self, header: Value, mut claims: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        if let Some(map) = claims.as_object_mut() {
            map.entry("iss").or_insert_with(|| json!(self.issuer));
            match map.get("exp") {
                None => {
                    map.insert("exp".into(), json!(now + 3600));
                }
                Some(Value::Null) => {
                    map.remove("exp");
                }
                Some(_) => {}
            }
        }
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let alg = header["alg"].as_str().unwrap_or("");
        format!("{signed}.{}", b64(&self.sign(alg, signed.as_bytes())))
    }

    fn sign(&self, alg: &str, m: &[u8]) -> Vec<u8> {
        match alg {
            "RS256" | "PS256" => {
                let pad: &dyn sig::RsaEncoding = if alg == "RS256" {
                    &sig::RSA_PKCS1_SHA256
                } else {
                    &sig::RSA_PSS_SHA256
                };
                let mut out = vec![0; self.rsa.public().modulus_len()];
                self.rsa
                    .sign(pad, &self.rng, m, &mut out)
                    .expect("RSA sign");
                out
            }
            "ES256" => self.ec.sign(&self.rng, m).expect("sign").as_ref().to_vec(),
            "EdDSA" => self.ed.sign(m).as_ref().to_vec(),
            "HS256" => {
                let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HMAC_SECRET);
                ring::hmac::sign(&k, m).as_ref().to_vec()
            }
            _ => b"not a signature".to_vec(),
        }
    }
}

/// Seconds since the epoch, for claims relative to now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
