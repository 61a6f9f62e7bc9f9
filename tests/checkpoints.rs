//! Checkpoints: create, list, latest, show, delete, prune, restore; immutability; blob
//! references that keep checkpointed content alive through deletes, GC, session deletion and
//! restarts.

use crate::common;

use cairn::*;
use serde_json::json;

fn put(s: &Store, sid: SessionId, name: &str, bytes: &[u8]) -> Artifact {
    s.put(sid, NewArtifact::new(ArtifactKind::ToolResult, name), bytes)
        .unwrap()
}

#[test]
fn create_list_latest_show_delete() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let sess = s.create_session(NewSession::new().name("run")).unwrap();
        let a = put(&s, sess.id, "a.txt", b"alpha");
        let c1 = s
            .create_checkpoint(sess.id, NewCheckpoint::new("step-1").state(json!({"i": 1})))
            .unwrap();
        assert_eq!(c1.session_id, sess.id);
        assert_eq!(c1.label, "step-1");
        assert_eq!(c1.state, json!({"i": 1}));
        assert_eq!(c1.artifact_count, 1);
        assert!(c1.state_blob.is_none());
        // Its position in the event log is its own checkpoint_created event.
        let evs = s.events(sess.id, None, 100).unwrap().items;
        let ev = evs.iter().find(|e| e.seq == c1.event_seq).unwrap();
        let matched = matches!(&ev.kind, EventKind::CheckpointCreated { checkpoint_id, label }
            if *checkpoint_id == c1.id && label == "step-1");
        assert!(matched);

        put(&s, sess.id, "b.txt", b"beta");
        let c2 = s
            .create_checkpoint(sess.id, NewCheckpoint::new("step-2"))
            .unwrap();
        let c3 = s
            .create_checkpoint(sess.id, NewCheckpoint::new("step-1").state(json!({"i": 3})))
            .unwrap();
        assert!(c2.event_seq > c1.event_seq && c3.event_seq > c2.event_seq);
        assert_eq!(c2.artifact_count, 2);

        let ids: Vec<_> = s
            .checkpoints(sess.id)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, [c1.id, c2.id, c3.id]);
        let page = s.checkpoints_page(sess.id, None, 2).unwrap();
        assert_eq!(page.items.len(), 2);
        assert!(page.has_more());
        let rest = s
            .checkpoints_page(sess.id, Some(page.items[1].id), 2)
            .unwrap();
        assert_eq!(rest.items.iter().map(|c| c.id).collect::<Vec<_>>(), [c3.id]);
        assert!(!rest.has_more());

        assert_eq!(
            s.latest_checkpoint(sess.id, None).unwrap().unwrap().id,
            c3.id
        );
        assert_eq!(
            s.latest_checkpoint(sess.id, Some("step-2"))
                .unwrap()
                .unwrap()
                .id,
            c2.id
        );
        assert_eq!(
            s.latest_checkpoint(sess.id, Some("step-1"))
                .unwrap()
                .unwrap()
                .id,
            c3.id
        );
        assert!(s
            .latest_checkpoint(sess.id, Some("nope"))
            .unwrap()
            .is_none());
        assert_eq!(s.checkpoint(c2.id).unwrap(), c2);

        let captured = s.checkpoint_artifacts(c1.id).unwrap();
        assert_eq!(captured, vec![a.clone()]);

        let gone = s.delete_checkpoint(c3.id).unwrap();
        assert_eq!(gone.id, c3.id);
        let after = s.checkpoint(c3.id);
        assert!(matches!(after, Err(Error::CheckpointNotFound { id }) if id == c3.id));
        assert!(matches!(
            s.delete_checkpoint(c3.id),
            Err(Error::CheckpointNotFound { .. })
        ));
        assert_eq!(
            s.latest_checkpoint(sess.id, Some("step-1"))
                .unwrap()
                .unwrap()
                .id,
            c1.id
        );
        assert_eq!(s.checkpoints(sess.id).unwrap().len(), 2);
    }
}

