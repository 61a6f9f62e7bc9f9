//! `cairn serve --metadata postgres://... --content s3://bucket/prefix`: two servers on one
//! PostgreSQL and one bucket (moto, started on 127.0.0.1 by the tests): content put through one
//! is stored once as an object and reads back, verified, from the other; and a put larger than
//! the old 256 MiB cap through a real `cairn serve` process, in bounded memory.
#![cfg(all(feature = "postgres", feature = "s3"))]

use crate::common;
use crate::pg;
use crate::s3;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use cairn_server::state::tenant_namespace;
use cairn_server::ServerConfig;
use common::TestServer;
use serde_json::json;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn two_servers_share_content_on_one_bucket() {
    let Some(url) = pg::url() else { return };
    let Some(ep) = s3::endpoint() else { return };
    let ns = tenant_namespace("default");
    cairn::PostgresBackend::connect(&url, &ns)
        .unwrap()
        .drop_namespace()
        .unwrap();
    let prefix = format!("srv{}", std::process::id());
    let content = cairn::S3Config::new(s3::BUCKET, &prefix)
        .endpoint(&ep)
        .credentials("testing", "testing")
        .gc_grace(Duration::from_secs(3600));
    let servers: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::start_with(|c| {
                c.metadata = Some(url.clone());
                c.content = Some(content.clone());
            })
        })
        .collect();
    let s = servers[0].anon().session(&json!({"name": "shared"}));
    // Above the 64 KiB inline threshold and incompressible: an object each.
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| noise(100_000, i)).collect();
    let mut ids = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let a = servers[i % 2].anon().put(&s, &format!("f{i}.bin"), b);
        ids.push(a["id"].as_str().unwrap().to_string());
    }
    // The same content again through the other server: deduplicated, no new object.
    servers[1].anon().put(&s, "again.bin", &bodies[0]);
    let keys = s3::list_keys(&ep, &format!("{prefix}/{ns}/blobs/"));
    assert_eq!(keys.len(), 4, "{keys:?}");
    for (i, id) in ids.iter().enumerate() {
        let r = servers[(i + 1) % 2]
            .anon()
            .get(&format!("/v1/artifacts/{id}/content"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, bodies[i]);
    }
}

#[test]
fn content_on_s3_without_postgres_metadata_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ServerConfig::new(dir.path());
    c.content = Some(cairn::S3Config::new("b", "p"));
    let e = cairn_server::spawn(c).err().unwrap();
    assert!(e.contains("--metadata"), "{e}");
}

/// A database of its own on the test server (the tests of this file run at once).
fn fresh_db(url: &str, name: &str) -> String {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// Kills the server process when the test ends, whatever happened.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmHWM` (peak resident set) of a process, in bytes, from `/proc/<pid>/status`.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad VmHWM line {line:?}"));
    kib << 10
}

/// `len` incompressible bytes (xorshift), produced as they are read: the test never holds
/// them either.
struct Noise {
    x: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte per step, so the bytes do not depend on how the reader is called.
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = self.x as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Above the 256 MiB that a put on a shared engine used to be capped at (and held in memory).
const BIG: u64 = (256 << 20) + (8 << 20) + 4321;
/// The bound on the server's peak resident memory over the whole put and read back: three
/// quarters of the content. Generous (streaming needs a few 8 MiB buffers; the debug build's
/// allocator keeps some per thread), and still below what holding the content once would take.
const RSS_BOUND: u64 = BIG / 4 * 3;

#[test]
fn a_put_above_the_old_cap_streams_through_a_real_server_in_bounded_memory() {
    let Some(url) = pg::url() else { return };
    let Some(ep) = s3::endpoint() else { return };
    let db = fresh_db(&url, &format!("big_{}", std::process::id()));
    let data = tempfile::tempdir().unwrap();
    let prefix = format!("big{}", std::process::id());
    let (child, base) = common::spawn_serve(
        Command::new(common::cairn_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--open-admin", "--data"])
            .arg(data.path())
            .args(["--metadata", &db])
            .args(["--content", &format!("s3://{}/{prefix}", s3::BUCKET)])
            .env("AWS_ENDPOINT_URL", &ep)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1"),
    );
    let pid = child.id();
    let _server = Killed(child);
    let c = common::Client::new(&base, None);
    let s = c.session(&json!({"name": "big"}));
    let before = peak_rss(pid);
    let seed = 0x5EED_u64;
    let mut expect = blake3::Hasher::new();
    std::io::copy(&mut Noise { x: seed, left: BIG }, &mut expect).unwrap();
    let expect = cairn::ContentHash::from_bytes(*expect.finalize().as_bytes());
    let r = c.stream(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/big.bin?kind=tool_result"),
        Noise { x: seed, left: BIG },
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let a = r.json();
    assert_eq!(a["size"].as_u64(), Some(BIG), "{a}");
    assert_eq!(a["hash"].as_str(), Some(expect.to_hex().as_str()), "{a}");
    let after_put = peak_rss(pid);
    // One object in the bucket; nothing left in the spool folder.
    let ns = tenant_namespace("default");
    let keys = s3::list_keys(&ep, &format!("{prefix}/{ns}/blobs/"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    let spooled: Vec<_> = walk(&data.path().join("spool"));
    assert!(spooled.is_empty(), "spool files left: {spooled:?}");
    // Read back in full through the server (streamed, verified on the way), hashed here.
    let id = a["id"].as_str().unwrap().to_string();
    let (status, got, n) = c.get_reader(&format!("/v1/artifacts/{id}/content"), |st, r| {
        let mut h = blake3::Hasher::new();
        let n = std::io::copy(r, &mut h).unwrap();
        (
            st,
            cairn::ContentHash::from_bytes(*h.finalize().as_bytes()),
            n,
        )
    });
    assert_eq!((status, n, got), (200, BIG, expect));
    let peak = peak_rss(pid);
    eprintln!(
        "server peak RSS: {} MiB before the put, {} MiB after it, {} MiB after the read \
         (content {} MiB)",
        before >> 20,
        after_put >> 20,
        peak >> 20,
        BIG >> 20
    );
    assert!(
        peak < RSS_BOUND,
        "the server's peak RSS was {peak} bytes for a {BIG}-byte put and read: content is \
         held in memory"
    );
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
