//! Envoy's verified-token cache (`jwt_cache_config`): a token verified once is remembered, so
//! the next request carrying it skips the JSON decoding and the signature check (the costly
//! part: tens of microseconds for RSA and ECDSA). Its validity period and audience are still
//! checked on every request, so an expired token is refused even when remembered.
//!
//! Bounded: when full, an arbitrary entry makes room (tokens are short-lived and a cache
//! miss only costs a verification). One short lock per lookup, never held across an await.

use super::token::Limits;
use mesh_core::config::jwt::JwtCacheConfig;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A verified token, as the filter uses it.
#[derive(Debug)]
pub(super) struct Remembered {
    pub(super) claims: Arc<Map<String, Value>>,
    /// The payload as RBAC sees it (space-delimited claims split), when the provider
    /// stores it in metadata.
    pub(super) metadata: Option<Arc<Value>>,
    pub(super) limits: Limits,
}

/// The tokens one provider verified.
#[derive(Debug)]
pub(super) struct TokenCache {
    capacity: usize,
    max_len: usize,
    map: Mutex<HashMap<Box<str>, Arc<Remembered>>>,
}

impl TokenCache {
    pub(super) fn new(c: &JwtCacheConfig) -> Self {
        let or = |v: u32, default: usize| if v == 0 { default } else { v as usize };
        Self {
            capacity: or(c.jwt_cache_size, 100),
            max_len: or(c.jwt_max_token_size, 4096),
            map: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Arc<Remembered>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, token: &str) -> Option<Arc<Remembered>> {
        self.lock().get(token).cloned()
    }

    pub(super) fn put(&self, token: &str, r: Arc<Remembered>) {
        if token.len() > self.max_len {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.capacity
            && let Some(k) = map.keys().next().cloned()
        {
            map.remove(&k);
        }
        map.insert(token.into(), r);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}
