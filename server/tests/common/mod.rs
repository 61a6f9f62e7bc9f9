//! A real server on 127.0.0.1 (ephemeral port) and a real HTTP client (ureq), for the tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use cairn_server::{RunningServer, ServerConfig};
use serde_json::Value;
use ureq::http::{self, HeaderMap};
use ureq::Agent;

/// A running server with its data folder.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl TestServer {
    /// A server with default limits on a fresh data folder (open mode until a token exists).
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A server whose configuration `f` may change (limits) before it starts.
    pub fn start_with(f: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, f)
    }

    /// A server on an existing data folder.
    pub fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut c = ServerConfig::new(dir.path());
        f(&mut c);
        let server = cairn_server::spawn(c).unwrap();
        let url = server.url();
        Self {
            server: Some(server),
            dir,
            url,
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Makes a token on this server's data folder.
    pub fn token(&self, tenant: &str, admin: bool, read_only: bool) -> String {
        cairn_server::auth::create_token(self.data(), tenant, admin, read_only)
            .unwrap()
            .0
    }

    /// A client with no token.
    pub fn anon(&self) -> Client {
        Client::new(&self.url, None)
    }

    /// A client with `token`.
    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.url, Some(token.to_string()))
    }

    /// Graceful shutdown; returns the data folder for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().unwrap();
        }
        self.dir
    }
}

/// A response: status, headers, body bytes.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The error code of an error response, checking the shape on the way.
    pub fn code(&self) -> String {
        let v = self.json();
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("not an error: {v}"));
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        e["code"].as_str().unwrap().to_string()
    }
}

/// An HTTP client for one server and (maybe) one token.
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    agent: Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Self {
            base: base.to_string(),
            token,
            agent,
        }
    }

    fn builder(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> http::request::Builder {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b
    }

    fn finish(&self, r: Result<http::Response<ureq::Body>, ureq::Error>) -> Resp {
        let mut r = r.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let mut body = Vec::new();
        r.body_mut().as_reader().read_to_end(&mut body).unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A request without a body.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let req = self.builder(method, path, headers).body(()).unwrap();
        self.finish(self.agent.run(req))
    }

    /// A request with a JSON body.
    pub fn json(&self, method: &str, path: &str, body: &Value) -> Resp {
        let req = self
            .builder(method, path, &[("content-type", "application/json")])
            .body(serde_json::to_vec(body).unwrap())
            .unwrap();
        self.finish(self.agent.run(req))
    }

    /// A request with a raw body; `None` when the connection failed (server gone).
    pub fn try_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Option<Resp> {
        let req = self.builder(method, path, headers).body(body).unwrap();
        let r = self.agent.run(req).ok()?;
        let mut r = r;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let mut body = Vec::new();
        r.body_mut().as_reader().read_to_end(&mut body).ok()?;
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    /// A request with a raw body.
    pub fn bytes(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let req = self.builder(method, path, headers).body(body).unwrap();
        self.finish(self.agent.run(req))
    }

    /// A request whose body streams from `reader` (chunked).
    pub fn stream(&self, method: &str, path: &str, reader: impl Read + 'static) -> Resp {
        let req = self
            .builder(method, path, &[])
            .body(ureq::SendBody::from_owned_reader(reader))
            .unwrap();
        self.finish(self.agent.run(req))
    }

    /// A GET whose body is handed to `f` as a reader (for large downloads).
    pub fn get_reader<T>(&self, path: &str, f: impl FnOnce(u16, &mut dyn Read) -> T) -> T {
        let req = self.builder("GET", path, &[]).body(()).unwrap();
        let mut r = self.agent.run(req).unwrap();
        let status = r.status().as_u16();
        let mut reader = r.body_mut().as_reader();
        f(status, &mut reader)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.json("POST", path, body)
    }

    /// Creates a session and returns its id.
    pub fn session(&self, body: &Value) -> String {
        let r = self.post("/v1/sessions", body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// Stores `bytes` as `name` (kind tool_result) and returns the artifact.
    pub fn put(&self, session: &str, name: &str, bytes: &[u8]) -> Value {
        let r = self.bytes(
            "PUT",
            &format!("/v1/sessions/{session}/artifacts/{name}?kind=tool_result"),
            &[],
            bytes.to_vec(),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }
}

/// Starts `cmd` (a `cairn serve ...` command line) with its stdout piped and its stderr
/// dropped, and returns the process and the URL its first stdout line announces.
pub fn spawn_serve(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cannot start cairn serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the first line of cairn serve");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL on the first stdout line: {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (child, url)
}

/// The `cairn` binary for the tests that run real server processes (`CAIRN_BIN` when set, as
/// `.ci/run` sets it; otherwise built once with `cargo build -p cairn-cli` beside this test
/// binary): target/debug/deps/server-HASH -> target/debug/cairn.
pub fn cairn_bin() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("CAIRN_BIN") {
            return std::path::PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", "cairn-cli", "--bin", "cairn"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("cannot run cargo to build the cairn binary");
        assert!(status.success(), "building the cairn binary failed");
        let exe = std::env::current_exe().expect("the test binary's own path");
        let bin = exe
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the test binary sits in target/<profile>/deps")
            .join(format!("cairn{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "no cairn binary at {}", bin.display());
        bin
    })
    .clone()
}
