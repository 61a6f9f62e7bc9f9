//! The backend trait's contract, checked on every engine (memory, sled, redb, fjall), the redb
//! and fjall stores' open/reopen/lock/corruption behaviour, and the engine choice: a new store
//! gets the configured engine, recorded in its marker; an existing store opens with the engine
//! in its marker whatever the configuration says.
use crate::common;

use cairn::{
    ArtifactKind, Backend, BackendKind, Config, Error, MemoryBackend, NewArtifact, NewSession, Op,
    Query, SledBackend, Store,
};

fn engines(dir: &std::path::Path) -> Vec<Box<dyn Backend>> {
    let mut v: Vec<Box<dyn Backend>> = vec![
        Box::new(MemoryBackend::new()),
        Box::new(SledBackend::open(&dir.join("sled")).unwrap()),
    ];
    #[cfg(feature = "redb")]
    {
        std::fs::create_dir_all(dir.join("redb")).unwrap();
        v.push(Box::new(
            cairn::RedbBackend::open(&dir.join("redb")).unwrap(),
        ));
    }
    #[cfg(feature = "fjall")]
    v.push(Box::new(
        cairn::FjallBackend::open(&dir.join("fjall")).unwrap(),
    ));
    v
}

fn key(table: u8, i: u32) -> Vec<u8> {
    let mut k = vec![table];
    k.extend_from_slice(&i.to_be_bytes());
    k
}

#[test]
fn get_apply_delete_and_scan_agree_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    for b in engines(dir.path()) {
        check_contract(&*b);
    }
}

/// The same contract on PostgreSQL (a server on 127.0.0.1, see `common::pg`).
#[cfg(feature = "postgres")]
#[test]
fn get_apply_delete_and_scan_agree_on_postgres() {
    if let Some(b) = common::pg::backend() {
        check_contract(&b);
        // Its write transactions read their own writes and commit all at once.
        let mut tx = b.begin_write().unwrap();
        tx.put(key(7, 1), b"one".to_vec());
        tx.delete(key(7, 2));
        assert_eq!(tx.get(&key(7, 1)).unwrap(), Some(b"one".to_vec()));
        assert_eq!(tx.get(&key(7, 2)).unwrap(), None);
        let keys: Vec<Vec<u8>> = tx
            .scan(&key(7, 0), &key(7, 4), false, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![key(7, 0), key(7, 1), key(7, 3)]);
        assert_eq!(
            b.get(&key(7, 2)).unwrap(),
            Some(2u32.to_le_bytes().to_vec())
        );
        tx.commit().unwrap();
        assert_eq!(b.get(&key(7, 1)).unwrap(), Some(b"one".to_vec()));
        assert_eq!(b.get(&key(7, 2)).unwrap(), None);
        // Dropped without commit: nothing written.
        let mut tx = b.begin_write().unwrap();
        tx.put(key(7, 9), b"never".to_vec());
        drop(tx);
        assert_eq!(
            b.get(&key(7, 9)).unwrap(),
            Some(9u32.to_le_bytes().to_vec())
        );
        assert!(b.is_shared());
        b.drop_namespace().unwrap();
    }
}

