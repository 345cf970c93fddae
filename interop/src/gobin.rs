//! Go programs built from pinned modules and cached under `target/interop-bin` by a hash of
//! their sources, so `.ci/test` builds each once (it computes the same key) and a test builds
//! one only when its cached binary is missing. A missing Go toolchain fails loudly.

use std::path::PathBuf;
use std::process::Command;

/// The cache key of the Go module in `interop/<dir>`: FNV-1a 64 over `files`, in order.
pub(crate) fn source_hash(dir: &str, files: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    for name in files {
        let data =
            std::fs::read(root.join(name)).unwrap_or_else(|e| panic!("interop/{dir}/{name}: {e}"));
        for b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// `target/interop-bin/<name>-<key>`, built with `go build <args> -o <it> <package>` in
/// `interop/<dir>` when missing.
pub(crate) fn cached(
    name: &str,
    dir: &str,
    files: &[&str],
    args: &[&str],
    package: &str,
) -> PathBuf {
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/interop-bin");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}-{}", source_hash(dir, files)));
    if out.exists() {
        return out;
    }
    let tmp = out_dir.join(format!("{name}.{}", std::process::id()));
    let status = Command::new("go")
        .arg("build")
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .arg(package)
        .env("CGO_ENABLED", "0")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir))
        .status()
        .unwrap_or_else(|e| panic!("the {name} peer needs the Go toolchain (`go`): {e}"));
    assert!(status.success(), "go build of interop/{dir} failed");
    std::fs::rename(&tmp, &out).unwrap();
    out
}
