//! Running the real `cairn` binary against a temporary store: shared by the command-line tests
//! (`tests/cli.rs`, `tests/cli_ops.rs`), included with `#[path]` so that test binaries without
//! the command line do not need it.
//!
//! Remote mode: in the test target `cli_remote` (which includes `cli.rs` and `cli_ops.rs` as
//! modules), every `Env` starts its own `cairn serve` on an ephemeral 127.0.0.1 port with an
//! admin token, and `Env::cmd` passes `--server URL` (and `CAIRN_TOKEN`) instead of `--store`:
//! the same test bodies then check the command line against a server. The tests in
//! [`LOCAL_ONLY`] look at the store's files or run local-only commands; they get a local `Env`
//! there too (so they still run and assert, locally).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use serde_json::Value;

/// Whether this test binary is the remote rerun (`tests/cli_remote.rs`).
pub fn remote_target() -> bool {
    env!("CARGO_CRATE_NAME") == "cli_remote"
}

/// The tests that stay local in the remote rerun, each with the reason.
pub const LOCAL_ONLY: &[(&str, &str)] = &[
    (
        "store_comes_from_cairn_store_env_and_defaults_to_dot_cairn",
        "checks where a local store is created (CAIRN_STORE, ./.cairn)",
    ),
    (
        "demo_runs_twice_on_the_same_store",
        "`cairn demo` plays into a local store by design (refused with --server)",
    ),
    (
        "session_stats_match_what_the_test_recorded",
        "records counters through the library on the store folder (no CLI command writes them)",
    ),
    (
        "orphans_from_a_killed_bulk_put_are_reported_apart_and_verify_exits_0",
        "kills a bulk put mid-write and inspects the blob files left in the store folder",
    ),
    (
        "verify_finds_a_flipped_byte_and_repair_quarantines_it",
        "flips a byte in a blob file and checks the store's quarantine folder",
    ),
];

/// The running test's name (libtest names each test's thread after it), without module path.
fn test_name() -> String {
    let t = std::thread::current();
    let full = t.name().unwrap_or("");
    full.rsplit("::").next().unwrap_or(full).to_string()
}

/// A `cairn serve` started for one `Env`, stopped when the `Env` is dropped.
pub struct Server {
    pub url: String,
    pub token: String,
    /// The server's data folder (tokens.json, tenants/): outside the test's folder, so a test
    /// that stores its whole folder never meets the server's own files.
    pub data: PathBuf,
    child: Child,
    // Kept open so the server's later writes to stdout never hit a closed pipe.
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let data = dir.join("data");
        let out = Command::new(bin())
            .args([
                "--json", "token", "create", "--tenant", "cli", "--admin", "--data",
            ])
            .arg(&data)
            .env_remove("CAIRN_SERVER")
            .output()
            .expect("run cairn token create");
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("token JSON");
        let token = v["token"].as_str().expect("token").to_string();
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        let mut child = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .env_remove("CAIRN_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn cairn serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut url = String::new();
        stdout.read_line(&mut url).expect("read the server's URL");
        let url = url.trim().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "cairn serve printed {url:?}; log: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        Self {
            url,
            token,
            data,
            child,
            _stdout: stdout,
            _dir: tmp,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary folder with a store path inside it (the store itself is created by the CLI),
/// or in the remote rerun, a folder and a server.
pub struct Env {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = test_name();
        let local_only = LOCAL_ONLY.iter().any(|(t, _)| *t == name);
        let server = (remote_target() && !local_only).then(Server::start);
        Self { server, dir }
    }

    /// Whether commands go to a server (`--server`) rather than a local store.
    pub fn is_remote(&self) -> bool {
        self.server.is_some()
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        match &self.server {
            Some(srv) => {
                c.arg("--server")
                    .arg(&srv.url)
                    .env("CAIRN_TOKEN", &srv.token);
            }
            None => {
                c.arg("--store").arg(self.store()).env_remove("CAIRN_TOKEN");
            }
        }
        c.args(args)
            .env_remove("CAIRN_STORE")
            .env_remove("CAIRN_SERVER")
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
             directory replaced it?); rebuild with `touch src/main.rs && cargo test -p cairn-cli --test commands`"
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
