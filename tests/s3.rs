//! Content on an S3-compatible object store (moto on 127.0.0.1) with metadata on PostgreSQL
//! (issue 15): put, dedup, verified reads, range and partial reads, multipart uploads, GC with
//! a grace period across store handles, and an object store that fails mid-test.
#![cfg(all(feature = "postgres", feature = "s3"))]

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn::{
    ArtifactKind, Config, Error, NewArtifact, NewSession, Part, PartContent, S3Config, Store,
};

/// Content of at least 1 KiB encoded goes to the object store; never inline-only.
fn config() -> Config {
    Config {
        inline_threshold: 1024,
        ..Config::default()
    }
}

fn art(name: &str) -> NewArtifact {
    NewArtifact::new(ArtifactKind::ToolResult, name)
}

/// Bytes zstd cannot shrink (stored raw), deterministic per seed.
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

/// Text lines, compressible, numbered so that every range is distinct.
fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("line {i:06} of a tool's output, with some repeated words\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn put_read_dedup_and_verify_on_postgres_and_s3() {
    let Some((s, ns)) = common::s3::pg_store_with(config(), Duration::ZERO) else {
        return;
    };
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let big = noise(300_000, 1);
    let a = s.put(sid, art("a"), &big).unwrap();
    let b = s.put(sid, art("b"), &big).unwrap();
    let small = s.put(sid, art("small"), b"tiny, inline").unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(s.read(sid, a.id).unwrap(), big);
    assert_eq!(s.read(sid, small.id).unwrap(), b"tiny, inline");
    let st = s.stats().unwrap();
    assert_eq!(
        (st.artifacts, st.blobs),
        (3, 2),
        "one blob for two artifacts"
    );
    // Another handle (its own connections and runtime, as another server) sees the same.
    let other = common::s3::open(&ns, config(), Duration::ZERO);
    assert_eq!(other.read(sid, b.id).unwrap(), big);
    let mut r = other.open_reader(sid, a.id).unwrap();
    let mut streamed = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut streamed).unwrap();
    assert_eq!(streamed, big);
    assert_eq!(
        other.read_range(sid, a.id, 1000, 5000).unwrap(),
        big[1000..6000]
    );
    let v = s.verify().unwrap();
    assert!(v.ok, "{:?}", v.problems);
    assert_eq!(v.blobs_checked, 2);
    // The same content put from the other handle is deduplicated against the object.
    let c = other.put(sid, art("c"), &big).unwrap();
    assert_eq!(c.hash, a.hash);
    assert_eq!(s.stats().unwrap().blobs, 2);
}

#[test]
fn partial_reads_fetch_frames_of_a_seekable_object() {
    let cfg = Config {
        seekable_threshold: Config::ALWAYS_SEEKABLE,
        seekable_frame_size: 4096,
        compression_threshold: Config::ALWAYS_COMPRESS,
        ..config()
    };
    let Some(s) = common::s3::pg_store(cfg) else {
        return;
    };
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let text = lines(20_000);
    let a = s.put(sid, art("log"), &text).unwrap();
    let got = s
        .read_part(
            sid,
            a.id,
            &Part::Bytes {
                offset: 500_000,
                len: 100,
            },
        )
        .unwrap();
    let PartContent::Bytes { data, .. } = &got.content else {
        panic!("{:?}", got.content)
    };
    assert_eq!(data.bytes().unwrap(), text[500_000..500_100]);
    let tail = s.read_part(sid, a.id, &Part::Tail { lines: 2 }).unwrap();
    let PartContent::Lines { lines, .. } = &tail.content else {
        panic!("{:?}", tail.content)
    };
    assert_eq!(lines.len(), 2);
    assert!(format!("{lines:?}").contains("line 019999"), "{lines:?}");
    assert_eq!(s.read(sid, a.id).unwrap(), text);
}

