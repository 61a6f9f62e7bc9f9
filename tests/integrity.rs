//! `verify` and `repair`: corrupt a real sled store in each way they handle, check that `verify`
//! finds it (naming the affected artifacts), that reads fail with an integrity error instead of
//! returning wrong bytes, and that `repair` brings the store back to a consistent state.

use crate::common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use cairn::*;

/// A sled store with real agent-run files (some inline, some in files, some compressed) and
/// duplicate content, closed again. Returns the folder guard, the store path, and what was put.
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    session: SessionId,
    /// (artifact, content)
    items: Vec<(Artifact, Vec<u8>)>,
}

fn config() -> Config {
    // Files from 4 KiB up, so the fixture has both inline and file blobs.
    // A sled store: the tests damage its records through `SledBackend` directly.
    Config::default()
        .engine(cairn::BackendKind::Sled)
        .inline_threshold(4 << 10)
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open_with(&path, config()).unwrap();
    let s = store
        .create_session(NewSession::new().name("run").tag("t"))
        .unwrap();
    let mut items = Vec::new();
    for (rel, file) in common::files_under(&common::fixtures_dir().join("agent-runs"))
        .into_iter()
        .take(12)
    {
        let bytes = fs::read(&file).unwrap();
        let a = store
            .put(
                s.id,
                NewArtifact::new(ArtifactKind::ToolResult, rel).tag("run"),
                &bytes,
            )
            .unwrap();
        items.push((a, bytes));
    }
    // Large compressible, large incompressible, small, and a duplicate of each.
    for (name, bytes) in [
        ("big.json", common::json_text(300_000, 7)),
        ("big.bin", common::random_bytes(200_000, 9)),
        ("small.txt", b"small content".to_vec()),
    ] {
        for copy in ["", ".copy"] {
            let a = store
                .put(
                    s.id,
                    NewArtifact::new(ArtifactKind::AgentOutput, format!("{name}{copy}")),
                    &bytes,
                )
                .unwrap();
            items.push((a, bytes.clone()));
        }
    }
    Fixture {
        _dir: dir,
        path,
        session: s.id,
        items,
    }
}

impl Fixture {
    fn open(&self) -> Store {
        Store::open_with(&self.path, config()).unwrap()
    }
    fn item(&self, name: &str) -> &(Artifact, Vec<u8>) {
        self.items.iter().find(|(a, _)| a.name == name).unwrap()
    }
    /// The engine underneath, for tampering (the store must be closed).
    fn engine(&self) -> SledBackend {
        SledBackend::open(&self.path.join("db")).unwrap()
    }
    fn blob_file(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        let dir = self.path.join("blobs").join(&hex[..2]);
        common::files_under(&dir)
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&hex))
            .unwrap_or_else(|| panic!("no blob file for {hex}"))
    }
}

fn key(table: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![table];
    for r in rest {
        k.extend_from_slice(r);
    }
    k
}

/// Blob record layout (27 bytes): version, codec, inline, size u64, stored u64, refs u64.
fn refs_of(engine: &SledBackend, h: &ContentHash) -> u64 {
    let b = engine.get(&key(b'B', &[h.as_bytes()])).unwrap().unwrap();
    u64::from_be_bytes(b[19..27].try_into().unwrap())
}

fn set_refs(engine: &SledBackend, h: &ContentHash, refs: u64) {
    let k = key(b'B', &[h.as_bytes()]);
    let mut b = engine.get(&k).unwrap().unwrap();
    b[19..27].copy_from_slice(&refs.to_be_bytes());
    engine.apply(vec![Op::Put(k, b)]).unwrap();
    engine.flush().unwrap();
}

fn kinds(r: &VerifyReport) -> Vec<&str> {
    let mut v: Vec<&str> = r.problems.iter().map(|p| p.kind.as_str()).collect();
    v.sort();
    v.dedup();
    v
}

