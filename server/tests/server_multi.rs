//! Many stateless servers: three `cairn serve` processes (the binary cargo built) on one
//! PostgreSQL (a private server on 127.0.0.1, tests/common/pg.rs) and one content location,
//! 32 concurrent clients (threads with a real HTTP client) spread over them, writing the same
//! names and the same content, with GC runs during the load and one server killed with
//! SIGKILL mid-load. Afterwards: versions gapless per name, reference counts exact (verify and
//! stats), every acknowledged artifact reads back with its hash, and the token commands work
//! against the shared database (`cairn token create|revoke --metadata`).
//!
//! It runs twice, once per content location: in PostgreSQL with the records (the servers'
//! default for `--metadata postgres://`), and on an S3-compatible server (`--content s3://`,
//! moto on 127.0.0.1, tests/common/s3.rs) with a GC grace period of 0, so that the GC runs
//! during the load list the objects of puts in flight as orphans and may delete them at once.
#![cfg(feature = "postgres")]

use crate::common;
use crate::pg;
#[cfg(feature = "s3")]
use crate::s3;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Client;
use serde_json::{json, Value};

/// Servers on the one database.
const SERVERS: usize = 3;
/// Concurrent clients.
const CLIENTS: usize = 32;
/// Acknowledged puts each client makes (retrying refused or cut ones).
const PUTS: usize = 5;
/// Names every client writes (the same few names, so versions race).
const NAMES: usize = 4;
/// Distinct contents (the same content from many clients, so dedup races too).
const CONTENTS: usize = 6;
/// Acknowledged puts before the kill.
const KILL_AFTER: usize = 40;
/// Attempts per put before the test gives up (a hang guard, not a timing assertion).
const ATTEMPTS: usize = 400;

