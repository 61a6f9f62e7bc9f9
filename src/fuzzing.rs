//! Check functions for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which runs
//! them over the committed seed corpora so that CI exercises every target.
//!
//! Not part of the supported API (hidden from the docs). Each `check_*` function takes arbitrary
//! bytes, drives a parser that reads untrusted bytes through the public API, and panics only on
//! a real bug: a panic inside Cairn, or a broken invariant (content returned that does not hash
//! right, a range served from content that fails verification, a failed import that left data).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, OnceLock};

use crate::artifact::record;
use crate::backend::{Backend, Entry, MemoryBackend, Op};
use crate::content::{BlobMeta, Codec};
use crate::error::Result;
use crate::ids::{ArtifactId, CheckpointId, ContentHash, SessionId};
use crate::keys;
use crate::{
    ArtifactKind, Config, ImportOptions, MetricsDelta, NewArtifact, NewCheckpoint, NewSession,
    Query, Role, SessionFilter, Store, TimelineOptions,
};

/// A backend shared between the harness and a store, so the harness can write raw bytes.
struct Shared(Arc<MemoryBackend>);

impl Backend for Shared {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        self.0.scan(start, end, reverse, limit)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.0.apply(ops)
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn flush_is_fsync(&self) -> bool {
        false
    }
}

// ------------------------------------------------------------------------------ config_toml

/// Target `config_toml`: the bytes as a TOML configuration, from a string (when UTF-8) and from a
/// file (any bytes). Both paths must agree; an accepted configuration validates and opens a store.
pub fn check_config_toml(data: &[u8]) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("cairn-fuzz-{}-{n}.toml", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return; // the harness's own temp folder failed; nothing to learn
    }
    let from_file = Config::from_toml_file(&path);
    let _ = std::fs::remove_file(&path);
    match std::str::from_utf8(data) {
        Err(_) => {
            let e = from_file.expect_err("a configuration file that is not UTF-8 was accepted");
            assert!(e.to_string().contains("UTF-8"), "unclear error: {e}");
        }
        Ok(text) => {
            let from_str = Config::from_toml_str(text);
            match (&from_str, &from_file) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "file and string parse differently"),
                (Err(_), Err(e)) => assert!(!e.to_string().is_empty()),
                _ => panic!("file and string disagree: {from_str:?} vs {from_file:?}"),
            }
            if let Ok(c) = from_str {
                c.validate()
                    .expect("an accepted configuration fails validate");
                Store::memory_with(c.clone()).expect("an accepted configuration opens no store");
                let json = serde_json::to_string(&c).expect("config serializes");
                let back: Config = serde_json::from_str(&json).expect("config deserializes");
                assert_eq!(back, c, "config does not round-trip through serde");
            }
        }
    }
}

// ------------------------------------------------------------------------------ bundle_import

/// Target `bundle_import`: the bytes as a bundle, to `bundle::inspect` and to an import into a
/// memory store. An import succeeds completely or leaves the store empty; whatever import accepts
/// `inspect` accepts; a second import of an accepted bundle fails and changes nothing.
pub fn check_bundle_import(data: &[u8]) {
    let inspected = crate::bundle::inspect(data);
    let store = Store::memory();
    match store.import_bundle(data, &ImportOptions::new()) {
        Ok(report) => {
            let summary = inspected.expect("import accepted a bundle that inspect rejects");
            assert_eq!(report.hash, summary.hash);
            let stats = store.stats().expect("stats");
            assert_eq!(stats.sessions, summary.sessions.len() as u64);
            assert!(store.import_bundle(data, &ImportOptions::new()).is_err());
            assert_eq!(store.stats().expect("stats"), stats);
            let v = store.verify().expect("verify");
            assert!(v.ok, "an accepted import fails verify: {:?}", v.problems);
        }
        Err(_) => {
            let stats = store.stats().expect("stats");
            assert_eq!((stats.sessions, stats.artifacts, stats.blobs), (0, 0, 0));
        }
    }
}

// ------------------------------------------------------------------------------ records

/// A small but complete store (sessions, artifacts raw and compressed, events, a checkpoint with
/// state, messages, metrics, a fork) as raw entries, plus the ids in it.
struct Template {
    entries: Vec<Entry>,
    sessions: Vec<SessionId>,
    artifacts: Vec<(SessionId, ArtifactId)>,
    checkpoints: Vec<CheckpointId>,
}