#[test]
fn large_content_goes_up_in_parts_and_reads_back() {
    let Some(s) = common::s3::pg_store(config()) else {
        return;
    };
    let sid = s.create_session(NewSession::new()).unwrap().id;
    // Above the 8 MiB multipart threshold, incompressible: a three-part upload.
    let big = noise((17 << 20) + 123, 7);
    let a = s.put(sid, art("big"), &big).unwrap();
    assert_eq!(a.size, big.len() as u64);
    assert_eq!(s.read(sid, a.id).unwrap(), big);
    assert_eq!(
        s.read_range(sid, a.id, 16 << 20, 1000).unwrap(),
        big[16 << 20..(16 << 20) + 1000]
    );
    // Putting it again is one object: dedup, and an existing object is not uploaded twice.
    let b = s.put(sid, art("big2"), &big).unwrap();
    assert_eq!(b.hash, a.hash);
    assert_eq!(s.stats().unwrap().blobs, 1);
    assert!(s.verify().unwrap().ok);
}

#[test]
fn gc_waits_for_the_grace_period_and_then_deletes_the_object() {
    let Some((s, ns)) = common::s3::pg_store_with(config(), Duration::from_secs(3600)) else {
        return;
    };
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let content = noise(50_000, 3);
    let a = s.put(sid, art("a"), &content).unwrap();
    s.delete_artifact(sid, a.id).unwrap();
    // Within the grace period: nothing is deleted.
    let r = s.gc().unwrap();
    assert_eq!(r.blobs_removed, 0);
    assert_eq!(s.garbage_count().unwrap(), 1);
    // A put of the same content takes the blob back from the garbage list (no upload).
    let b = s.put(sid, art("b"), &content).unwrap();
    assert_eq!(s.garbage_count().unwrap(), 0);
    assert_eq!(s.read(sid, b.id).unwrap(), content);
    s.delete_artifact(sid, b.id).unwrap();
    // A handle with no grace period deletes it: object and record.
    let now = common::s3::open(&ns, config(), Duration::ZERO);
    let r = now.gc().unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert_eq!(r.bytes_freed, content.len() as u64);
    assert_eq!(
        (now.garbage_count().unwrap(), now.stats().unwrap().blobs),
        (0, 0)
    );
    // The same content put again is uploaded again and reads back.
    let c = now.put(sid, art("c"), &content).unwrap();
    assert_eq!(s.read(sid, c.id).unwrap(), content);
    assert!(s.verify().unwrap().ok);
}

#[test]
fn orphan_objects_are_listed_then_deleted_unless_a_put_claims_them() {
    let Some(ep) = common::s3::endpoint() else {
        return;
    };
    let Some((s, ns)) = common::s3::pg_store_with(config(), Duration::ZERO) else {
        return;
    };
    let sid = s.create_session(NewSession::new()).unwrap().id;
    // Two objects whose puts never committed (a server that crashed after its upload).
    let (x, y) = (noise(40_000, 11), noise(40_000, 12));
    for c in [&x, &y] {
        let hex = cairn::ContentHash::of(c).to_hex();
        let key = format!("cairn/{ns}/blobs/{}/{hex}.raw", &hex[..2]);
        assert!(common::s3::put_object(&ep, &key, c) < 300);
    }
    assert_eq!(s.stats().unwrap().blobs, 0);
    // First GC lists them as garbage; a put claims y before the second GC.
    let r = s.gc().unwrap();
    assert_eq!(r.orphan_files_removed, 0);
    assert_eq!(s.garbage_count().unwrap(), 2);
    let ya = s.put(sid, art("y"), &y).unwrap();
    assert_eq!(s.garbage_count().unwrap(), 1);
    let r = s.gc().unwrap();
    assert_eq!(r.orphan_files_removed, 1, "x only");
    assert_eq!(s.read(sid, ya.id).unwrap(), y);
    assert_eq!(s.garbage_count().unwrap(), 0);
}