fn check_contract(b: &dyn Backend) {
    {
        let name = b.name();
        assert_eq!(b.get(b"missing").unwrap(), None, "{name}");
        b.apply(
            (0..500u32)
                .map(|i| Op::Put(key(7, i), i.to_le_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
        b.apply(vec![
            Op::Put(vec![6], b"below".to_vec()),
            Op::Put(vec![8], b"above".to_vec()),
        ])
        .unwrap();
        // Overwrite, delete and a delete of an absent key in one batch.
        b.apply(vec![
            Op::Put(key(7, 3), b"three".to_vec()),
            Op::Delete(key(7, 4)),
            Op::Delete(key(9, 9)),
        ])
        .unwrap();
        assert_eq!(
            b.get(&key(7, 3)).unwrap(),
            Some(b"three".to_vec()),
            "{name}"
        );
        assert_eq!(b.get(&key(7, 4)).unwrap(), None, "{name}");
        // Many keys at once: in the order asked, absent ones None, a key asked twice answered
        // twice, and no keys no answers.
        let many = b
            .get_many(&[
                key(7, 5),
                key(7, 4),
                key(7, 3),
                vec![6],
                key(7, 5),
                key(9, 9),
            ])
            .unwrap();
        assert_eq!(
            many,
            vec![
                Some(5u32.to_le_bytes().to_vec()),
                None,
                Some(b"three".to_vec()),
                Some(b"below".to_vec()),
                Some(5u32.to_le_bytes().to_vec()),
                None,
            ],
            "{name}"
        );
        assert!(b.get_many(&[]).unwrap().is_empty(), "{name}");
        let all: Vec<Vec<u8>> = (0..500u32).map(|i| key(7, i)).collect();
        let got = b.get_many(&all).unwrap();
        assert_eq!(got.iter().filter(|v| v.is_some()).count(), 499, "{name}");
        assert_eq!(got[499], Some(499u32.to_le_bytes().to_vec()), "{name}");

        // Bounded forward scan with a limit.
        let fwd = b.scan(&key(7, 0), &key(7, 10), false, 100).unwrap();
        let ids: Vec<Vec<u8>> = fwd.iter().map(|(k, _)| k.clone()).collect();
        let want: Vec<Vec<u8>> = [0, 1, 2, 3, 5, 6, 7, 8, 9]
            .iter()
            .map(|i| key(7, *i))
            .collect();
        assert_eq!(ids, want, "{name}");
        let lim = b.scan(&[7], &[8], false, 5).unwrap();
        assert_eq!(lim.len(), 5, "{name}");
        assert_eq!(lim[0].0, key(7, 0), "{name}");
        // Reverse scan returns the top of the range first.
        let rev = b.scan(&[7], &[8], true, 3).unwrap();
        let rk: Vec<Vec<u8>> = rev.into_iter().map(|(k, _)| k).collect();
        assert_eq!(rk, vec![key(7, 499), key(7, 498), key(7, 497)], "{name}");
        // Whole range: 499 entries (one deleted), nothing from tables 6 or 8.
        assert_eq!(
            b.scan(&[7], &[8], false, usize::MAX).unwrap().len(),
            499,
            "{name}"
        );
        // Unbounded end.
        let tail = b.scan(&[8], &[], false, 10).unwrap();
        assert_eq!(tail, vec![(vec![8], b"above".to_vec())], "{name}");
        // Empty and inverted ranges.
        assert!(b.scan(&[8], &[7], false, 10).unwrap().is_empty(), "{name}");
        assert!(b.scan(&[7], &[7], true, 10).unwrap().is_empty(), "{name}");
        // Empty values and large values round-trip.
        let big = common::random_bytes(3 << 20, 5);
        b.apply(vec![
            Op::Put(b"\x09empty".to_vec(), vec![]),
            Op::Put(b"\x09big".to_vec(), big.clone()),
        ])
        .unwrap();
        assert_eq!(b.get(b"\x09empty").unwrap(), Some(vec![]), "{name}");
        assert_eq!(b.get(b"\x09big").unwrap(), Some(big), "{name}");
        b.flush().unwrap();
    }
}

#[test]
fn every_disk_engine_reports_a_real_fsync_and_memory_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let engines = engines(dir.path());
    assert_eq!(engines.len(), common::backends().len());
    for b in engines {
        let want = b.name() != "memory";
        assert_eq!(b.flush_is_fsync(), want, "{}", b.name());
    }
}

#[test]
fn sled_flush_leaves_its_files_fsynced_and_survives_reopen() {
    // What can be checked without pulling the plug: a flush after a batch succeeds with the
    // fsyncs in place (they fail loudly on a missing file), and the data reopens.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sled");
    {
        let b = SledBackend::open(&path).unwrap();
        // A value above sled's blob threshold (about 128 KiB) goes to a file under blobs/.
        b.apply(vec![
            Op::Put(b"big".to_vec(), common::random_bytes(600 << 10, 3)),
            Op::Put(b"small".to_vec(), b"s".to_vec()),
        ])
        .unwrap();
        b.flush().unwrap();
        b.apply(vec![Op::Delete(b"big".to_vec())]).unwrap();
        b.flush().unwrap();
        // A flush with nothing new is a no-op.
        b.flush().unwrap();
    }
    let b = SledBackend::open(&path).unwrap();
    assert_eq!(b.get(b"small").unwrap(), Some(b"s".to_vec()));
    assert_eq!(b.get(b"big").unwrap(), None);
}

/// The engine named in a store's `CAIRN` marker.
fn marker_engine(root: &std::path::Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("CAIRN")).unwrap()).unwrap();
    assert_eq!(m["format"], 1);
    m["backend"].as_str().unwrap().to_string()
}

#[test]
fn a_new_store_gets_the_configured_engine_and_keeps_it_whatever_the_config_says() {
    let dir = tempfile::tempdir().unwrap();
    // The default engine for new stores.
    let root = dir.path().join("default");
    let s = Store::open(&root).unwrap();
    let default = BackendKind::default_engine();
    assert_eq!(s.backend_name(), default.as_str());
    assert_eq!(Config::default().engine, default);
    drop(s);
    assert_eq!(marker_engine(&root), default.as_str());

    let disk: Vec<BackendKind> = common::backends()
        .into_iter()
        .filter(|k| *k != BackendKind::Memory)
        .collect();
    for (i, kind) in disk.iter().enumerate() {
        let root = dir.path().join(kind.as_str());
        let (sid, id) = {
            let s = Store::open_with(&root, Config::default().engine(*kind)).unwrap();
            assert_eq!(s.backend_name(), kind.as_str());
            let sess = s.create_session(NewSession::new()).unwrap();
            let a = s
                .put(
                    sess.id,
                    NewArtifact::new(ArtifactKind::ToolResult, "a.txt"),
                    b"kept",
                )
                .unwrap();
            (sess.id, a.id)
        };
        assert_eq!(marker_engine(&root), kind.as_str());
        // Reopened with a configuration naming another engine: the marker wins.
        let other = disk[(i + 1) % disk.len()];
        let s = Store::open_with(&root, Config::default().engine(other)).unwrap();
        assert_eq!(s.backend_name(), kind.as_str(), "config said {other}");
        assert_eq!(s.read(sid, id).unwrap(), b"kept");
        drop(s);
        assert_eq!(marker_engine(&root), kind.as_str());
        // Store::open (default config) also follows the marker.
        let s = Store::open(&root).unwrap();
        assert_eq!(s.backend_name(), kind.as_str());
    }

    // The engine is read from TOML too; an unknown name is a clear error.
    let c = Config::from_toml_str("engine = \"sled\"").unwrap();
    assert_eq!(c.engine, BackendKind::Sled);
    let e = Config::from_toml_str("engine = \"rocks\"").unwrap_err();
    assert!(e.to_string().contains("engine"), "{e}");
    let e = "rocks".parse::<BackendKind>().unwrap_err();
    assert!(e.to_string().contains("sled, redb, fjall"), "{e}");
}

