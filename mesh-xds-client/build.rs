//! With the `json` feature: brings envoy-types' descriptor set into the build.
//!
//! Envoy's JSON and YAML forms of xDS (REST-JSON polling, resource files, dumps) are proto3
//! JSON, which needs the messages' descriptors. envoy-types ships the `FileDescriptorSet` its
//! Rust types were generated from (`src/generated/types.bin`) but does not export it; this
//! script finds the package where Cargo unpacked it (`cargo metadata`, so vendored and git
//! sources work too) and copies the file to `OUT_DIR`, so the descriptors always match the
//! types of the locked version.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_JSON").is_none() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let package = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "envoy-types"))
        .expect("envoy-types is a dependency");
    let dir = PathBuf::from(package["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_owned();
    let set = dir.join("src/generated/types.bin");
    println!("cargo::rerun-if-changed={}", set.display());
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("envoy_types.bin");
    std::fs::copy(&set, &dest)
        .unwrap_or_else(|e| panic!("envoy-types' descriptor set {}: {e}", set.display()));
}