fn build_template() -> Result<Template> {
    let backend = Arc::new(MemoryBackend::new());
    let config = Config::default().compression_threshold(Config::ALWAYS_COMPRESS);
    let store = Store::with_backend(Box::new(Shared(backend.clone())), config)?;
    let root = store.create_session(NewSession::new().name("root").tag("t").key("k"))?;
    let child = store.create_session(NewSession::new().parent(root.id).name("child"))?;
    let text = b"{\"tool\":\"grep\",\"out\":\"src/main.rs:3: fn main()\"}\n".repeat(40);
    let a1 = store.put(
        root.id,
        NewArtifact::new(ArtifactKind::ToolResult, "out/grep.json")
            .tag("grep")
            .meta("k", 1),
        &text,
    )?;
    let a2 = store.put(
        child.id,
        NewArtifact::new(ArtifactKind::AgentOutput, "log.txt"),
        b"short",
    )?;
    let a3 = store.put(
        child.id,
        NewArtifact::new(ArtifactKind::AgentOutput, "log.txt"),
        b"short",
    )?;
    store.append_event(root.id, "custom", serde_json::json!({"n": 1}))?;
    let m = store.say(root.id, Role::User, "hello", Default::default())?;
    let cp = store.create_checkpoint(
        root.id,
        NewCheckpoint::new("step-1")
            .state(serde_json::json!({"step": 1}))
            .state_bytes(b"opaque state".to_vec()),
    )?;
    store.record_metrics(root.id, &MetricsDelta::new().requests(2).errors(1))?;
    let fork = store.fork(root.id, Some(cp.id), NewSession::new().name("fork"))?;
    store.complete(child.id)?;
    let entries = backend.scan(&[], &[], false, usize::MAX)?;
    Ok(Template {
        entries,
        sessions: vec![root.id, child.id, fork.id],
        artifacts: vec![
            (root.id, a1.id),
            (child.id, a2.id),
            (child.id, a3.id),
            (root.id, m.artifact_id),
        ],
        checkpoints: vec![cp.id],
    })
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| match build_template() {
        Ok(t) => t,
        Err(e) => panic!("the fuzz harness cannot build its template store: {e}"),
    })
}

