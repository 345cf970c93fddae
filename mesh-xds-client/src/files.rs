//! xDS resource files (feature `json`): Envoy's JSON/YAML `DiscoveryResponse`s (or single
//! resources) on disk, as a `file://` config source reads them (see the client's file
//! transport) and as `check --resources` checks them offline.
//!
//! A path is one file or a directory: a directory's `.json`, `.yaml` and `.yml` files are read
//! in name order; hidden files and subdirectories are skipped (a ConfigMap volume's `..data`
//! machinery is not read twice).
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("mesh-files-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("c.yaml"), r#"
//! resources:
//!   - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
//!     name: web
//!     type: EDS
//!     eds_cluster_config: { eds_config: { ads: {} } }
//! "#).unwrap();
//! let problems = mesh_xds_client::files::check(&dir);
//! // The EDS cluster's endpoints are in no file.
//! assert_eq!(problems.len(), 1, "{problems:?}");
//! assert!(problems[0].what.contains("no endpoints"));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use crate::translate::{self, ResourceType, Translated};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// The files under `path` (one file, or a directory's resource files in name order) and
/// their bytes.
pub fn read(path: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let at = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut names = Vec::new();
    if std::fs::metadata(path).map_err(|e| at(path, e))?.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| at(path, e))? {
            let entry = entry.map_err(|e| at(path, e))?;
            let p = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            // Metadata through symlinks (a ConfigMap's files are links into `..data`).
            let is_file = std::fs::metadata(&p).is_ok_and(|m| m.is_file());
            if !hidden && is_file && format_of(&p).is_some() {
                names.push(p);
            }
        }
        names.sort();
    } else {
        names.push(path.to_owned());
    }
    names
        .into_iter()
        .map(|p| {
            std::fs::read(&p)
                .map(|b| (p.clone(), b))
                .map_err(|e| at(&p, e))
        })
        .collect()
}

pub(crate) fn fingerprint(files: &[(PathBuf, Vec<u8>)]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    files.hash(&mut h);
    // Never 0: that stands for "could not read".
    h.finish().max(1)
}

/// Whether a file is JSON (`true`) or YAML (`false`), by its extension.
fn format_of(path: &Path) -> Option<bool> {
    match path.extension()?.to_str()? {
        "json" => Some(true),
        "yaml" | "yml" => Some(false),
        _ => None,
    }
}

/// Every resource of the files, by type (in [`ResourceType::ALL`]'s order:
/// listeners, route configs, clusters, endpoint sets, secrets); the first bad file is the
/// error, naming the file and where in it.
pub fn parse(files: &[(PathBuf, Vec<u8>)]) -> Result<[Vec<Any>; 5], String> {
    let mut by_type: [Vec<Any>; 5] = Default::default();
    for (path, bytes) in files {
        for any in parse_file(path, bytes)? {
            match ResourceType::from_type_url(&any.type_url) {
                Some(ty) => by_type[ty.index()].push(any),
                None => {
                    return Err(format!(
                        "{}: a resource of type {:?}, which is not an xDS resource type the \
                         client reads",
                        path.display(),
                        any.type_url
                    ));
                }
            }
        }
    }
    Ok(by_type)
}

/// The resources of one file: a `DiscoveryResponse`, or one resource with its `@type`.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Any>, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::str::from_utf8(bytes).map_err(|e| at(&e))?;
    let json = format_of(path) == Some(true);
    let value: serde_json::Value = match json {
        true => serde_json::from_str(text).map_err(|e| at(&e))?,
        false => serde_saphyr::from_str(text).map_err(|e| at(&e))?,
    };
    // JSON is read again from its text, so that errors say where (line and column).
    if value.get("@type").is_some() {
        let any: Any = match json {
            true => crate::json::from_str(text),
            false => crate::json::from_value(&value),
        }
        .map_err(|e| at(&e))?;
        return Ok(vec![any]);
    }
    let resp: DiscoveryResponse = match json {
        true => crate::json::from_str(text),
        false => crate::json::from_value(&value),
    }
    .map_err(|e| at(&e))?;
    Ok(resp.resources)
}

/// One problem found by [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: a file, or a resource (`CDS "web"`) and the field path inside it.
    pub place: String,
    /// What is wrong.
    pub what: String,
}

/// Every problem of the resource files at `path`, offline: files that do not parse (each
/// names the file and where in it), resources the client would refuse (each with its field
/// path, exactly the client's validation), and references that lead nowhere (a listener's
/// route config, a route's cluster, an EDS cluster's endpoints that no file holds). Empty
/// when the files would apply cleanly.
pub fn check(path: &Path) -> Vec<Problem> {
    let problem = |place: String, what: String| Problem { place, what };
    let files = match read(path) {
        Ok(f) => f,
        Err(e) => return vec![problem(path.display().to_string(), e)],
    };
    let mut out = Vec::new();
    let mut by_type: [Vec<Any>; 5] = Default::default();
    for one in &files {
        match parse(std::slice::from_ref(one)) {
            Ok(t) => {
                for (all, these) in by_type.iter_mut().zip(t) {
                    all.extend(these);
                }
            }
            Err(e) => {
                let (place, what) = e.split_once(": ").unwrap_or((&e, ""));
                out.push(problem(place.to_owned(), what.to_owned()));
            }
        }
    }
    let ctx = translate::Context {
        files: true,
        ..Default::default()
    };
    let mut names: [std::collections::BTreeSet<String>; 5] = Default::default();
    let mut refs: Vec<(String, ResourceType, String)> = Vec::new();
    for ty in ResourceType::ALL {
        for any in &by_type[ty.index()] {
            let decoded = match translate::decode_in(ty, any, &ctx) {
                Ok(d) => d,
                Err(e) => {
                    out.push(problem(ty.short().to_owned(), e.to_string()));
                    continue;
                }
            };
            let place = format!("{} {:?}", ty.short(), decoded.name);
            if !names[ty.index()].insert(decoded.name.clone()) {
                out.push(problem(place.clone(), "defined twice".into()));
            }
            match decoded.result {
                Err(e) => out.push(problem(place, e)),
                Ok(t) => references(&t, &place, &mut refs),
            }
        }
    }
    for (place, ty, name) in refs {
        if !names[ty.index()].contains(&name) {
            let what = match ty {
                ResourceType::ClusterLoadAssignment => {
                    format!("no endpoints {name:?} in the files")
                }
                _ => format!("names {} {name:?}, which no file defines", ty.short()),
            };
            out.push(problem(place, what));
        }
    }
    out
}

/// The resources `t` refers to by name.
fn references(t: &Translated, place: &str, refs: &mut Vec<(String, ResourceType, String)>) {
    let mut add = |ty, name: &str| refs.push((place.to_owned(), ty, name.to_owned()));
    match t {
        Translated::Listener(l) => {
            if let Some(rds) = &l.rds {
                add(ResourceType::RouteConfiguration, rds);
            }
            if let Some(rc) = &l.route_config {
                for c in crate::client::route_clusters(rc) {
                    add(ResourceType::Cluster, c);
                }
            }
        }
        Translated::RouteConfig(rc) => {
            for c in crate::client::route_clusters(rc) {
                add(ResourceType::Cluster, c);
            }
        }
        Translated::Cluster(c) => {
            if c.discovery == mesh_core::DiscoveryType::Eds {
                add(ResourceType::ClusterLoadAssignment, c.endpoints_name());
            }
            for child in c.aggregate().unwrap_or_default() {
                add(ResourceType::Cluster, child);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
pub(crate) mod tests;
