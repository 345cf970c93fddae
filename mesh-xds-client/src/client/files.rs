//! Resource files as a config source: Envoy's `path_config_source` for every type at once.
//!
//! Envoy can run without a control plane by reading xDS resources from files, and pick up a
//! new version when a file is replaced (how a ConfigMap volume updates). A `file://` server
//! URI gives the client the same: the path is one file or a directory of them; each file
//! (`.json`, `.yaml` or `.yml`; hidden files and subdirectories are skipped, so a ConfigMap's
//! `..data` machinery is not read twice) holds a `DiscoveryResponse` in Envoy's JSON/YAML form
//! (`resources: [{"@type": …}, …]`), resources of any type mixed, or a single resource.
//!
//! The files are read again every refresh delay; when their bytes change, the whole set is
//! parsed first, and one unreadable or malformed file keeps the last good set in force (the
//! error, naming the file and where in it, goes to the log and the source status). A parsed
//! set is handed to the client's state machine as one SotW response per type, exactly as a
//! control plane's would be: the same validation (a rejected resource is reported with its
//! field path and the last good copy kept), the same on-demand subscriptions (only what the
//! mesh uses is translated), the same cascade, CSDS and status. Config sources in the files
//! that name files (`rds.config_source.path_config_source`, an EDS cluster's `eds_config`)
//! mean this same set, so Envoy's file layouts read unchanged.

use super::Shared;
use super::stream::{BoxError, begin, next_tick, on_sotw};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Watches the files at `path` for server `index`; runs until the client stops.
pub(super) async fn watch(
    shared: &Arc<Shared>,
    index: usize,
    path: &Path,
    refresh: Duration,
) -> Result<bool, BoxError> {
    let (mut rx, _) = begin(shared, index);
    let wake = &shared.streams[index].wake;
    // The set in force, and the fingerprint of the bytes last read (good or not).
    let mut set: Option<(String, [Vec<Any>; 5])> = None;
    let mut read_last = None;
    // Per type: what is subscribed, and whether to hand the set over.
    let mut requests = super::polled::Requests::default();
    loop {
        let at = path.to_owned();
        let files = tokio::task::spawn_blocking(move || crate::files::read(&at)).await;
        match files.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(files) => {
                let fingerprint = crate::files::fingerprint(&files);
                if read_last != Some(fingerprint) {
                    read_last = Some(fingerprint);
                    match crate::files::parse(&files) {
                        Ok(by_type) => {
                            let version = format!("{fingerprint:016x}");
                            tracing::info!(path = %path.display(), %version, files = files.len(), "xDS resource files read");
                            set = Some((version, by_type));
                            requests.mark_all();
                        }
                        Err(e) => report(shared, path, &e),
                    }
                }
            }
            Err(e) => {
                if read_last != Some(0) {
                    read_last = Some(0);
                    report(shared, path, &e);
                }
            }
        }
        while let Ok(r) = rx.try_recv() {
            requests.take(r);
        }
        if let Some((version, by_type)) = &set {
            // Subscribed types, when the set changed or their names did.
            for ty in requests.due(false) {
                let resp = DiscoveryResponse {
                    version_info: version.clone(),
                    resources: by_type[ty.index()].clone(),
                    type_url: ty.type_url().to_owned(),
                    ..Default::default()
                };
                on_sotw(shared, index, resp);
            }
        }
        // Requests the responses caused (ACKs, new subscriptions) are read on the next pass.
        if !rx.is_empty() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(refresh) => {}
            () = wake.notified() => {}
            () = next_tick(shared, index) => {}
            r = rx.recv() => match r {
                Some(r) => requests.take(r),
                None => return Ok(true),
            },
        }
    }
}

fn report(shared: &Shared, path: &Path, error: &str) {
    tracing::warn!(path = %path.display(), %error, "xDS resource files not applied; keeping the last good set");
    shared.store.set_source_status(|s| {
        s.rejected += 1;
        s.last_error = Some(error.to_owned());
    });
}