/// A database of its own on the test server (`tag`: one per test of this process).
fn fresh_db(tag: &str) -> Option<String> {
    let url = pg::url()?;
    let name = format!("multi_{tag}_{}", std::process::id());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// Where the servers keep content.
enum Content {
    /// In PostgreSQL with the records (no `--content`).
    Postgres,
    /// On the S3-compatible server at this endpoint, under this key prefix.
    S3 { endpoint: String, prefix: String },
}

impl Content {
    /// The `cairn serve` flags and environment for this location.
    fn apply(&self, cmd: &mut Command) {
        if let Content::S3 { endpoint, prefix } = self {
            cmd.args(["--content", &format!("s3://cairn-test/{prefix}")])
                .args(["--gc-grace", "0s"])
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", "us-east-1");
        }
    }

    /// Bytes of each content: above the 64 KiB inline threshold on S3 (an object each),
    /// 4 KiB in PostgreSQL.
    fn size(&self) -> usize {
        match self {
            Content::Postgres => 4096,
            Content::S3 { .. } => 80 << 10,
        }
    }
}

/// Starts `cairn serve` on `db`; returns the process and its URL (first stdout line).
fn serve(bin: &Path, data: &Path, db: &str, content: &Content) -> (Child, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--open-admin", "--data"])
        .arg(data)
        .args(["--metadata", db]);
    content.apply(&mut cmd);
    common::spawn_serve(&mut cmd)
}

/// Content number `i`: `len` incompressible bytes, distinct per `i`.
fn content(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One acknowledged put.
#[derive(Clone, Debug)]
struct Ack {
    name: String,
    version: u64,
    id: String,
    hash: String,
    content: usize,
}

/// Kills the servers still running when the test ends, whatever happened.
struct Servers(Vec<Child>);
impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn three_servers_32_clients_gc_and_a_kill_9_lose_nothing_acknowledged() {
    let Some(db) = fresh_db("pg") else { return };
    run(&db, &Content::Postgres);
}

/// The same with the content on S3 (the servers' `--content s3://`).
#[cfg(feature = "s3")]
#[test]
fn three_servers_32_clients_gc_and_a_kill_9_lose_nothing_acknowledged_on_s3() {
    let Some(db) = fresh_db("s3") else { return };
    let Some(endpoint) = s3::endpoint() else {
        return;
    };
    let prefix = format!("multi{}", std::process::id());
    let content = Content::S3 {
        endpoint: endpoint.clone(),
        prefix: prefix.clone(),
    };
    run(&db, &content);
    // The content went to objects: one per distinct content, none left over.
    let keys = s3::list_keys(&endpoint, &format!("{prefix}/"));
    assert_eq!(keys.len(), CONTENTS, "{keys:?}");
}

fn run(db: &str, content_at: &Content) {
    let db = db.to_string();
    let len = content_at.size();
    let bin = common::cairn_bin();
    let dirs: Vec<tempfile::TempDir> = (0..SERVERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut urls = Vec::new();
    let mut children = Servers(Vec::new());
    for d in &dirs {
        let (c, u) = serve(&bin, d.path(), &db, content_at);
        children.0.push(c);
        urls.push(u);
    }
    let session = Client::new(&urls[0], None).session(&json!({"name": "multi"}));
    let victim = SERVERS - 1;
    let killed = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let workers: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (urls, session) = (urls.clone(), session.clone());
            let (acked, count, retried, killed) = (
                acked.clone(),
                count.clone(),
                retried.clone(),
                killed.clone(),
            );
            std::thread::spawn(move || {
                let mut at = k % SERVERS;
                for i in 0..PUTS {
                    let name = format!("n{}", (k + i) % NAMES);
                    let c_no = (k * 7 + i) % CONTENTS;
                    let body = content(c_no, len);
                    let path = format!("/v1/sessions/{session}/artifacts/{name}?kind=tool_result");
                    let mut done = false;
                    for _ in 0..ATTEMPTS {
                        let c = Client::new(&urls[at], None);
                        match c.try_bytes("PUT", &path, &[], body.clone()) {
                            // Refused or cut: that server is gone; go to another one.
                            None => {
                                assert!(
                                    killed.load(Ordering::SeqCst) && at == victim,
                                    "server {at} failed a request without being killed"
                                );
                                at = (at + 1) % SERVERS;
                                retried.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(r) if r.status == 201 => {
                                let v = r.json();
                                acked.lock().unwrap().push(Ack {
                                    name: name.clone(),
                                    version: v["version"].as_u64().unwrap(),
                                    id: v["id"].as_str().unwrap().to_string(),
                                    hash: v["hash"].as_str().unwrap().to_string(),
                                    content: c_no,
                                });
                                count.fetch_add(1, Ordering::SeqCst);
                                done = true;
                                break;
                            }
                            // A write that kept losing races: a clear, retryable answer.
                            Some(r) if r.status == 503 => {
                                assert!(r.header("retry-after").is_some());
                                let code = r.code();
                                assert!(
                                    ["write_conflict", "overloaded", "unavailable"]
                                        .contains(&code.as_str()),
                                    "{code}"
                                );
                                retried.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(5 + (k as u64 % 7) * 5));
                            }
                            Some(r) => panic!(
                                "PUT on server {at} answered {}: {}",
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            ),
                        }
                    }
                    assert!(done, "client {k} put {i} never succeeded");
                }
            })
        })
        .collect();

    // GC on two servers during the load: content just written is never taken.
    let gc = {
        let urls = urls.clone();
        let count = count.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while count.load(Ordering::SeqCst) < CLIENTS * PUTS && runs < 20 {
                let r = Client::new(&urls[runs % 2], None).post("/v1/admin/gc", &json!({}));
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                runs += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            runs
        })
    };

    // Kill -9 one server mid-load.
    while count.load(Ordering::SeqCst) < KILL_AFTER && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.store(true, Ordering::SeqCst);
    children.0[victim].kill().unwrap();
    children.0[victim].wait().unwrap();
    let at_kill = count.load(Ordering::SeqCst);

    for w in workers {
        w.join().expect("a client failed");
    }
    let gc_runs = gc.join().expect("gc failed");
    assert!(gc_runs > 0);
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        CLIENTS * PUTS,
        "every put acknowledged in the end"
    );
    assert!(
        at_kill < CLIENTS * PUTS,
        "the kill happened mid-load ({at_kill} acknowledged before it)"
    );
    eprintln!(
        "{} puts acknowledged, {} retries, {gc_runs} gc runs, kill after {at_kill}, {:?}",
        acked.len(),
        retried.load(Ordering::Relaxed),
        started.elapsed()
    );

    // The survivors answer for everything.
    let a = Client::new(&urls[0], None);
    let b = Client::new(&urls[1], None);
    let mut stored_total = 0u64;
    let mut hashes = BTreeSet::new();
    let by_id: HashMap<&str, &Ack> = acked.iter().map(|x| (x.id.as_str(), x)).collect();
    assert_eq!(by_id.len(), acked.len(), "artifact ids are unique");
    for n in 0..NAMES {
        let name = format!("n{n}");
        let r = a.get(&format!("/v1/sessions/{session}/artifacts/{name}/versions"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let versions: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        let mut got: Vec<u64> = versions
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        got.sort_unstable();
        let want: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(got, want, "versions of {name} gapless and unique");
        let mut mine: BTreeMap<u64, &Ack> = BTreeMap::new();
        for x in acked.iter().filter(|x| x.name == name) {
            assert!(
                mine.insert(x.version, x).is_none(),
                "{name} v{} acknowledged twice",
                x.version
            );
        }
        for v in &versions {
            let id = v["id"].as_str().unwrap();
            let ver = v["version"].as_u64().unwrap();
            if let Some(x) = mine.get(&ver) {
                assert_eq!(x.id, id, "{name} v{ver} is the acknowledged artifact");
            }
            hashes.insert(v["hash"].as_str().unwrap().to_string());
        }
        stored_total += versions.len() as u64;
        assert!(mine.len() as u64 <= stored_total);
    }
    // Every acknowledged artifact reads back, hash-verified, through another server.
    for x in &acked {
        let r = b.get(&format!("/v1/artifacts/{}/content", x.id));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, content(x.content, len), "{} v{}", x.name, x.version);
        assert_eq!(blake3::hash(&r.body).to_hex().as_str(), x.hash);
    }
    // Reference counts exact: verify finds nothing, stats count each content once.
    let v = a.post("/v1/admin/verify", &json!({})).json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    let s = b.get("/v1/admin/stats").json();
    assert_eq!(s["artifacts"].as_u64(), Some(stored_total), "{s}");
    assert_eq!(s["blobs"].as_u64(), Some(hashes.len() as u64), "{s}");

    // Tokens through the shared database: made by the CLI, honoured by a running server,
    // revoked by the CLI, refused at once.
    let out = Command::new(&bin)
        .args([
            "--json",
            "token",
            "create",
            "--tenant",
            "acme",
            "--metadata",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tok = made["token"].as_str().unwrap().to_string();
    let c = Client::new(&urls[1], Some(tok.clone()));
    assert_eq!(c.post("/v1/sessions", &json!({})).status, 201);
    assert_eq!(a.get("/v1/sessions").status, 401, "open mode ends");
    let out = Command::new(&bin)
        .args(["--json", "token", "list", "--metadata", &db])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let out = Command::new(&bin)
        .args([
            "token",
            "revoke",
            made["id"].as_str().unwrap(),
            "--metadata",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = Client::new(&urls[0], Some(tok)).get("/v1/sessions");
    assert_eq!(r.status, 401);
}