fn assert_all_read_back(store: &Store, f: &Fixture, except: &[ArtifactId]) {
    for (a, bytes) in &f.items {
        if except.contains(&a.id) {
            continue;
        }
        assert_eq!(&store.read(f.session, a.id).unwrap(), bytes, "{}", a.name);
    }
}

#[test]
fn a_clean_store_verifies_and_repair_changes_nothing() {
    let f = fixture();
    let store = f.open();
    let r = store.verify().unwrap();
    assert!(r.ok, "{:#?}", r.problems);
    assert_eq!(r.artifacts_checked, f.items.len() as u64);
    let distinct: std::collections::HashSet<_> = f.items.iter().map(|(a, _)| a.hash).collect();
    assert!(
        distinct.len() < f.items.len(),
        "the fixture has shared content"
    );
    assert_eq!(r.blobs_checked, distinct.len() as u64);
    assert!(r.index_entries_checked > 5 * f.items.len() as u64);
    let rep = store.repair().unwrap();
    assert_eq!(rep.index_entries_fixed, 0);
    assert_eq!(rep.refcounts_fixed, 0);
    assert!(rep.quarantined.is_empty());
    assert!(rep.after.ok);
    assert_all_read_back(&store, &f, &[]);
}

/// Flips one byte of a blob file or cuts it short, then checks detection, reads and repair.
fn damage_file_blob(name: &str, damage: impl Fn(&Path)) {
    let f = fixture();
    let (a, _) = f.item(name).clone();
    let (dup, _) = f.item(&format!("{name}.copy")).clone();
    let file = f.blob_file(&a.hash);
    damage(&file);
    let store = f.open();

    // Reads fail with an integrity error, never wrong bytes: whole, streamed, and by range.
    for id in [a.id, dup.id] {
        let e = store.read(f.session, id).unwrap_err();
        assert_eq!(e.code(), "integrity", "{e}");
        let mut r = store.open_reader(f.session, id);
        if let Ok(r) = r.as_mut() {
            let mut out = Vec::new();
            let e = r.read_to_end(&mut out).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        }
        assert!(store.read_range(f.session, id, 0, 10).is_err());
    }

    let r = store.verify().unwrap();
    assert!(!r.ok);
    let p = r
        .problems
        .iter()
        .find(|p| p.hash == Some(a.hash) && p.kind == "hash_mismatch")
        .unwrap_or_else(|| panic!("{:#?}", r.problems));
    let mut affected = p.artifacts.clone();
    affected.sort();
    let mut want = vec![a.id, dup.id];
    want.sort();
    assert_eq!(affected, want, "both artifacts sharing the blob are named");

    let rep = store.repair().unwrap();
    assert_eq!(rep.artifacts_with_lost_content, want);
    assert_eq!(rep.quarantined.len(), 1, "{:?}", rep.quarantined);
    let q = PathBuf::from(&rep.quarantined[0]);
    assert!(q.starts_with(f.path.join("quarantine")) && q.exists());
    assert!(!file.exists(), "the corrupt file left blobs/");
    // What remains is the lost content, reported against the same artifacts.
    assert_eq!(
        kinds(&rep.after),
        vec!["missing_blob"],
        "{:#?}",
        rep.after.problems
    );
    assert_eq!(rep.after.problems[0].artifacts.len(), 2);
    assert_eq!(store.read(f.session, a.id).unwrap_err().code(), "integrity");
    assert_all_read_back(&store, &f, &want);

    // Deleting the damaged artifacts and collecting makes the store whole again.
    store.delete_artifact(f.session, a.id).unwrap();
    store.delete_artifact(f.session, dup.id).unwrap();
    store.gc().unwrap();
    let r = store.verify().unwrap();
    assert!(r.ok, "{:#?}", r.problems);
    // Putting the same content again works and reads back.
    let again = store
        .put(
            f.session,
            NewArtifact::new(ArtifactKind::AgentOutput, "again"),
            &f.item(name).1,
        )
        .unwrap();
    assert_eq!(store.read(f.session, again.id).unwrap(), f.item(name).1);
    assert!(store.verify().unwrap().ok);
}

