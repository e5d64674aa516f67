//! The committed fuzz corpus, replayed by plain `cargo test`.
//!
//! cargo-fuzz needs a nightly toolchain to run; CI has stable only. Every
//! input the fuzzers ever found interesting is committed under
//! `fuzz/corpus/<target>/`, and the `fuzz_corpus` test feeds each through the
//! same calls the fuzz target makes, so a regression on any of them fails CI.

use std::path::{Path, PathBuf};

/// The workspace's `fuzz/corpus/<target>` directory.
#[must_use]
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// Every file of a target's corpus, sorted by name.
pub fn corpus_files(target: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    Ok(files)
}
