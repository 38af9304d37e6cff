//! The build id the API reports (`/health-check`), so the warmer can tell when new code started
//! serving and invalidate what the old code left at the edge. It is a hash of everything that
//! shapes the API's answers (its sources, the store's, the cache policy, the dependency lock), so
//! rebuilding the same code gives the same id and a no-op deploy invalidates nothing.
//! `EDGERAIL_BUILD_ID` at build time overrides it (e.g. a release version).

use std::path::{Path, PathBuf};

const INPUTS: &[&str] =
    &["src", "openapi.json", "../store/src", "../store/migrations", "../cache-policy", "../Cargo.lock"];

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
        entries.sort();
        for entry in entries {
            files(&entry, out);
        }
    } else if path.is_file() {
        out.push(path.to_path_buf());
    }
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike the standard library's hasher.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn main() {
    println!("cargo:rerun-if-env-changed=EDGERAIL_BUILD_ID");
    if let Ok(id) = std::env::var("EDGERAIL_BUILD_ID") {
        println!("cargo:rustc-env=EDGERAIL_BUILD_ID={id}");
        return;
    }
    let mut all = Vec::new();
    for input in INPUTS {
        println!("cargo:rerun-if-changed={input}");
        files(Path::new(input), &mut all);
    }
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for file in &all {
        hash = fnv(hash, file.to_string_lossy().as_bytes());
        hash = fnv(hash, &std::fs::read(file).unwrap_or_default());
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=EDGERAIL_BUILD_ID={version}-{:012x}", hash >> 16);
}