#[test]
fn a_flipped_byte_in_a_compressed_blob_file_is_found_and_quarantined() {
    damage_file_blob("big.json", |p| {
        let mut b = fs::read(p).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x40;
        fs::write(p, b).unwrap();
    });
}

#[test]
fn a_flipped_byte_in_a_raw_blob_file_is_found_and_quarantined() {
    damage_file_blob("big.bin", |p| {
        let mut b = fs::read(p).unwrap();
        b[1234] ^= 1;
        fs::write(p, b).unwrap();
    });
}

#[test]
fn a_truncated_blob_file_is_found_and_quarantined() {
    for name in ["big.json", "big.bin"] {
        damage_file_blob(name, |p| {
            let len = fs::metadata(p).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 3)
                .unwrap();
        });
    }
}

#[test]
fn a_missing_blob_file_is_reported_with_its_artifacts() {
    let f = fixture();
    let (a, _) = f.item("big.bin").clone();
    fs::remove_file(f.blob_file(&a.hash)).unwrap();
    let store = f.open();
    assert_eq!(store.read(f.session, a.id).unwrap_err().code(), "integrity");
    let r = store.verify().unwrap();
    let p = r
        .problems
        .iter()
        .find(|p| p.kind == "missing_blob")
        .unwrap();
    assert_eq!(p.hash, Some(a.hash));
    assert_eq!(p.artifacts.len(), 2);
    assert!(p.artifacts.contains(&a.id));
}