#[test]
fn a_put_racing_gc_on_another_handle_never_loses_content() {
    let Some((writer, ns)) = common::s3::pg_store_with(config(), Duration::ZERO) else {
        return;
    };
    let collector = common::s3::open(&ns, config(), Duration::ZERO);
    let sid = writer.create_session(NewSession::new()).unwrap().id;
    let contents: Vec<Vec<u8>> = (0..3).map(|i| noise(20_000, 100 + i)).collect();
    let done = AtomicBool::new(false);
    let kept = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            let mut runs = 0u32;
            while !done.load(Ordering::Relaxed) {
                collector.gc().unwrap();
                runs += 1;
            }
            runs
        });
        let mut kept = Vec::new();
        for i in 0..60usize {
            let content = &contents[i % 3];
            let a = writer
                .put(sid, art(&format!("n{}", i % 3)), content)
                .unwrap();
            if i % 2 == 0 {
                writer.delete_artifact(sid, a.id).unwrap(); // garbage for the collector
            } else {
                kept.push((a.id, i % 3));
            }
        }
        done.store(true, Ordering::Relaxed);
        assert!(gc.join().unwrap() > 0);
        kept
    });
    collector.gc().unwrap();
    for (id, c) in &kept {
        assert_eq!(&writer.read(sid, *id).unwrap(), &contents[*c], "{id}");
    }
    let v = collector.verify().unwrap();
    assert!(v.ok, "{:?}", v.problems);
}

#[test]
fn an_object_store_that_fails_gives_a_clear_error_and_keeps_nothing() {
    let Some(url) = common::pg::url() else { return };
    if common::s3::endpoint().is_none() {
        return;
    }
    // A moto server of this test's own, stopped mid-test.
    let (ep, port) = common::s3::start_moto().expect("start moto");
    let ns = common::pg::namespace();
    let content = S3Config::new(common::s3::BUCKET, "cairn")
        .endpoint(&ep)
        .credentials("testing", "testing")
        .retries(1, Duration::from_secs(3));
    let s = Store::open_postgres_s3(&url, &ns, &content, config()).unwrap();
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let before = s.put(sid, art("before"), noise(10_000, 1)).unwrap();
    common::s3::stop_moto_on(port);
    let e = s.put(sid, art("during"), noise(10_000, 2)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(
        msg.contains("object store") && msg.contains("try again"),
        "{msg}"
    );
    // Nothing of the failed put is recorded.
    assert_eq!(s.stats().unwrap().artifacts, 1);
    assert!(s.versions(sid, "during").unwrap().is_empty());
    // Reads of content on the stopped server fail clearly, never with empty bytes.
    let re = s.read(sid, before.id).unwrap_err().to_string();
    assert!(re.contains("object store"), "{re}");
    // The server comes back (empty: moto keeps objects in memory): the client retries.
    common::s3::start_moto_on(port).expect("restart moto");
    let again = s.put(sid, art("during"), noise(10_000, 2)).unwrap();
    assert_eq!(s.read(sid, again.id).unwrap(), noise(10_000, 2));
}

/// An object store that accepts connections and never answers (a hung server): a put fails
/// after the request timeout and its retries with a clear error, and records nothing.
#[test]
fn an_object_store_that_hangs_times_out_with_a_clear_error_and_keeps_nothing() {
    let Some(url) = common::pg::url() else { return };
    if common::s3::endpoint().is_none() {
        return;
    }
    // A listener on 127.0.0.1 that takes every connection and holds it, silent, until the
    // test ends (bounded: it stops after 64 connections or when the test drops `stop`).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while held.len() < 64 {
            match listener.accept() {
                Ok((c, _)) => held.push(c),
                Err(_) => break,
            }
            // Stop once the test has dropped its end of the channel.
            if stopped.try_recv() != Err(std::sync::mpsc::TryRecvError::Empty) {
                break;
            }
        }
        held.len()
    });
    let ns = common::pg::namespace();
    let content = S3Config::new(common::s3::BUCKET, "cairn")
        .endpoint(format!("http://{addr}"))
        .credentials("testing", "testing")
        .request_timeout(Duration::from_millis(300))
        .retries(1, Duration::from_secs(2));
    let s = Store::open_postgres_s3(&url, &ns, &content, config()).unwrap();
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let e = s.put(sid, art("hung"), noise(10_000, 3)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(
        msg.contains("object store") && msg.contains("try again"),
        "{msg}"
    );
    // Nothing of the failed put is recorded; small content (inline) still works.
    assert_eq!(s.stats().unwrap().artifacts, 0);
    assert!(s.versions(sid, "hung").unwrap().is_empty());
    let small = s.put(sid, art("small"), b"fits inline").unwrap();
    assert_eq!(s.read(sid, small.id).unwrap(), b"fits inline");
    drop(stop);
    // Wake the holder so it sees the closed channel.
    let _ = std::net::TcpStream::connect(addr);
    assert!(
        holder.join().unwrap() >= 1,
        "the store reached the hung server"
    );
}

