//! Certificate providers: named sources of identity and roots that handshakes read.
//!
//! A provider publishes its current material as one immutable value (`ArcSwap`), so a
//! rotation is a pointer swap: handshakes already under way finish with what they loaded,
//! new ones use the new material, and established connections are untouched (their peer
//! verified them once). A reload that fails (a half-written file, an expired leaf, a bad
//! bundle entry) keeps the last good material and records why in [`ProviderStatus`] and the
//! log, as gRPC's `file_watcher` does.

use super::material::{Identity, MaterialError, Roots};
use crate::control::Control;
use arc_swap::ArcSwap;
use mesh_core::config::tls::FileWatcher;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// What a provider holds now.
#[derive(Clone, Debug, Default)]
pub struct Material {
    /// The workload's certificate and key.
    pub identity: Option<Identity>,
    /// The roots peers are verified against.
    pub roots: Option<Roots>,
    /// Bumped on every change; TLS configs built from older material are rebuilt.
    pub(crate) generation: u64,
}

impl Material {
    /// Bumped on every change of this provider's material.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A provider's health: what it serves and the last problem, for status pages and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderStatus {
    /// When material last changed.
    pub updated: Option<SystemTime>,
    /// Serial of the leaf served (lowercase hex).
    pub serial: Option<String>,
    /// Expiry of the leaf served.
    pub not_after: Option<SystemTime>,
    /// Why the last load failed (cleared by the next good one); the last good material stays.
    pub error: Option<String>,
    /// Loads that failed since start.
    pub failures: u64,
}

/// A named source of certificates: [`file_watcher`](Self::file_watcher), or one the
/// application feeds ([`new`](Self::new) then [`set_identity`](Self::set_identity) /
/// [`set_roots`](Self::set_roots)). Cheap to clone; the watcher stops with the last clone.
///
/// ```
/// use mesh_tower::tls::CertificateProvider;
/// let provider = CertificateProvider::new("app");
/// assert!(provider.material().identity.is_none()); // handshakes needing it fail until set
/// assert_eq!(provider.status().error, None);
/// ```
#[derive(Clone)]
pub struct CertificateProvider {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    material: ArcSwap<Material>,
    generation: AtomicU64,
    status: Mutex<ProviderStatus>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

impl fmt::Debug for CertificateProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateProvider")
            .field("name", &self.inner.name)
            .field("status", &self.status())
            .finish()
    }
}

