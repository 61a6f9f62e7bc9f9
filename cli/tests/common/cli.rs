//! Running the real `cairn` binary against a temporary store: shared by the command-line tests
//! (`tests/cli.rs`, `tests/cli_ops.rs`), included with `#[path]` so that test binaries without
//! the command line do not need it.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A temporary folder with a store path inside it (the store itself is created by the CLI).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--store")
            .arg(self.store())
            .args(args)
            .env_remove("CAIRN_STORE")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run cairn")
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        // Written from a thread so a large input cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait");
        writer.join().expect("writer");
        out
    }

    /// Runs with `--json`, expects success, and returns the one JSON value printed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        one_json(&self.run(&a), &a)
    }

    /// Runs with `--json`, expects `exit`, an empty stdout, and returns the error's code and
    /// message from stderr.
    pub fn fails(&self, args: &[&str], exit: i32) -> (String, String) {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        failure(&out, &a, exit)
    }

    /// Runs without `--json`, expects success, and returns stdout.
    pub fn human(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).expect("utf-8 stdout");
        assert!(!s.contains('\x1b'), "{args:?}: colour codes on a pipe: {s}");
        s
    }

    /// Runs without `--json`, expects `exit`, and returns stderr (one line for people).
    pub fn human_fails(&self, args: &[&str], exit: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(exit), "{args:?}");
        let e = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert!(e.starts_with("cairn: error: "), "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        e
    }
}

pub fn bin() -> &'static str {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    // CAIRN_TEST_BIN runs the tests against a copy of the binary (useful when the target
    // directory is shared with other builds); by default, the binary cargo built for this test.
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let path: &'static str = PATH.get_or_init(|| {
        std::env::var("CAIRN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cairn").to_string())
    });
    CHECKED.call_once(|| {
        // Several worktrees may share one CARGO_TARGET_DIR, and the binary's path in it is the
        // same for all of them: say so clearly instead of failing every assertion.
        let out = Command::new(path)
            .arg("--version")
            .output()
            .expect("run cairn");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("cairn "),
            "{path} is not this package's cairn command line (another build in a shared target \
             directory replaced it?); rebuild with `touch src/main.rs && cargo test --test cli`"
        );
    });
    path
}

/// Asserts success and that stdout holds exactly one JSON value.
pub fn one_json(out: &Output, args: &[&str]) -> Value {
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{args:?}: stderr with --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = parse_one(&out.stdout, args);
    assert!(v.is_object() || v.is_array(), "{args:?}: {v}");
    v
}

/// Exactly one JSON value in `stdout`.
pub fn parse_one(stdout: &[u8], args: &[&str]) -> Value {
    let mut values = serde_json::Deserializer::from_slice(stdout).into_iter::<Value>();
    let v = values
        .next()
        .unwrap_or_else(|| panic!("{args:?}: no JSON on stdout"))
        .unwrap_or_else(|e| panic!("{args:?}: bad JSON on stdout: {e}"));
    assert!(
        values.next().is_none(),
        "{args:?}: more than one JSON value on stdout"
    );
    v
}

pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
}

/// Asserts an exit code, an empty stdout, and a JSON error on stderr; returns (code, message).
pub fn failure(out: &Output, args: &[&str], exit: i32) -> (String, String) {
    assert_eq!(
        out.status.code(),
        Some(exit),
        "{args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?}: stdout must be empty on error"
    );
    let e: Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stderr is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = s(&e["error"], "code").to_string();
    let message = s(&e["error"], "message").to_string();
    assert!(!message.is_empty());
    (code, message)
}