#[test]
fn a_flipped_byte_in_inline_content_is_found_and_moved_aside() {
    let f = fixture();
    let (a, _) = f.item("small.txt").clone();
    {
        let e = f.engine();
        // Small inline bytes live inside the blob record (format 2, after the 27-byte header).
        let k = key(b'B', &[a.hash.as_bytes()]);
        let mut v = e.get(&k).unwrap().unwrap();
        assert_eq!(v[0], 2, "a small blob's record carries its bytes");
        assert!(e.get(&key(b'D', &[a.hash.as_bytes()])).unwrap().is_none());
        v[27] ^= 0x20;
        e.apply(vec![Op::Put(k, v)]).unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    let e = store.read(f.session, a.id).unwrap_err();
    let matched = matches!(e, Error::Integrity { hash, .. } if hash == a.hash);
    assert!(matched, "{e}");
    let r = store.verify().unwrap();
    let p = r
        .problems
        .iter()
        .find(|p| p.kind == "hash_mismatch")
        .unwrap();
    assert_eq!(p.artifacts.len(), 2);
    let rep = store.repair().unwrap();
    assert_eq!(rep.artifacts_with_lost_content.len(), 2);
    assert_eq!(rep.quarantined.len(), 1);
    let saved = fs::read(&rep.quarantined[0]).unwrap();
    assert!(
        saved.ends_with(b"Small content"),
        "the corrupt bytes are kept"
    );
    assert_eq!(kinds(&rep.after), vec!["missing_blob"]);
    assert_eq!(
        store.read(f.session, a.id).unwrap_err().code(),
        "content_missing"
    );
    assert_all_read_back(&store, &f, &rep.artifacts_with_lost_content);
}

#[test]
fn broken_indexes_are_found_and_rebuilt() {
    let f = fixture();
    let (a, _) = f.item("big.json").clone();
    let (b, _) = f.item("small.txt").clone();
    let sid = f.session;
    let ghost = ArtifactId::new();
    {
        let e = f.engine();
        let mut ops = vec![
            // a loses its kind index entry and its session listing
            Op::Delete(key(b'k', &[b"agent_output\0", a.id.as_bytes()])),
            Op::Delete(key(b'a', &[sid.as_bytes(), a.id.as_bytes()])),
            // b loses its name-version entry (and an older store's latest pointer)
            Op::Delete(key(
                b'n',
                &[sid.as_bytes(), b"small.txt\0", &1u32.to_be_bytes()],
            )),
            Op::Delete(key(b'l', &[sid.as_bytes(), b"small.txt"])),
            // entries for an artifact that does not exist
            Op::Put(
                key(b'g', &[b"ghost\0", ghost.as_bytes()]),
                sid.as_bytes().to_vec(),
            ),
            Op::Put(
                key(b'z', &[&7u64.to_be_bytes(), ghost.as_bytes()]),
                sid.as_bytes().to_vec(),
            ),
            // `l` latest pointers are retired (the last `n` entry is the latest version): a
            // stale one left by an older store is neither a problem nor believed
            Op::Put(
                key(b'l', &[sid.as_bytes(), b"nothing"]),
                3u32.to_be_bytes().to_vec(),
            ),
            Op::Put(
                key(b'l', &[sid.as_bytes(), b"big.json"]),
                9u32.to_be_bytes().to_vec(),
            ),
            // a session index entry for no session
            Op::Put(key(b'R', &[SessionId::new().as_bytes()]), vec![]),
        ];
        // a's name index entry points at the wrong session
        ops.push(Op::Put(
            key(b'N', &[b"big.json\0", a.id.as_bytes()]),
            SessionId::new().as_bytes().to_vec(),
        ));
        e.apply(ops).unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    let r = store.verify().unwrap();
    assert_eq!(
        kinds(&r),
        vec!["dangling_index", "missing_index"],
        "{:#?}",
        r.problems
    );
    let missing: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.kind == "missing_index")
        .collect();
    assert!(missing.iter().any(|p| p.artifacts == vec![a.id]));
    assert!(missing.iter().any(|p| p.artifacts == vec![b.id]));
    assert_eq!(r.problems.len(), 7, "{:#?}", r.problems);
    assert!(
        !r.problems.iter().any(|p| p.message.contains("latest")),
        "{:#?}",
        r.problems
    );
    // The stale pointer saying version 9 is not believed.
    assert_eq!(
        store.artifact_by_name(sid, "big.json", None).unwrap().id,
        a.id
    );
    // Visible damage before repair: a is not found by kind.
    let by_kind = store
        .query(&Query::new().kind(ArtifactKind::AgentOutput).limit(100))
        .unwrap();
    assert!(!by_kind.items.iter().any(|x| x.id == a.id));

    let rep = store.repair().unwrap();
    assert_eq!(rep.index_entries_fixed, 7);
    assert!(rep.after.ok, "{:#?}", rep.after.problems);
    let by_kind = store
        .query(&Query::new().kind(ArtifactKind::AgentOutput).limit(100))
        .unwrap();
    assert_eq!(by_kind.items.len(), 6);
    assert_eq!(
        store.artifact_by_name(sid, "small.txt", None).unwrap().id,
        b.id
    );
    assert_eq!(
        store.artifact_by_name(sid, "big.json", None).unwrap().id,
        a.id
    );
    assert!(store
        .query(&Query::new().tag("ghost"))
        .unwrap()
        .items
        .is_empty());
    let listed = store.list_artifacts(sid, false, 1000, None).unwrap();
    assert_eq!(listed.items.len(), f.items.len());
    // Repair is idempotent.
    let again = store.repair().unwrap();
    assert_eq!(again.index_entries_fixed, 0);
    assert!(again.after.ok);
}

#[test]
fn wrong_reference_counts_are_found_and_rebuilt_so_gc_keeps_shared_content() {
    let f = fixture();
    let (a, bytes) = f.item("big.json").clone();
    let (dup, _) = f.item("big.json.copy").clone();
    let (s, _) = f.item("small.txt").clone();
    {
        let e = f.engine();
        // Too low: the count a crash-prone design loses; GC would delete content still used.
        set_refs(&e, &a.hash, 1);
        // Too high and listed as garbage while referenced.
        set_refs(&e, &s.hash, 7);
        e.apply(vec![Op::Put(key(b'G', &[s.hash.as_bytes()]), vec![])])
            .unwrap();
        // A GC entry for a blob that does not exist.
        e.apply(vec![Op::Put(key(b'G', &[&[9u8; 32]]), vec![])])
            .unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    let r = store.verify().unwrap();
    assert_eq!(
        kinds(&r),
        vec!["garbage_entry", "refcount"],
        "{:#?}",
        r.problems
    );
    let p = r
        .problems
        .iter()
        .find(|p| p.kind == "refcount" && p.hash == Some(a.hash))
        .unwrap();
    assert_eq!(p.artifacts.len(), 2, "both sharers are named");
    let rep = store.repair().unwrap();
    assert_eq!(rep.refcounts_fixed, 2);
    assert!(rep.after.ok, "{:#?}", rep.after.problems);
    drop(store);
    assert_eq!(refs_of(&f.engine(), &a.hash), 2);
    assert_eq!(refs_of(&f.engine(), &s.hash), 2);
    let store = f.open();
    // With the count rebuilt, deleting one sharer and collecting keeps the other readable.
    store.delete_artifact(f.session, a.id).unwrap();
    store.gc().unwrap();
    assert_eq!(store.read(f.session, dup.id).unwrap(), bytes);
    assert!(store.verify().unwrap().ok);
}

#[test]
fn wrong_counters_are_found_and_rebuilt() {
    let f = fixture();
    let before = f.open().stats().unwrap();
    {
        let e = f.engine();
        e.apply(vec![
            Op::Put(key(b'#', &[b"artifacts"]), 999u64.to_be_bytes().to_vec()),
            Op::Put(key(b'#', &[b"stored_bytes"]), 1u64.to_be_bytes().to_vec()),
            Op::Delete(key(b'#', &[b"artifacts.kind.tool_result"])),
            Op::Put(
                key(b'#', &[b"sessions.status.failed"]),
                4u64.to_be_bytes().to_vec(),
            ),
        ])
        .unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    assert_eq!(store.stats().unwrap().artifacts, 999);
    let r = store.verify().unwrap();
    assert_eq!(kinds(&r), vec!["counter"]);
    assert_eq!(r.problems.len(), 4, "{:#?}", r.problems);
    let rep = store.repair().unwrap();
    assert!(rep.after.ok, "{:#?}", rep.after.problems);
    assert_eq!(store.stats().unwrap(), before);
    // The cached counters agree too: one more put counts from the repaired value.
    store
        .put(
            f.session,
            NewArtifact::new(ArtifactKind::ToolResult, "one more"),
            b"x",
        )
        .unwrap();
    assert_eq!(store.stats().unwrap().artifacts, before.artifacts + 1);
    assert!(store.verify().unwrap().ok);
}

#[test]
fn orphan_files_and_inline_bytes_are_moved_aside_not_deleted() {
    let f = fixture();
    let orphan_hash = ContentHash::of(b"never indexed");
    let hex = orphan_hash.to_hex();
    let dir = f.path.join("blobs").join(&hex[..2]);
    fs::create_dir_all(&dir).unwrap();
    let orphan = dir.join(format!("{hex}.raw"));
    fs::write(&orphan, b"never indexed").unwrap();
    let inline_orphan = ContentHash::of(b"stray");
    {
        let e = f.engine();
        e.apply(vec![Op::Put(
            key(b'D', &[inline_orphan.as_bytes()]),
            b"stray".to_vec(),
        )])
        .unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    let r = store.verify().unwrap();
    // The orphan file is a crash's expected leftover, counted apart; stray inline bytes are damage.
    assert_eq!(kinds(&r), vec!["orphan_inline_data"], "{:#?}", r.problems);
    assert_eq!((r.orphan_files, r.orphan_bytes), (1, 13));
    let rep = store.repair().unwrap();
    assert!(rep.after.ok, "{:#?}", rep.after.problems);
    assert_eq!(rep.quarantined.len(), 2);
    assert!(!orphan.exists());
    let moved = f.path.join("quarantine").join(format!("{hex}.raw"));
    assert_eq!(fs::read(moved).unwrap(), b"never indexed");
    assert_all_read_back(&store, &f, &[]);
}

#[test]
fn an_undecodable_artifact_record_is_moved_aside_and_its_indexes_dropped() {
    let f = fixture();
    let (a, _) = f.item("small.txt").clone();
    {
        let e = f.engine();
        e.apply(vec![Op::Put(
            key(b'A', &[a.id.as_bytes()]),
            b"\x01{not json".to_vec(),
        )])
        .unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    let e = store.read(f.session, a.id).unwrap_err();
    assert_eq!(e.code(), "corrupt", "{e}");
    let r = store.verify().unwrap();
    assert!(kinds(&r).contains(&"corrupt_record"), "{:#?}", r.problems);
    assert!(kinds(&r).contains(&"dangling_index"));
    let rep = store.repair().unwrap();
    assert!(rep.after.ok, "{:#?}", rep.after.problems);
    assert!(rep
        .quarantined
        .iter()
        .any(|q| q.contains("quarantine/records")));
    assert!(store.read(f.session, a.id).unwrap_err().is_not_found());
    let (dup, bytes) = f.item("small.txt.copy").clone();
    assert_eq!(store.read(f.session, dup.id).unwrap(), bytes);
}

#[test]
fn references_from_tables_verify_cannot_count_are_never_lowered() {
    let f = fixture();
    let (a, _) = f.item("big.bin").clone();
    {
        let e = f.engine();
        set_refs(&e, &a.hash, 5); // perhaps three checkpoints hold it
        e.apply(vec![Op::Put(key(b'P', &[&[1u8; 16]]), b"\x01{}".to_vec())])
            .unwrap();
        e.flush().unwrap();
    }
    let store = f.open();
    let r = store.verify().unwrap();
    assert_eq!(kinds(&r), vec!["uncounted_references"], "{:#?}", r.problems);
    let rep = store.repair().unwrap();
    assert_eq!(rep.refcounts_fixed, 0);
    drop(store);
    assert_eq!(refs_of(&f.engine(), &a.hash), 5);
}

/// Checkpoints and forks hold blob references too: verify counts them, and repair keeps them.
#[test]
fn checkpoint_and_fork_references_verify_clean_and_survive_repair() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let a = s.create_session(NewSession::new()).unwrap();
        let content = common::json_text(200_000, 11);
        let x = s
            .put(
                a.id,
                NewArtifact::new(ArtifactKind::ToolResult, "x"),
                &content,
            )
            .unwrap();
        let cp = s
            .create_checkpoint(
                a.id,
                NewCheckpoint::new("step-1")
                    .state(serde_json::json!({"n": 1}))
                    .state_bytes(b"binary state".to_vec()),
            )
            .unwrap();
        let fork = s.fork(a.id, Some(cp.id), NewSession::new()).unwrap();
        s.delete_artifact(a.id, x.id).unwrap();
        let report = s.verify().unwrap();
        assert!(report.ok, "{:?}", report.problems);
        // Checkpoint + fork hold the content after the artifact is gone.
        assert_eq!(s.content_info(&x.hash).unwrap().unwrap().refs, 2);
        let r = s.repair().unwrap();
        assert_eq!(r.refcounts_fixed, 0);
        s.gc().unwrap();
        let forked = s.artifact_by_name(fork.id, "x", None).unwrap();
        assert_eq!(s.read(fork.id, forked.id).unwrap(), content);
        // Deleting the checkpoint releases its references; the fork keeps one.
        s.delete_checkpoint(cp.id).unwrap();
        assert_eq!(s.content_info(&x.hash).unwrap().unwrap().refs, 1);
        assert!(s.verify().unwrap().ok);
    }
}
