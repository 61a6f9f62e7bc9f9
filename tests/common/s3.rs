//! An S3-compatible server for the tests (feature `s3`): `moto` in server mode on 127.0.0.1.
//!
//! `CAIRN_S3_ENDPOINT` names a running server. Without it, the first test that asks starts
//! `moto_server` (from `CAIRN_MOTO_SERVER`, or `target/moto-venv`, which
//! `tests/services/s3.sh` installs) on a free loopback port for this test process, stopped by a
//! watchdog when the process ends. When no server can be had, the tests say so and skip, unless
//! `CAIRN_REQUIRE_S3=1` (CI), where that is a failure.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn::{Config, S3Config, Store};

/// The bucket every test uses (each test store has its own namespace inside it).
pub const BUCKET: &str = "cairn-test";

/// The endpoint of the test server, or `None` (with the reason printed) when there is none.
pub fn endpoint() -> Option<String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    match URL.get_or_init(start) {
        Ok(u) => Some(u.clone()),
        Err(why) => {
            if std::env::var("CAIRN_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("CAIRN_REQUIRE_S3=1 but no S3-compatible server could be had: {why}");
            }
            eprintln!(
                "SKIPPED: S3 tests need an S3-compatible server and none could be started: {why}"
            );
            None
        }
    }
}

/// The content configuration for the test server with the given GC grace period.
pub fn config_with(endpoint: &str, grace: Duration) -> S3Config {
    S3Config::new(BUCKET, "cairn")
        .endpoint(endpoint)
        .region("us-east-1")
        .credentials("testing", "testing")
        .gc_grace(grace)
        .retries(2, Duration::from_secs(20))
}

/// A store with PostgreSQL metadata and S3 content in fresh namespaces (GC grace 0), or
/// `None` when either server cannot be had.
pub fn pg_store(config: Config) -> Option<Store> {
    pg_store_with(config, Duration::ZERO).map(|(s, _)| s)
}

/// Like [`pg_store`] with a GC grace period; also returns the namespace (to open more handles
/// on the same store with [`open`]).
pub fn pg_store_with(config: Config, grace: Duration) -> Option<(Store, String)> {
    let ep = endpoint()?;
    let url = super::pg::url()?;
    let ns = super::pg::namespace();
    let s = Store::open_postgres_s3(&url, &ns, &config_with(&ep, grace), config)
        .expect("open a PostgreSQL + S3 store");
    Some((s, ns))
}

/// Another handle (own connections, own runtime: as another server would have) on the store
/// of namespace `ns`.
pub fn open(ns: &str, config: Config, grace: Duration) -> Store {
    let ep = endpoint().expect("endpoint");
    let url = super::pg::url().expect("pg");
    Store::open_postgres_s3(&url, ns, &config_with(&ep, grace), config).expect("open")
}

/// A namespace no other test of any process uses.
pub fn namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `moto_server` executable, if installed.
pub fn moto_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CAIRN_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let p = super::repo_root().join("target/moto-venv/bin/moto_server");
    p.is_file().then_some(p)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A moto server of our own on a free port, stopped when this process ends. Returns its
/// endpoint and the process id of the server (for fault injection: stop it, start another on
/// the same port with [`start_moto_on`]).
pub fn start_moto() -> Result<(String, u16), String> {
    let port = free_port()?;
    start_moto_on(port).map(|ep| (ep, port))
}

/// Starts moto on `port` (with a watchdog), creates the test bucket, returns the endpoint.
pub fn start_moto_on(port: u16) -> Result<String, String> {
    let bin = moto_server().ok_or(
        "moto_server not found (run tests/services/s3.sh, or set CAIRN_MOTO_SERVER or \
         CAIRN_S3_ENDPOINT)",
    )?;
    let me = std::process::id();
    let log = std::env::temp_dir().join(format!("cairn-moto-{me}-{port}.log"));
    let pidfile = pid_file(port);
    let script = format!(
        "'{}' -H 127.0.0.1 -p {port} >'{}' 2>&1 & pid=$!; echo $pid >'{}'; \
         while [ -d /proc/{me} ] && kill -0 $pid 2>/dev/null; do sleep 1; done; \
         kill $pid 2>/dev/null; wait $pid",
        bin.display(),
        log.display(),
        pidfile.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting moto_server: {e}"))?;
    let ep = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http(port, "PUT", &format!("/{BUCKET}")) {
            Ok(status) if status < 300 || status == 409 => return Ok(ep),
            Ok(status) => return Err(format!("creating bucket {BUCKET}: HTTP {status}")),
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "moto did not answer on {ep} in 60 s: {e}; log: {log}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn pid_file(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("cairn-moto-{}-{port}.pid", std::process::id()))
}

/// Stops the moto server this process started on `port` (fault injection), by its process id.
pub fn stop_moto_on(port: u16) {
    let pid = std::fs::read_to_string(pid_file(port)).unwrap_or_default();
    let pid = pid.trim();
    assert!(
        !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()),
        "no moto pid recorded for port {port}"
    );
    let _ = Command::new("kill").arg(pid).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes an object straight into the test bucket (moto takes unsigned requests): `key` is
/// relative to the bucket. Returns the HTTP status.
pub fn put_object(endpoint: &str, key: &str, body: &[u8]) -> u16 {
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("endpoint with a port");
    http_body(port, "PUT", &format!("/{BUCKET}/{key}"), body).expect("PUT object")
}

/// Keys of the test bucket under `prefix` (first 1,000), straight from the server.
pub fn list_keys(endpoint: &str, prefix: &str) -> Vec<String> {
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("endpoint with a port");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET /{BUCKET}?list-type=2&prefix={prefix} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text.split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

/// One bodiless HTTP/1.1 request; returns the status code.
fn http(port: u16, method: &str, path: &str) -> Result<u16, String> {
    http_body(port, method, path, b"")
}

fn http_body(port: u16, method: &str, path: &str, body: &[u8]) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .map_err(|e| format!("bad HTTP status line: {e}"))
}

fn start() -> Result<String, String> {
    if let Ok(u) = std::env::var("CAIRN_S3_ENDPOINT") {
        return Ok(u);
    }
    start_moto().map(|(ep, _)| ep)
}