#[test]
fn an_engine_left_out_of_the_build_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for kind in BackendKind::ALL {
        if kind.is_compiled() {
            continue;
        }
        let root = dir.path().join(kind.as_str());
        let e = Store::open_with(&root, Config::default().engine(kind)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(kind.as_str()), "{text}");
        assert!(text.contains("feature"), "{text}");
        assert!(!root.join("CAIRN").exists(), "no store is created");
        // An existing store of that engine (its marker says so) gets the same clear error.
        std::fs::create_dir_all(root.join("db")).unwrap();
        std::fs::write(
            root.join("CAIRN"),
            format!("{{\"format\":1,\"backend\":\"{kind}\"}}"),
        )
        .unwrap();
        let e = Store::open(&root).unwrap_err();
        assert!(e.to_string().contains("feature"), "{e}");
    }
}

#[cfg(feature = "redb")]
#[test]
fn redb_store_persists_reopens_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let big = common::json_text(300_000, 9);
    let (sid, small_id, big_id) = {
        let s = Store::open_backend(BackendKind::Redb, &root, Config::default()).unwrap();
        assert_eq!(s.backend_name(), "redb");
        let sess = s.create_session(NewSession::new().name("r")).unwrap();
        let a = s
            .put(
                sess.id,
                NewArtifact::new(ArtifactKind::ToolResult, "a.txt").tag("t1"),
                b"small",
            )
            .unwrap();
        let b = s
            .put(
                sess.id,
                NewArtifact::new(ArtifactKind::AgentOutput, "b.json"),
                &big,
            )
            .unwrap();
        assert!(b.compressed);
        (sess.id, a.id, b.id)
    };
    let s = Store::open_backend(BackendKind::Redb, &root, Config::default()).unwrap();
    assert_eq!(s.read(sid, small_id).unwrap(), b"small");
    assert_eq!(s.read(sid, big_id).unwrap(), big);
    let page = s.query(&Query::new().tag("t1")).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, small_id);
    assert_eq!(s.stats().unwrap().artifacts, 2);
    // The same folder opened with another backend is refused clearly.
    let e = Store::open_backend(BackendKind::Sled, &root, Config::default()).unwrap_err();
    assert!(e.to_string().contains("redb store"), "{e}");
    // A second open while the first is held is "locked", not a panic or a silent second writer.
    let e = Store::open_backend(BackendKind::Redb, &root, Config::default()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

#[cfg(feature = "redb")]
#[test]
fn redb_store_with_a_damaged_file_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(Store::open_backend(BackendKind::Redb, &root, Config::default()).unwrap());
    let file = root.join("db").join("cairn.redb");
    assert!(file.exists());
    std::fs::write(
        &file,
        b"this is not a redb file, it is text written over it...........",
    )
    .unwrap();
    let e = Store::open_backend(BackendKind::Redb, &root, Config::default()).unwrap_err();
    assert!(matches!(e, Error::NotAStore { .. }), "{e}");
    assert!(e.to_string().contains("redb"), "{e}");
}

#[cfg(feature = "redb")]
#[test]
fn redb_group_durability_flushes_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let cfg = Config::default().durability(cairn::Durability::Group {
        interval_ms: 60_000,
    });
    let ids = {
        let s = Store::open_backend(BackendKind::Redb, &root, cfg.clone()).unwrap();
        let sess = s.create_session(NewSession::new()).unwrap();
        let mut ids = Vec::new();
        for i in 0..50 {
            let a = s
                .put(
                    sess.id,
                    NewArtifact::new(ArtifactKind::ToolResult, format!("f{i}")),
                    format!("c{i}"),
                )
                .unwrap();
            ids.push((sess.id, a.id, i));
        }
        s.flush().unwrap();
        ids
    };
    let s = Store::open_backend(BackendKind::Redb, &root, cfg).unwrap();
    for (sid, id, i) in ids {
        assert_eq!(s.read(sid, id).unwrap(), format!("c{i}").as_bytes());
    }
}
