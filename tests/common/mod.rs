//! Shared test helpers.
#![allow(dead_code, unexpected_cfgs)] // `postgres`: a feature of the root package, not of cli/

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
    // Tests always build the library with redb and fjall (the root package's dev-dependency on
    // itself).
    vec![
        BackendKind::Memory,
        BackendKind::Sled,
        BackendKind::Redb,
        BackendKind::Fjall,
    ]
}

/// The repository's root: the workspace folder holding `fixtures/` (tests of the `cli/` member
/// share these helpers, so the package's own folder is not always the root).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("fixtures/agent-runs").is_dir())
        .unwrap_or(here)
        .to_path_buf()
}

/// The shared corpus of real agent runs, beside the repository.
pub fn corpus_dir() -> PathBuf {
    repo_root().join("../shared/corpus")
}

/// The small copy of the corpus checked in under fixtures/.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("fixtures")
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

/// A tree of three sessions with varied artifacts: versions, a deleted version, shared content,
/// compressible and incompressible content, tags, metadata, a key and a finished child.
pub fn build_tree(s: &Store) -> (cairn::SessionId, cairn::SessionId, cairn::SessionId) {
    use cairn::*;
    use serde_json::json;
    let root = s
        .create_session(
            NewSession::new()
                .name("pipeline")
                .key("run-42")
                .description("line one\nline two")
                .tag("nightly")
                .meta("model", "m-1"),
        )
        .unwrap();
    let child = s
        .create_session(NewSession::new().name("step-a").parent(root.id))
        .unwrap();
    let grandchild = s
        .create_session(
            NewSession::new()
                .name("step-a-1")
                .parent(child.id)
                .tag("leaf"),
        )
        .unwrap();
    let big = json_text(200_000, 7);
    let rnd = random_bytes(90_000, 9);
    s.put(
        root.id,
        NewArtifact::new(ArtifactKind::UserInput, "prompt.txt").tag("input"),
        b"fix the bug in astropy",
    )
    .unwrap();
    s.put(
        root.id,
        NewArtifact::new(ArtifactKind::ToolResult, "logs/out.jsonl")
            .meta("tool", "bash")
            .mime_type("application/jsonl"),
        &big,
    )
    .unwrap();
    let v2 = s
        .put(
            root.id,
            NewArtifact::new(ArtifactKind::ToolResult, "logs/out.jsonl"),
            b"v2",
        )
        .unwrap();
    s.put(
        root.id,
        NewArtifact::new(ArtifactKind::ToolResult, "logs/out.jsonl"),
        b"v3",
    )
    .unwrap();
    s.delete_artifact(root.id, v2.id).unwrap();
    s.put(
        child.id,
        NewArtifact::new(ArtifactKind::custom("embedding").unwrap(), "vec.bin").pinned(true),
        &rnd,
    )
    .unwrap();
    // Same content as in the root: stored once in the bundle.
    s.put(
        child.id,
        NewArtifact::new(ArtifactKind::AgentOutput, "copy.jsonl"),
        &big,
    )
    .unwrap();
    s.put(
        grandchild.id,
        NewArtifact::new(ArtifactKind::AgentOutput, "empty"),
        b"",
    )
    .unwrap();
    s.append_event(root.id, "step", json!({"n": 1, "ok": true}))
        .unwrap();
    s.complete(grandchild.id).unwrap();
    s.suspend(child.id).unwrap();
    (root.id, child.id, grandchild.id)
}

/// libtest's full name of the test `name` defined in the module `module` (the caller's
/// `module_path!()`): the crate's name dropped, the module path kept, so a test that re-runs
/// itself in a child process (`--exact NAME`) finds itself in any test binary.
pub fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

pub mod faults;
/// The PostgreSQL server of the tests (feature `postgres`, root package only).
#[cfg(feature = "postgres")]
pub mod pg;

/// The S3-compatible server of the tests (features `postgres` and `s3`, root package only).
#[cfg(all(feature = "postgres", feature = "s3"))]
pub mod s3;
