//! Stores written by the format-1 release (fixtures/stores/, see its README) open with today's
//! code and read back exactly what that release read from them: every session (ids, names, keys,
//! tags, metadata, status, times), every artifact (record: id, name, kind, version, tags,
//! metadata, hash, sizes; and its bytes by BLAKE3 and length), conversation history, checkpoints,
//! event counts and the store's statistics. Each test opens a COPY of the fixture, never the
//! checked-in files.

use crate::common;

use std::path::{Path, PathBuf};

use cairn::{
    ArtifactKind, BackendKind, Config, ImportOptions, NewArtifact, NewSession, SessionFilter,
    SessionId, Store,
};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    common::repo_root().join("fixtures/stores").join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// What the store reads back, in the manifest's shape (fixtures/stores/make_v1.rs.txt).
fn read_back(store: &Store) -> Value {
    let mut sessions = vec![];
    let page = store.list_sessions(&SessionFilter::new()).unwrap();
    assert!(page.next_cursor.is_none(), "one page holds every session");
    for s in page.items {
        let mut arts = vec![];
        let p = store.list_artifacts(s.id, false, 1000, None).unwrap();
        assert!(p.next_cursor.is_none());
        for a in p.items {
            let bytes = store.read(s.id, a.id).unwrap();
            arts.push(json!({
                "artifact": a,
                "blake3": blake3::hash(&bytes).to_hex().to_string(),
                "len": bytes.len(),
            }));
        }
        let history = store.history(s.id, None).unwrap();
        let checkpoints = store.checkpoints(s.id).unwrap();
        let events = store.events(s.id, None, 1000).unwrap();
        sessions.push(json!({
            "session": s,
            "artifacts": arts,
            "history": history,
            "checkpoints": checkpoints,
            "event_count": events.items.len(),
        }));
    }
    json!({"stats": store.stats().unwrap(), "sessions": sessions})
}

fn manifest(name: &str) -> Value {
    let path = common::repo_root()
        .join("fixtures/stores")
        .join(format!("{name}.manifest.json"));
    let mut m: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("made_by");
    m
}

/// The first difference between two JSON values, as a path (for a readable failure).
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if let Some(d) = first_difference(&format!("{path}.{k}"), va, vb) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(&format!("{path}[{i}]"), va, vb)),
        _ if a == b => None,
        _ => Some(format!("{path}: read back {a} but the manifest says {b}")),
    }
}

fn check_fixture(name: &str, engine: BackendKind, other: BackendKind) {
    let src = fixture(name);
    assert!(src.join("CAIRN").is_file(), "fixture {name} is checked in");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(name);
    copy_dir(&src, &copy);
    let want = manifest(name);
    let sessions = want["sessions"].as_array().unwrap().len();
    let artifacts: usize = want["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["artifacts"].as_array().unwrap().len())
        .sum();
    assert!(
        sessions >= 3 && artifacts >= 20,
        "the manifest is not empty"
    );

    // Opened with a configuration naming another engine: the marker decides.
    let root_id: SessionId = {
        let store = Store::open_with(&copy, Config::default().engine(other)).unwrap();
        assert_eq!(store.backend_name(), engine.as_str(), "{name}");
        let got = read_back(&store);
        if let Some(d) = first_difference("", &got, &want) {
            panic!("{name}: {d}");
        }
        assert_eq!(got, want, "{name}");
        let report = store.verify().unwrap();
        assert!(report.ok, "{name} verifies clean: {:?}", report.problems);
        want["sessions"][0]["session"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };

    // The old store stays writable: a new artifact survives a reopen beside the old ones.
    let new_id = {
        let store = Store::open(&copy).unwrap();
        store
            .put(
                root_id,
                NewArtifact::new(ArtifactKind::ToolResult, "after-upgrade.txt"),
                b"written by today's code",
            )
            .unwrap()
            .id
    };
    let store = Store::open(&copy).unwrap();
    assert_eq!(
        store.read(root_id, new_id).unwrap(),
        b"written by today's code"
    );

    // A new version of an old name: numbered after the old store's highest version (which its
    // retired `l` pointer also recorded), with the content of an old artifact (a reference
    // change on an old-format blob record, whose bytes must stay readable).
    let old = store
        .list_artifacts(root_id, false, 1000, None)
        .unwrap()
        .items
        .into_iter()
        .find(|a| a.id != new_id && a.size < 4096)
        .expect("the fixture has a small artifact in its first session");
    let highest = store
        .versions(root_id, &old.name)
        .unwrap()
        .last()
        .unwrap()
        .version;
    let old_bytes = store.read(root_id, old.id).unwrap();
    let again = store
        .put(
            root_id,
            NewArtifact::new(old.kind.clone(), old.name.clone()),
            &old_bytes,
        )
        .unwrap();
    assert_eq!(again.version, highest + 1);
    assert_eq!(again.hash, old.hash);
    assert_eq!(store.read(root_id, again.id).unwrap(), old_bytes);
    assert_eq!(store.read(root_id, old.id).unwrap(), old_bytes);
    assert_eq!(
        store.artifact_by_name(root_id, &old.name, None).unwrap().id,
        again.id
    );
    assert_eq!(
        store.stats().unwrap().artifacts,
        want["stats"]["artifacts"].as_u64().unwrap() + 2
    );
    let report = store.verify().unwrap();
    assert!(report.ok, "{name} after a write: {:?}", report.problems);

    // The old store's retired `l` pointers are never read: with the newest version deleted, the
    // latest is the highest remaining `n` entry (the stale pointer said `highest + 1`), and the
    // record operations that used to ask for `l` keys (a merge numbering copies, a bundle
    // import) number versions from the `n` entries too.
    store.delete_artifact(root_id, again.id).unwrap();
    let latest = store.artifact_by_name(root_id, &old.name, None).unwrap();
    assert_eq!(latest.version, highest, "{name}");
    let count = store.versions(root_id, &old.name).unwrap().len() as u32;
    let merged = store
        .merge_sessions(&[root_id], NewSession::new().name("merged"))
        .unwrap();
    let copies = store.versions(merged.id, &old.name).unwrap();
    let numbers: Vec<u32> = copies.iter().map(|a| a.version).collect();
    assert_eq!(numbers, (1..=count).collect::<Vec<_>>(), "{name}");
    let next = store
        .put(
            merged.id,
            NewArtifact::new(old.kind.clone(), old.name.clone()),
            b"after the merge",
        )
        .unwrap();
    assert_eq!(next.version, count + 1, "{name}");

    let mut bundle = Vec::new();
    store.export_session(root_id, false, &mut bundle).unwrap();
    let imported = store
        .import_bundle(
            &bundle[..],
            &ImportOptions::new().new_ids(true).drop_keys(true),
        )
        .unwrap();
    let copy_root = imported.root;
    let latest = store.artifact_by_name(copy_root, &old.name, None).unwrap();
    assert_eq!(latest.version, highest, "{name}: imported latest version");
    let next = store
        .put(
            copy_root,
            NewArtifact::new(old.kind.clone(), old.name.clone()),
            b"after the import",
        )
        .unwrap();
    assert_eq!(next.version, highest + 1, "{name}");
    let report = store.verify().unwrap();
    assert!(
        report.ok,
        "{name} after merge and import: {:?}",
        report.problems
    );
}

#[test]
fn the_format_1_sled_store_reads_back_identically() {
    check_fixture("v1-sled", BackendKind::Sled, BackendKind::Redb);
}

#[test]
fn the_format_1_redb_store_reads_back_identically() {
    check_fixture("v1-redb", BackendKind::Redb, BackendKind::Fjall);
}