#[test]
fn a_checkpoint_never_changes_after_later_writes() {
    let (s, _d) = common::store(BackendKind::Sled, Config::default());
    let sess = s.create_session(NewSession::new()).unwrap();
    let a1 = put(&s, sess.id, "notes.md", b"v1");
    let b = put(&s, sess.id, "data.json", b"{\"x\":1}");
    let cp = s
        .create_checkpoint(sess.id, NewCheckpoint::new("before").state(json!(["s"])))
        .unwrap();
    let before = s.checkpoint_artifacts(cp.id).unwrap();

    // Later: a new version, a delete, a new artifact, metadata changes.
    let a2 = put(&s, sess.id, "notes.md", b"v2");
    assert_eq!(a2.version, 2);
    s.delete_artifact(sess.id, b.id).unwrap();
    put(&s, sess.id, "more.txt", b"more");
    s.update_tags(sess.id, &["x".into()], &[]).unwrap();

    assert_eq!(s.checkpoint(cp.id).unwrap(), cp);
    assert_eq!(s.checkpoint_artifacts(cp.id).unwrap(), before);
    assert_eq!(before.len(), 2);
    assert_eq!((before[0].id, before[0].version), (a1.id, 1));
    assert_eq!(s.read_checkpoint_artifact(cp.id, a1.id).unwrap(), b"v1");
    assert_eq!(
        s.read_checkpoint_artifact(cp.id, b.id).unwrap(),
        b"{\"x\":1}"
    );
    // An artifact the checkpoint did not capture is not readable through it.
    let err = s.read_checkpoint_artifact(cp.id, a2.id).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn gc_keeps_checkpointed_content_until_the_checkpoint_goes() {
    // Small (inline) and large (file) content, compressed and not.
    let cfg = Config::default().inline_threshold(1024);
    let (s, dir) = common::store(BackendKind::Sled, cfg);
    let sess = s.create_session(NewSession::new()).unwrap();
    let small = put(&s, sess.id, "small.txt", b"small content");
    let big_bytes = common::json_text(300_000, 7);
    let big = put(&s, sess.id, "big.json", &big_bytes);
    let cp = s
        .create_checkpoint(sess.id, NewCheckpoint::new("keep"))
        .unwrap();

    s.delete_artifact(sess.id, small.id).unwrap();
    s.delete_artifact(sess.id, big.id).unwrap();
    let r = s.gc().unwrap();
    assert_eq!(
        r.blobs_removed, 0,
        "the checkpoint still references both blobs"
    );
    assert_eq!(s.stats().unwrap().blobs, 2);
    assert_eq!(
        s.read_checkpoint_artifact(cp.id, small.id).unwrap(),
        b"small content"
    );
    assert_eq!(
        s.read_checkpoint_artifact(cp.id, big.id).unwrap(),
        big_bytes
    );

    // The references are on disk, not in memory: they hold across a restart.
    drop(s);
    let s = Store::open_with(
        dir.path().join("store"),
        Config::default().inline_threshold(1024),
    )
    .unwrap();
    assert_eq!(s.gc().unwrap().blobs_removed, 0);
    assert_eq!(
        s.read_checkpoint_artifact(cp.id, big.id).unwrap(),
        big_bytes
    );

    s.delete_checkpoint(cp.id).unwrap();
    assert_eq!(s.garbage_count().unwrap(), 2);
    let r = s.gc().unwrap();
    assert_eq!(r.blobs_removed, 2);
    assert_eq!(s.stats().unwrap().blobs, 0);
    let blob_files = common::files_under(&dir.path().join("store/blobs"));
    assert!(blob_files.is_empty(), "{blob_files:?}");
}

#[test]
fn shared_content_survives_until_every_holder_is_gone() {
    let s = Store::memory();
    let sess = s.create_session(NewSession::new()).unwrap();
    let a = put(&s, sess.id, "a", b"same bytes");
    let c1 = s
        .create_checkpoint(sess.id, NewCheckpoint::new("one"))
        .unwrap();
    let c2 = s
        .create_checkpoint(sess.id, NewCheckpoint::new("two"))
        .unwrap();
    s.delete_artifact(sess.id, a.id).unwrap();
    s.delete_checkpoint(c1.id).unwrap();
    s.gc().unwrap();
    assert_eq!(
        s.read_checkpoint_artifact(c2.id, a.id).unwrap(),
        b"same bytes"
    );
    s.delete_checkpoint(c2.id).unwrap();
    assert_eq!(s.gc().unwrap().blobs_removed, 1);
}

#[test]
fn binary_state_is_content_and_is_released_with_the_checkpoint() {
    let s = Store::memory_with(Config::default().compression_threshold(Config::ALWAYS_COMPRESS))
        .unwrap();
    let sess = s.create_session(NewSession::new()).unwrap();
    let state = common::json_text(50_000, 3);
    let cp = s
        .create_checkpoint(
            sess.id,
            NewCheckpoint::new("model")
                .state(json!({"epoch": 3}))
                .state_bytes(state.clone()),
        )
        .unwrap();
    let blob = cp.state_blob.unwrap();
    assert_eq!(blob.size, state.len() as u64);
    assert_eq!(blob.hash, ContentHash::of(&state));
    assert_eq!(s.checkpoint_state_bytes(cp.id).unwrap().unwrap(), state);
    // Same state again: deduplicated, one blob.
    let cp2 = s
        .create_checkpoint(
            sess.id,
            NewCheckpoint::new("model").state_bytes(state.clone()),
        )
        .unwrap();
    assert_eq!(s.stats().unwrap().blobs, 1);
    assert_eq!(s.gc().unwrap().blobs_removed, 0);
    s.delete_checkpoint(cp.id).unwrap();
    assert_eq!(s.gc().unwrap().blobs_removed, 0);
    assert_eq!(s.checkpoint_state_bytes(cp2.id).unwrap().unwrap(), state);
    s.delete_checkpoint(cp2.id).unwrap();
    assert_eq!(s.gc().unwrap().blobs_removed, 1);
    let none = s
        .create_checkpoint(sess.id, NewCheckpoint::new("x"))
        .unwrap();
    assert!(s.checkpoint_state_bytes(none.id).unwrap().is_none());
}

#[test]
fn deleting_a_session_deletes_its_checkpoints_and_their_references() {
    let (s, dir) = common::store(BackendKind::Sled, Config::default());
    let parent = s.create_session(NewSession::new()).unwrap();
    let child = s
        .create_session(NewSession::new().parent(parent.id))
        .unwrap();
    let keep = s.create_session(NewSession::new()).unwrap();
    put(&s, parent.id, "p", b"parent data");
    put(&s, child.id, "c", b"child data");
    let shared = put(&s, keep.id, "k", b"child data"); // same content, another session
    let cp_p = s
        .create_checkpoint(
            parent.id,
            NewCheckpoint::new("p").state_bytes(b"state!".to_vec()),
        )
        .unwrap();
    let cp_c = s
        .create_checkpoint(child.id, NewCheckpoint::new("c"))
        .unwrap();
    let report = s.delete_session(parent.id, true).unwrap();
    assert_eq!(report.sessions, 2);
    for id in [cp_p.id, cp_c.id] {
        assert!(matches!(
            s.checkpoint(id),
            Err(Error::CheckpointNotFound { .. })
        ));
    }
    let r = s.gc().unwrap();
    assert_eq!(
        r.blobs_removed, 2,
        "parent data and the state; child data is still used"
    );
    assert_eq!(s.read(keep.id, shared.id).unwrap(), b"child data");
    drop(s);
    let s = Store::open(dir.path().join("store")).unwrap();
    s.delete_session(keep.id, false).unwrap();
    assert_eq!(s.gc().unwrap().blobs_removed, 1);
    assert_eq!(s.stats().unwrap().blobs, 0);
}

#[test]
fn prune_keeps_the_latest_n() {
    let s = Store::memory();
    let sess = s.create_session(NewSession::new()).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        put(&s, sess.id, "log", format!("line {i}").as_bytes());
        ids.push(
            s.create_checkpoint(sess.id, NewCheckpoint::new("auto"))
                .unwrap()
                .id,
        );
    }
    let manual = s
        .create_checkpoint(sess.id, NewCheckpoint::new("manual"))
        .unwrap();
    assert_eq!(s.prune_checkpoints(sess.id, Some("auto"), 2).unwrap(), 3);
    let left: Vec<_> = s
        .checkpoints(sess.id)
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, [ids[3], ids[4], manual.id]);
    // Kept checkpoints hold every version they captured, version 1 included.
    let log1 = s.artifact_by_name(sess.id, "log", Some(1)).unwrap();
    s.delete_artifact(sess.id, log1.id).unwrap();
    assert_eq!(s.gc().unwrap().blobs_removed, 0);
    assert_eq!(
        s.read_checkpoint_artifact(ids[3], log1.id).unwrap(),
        b"line 0"
    );
    assert_eq!(s.prune_checkpoints(sess.id, None, 0).unwrap(), 3);
    assert!(s.checkpoints(sess.id).unwrap().is_empty());
    assert_eq!(
        s.gc().unwrap().blobs_removed,
        1,
        "nothing holds version 1 any more"
    );
}