/// A signed S3 client of the test bucket (moto refuses unsigned overwrites and deletes), to
/// damage objects behind the store's back.
struct Bucket {
    store: object_store::aws::AmazonS3,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(endpoint: &str) -> Self {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(common::s3::BUCKET)
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self { store, rt }
    }

    /// Overwrites (or creates) `key` with `body`.
    fn put(&self, key: &str, body: &[u8]) {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(key);
        let payload = object_store::PutPayload::from(body.to_vec());
        self.rt
            .block_on(self.store.put(&path, payload))
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }

    fn delete(&self, key: &str) {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(key);
        self.rt
            .block_on(self.store.delete(&path))
            .unwrap_or_else(|e| panic!("DELETE {key}: {e}"));
    }
}

/// The key of content `c`'s object in namespace `ns` (prefix `cairn`, see `common::s3`).
fn object_key(ns: &str, c: &[u8], ext: &str) -> String {
    let hex = cairn::ContentHash::of(c).to_hex();
    format!("cairn/{ns}/blobs/{}/{hex}.{ext}", &hex[..2])
}

#[test]
fn verify_names_missing_and_corrupt_objects_and_repair_restores_or_marks_them() {
    let Some(ep) = common::s3::endpoint() else {
        return;
    };
    let Some(url) = common::pg::url() else { return };
    let Some((s, ns)) = common::s3::pg_store_with(config(), Duration::ZERO) else {
        return;
    };
    let sid = s.create_session(NewSession::new()).unwrap().id;
    // Incompressible (stored raw): corrupted, deleted, restored from an inline copy.
    let (bad, gone, inl) = (noise(30_000, 21), noise(30_000, 22), noise(30_000, 23));
    // Compressible (stored zstd): restored from a raw copy beside it.
    let text = lines(2_000);
    let ok = noise(30_000, 24);
    let a_bad = s.put(sid, art("bad"), &bad).unwrap();
    let a_bad2 = s.put(sid, art("bad-again"), &bad).unwrap();
    let a_gone = s.put(sid, art("gone"), &gone).unwrap();
    let a_inl = s.put(sid, art("inline-copy"), &inl).unwrap();
    let a_text = s.put(sid, art("text"), &text).unwrap();
    let a_ok = s.put(sid, art("ok"), &ok).unwrap();
    assert!(a_text.compressed && !a_bad.compressed);
    assert!(s.verify().unwrap().ok);

    // Damage, straight on the object store (as a failing disk or a stray client would).
    let bad_key = object_key(&ns, &bad, "raw");
    let mut flipped = bad.clone();
    flipped[100] ^= 0xff;
    let bucket = Bucket::new(&ep);
    bucket.put(&bad_key, &flipped);
    bucket.delete(&object_key(&ns, &gone, "raw"));
    bucket.delete(&object_key(&ns, &inl, "raw"));
    let mut junk = b"not zstd at all".to_vec();
    junk.extend_from_slice(&text[..100]);
    bucket.put(&object_key(&ns, &text, "zst"), &junk);
    // Good copies elsewhere: the raw object of the text, the inline bytes of `inl` (a `D`
    // entry, as an inline record of an earlier store left it).
    bucket.put(&object_key(&ns, &text, "raw"), &text);
    let mut d = vec![b'D'];
    d.extend_from_slice(cairn::ContentHash::of(&inl).as_bytes());
    let engine = cairn::PostgresBackend::connect(&url, &ns).unwrap();
    cairn::Backend::apply(&engine, vec![cairn::Op::Put(d, inl.clone())]).unwrap();

    let v = s.verify().unwrap();
    assert!(!v.ok);
    let find = |h: cairn::ContentHash, kind: &str| {
        v.problems
            .iter()
            .find(|p| p.hash == Some(h) && p.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} problem for {h}: {:?}", v.problems))
            .clone()
    };
    // Each damaged object is reported with its name, its hash and the artifacts it breaks.
    let p = find(a_bad.hash, "hash_mismatch");
    assert!(
        p.message
            .contains(&format!("s3://{}/{bad_key}", common::s3::BUCKET)),
        "{p:?}"
    );
    assert!(p.message.contains(&a_bad.hash.short().to_string()), "{p:?}");
    let mut want = vec![a_bad.id, a_bad2.id];
    want.sort();
    let mut got = p.artifacts.clone();
    got.sort();
    assert_eq!(got, want);
    let p = find(a_gone.hash, "missing_blob");
    assert!(p.message.contains(&object_key(&ns, &gone, "raw")), "{p:?}");
    assert!(p.message.contains("missing"), "{p:?}");
    assert_eq!(p.artifacts, vec![a_gone.id]);
    // Those with a good copy say where it is.
    let p = find(a_text.hash, "hash_mismatch");
    assert!(p.message.contains(&object_key(&ns, &text, "raw")), "{p:?}");
    assert!(p.message.contains("good copy"), "{p:?}");
    let p = find(a_inl.hash, "missing_blob");
    assert!(
        p.message.contains("good copy") && p.message.contains("inline"),
        "{p:?}"
    );
    assert!(!v.problems.iter().any(|p| p.hash == Some(a_ok.hash)));
    // Reads fail clearly, never with wrong bytes.
    assert!(s.read(sid, a_bad.id).is_err());
    assert!(s.read(sid, a_text.id).is_err());

    let r = s.repair().unwrap();
    // Restored from the good copies: they read again.
    let mut restored = r.restored.clone();
    restored.sort();
    let mut want = vec![a_text.hash, a_inl.hash];
    want.sort();
    assert_eq!(restored, want);
    assert_eq!(s.read(sid, a_text.id).unwrap(), text);
    assert_eq!(s.read(sid, a_inl.id).unwrap(), inl);
    assert!(
        common::s3::list_keys(&ep, &object_key(&ns, &inl, "raw"))
            .contains(&object_key(&ns, &inl, "raw")),
        "re-uploaded from the inline copy"
    );
    // No other copy: marked as lost exactly as on a local store; the corrupt object is moved
    // aside (kept, never deleted) and its artifacts fail to read.
    let mut lost = r.artifacts_with_lost_content.clone();
    lost.sort();
    let mut want = vec![a_bad.id, a_bad2.id, a_gone.id];
    want.sort();
    assert_eq!(lost, want);
    let q = format!(
        "s3://{}/cairn/{ns}/quarantine/{}.raw",
        common::s3::BUCKET,
        a_bad.hash.to_hex()
    );
    assert!(r.quarantined.contains(&q), "{:?}", r.quarantined);
    assert!(
        common::s3::list_keys(&ep, &bad_key).is_empty(),
        "moved out of blobs/"
    );
    // The corrupt zstd object of the text went aside too (its record now names the raw copy).
    let mut kept = common::s3::list_keys(&ep, &format!("cairn/{ns}/quarantine/"));
    kept.sort();
    let mut want = vec![
        format!("cairn/{ns}/quarantine/{}.raw", a_bad.hash.to_hex()),
        format!("cairn/{ns}/quarantine/{}.zst", a_text.hash.to_hex()),
    ];
    want.sort();
    assert_eq!(kept, want, "kept in quarantine/, never deleted");
    let e = s.read(sid, a_bad.id).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
    assert!(s.read(sid, a_gone.id).is_err());
    assert_eq!(s.read(sid, a_ok.id).unwrap(), ok);
    // After repair only the lost content remains a problem, with the same artifacts.
    let kinds: Vec<(&str, Option<cairn::ContentHash>)> = r
        .after
        .problems
        .iter()
        .map(|p| (p.kind.as_str(), p.hash))
        .collect();
    assert_eq!(r.after.problems.len(), 2, "{kinds:?}");
    assert!(
        kinds.contains(&("missing_blob", Some(a_bad.hash))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("missing_blob", Some(a_gone.hash))),
        "{kinds:?}"
    );
    // Another handle (another server) agrees, and a second repair changes nothing more.
    let other = common::s3::open(&ns, config(), Duration::ZERO);
    assert_eq!(other.verify().unwrap().problems.len(), 2);
    let again = other.repair().unwrap();
    assert!(
        again.restored.is_empty() && again.quarantined.is_empty(),
        "{again:?}"
    );
    assert_eq!(other.read(sid, a_text.id).unwrap(), text);
}

