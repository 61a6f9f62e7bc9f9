//! `cairn session export` / `import` from the command line.

use crate::common;

use std::path::Path;

use cairn::*;
use serde_json::json;

// ---- the command line -----------------------------------------------------------------------------

fn cairn_bin() -> String {
    std::env::var("CAIRN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cairn").to_string())
}

fn cli(store: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cairn_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CAIRN_STORE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run cairn")
}

#[test]
fn command_line_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let id = {
        let s = Store::open(&a).unwrap();
        let (root, _, _) = common::build_tree(&s);
        root
    };
    let file = dir.path().join("run.cairnb");
    let out = cli(
        &a,
        &[
            "--json",
            "session",
            "export",
            &id.to_string(),
            file.to_str().unwrap(),
            "--subtree",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["sessions"], 3);
    assert_eq!(rep["bundle_bytes"], std::fs::metadata(&file).unwrap().len());

    let out = cli(&b, &["--json", "session", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["root"], json!(id));
    // Again: the ids exist; one clear line, a failing exit code, nothing changed.
    let out = cli(&b, &["session", "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--new-ids"),
        "{err}"
    );
    // A copy under a parent, through stdin, keys dropped.
    let parent = cli(&b, &["--json", "session", "create", "--name", "home"]);
    let parent: serde_json::Value = serde_json::from_slice(&parent.stdout).unwrap();
    let pid = parent["id"].as_str().unwrap().to_string();
    let mut child = std::process::Command::new(cairn_bin())
        .arg("--store")
        .arg(&b)
        .args([
            "--json",
            "session",
            "import",
            "-",
            "--new-ids",
            "--drop-keys",
            "--parent",
            &pid,
        ])
        .env_remove("CAIRN_STORE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&file).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(rep["root"], json!(id));
    // A damaged file: refused, nothing stored.
    let mut bad = std::fs::read(&file).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let bad_file = dir.path().join("bad.cairnb");
    std::fs::write(&bad_file, bad).unwrap();
    let c = dir.path().join("c");
    let out = cli(&c, &["session", "import", bad_file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bundle"));
    let s = Store::open(&c).unwrap();
    assert_eq!(s.stats().unwrap().sessions, 0);
    drop(s);
    // Export to stdout is the same bundle format.
    let out = cli(&a, &["session", "export", &id.to_string(), "-"]);
    assert!(out.status.success());
    assert_eq!(bundle::inspect(&out.stdout[..]).unwrap().sessions.len(), 1);
    // A missing file: a clear "not found".
    let out = cli(
        &c,
        &[
            "session",
            "import",
            dir.path().join("nope").to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