/// Target `records`: a store whose records are those of a small real store except that one
/// record's stored bytes are replaced by arbitrary bytes (first input byte: which table and which
/// record), or (first byte >= 0xF0) with arbitrary keys and values added. Then every read path,
/// `verify`, `repair`, `gc` and deletes run on it. Nothing may panic; content is returned only if
/// it hashes to the artifact's recorded hash.
pub fn check_records(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let t = template();
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = t.entries.iter().cloned().collect();
    if sel >= 0xF0 {
        // Arbitrary entries: [key len u8][key][value len u16 BE][value]...
        let mut r = rest;
        while let Some((&klen, tail)) = r.split_first() {
            let klen = (klen as usize).min(tail.len());
            let (k, tail) = tail.split_at(klen);
            let vlen = match tail {
                [a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
                _ => 0,
            };
            let tail = tail.get(2..).unwrap_or(&[]);
            let vlen = vlen.min(tail.len());
            let (v, tail) = tail.split_at(vlen);
            map.insert(k.to_vec(), v.to_vec());
            r = tail;
        }
    } else {
        let tables: Vec<u8> = {
            let mut v: Vec<u8> = map.keys().filter_map(|k| k.first().copied()).collect();
            v.dedup();
            v
        };
        let table = tables[sel as usize % tables.len()];
        let keys: Vec<&Vec<u8>> = map.keys().filter(|k| k.first() == Some(&table)).collect();
        let key = keys[(sel as usize / tables.len()) % keys.len()].clone();
        map.insert(key, rest.to_vec());
    }
    let backend = MemoryBackend::new();
    if backend
        .apply(map.into_iter().map(|(k, v)| Op::Put(k, v)).collect())
        .is_err()
    {
        return;
    }
    let Ok(store) = Store::with_backend(Box::new(backend), Config::default()) else {
        return;
    };
    exercise(&store, t);
}

/// Runs every read path over the template's ids, checks returned content, then mutates.
fn exercise(store: &Store, t: &Template) {
    let _ = store.stats();
    let _ = store.list_sessions(&SessionFilter::new());
    let _ = store.list_sessions(&SessionFilter::new().roots().tag("t"));
    let _ = store.session_by_key("k");
    for &sid in &t.sessions {
        let _ = store.session(sid);
        let _ = store.children(sid);
        let _ = store.ancestors(sid);
        let _ = store.subtree(sid);
        let _ = store.events(sid, None, 100);
        let _ = store.checkpoints(sid);
        let _ = store.latest_checkpoint(sid, None);
        let _ = store.lineage(sid);
        let _ = store.forks(sid);
        let _ = store.timeline(sid, &TimelineOptions::new());
        let _ = store.history(sid, None);
        let _ = store.metrics(sid);
        let _ = store.list_artifacts(sid, true, 100, None);
        let _ = store.versions(sid, "log.txt");
        let _ = store.artifact_by_name(sid, "log.txt", None);
        let _ = store.query(&Query::new().session(sid).subtree(true));
    }
    let _ = store.session_stats(&SessionFilter::new());
    for q in [
        Query::new(),
        Query::new()
            .kind(ArtifactKind::AgentOutput)
            .latest_only(true),
        Query::new().tag("grep"),
        Query::new().name_glob("out/*"),
        Query::new().name_glob("*.txt").descending(true),
        Query::new().min_size(3).max_size(1 << 20),
    ] {
        let _ = store.query(&q);
    }
    for &(sid, aid) in &t.artifacts {
        check_artifact_reads(store, sid, aid);
    }
    for &cp in &t.checkpoints {
        let _ = store.checkpoint(cp);
        let _ = store.checkpoint_artifacts(cp);
        let _ = store.checkpoint_state_bytes(cp);
        for &(_, aid) in &t.artifacts {
            let _ = store.read_checkpoint_artifact(cp, aid);
        }
    }
    let _ = store.verify();
    let _ = store.repair();
    let _ = store.verify();
    let _ = store.gc();
    for &cp in &t.checkpoints {
        let _ = store.restore_checkpoint(cp);
    }
    if let Some(&(sid, aid)) = t.artifacts.first() {
        let _ = store.delete_artifact(sid, aid);
        let _ = store.put(
            sid,
            NewArtifact::new(ArtifactKind::AgentOutput, "log.txt"),
            b"x",
        );
    }
    for &sid in &t.sessions {
        let _ = store.delete_session(sid, true);
    }
    let _ = store.gc();
    let _ = store.verify();
}

/// Every read of one artifact: each either fails or returns exactly content with the recorded
/// hash and size; a range is never served when the whole content fails to verify.
fn check_artifact_reads(store: &Store, sid: SessionId, aid: ArtifactId) {
    let Ok(a) = store.artifact(sid, aid) else {
        let _ = store.read(sid, aid);
        let _ = store.read_range(sid, aid, 0, 1);
        return;
    };
    let whole = store.read(sid, aid);
    if let Ok(bytes) = &whole {
        assert_eq!(bytes.len() as u64, a.size, "read returned the wrong length");
        assert_eq!(ContentHash::of(bytes), a.hash, "read returned wrong bytes");
    }
    match store.open_reader(sid, aid) {
        Ok(mut r) => {
            // Bounded: a reader over a corrupt blob must end (in an error) near the recorded size.
            let mut out = Vec::new();
            let res = (&mut r)
                .take(a.size.saturating_add(1))
                .read_to_end(&mut out);
            if res.is_ok() && out.len() as u64 == a.size {
                assert_eq!(ContentHash::of(&out), a.hash, "reader returned wrong bytes");
            }
            if whole.is_err() && a.size <= crate::content::VERIFY_BEFORE_READ {
                assert!(res.is_err(), "reader verified content that read rejects");
            }
        }
        Err(_) => {
            assert!(
                whole.is_err() || a.size > crate::content::VERIFY_BEFORE_READ,
                "open_reader fails where read succeeds"
            )
        }
    }
    let mid = a.size / 2;
    for (off, len) in [(0, a.size), (mid, 7), (mid, u64::MAX), (a.size, 1)] {
        match store.read_range(sid, aid, off, len) {
            Ok(part) => {
                let whole = whole
                    .as_ref()
                    .expect("a range served from content that fails read");
                let start = off as usize;
                let end = start.saturating_add(len.min(a.size - off) as usize);
                assert_eq!(&part[..], &whole[start..end], "wrong range");
            }
            Err(_) => assert!(
                whole.is_err(),
                "read_range({off}, {len}) fails on content that reads"
            ),
        }
    }
}

// ------------------------------------------------------------------------------ content_decoder

/// Target `content_decoder`: one artifact whose stored blob is arbitrary bytes. Input layout:
/// byte 0 flags (bit 0: zstd codec; bit 1: record the hash of the reference decoding instead of
/// the hash in bytes 1..33; bit 2: record the size in bytes 33..41 instead of the reference
/// length; bit 3: compress the payload first, so it must read back), then the payload from byte
/// 41. Reads must return bytes only if they hash right; memory stays bounded.
pub fn check_content_decoder(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (hash_bytes, rest) = rest.split_at(rest.len().min(32));
    let (size_bytes, rest) = rest.split_at(rest.len().min(8));
    let original = rest.to_vec();
    let self_compressed = flags & 8 != 0;
    let zstd = flags & 1 != 0 || self_compressed;
    let payload = if self_compressed {
        match crate::content::compress(&original, 3) {
            Ok(c) => c,
            Err(_) => return,
        }
    } else {
        original.clone()
    };
    // What a correct decoder produces (bounded to 1 MiB), if the payload decodes at all.
    let reference: Option<Vec<u8>> = if zstd {
        zstd::bulk::decompress(&payload, 1 << 20).ok()
    } else {
        Some(payload.clone())
    };
    let hash = if flags & 2 != 0 || self_compressed {
        ContentHash::of(reference.as_deref().unwrap_or(&payload))
    } else {
        let mut h = [0u8; 32];
        h[..hash_bytes.len()].copy_from_slice(hash_bytes);
        ContentHash::from_bytes(h)
    };
    let size = if flags & 4 != 0 && !self_compressed {
        let mut s = [0u8; 8];
        s[..size_bytes.len()].copy_from_slice(size_bytes);
        u64::from_be_bytes(s)
    } else {
        reference.as_ref().map_or(payload.len(), Vec::len) as u64
    };

    let t = template();
    let (sid, aid) = t.artifacts[1];
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = t.entries.iter().cloned().collect();
    let Some(rec) = map.get(&keys::artifact(&aid)) else {
        return;
    };
    let Ok(mut a) = record::decode(rec) else {
        return;
    };
    a.hash = hash;
    a.size = size;
    a.stored_size = payload.len() as u64;
    a.compressed = zstd;
    map.insert(keys::artifact(&aid), record::encode(&a));
    let meta = BlobMeta {
        codec: if zstd { Codec::Zstd } else { Codec::Raw },
        inline: true,
        size,
        stored_size: payload.len() as u64,
        refs: 1,
    };
    map.insert(keys::blob(&hash), meta.encode());
    map.insert(keys::blob_data(&hash), payload.clone());
    let backend = MemoryBackend::new();
    if backend
        .apply(map.into_iter().map(|(k, v)| Op::Put(k, v)).collect())
        .is_err()
    {
        return;
    }
    let Ok(store) = Store::with_backend(Box::new(backend), Config::default()) else {
        return;
    };
    check_artifact_reads(&store, sid, aid);
    let read = store.read(sid, aid);
    if self_compressed || (!zstd && flags & 2 != 0 && flags & 4 == 0) {
        // Valid content under its true hash and size: it must read back.
        let expected = if self_compressed { &original } else { &payload };
        assert_eq!(
            read.as_ref().ok(),
            Some(expected),
            "valid content does not read back"
        );
    }
    if let Ok(v) = store.verify() {
        if read.is_err() {
            assert!(!v.ok, "verify passes a blob that read rejects");
        }
    }
}

// ------------------------------------------------------------------------------ seeds

/// Seed inputs for a target (`config_toml`, `records`, `content_decoder`), as (file name, bytes):
/// valid configurations, every real record of the template store under its selector, format-1
/// records, real zstd frames and zstd bombs. `examples/fuzz_seeds.rs` writes them to
/// `fuzz/corpus/<target>/`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match target {
        "config_toml" => {
            let texts = [
                ("empty", ""),
                ("level", "compression_level = 5\n"),
                (
                    "full",
                    "compression_threshold = 0\ncompression_level = 19\ninline_threshold = 1024\n\
                     default_idle_timeout_secs = 3600\n[limits]\nmax_sessions = 10\n\
                     max_artifacts_per_session = 5\nmax_artifact_size = 1048576\nmax_tags = 3\n\
                     max_metadata_bytes = 100\n[durability]\nmode = \"group\"\ninterval_ms = 20\n",
                ),
                ("immediate", "[durability]\nmode = \"immediate\"\n"),
                ("typo", "compresion_level = 5\n"),
                ("range", "compression_level = 40\n"),
                (
                    "interval0",
                    "[durability]\nmode = \"group\"\ninterval_ms = 0\n",
                ),
                ("negative", "inline_threshold = -1\n"),
                ("inline_table", "limits = { max_tags = 2 }\n"),
                ("broken", "not toml ["),
            ];
            for (name, t) in texts {
                out.push((name.to_string(), t.as_bytes().to_vec()));
            }
            out.push((
                "not-utf8".into(),
                b"compression_level = \xff\xfe 5\n".to_vec(),
            ));
        }
        "records" => {
            let t = template();
            let mut tables: Vec<u8> = t
                .entries
                .iter()
                .filter_map(|e| e.0.first().copied())
                .collect();
            tables.dedup();
            for (ti, &table) in tables.iter().enumerate() {
                let entries: Vec<&Entry> = t
                    .entries
                    .iter()
                    .filter(|e| e.0.first() == Some(&table))
                    .collect();
                for (j, e) in entries.iter().enumerate().take(3) {
                    let sel = ti + j * tables.len();
                    if sel >= 0xF0 {
                        break;
                    }
                    let mut v = vec![sel as u8];
                    v.extend_from_slice(&e.1);
                    out.push((format!("table-{:02x}-{j}", table), v));
                    if table == keys::ARTIFACT {
                        if let Ok(a) = record::decode(&e.1) {
                            let mut v = vec![sel as u8];
                            v.extend_from_slice(&keys::encode(&a));
                            out.push((format!("artifact-format1-{j}"), v));
                        }
                    }
                }
            }
            // Arbitrary-entries mode: a second artifact record under a new id, and a stray key.
            if let Some(e) = t
                .entries
                .iter()
                .find(|e| e.0.first() == Some(&keys::ARTIFACT))
            {
                let mut v = vec![0xF0];
                let mut k = e.0.clone();
                if let Some(last) = k.last_mut() {
                    *last ^= 1;
                }
                v.push(k.len() as u8);
                v.extend_from_slice(&k);
                v.extend_from_slice(&(e.1.len() as u16).to_be_bytes());
                v.extend_from_slice(&e.1);
                v.extend_from_slice(&[2, b'k', 0, 0, 3, 1, 2, 3]);
                out.push(("entries".into(), v));
            }
        }
        "content_decoder" => {
            let text = b"{\"tool\":\"grep\",\"out\":\"src/main.rs:3: fn main()\"}\n".repeat(64);
            let input = |flags: u8, size: Option<u64>, payload: &[u8]| {
                let mut v = vec![flags];
                v.extend_from_slice(&[0u8; 32]);
                v.extend_from_slice(&size.unwrap_or(0).to_be_bytes());
                v.extend_from_slice(payload);
                v
            };
            out.push(("raw-valid".into(), input(2, None, &text)));
            out.push(("raw-wrong-hash".into(), input(0, None, &text)));
            out.push(("raw-size-short".into(), input(2 | 4, Some(10), &text)));
            out.push(("raw-size-huge".into(), input(2 | 4, Some(u64::MAX), &text)));
            out.push(("self-compressed".into(), input(8, None, &text)));
            if let Ok(frame) = crate::content::compress(&text, 3) {
                out.push(("zstd-valid".into(), input(1 | 2, None, &frame)));
                out.push((
                    "zstd-size-huge".into(),
                    input(1 | 2 | 4, Some(1 << 62), &frame),
                ));
                let mut cut = frame.clone();
                cut.truncate(frame.len() / 2);
                out.push(("zstd-truncated".into(), input(1 | 2, None, &cut)));
            }
            // A bomb: 64 MiB of zeros in about 2 KiB, recorded as its own stored length.
            if let Ok(bomb) = crate::content::compress(&vec![0u8; 64 << 20], 19) {
                out.push(("zstd-bomb".into(), input(1 | 2, None, &bomb)));
            }
            // A frame header declaring a 2 GiB window (window log 31), then one raw block.
            let window: Vec<u8> = vec![
                0x28,
                0xB5,
                0x2F,
                0xFD,
                0x00,
                21 << 3,
                0x09,
                0x00,
                0x00,
                b'x',
            ];
            out.push(("zstd-huge-window".into(), input(1 | 2, None, &window)));
        }
        _ => {}
    }
    out
}