/// The files and folders under `dir`, recursively (for "nothing left behind" checks).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_large_put_is_spooled_to_disk_not_memory_and_has_no_256_mib_cap() {
    let (Some(ep), Some(url)) = (common::s3::endpoint(), common::pg::url()) else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let content = common::s3::config_with(&ep, Duration::ZERO).spool_dir(spool.path());
    let ns = common::pg::namespace();
    let s = Store::open_postgres_s3(&url, &ns, &content, config()).unwrap();
    // The store keeps the configured limit: no cap at POSTGRES_MAX_ARTIFACT_SIZE with an
    // object store (content is spooled, never held whole in memory).
    assert_eq!(
        s.config().limits.max_artifact_size,
        Config::default().limits.max_artifact_size
    );
    assert!(s.config().limits.max_artifact_size > cairn::POSTGRES_MAX_ARTIFACT_SIZE);
    // The store's private spool folder is there and empty.
    let dirs: Vec<_> = std::fs::read_dir(spool.path()).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1, "one cairn-spool-* folder per store");
    assert!(dirs[0]
        .file_name()
        .to_string_lossy()
        .starts_with("cairn-spool-"));
    let sid = s.create_session(NewSession::new()).unwrap().id;
    // Through a reader above the 8 MiB in-memory buffer: spooled, uploaded in parts.
    let big = noise((20 << 20) + 7, 11);
    let a = s.put_reader(sid, art("big"), &big[..]).unwrap();
    assert_eq!(
        (a.size, a.hash),
        (big.len() as u64, cairn::ContentHash::of(&big))
    );
    assert!(
        files_under(spool.path()).is_empty(),
        "the spool file is removed after the put"
    );
    // Another handle (another server) reads it back from the object store.
    let other = Store::open_postgres_s3(&url, &ns, &content, config()).unwrap();
    assert_eq!(other.read(sid, a.id).unwrap(), big);
    assert!(other.verify().unwrap().ok);
    // A configured limit is honoured with a clear error, and nothing is left behind.
    let small = Config {
        limits: cairn::Limits {
            max_artifact_size: 9 << 20,
            ..Config::default().limits
        },
        ..config()
    };
    let capped = Store::open_postgres_s3(&url, &ns, &content, small).unwrap();
    let e = capped
        .put_reader(sid, art("too-big"), &noise(10 << 20, 12)[..])
        .unwrap_err();
    let over_limit = matches!(
        e,
        Error::LimitExceeded {
            limit: "max_artifact_size",
            ..
        }
    );
    assert!(over_limit, "{e}");
    assert!(e.to_string().contains("max_artifact_size"), "{e}");
    assert!(
        files_under(spool.path()).is_empty(),
        "{:?}",
        files_under(spool.path())
    );
    assert_eq!(s.stats().unwrap().blobs, 1);
    drop((s, other, capped));
    assert!(
        std::fs::read_dir(spool.path()).unwrap().next().is_none(),
        "the spool folders are removed with their stores"
    );
}