#[test]
fn restore_puts_the_session_back_and_can_be_undone() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let sess = s.create_session(NewSession::new()).unwrap();
        let a1 = put(&s, sess.id, "a", b"a1");
        let b = put(&s, sess.id, "b", b"b");
        s.say(sess.id, Role::User, "hello", Default::default())
            .unwrap();
        let cp = s
            .create_checkpoint(sess.id, NewCheckpoint::new("good"))
            .unwrap();

        let a2 = put(&s, sess.id, "a", b"a2");
        s.delete_artifact(sess.id, b.id).unwrap();
        let c = put(&s, sess.id, "c", b"c");
        s.say(sess.id, Role::Assistant, "later", Default::default())
            .unwrap();
        s.gc().unwrap();

        let r = s.restore_checkpoint(cp.id).unwrap();
        assert_eq!(r.checkpoint, cp.id);
        assert_eq!(r.reinstated, vec![b.id]);
        assert_eq!(r.removed.len(), 3, "a2, c and the later message: {r:?}");
        assert!(r.removed.contains(&a2.id) && r.removed.contains(&c.id));
        let now = s.list_artifacts(sess.id, false, 100, None).unwrap().items;
        let mut got: Vec<_> = now
            .iter()
            .map(|a| (a.id, a.name.clone(), a.version))
            .collect();
        got.sort();
        let mut want: Vec<_> = s
            .checkpoint_artifacts(cp.id)
            .unwrap()
            .iter()
            .map(|a| (a.id, a.name.clone(), a.version))
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(s.artifact_by_name(sess.id, "a", None).unwrap().id, a1.id);
        assert_eq!(s.read(sess.id, b.id).unwrap(), b"b");
        assert!(s.artifact_by_name(sess.id, "c", None).is_err());
        let h = s.history(sess.id, None).unwrap();
        assert_eq!(
            h.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["hello"]
        );
        // A new version after the restore continues from the restored latest.
        assert_eq!(put(&s, sess.id, "a", b"a3").version, 2);

        // Undo: restore the automatic backup.
        let backup = s.checkpoint(r.backup).unwrap();
        assert_eq!(backup.label, "before-restore");
        s.restore_checkpoint(r.backup).unwrap();
        let names: Vec<_> = {
            let mut v: Vec<_> = s
                .list_artifacts(sess.id, false, 100, None)
                .unwrap()
                .items
                .into_iter()
                .map(|a| (a.name, a.version))
                .collect();
            v.sort();
            v
        };
        assert!(
            names.contains(&("a".into(), 2)) && names.contains(&("c".into(), 1)),
            "{names:?}"
        );
        assert_eq!(s.read(sess.id, c.id).unwrap(), b"c");
        assert!(s.artifact(sess.id, b.id).is_err());
    }
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let s = Store::memory();
    let sess = s.create_session(NewSession::new()).unwrap();
    for bad in ["", "a\nb", "x\0y"] {
        let e = s
            .create_checkpoint(sess.id, NewCheckpoint::new(bad))
            .unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{bad:?}");
        assert!(e.to_string().contains("checkpoint label"), "{e}");
    }
    let e = s
        .create_checkpoint(sess.id, NewCheckpoint::new("x".repeat(MAX_LABEL_LEN + 1)))
        .unwrap_err();
    assert!(e.to_string().contains("longer than"), "{e}");
    let big = json!("s".repeat(70_000));
    let e = s
        .create_checkpoint(sess.id, NewCheckpoint::new("big").state(big))
        .unwrap_err();
    let matched = matches!(
        e,
        Error::LimitExceeded {
            limit: "max_metadata_bytes",
            ..
        }
    );
    assert!(matched, "{e}");
    assert!(e.to_string().contains("state_bytes"), "{e}");
    let ghost = SessionId::new();
    assert!(s
        .create_checkpoint(ghost, NewCheckpoint::new("x"))
        .unwrap_err()
        .is_not_found());
    let missing = CheckpointId::new();
    for e in [
        s.checkpoint(missing).unwrap_err(),
        s.restore_checkpoint(missing).unwrap_err(),
        s.checkpoint_artifacts(missing).unwrap_err(),
        s.delete_checkpoint(missing).unwrap_err(),
    ] {
        let matched = matches!(e, Error::CheckpointNotFound { id } if id == missing);
        assert!(matched, "{e}");
    }
    assert!(s.checkpoints_page(sess.id, None, 0).is_err());
    assert!(s.checkpoints(ghost).unwrap_err().is_not_found());
    assert!(
        s.checkpoints(sess.id).unwrap().is_empty(),
        "nothing was stored"
    );

    // A finished session can be checkpointed but not restored into.
    put(&s, sess.id, "a", b"a");
    let cp = s
        .create_checkpoint(sess.id, NewCheckpoint::new("end"))
        .unwrap();
    s.complete(sess.id).unwrap();
    let after = s
        .create_checkpoint(sess.id, NewCheckpoint::new("final"))
        .unwrap();
    assert_eq!(after.artifact_count, 1);
    let e = s.restore_checkpoint(cp.id).unwrap_err();
    assert!(matches!(e, Error::SessionClosed { .. }), "{e}");
    assert!(e.to_string().contains("fork"), "{e}");
    assert_eq!(
        s.checkpoints(sess.id).unwrap().len(),
        2,
        "the failed restore stored no backup"
    );
}

