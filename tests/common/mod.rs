//! Shared test helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cairn::{BackendKind, Config, Store};

/// A store of `kind` in a fresh temporary folder (kept alive by the returned guard).
pub fn store(kind: BackendKind, config: Config) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open_backend(kind, dir.path().join("store"), config).expect("open store");
    (s, dir)
}

/// Every backend the conformance suite runs on.
pub fn backends() -> Vec<BackendKind> {
    let mut v = vec![BackendKind::Memory, BackendKind::Sled];
    if cfg!(feature = "redb") {
        v.push(BackendKind::Redb);
    }
    v
}

/// The shared corpus of real agent runs, beside the repository.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// The small copy of the corpus checked in under fixtures/.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every regular file under `dir`, sorted, with its path relative to `dir` using `/`.
pub fn files_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .expect("prefix")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // (seed << 1) | 1: odd (xorshift needs a non-zero state) and distinct for every seed.
    let mut x = (seed << 1) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// JSON-like compressible text of about `n` bytes.
pub fn json_text(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 128);
    let mut i = seed;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{{\"step\":{i},\"tool\":\"bash\",\"output\":\"line {i} of the tool output, status ok\"}}\n"
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

pub mod faults;