impl CertificateProvider {
    /// An empty provider the application fills.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                material: ArcSwap::from_pointee(Material::default()),
                generation: AtomicU64::new(0),
                status: Mutex::new(ProviderStatus::default()),
                task: Mutex::new(None),
            }),
        }
    }

    /// gRPC's `file_watcher` plugin: reads the files now, then every `refresh_interval` on
    /// `control`. A failed read now is reported in [`status`](Self::status) (handshakes
    /// needing the material fail until a read succeeds).
    pub fn file_watcher(name: impl Into<String>, config: &FileWatcher, control: &Control) -> Self {
        let provider = Self::new(name);
        provider.reload_files(config);
        let weak = Arc::downgrade(&provider.inner);
        let (config, every) = (config.clone(), config.refresh_interval);
        let task = control.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = Weak::upgrade(&weak) else {
                    break;
                };
                CertificateProvider { inner }.reload_files(&config);
            }
        });
        *lock(&provider.inner.task) = Some(task);
        provider
    }

    /// Follows a stream of identities (e.g. from a SPIRE agent or an SDS feed): each item
    /// replaces the identity; the task ends with the stream or the last clone of the provider.
    pub fn follow<S>(&self, identities: S)
    where
        S: futures_util::Stream<Item = Identity> + Send + 'static,
    {
        use futures_util::StreamExt;
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let mut identities = std::pin::pin!(identities);
            while let Some(id) = identities.next().await {
                let Some(inner) = Weak::upgrade(&weak) else {
                    break;
                };
                CertificateProvider { inner }.set_identity(id);
            }
        });
        if let Some(old) = lock(&self.inner.task).replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Whether both handles are the same provider.
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current material.
    pub fn material(&self) -> Arc<Material> {
        self.inner.material.load_full()
    }

    /// Health and what is served.
    pub fn status(&self) -> ProviderStatus {
        lock(&self.inner.status).clone()
    }

    /// Replaces the identity (new handshakes use it).
    pub fn set_identity(&self, identity: Identity) {
        self.update(|m| m.identity = Some(identity));
    }

    /// Replaces the roots (new handshakes verify against them).
    pub fn set_roots(&self, roots: Roots) {
        self.update(|m| m.roots = Some(roots));
    }

    /// Replaces identity and roots with `inline`'s PEM (an absent half clears it). Material
    /// that does not parse, or a leaf out of its validity, keeps the last good and is reported.
    pub(crate) fn set_inline(&self, inline: &mesh_core::config::tls::InlineMaterial) {
        let identity = match (&inline.certificate_chain, &inline.private_key) {
            (Some(chain), Some(key)) => {
                match Identity::from_pem(chain.as_bytes(), key.as_bytes()) {
                    Ok(id) => Some(id),
                    Err(e) => return self.report_error(&e),
                }
            }
            _ => None,
        };
        let roots = match &inline.trusted_ca {
            Some(pem) => match Roots::from_pem(pem.as_bytes()) {
                Ok(r) => Some(r),
                Err(e) => return self.report_error(&e),
            },
            None => None,
        };
        self.update(|m| {
            m.identity = identity;
            m.roots = roots;
        });
    }

    /// Records a failed load; the material stays.
    pub fn report_error(&self, error: &MaterialError) {
        tracing::warn!(provider = %self.inner.name, %error, "certificate provider: keeping the last good material");
        let mut status = lock(&self.inner.status);
        status.error = Some(error.to_string());
        status.failures += 1;
    }

    fn update(&self, f: impl FnOnce(&mut Material)) {
        let mut next = Material::clone(&self.inner.material.load());
        f(&mut next);
        next.generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let leaf = next.identity.as_ref().map(|i| i.leaf.clone());
        self.inner.material.store(Arc::new(next));
        let mut status = lock(&self.inner.status);
        status.updated = Some(SystemTime::now());
        status.error = None;
        status.serial = leaf.as_ref().map(|l| l.serial.clone());
        status.not_after = leaf.map(|l| l.not_after);
    }

    /// One read of the watched files; on any error nothing changes.
    fn reload_files(&self, c: &FileWatcher) {
        match load_files(c) {
            Ok((identity, roots)) => {
                let current = self.material();
                let same_id = match (&identity, &current.identity) {
                    (Some(a), Some(b)) => a.key.cert == b.key.cert,
                    (None, None) => true,
                    _ => false,
                };
                let same_roots = roots_eq(roots.as_ref(), current.roots.as_ref());
                if !(same_id && same_roots) || current.generation == 0 {
                    self.update(|m| {
                        m.identity = identity;
                        m.roots = roots;
                    });
                } else {
                    lock(&self.inner.status).error = None;
                }
            }
            Err(e) => self.report_error(&e),
        }
    }
}

fn roots_eq(a: Option<&Roots>, b: Option<&Roots>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Roots::Ca(a)), Some(Roots::Ca(b))) => a == b,
        (Some(Roots::Spiffe(a)), Some(Roots::Spiffe(b))) => a == b,
        _ => false,
    }
}

fn load_files(c: &FileWatcher) -> Result<(Option<Identity>, Option<Roots>), MaterialError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| MaterialError(format!("cannot read {path}: {e}")))
    };
    let identity = match (&c.certificate_file, &c.private_key_file) {
        (Some(cert), Some(key)) => Some(
            Identity::from_pem(&read(cert)?, &read(key)?)
                .map_err(|e| MaterialError(format!("{cert} + {key}: {e}")))?,
        ),
        _ => None,
    };
    // A87: the SPIFFE bundle map, when configured, replaces the CA file.
    let roots = match (&c.spiffe_trust_bundle_map_file, &c.ca_certificate_file) {
        (Some(map), _) => Some(
            Roots::from_spiffe_bundle_map(&read(map)?)
                .map_err(|e| MaterialError(format!("{map}: {e}")))?,
        ),
        (None, Some(ca)) => {
            Some(Roots::from_pem(&read(ca)?).map_err(|e| MaterialError(format!("{ca}: {e}")))?)
        }
        (None, None) => None,
    };
    Ok((identity, roots))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