#[test]
fn concurrent_checkpoints_puts_and_deletes_keep_references_exact() {
    let (s, _d) = common::store(BackendKind::Sled, Config::default());
    let sess = s.create_session(NewSession::new()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let s = s.clone();
            scope.spawn(move || {
                for i in 0..25u64 {
                    // Shared content across threads, so blobs have many holders at once.
                    let a = put(
                        &s,
                        sess.id,
                        &format!("t{t}/f{}", i % 5),
                        format!("c{}", i % 7).as_bytes(),
                    );
                    let cp = s
                        .create_checkpoint(sess.id, NewCheckpoint::new(format!("t{t}")))
                        .unwrap();
                    if i % 3 == 0 {
                        s.delete_artifact(sess.id, a.id).unwrap();
                    }
                    if i % 2 == 0 {
                        s.delete_checkpoint(cp.id).unwrap();
                    }
                    if i % 10 == 0 {
                        s.gc().unwrap();
                    }
                }
            });
        }
    });
    // Every checkpoint still reads every artifact it captured.
    for cp in s.checkpoints(sess.id).unwrap() {
        for a in s.checkpoint_artifacts(cp.id).unwrap() {
            let bytes = s.read_checkpoint_artifact(cp.id, a.id).unwrap();
            assert_eq!(ContentHash::of(&bytes), a.hash);
        }
    }
    // Dropping every holder leaves nothing: no reference was leaked.
    s.delete_session(sess.id, false).unwrap();
    s.gc().unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.blobs, st.artifacts), (0, 0));
}
