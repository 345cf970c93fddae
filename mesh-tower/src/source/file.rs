//! The embedded default: a YAML file of mesh config, hot-reloaded.
//!
//! The file is re-read on an interval (and on demand through [`Mesh::reload`](crate::Mesh::reload)).
//! Polling rather than inotify is deliberate: it needs no extra dependency, works on every
//! filesystem, and survives the symlink swaps Kubernetes uses for mounted ConfigMaps. Content is
//! compared byte for byte, so an unchanged file costs one read.
//!
//! A file that fails to parse or validate is rejected whole: the last good config stays in
//! force, the error (with its field path) is logged, and it is reported in the store's
//! [`SourceStatus`](mesh_core::SourceStatus).

use mesh_core::{ConfigError, MeshConfig, Store};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("mesh config {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file was read but rejected.
    #[error("mesh config {path:?}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        source: ConfigError,
    },
}

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The file is unchanged since the last read.
    Unchanged,
    /// A new config was applied.
    Applied,
}

/// Reads, validates and applies one file to one store.
pub(crate) struct FileSource {
    path: PathBuf,
    store: Store,
    last: Mutex<Option<Vec<u8>>>,
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .finish()
    }
}

impl FileSource {
    pub(crate) fn new(path: &Path, store: Store) -> Self {
        store.set_source_status(|s| s.source = format!("file:{}", path.display()));
        Self {
            path: path.to_owned(),
            store,
            last: Mutex::new(None),
        }
    }

    /// Re-reads the file and applies it if it changed and is valid.
    pub(crate) async fn reload(&self) -> Result<Reload, FileError> {
        let mut last = self.last.lock().await;
        let result = self.read_and_apply(&mut last).await;
        match &result {
            Ok(Reload::Applied) => self.store.set_source_status(|s| {
                s.applied += 1;
                s.last_applied = Some(SystemTime::now());
                s.last_error = None;
            }),
            Ok(Reload::Unchanged) => {}
            Err(e) => {
                tracing::error!(error = %e, "mesh config rejected; keeping the last good config");
                let message = e.to_string();
                self.store.set_source_status(|s| {
                    s.rejected += 1;
                    s.last_error = Some(message);
                });
            }
        }
        result
    }

    async fn read_and_apply(&self, last: &mut Option<Vec<u8>>) -> Result<Reload, FileError> {
        let path = &self.path;
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| FileError::Read {
                path: path.clone(),
                source,
            })?;
        if last.as_deref() == Some(&bytes[..]) {
            return Ok(Reload::Unchanged);
        }
        // Remember the bytes even when invalid, so a bad file is reported once, not every poll.
        *last = Some(bytes.clone());
        let invalid = |source| FileError::Invalid {
            path: path.clone(),
            source,
        };
        let text =
            String::from_utf8(bytes).map_err(|e| invalid(ConfigError::Parse(e.to_string())))?;
        let config =
            MeshConfig::from_yaml_named(&text, &path.display().to_string()).map_err(invalid)?;
        self.store.replace(config).map_err(invalid)?;
        tracing::info!(path = %path.display(), version = self.store.version(), "mesh config applied");
        Ok(Reload::Applied)
    }

    /// Polls the file every `interval` until the source is dropped.
    pub(crate) fn spawn_poller(
        self: &Arc<Self>,
        interval: Duration,
        control: &crate::control::Control,
    ) -> tokio::task::AbortHandle {
        let weak = Arc::downgrade(self);
        control.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(source) = weak.upgrade() else { break };
                let _ = source.reload().await;
            }
        })
    }
}
