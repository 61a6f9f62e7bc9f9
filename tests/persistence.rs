//! Everything survives closing and reopening the sled store; opening refuses what is not a store.

use crate::common;

use cairn::*;

#[test]
fn everything_survives_reopen_including_reference_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let content = common::json_text(300_000, 3);
    let (root, child, a1, a2, small);
    {
        let s = Store::open(&path).unwrap();
        root = s
            .create_session(NewSession::new().key("k").tag("t").meta("m", 1))
            .unwrap();
        child = s.create_session(NewSession::new().parent(root.id)).unwrap();
        a1 = s
            .put(
                root.id,
                NewArtifact::new(ArtifactKind::ToolResult, "x.json").tag("q"),
                &content,
            )
            .unwrap();
        a2 = s
            .put(
                child.id,
                NewArtifact::new(ArtifactKind::ToolResult, "y.json"),
                &content,
            )
            .unwrap();
        small = s
            .put(
                child.id,
                NewArtifact::new(ArtifactKind::UserInput, "y.json"),
                b"v2",
            )
            .unwrap();
        s.suspend(child.id).unwrap();
        s.append_event(root.id, "note", serde_json::json!({"a": 1}))
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.session(root.id).unwrap().metadata.get("m"),
        Some(&serde_json::json!(1))
    );
    assert_eq!(s.session_by_key("k").unwrap().unwrap().id, root.id);
    assert_eq!(
        s.session(child.id).unwrap().status,
        SessionStatus::Suspended
    );
    assert_eq!(s.children(root.id).unwrap().len(), 1);
    assert_eq!(s.read(root.id, a1.id).unwrap(), content);
    assert_eq!(
        s.artifact_by_name(child.id, "y.json", None).unwrap().id,
        small.id
    );
    assert_eq!(
        s.content_info(&a1.hash).unwrap().unwrap().refs,
        2,
        "reference counts persisted"
    );
    assert_eq!(s.query(&Query::new().tag("q")).unwrap().items.len(), 1);
    assert_eq!(s.events(root.id, None, 100).unwrap().items.len(), 3);
    let st = s.stats().unwrap();
    assert_eq!((st.sessions, st.artifacts, st.blobs), (2, 3, 2));
    // After a restart, deleting one user of shared content must not delete the content (LESSONS.md).
    s.delete_artifact(root.id, a1.id).unwrap();
    s.gc().unwrap();
    assert_eq!(s.read(child.id, a2.id).unwrap(), content);
    // New events continue the sequence after a restart.
    let ev = s
        .append_event(root.id, "after", serde_json::json!(null))
        .unwrap();
    assert_eq!(ev.seq, 5);
    // A new version after restart continues numbering.
    let v3 = s
        .put(
            child.id,
            NewArtifact::new(ArtifactKind::ToolResult, "y.json"),
            b"v3",
        )
        .unwrap();
    assert_eq!(v3.version, 3);
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.read(child.id, a2.id).unwrap(), content);
    assert_eq!(s.content_info(&a2.hash).unwrap().unwrap().refs, 1);
}

#[test]
fn group_commit_flush_makes_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let cfg = Config::default().durability(Durability::Group { interval_ms: 50 });
    let id;
    {
        let s = Store::open_with(&path, cfg.clone()).unwrap();
        let a = s.create_session(NewSession::new()).unwrap();
        id = s
            .put(
                a.id,
                NewArtifact::new(ArtifactKind::ToolResult, "g"),
                b"group",
            )
            .unwrap()
            .id;
        s.flush().unwrap();
    }
    let s = Store::open_with(&path, cfg).unwrap();
    assert_eq!(s.admin().read(id).unwrap(), b"group");
}

#[test]
fn a_second_open_of_a_held_store_says_it_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _s = Store::open(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert!(e.to_string().contains("another process"), "{e}");
}

#[test]
fn opening_something_that_is_not_a_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"hello").unwrap();
    let e = Store::open(&file).unwrap_err();
    assert!(matches!(e, Error::NotAStore { .. }), "{e}");

    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), b"mine").unwrap();
    let e = Store::open(&full).unwrap_err();
    assert!(matches!(e, Error::NotAStore { .. }), "{e}");
    assert_eq!(
        std::fs::read(full.join("notes.txt")).unwrap(),
        b"mine",
        "untouched"
    );

    let newer = dir.path().join("newer");
    drop(Store::open(&newer).unwrap());
    std::fs::write(newer.join("CAIRN"), br#"{"format":99,"backend":"sled"}"#).unwrap();
    let e = Store::open(&newer).unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");

    let garbage_marker = dir.path().join("gm");
    drop(Store::open(&garbage_marker).unwrap());
    std::fs::write(garbage_marker.join("CAIRN"), b"\xff\xfe garbage").unwrap();
    assert!(matches!(
        Store::open(&garbage_marker),
        Err(Error::NotAStore { .. })
    ));

    // An empty folder becomes a store.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(Store::open(&empty).is_ok());
}

/// `Store::open_read_only` on redb (the default engine) reads everything and writes nothing:
/// the database file is byte for byte the same after a session of reads, several readers share
/// the store, and a write through such a handle is a clear error that changes nothing.
#[cfg(feature = "redb")]
#[test]
fn a_read_only_open_reads_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (sid, id) = {
        let s = Store::open(&path).unwrap();
        let sid = s.create_session(NewSession::new().name("run")).unwrap().id;
        let a = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "out.txt").tag("t"),
                b"hello from the read-only test".repeat(100),
            )
            .unwrap();
        (sid, a.id)
    };
    let file = path.join("db").join("cairn.redb");
    let before = std::fs::read(&file).unwrap();
    {
        let r1 = Store::open_read_only(&path, Config::default()).unwrap();
        let r2 = Store::open_read_only(&path, Config::default()).unwrap();
        let page = r1.query(&Query::new().tag("t")).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].id, id);
        assert_eq!(
            r2.read(sid, id).unwrap(),
            b"hello from the read-only test".repeat(100)
        );
        assert_eq!(r1.session(sid).unwrap().name.as_deref(), Some("run"));
        let refused = r1.create_session(NewSession::new());
        let text = format!("{}", refused.unwrap_err());
        assert!(text.contains("read-only"), "{text}");
        assert_eq!(
            r2.list_sessions(&SessionFilter::default())
                .unwrap()
                .items
                .len(),
            1
        );
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file is unchanged"
    );
    // A writer opens it afterwards as usual and sees nothing of the refused write.
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.list_sessions(&SessionFilter::default())
            .unwrap()
            .items
            .len(),
        1
    );
}

/// Another engine has no read-only mode: `open_read_only` opens it as usual.
#[test]
fn a_read_only_open_of_a_sled_store_opens_it_as_usual() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let s = Store::open_with(&path, Config::default().engine(BackendKind::Sled)).unwrap();
        s.create_session(NewSession::new().name("run")).unwrap();
    }
    let r = Store::open_read_only(&path, Config::default()).unwrap();
    assert_eq!(
        r.list_sessions(&SessionFilter::default())
            .unwrap()
            .items
            .len(),
        1
    );
}
