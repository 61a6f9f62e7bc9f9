//! Fork, copy and merge: isolation both ways, lineage, no content copied, versions in time order.

use crate::common;

use cairn::*;
use serde_json::json;

fn put(s: &Store, sid: SessionId, name: &str, bytes: &[u8]) -> Artifact {
    s.put(
        sid,
        NewArtifact::new(ArtifactKind::ToolResult, name).tag("t"),
        bytes,
    )
    .unwrap()
}

fn names(s: &Store, sid: SessionId) -> Vec<(String, u32, Vec<u8>)> {
    let mut v: Vec<_> = s
        .list_artifacts(sid, false, 1000, None)
        .unwrap()
        .items
        .into_iter()
        .map(|a| {
            let bytes = s.read(sid, a.id).unwrap();
            (a.name, a.version, bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn fork_at_a_checkpoint_is_isolated_both_ways() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let src = s
            .create_session(NewSession::new().name("main").tag("exp"))
            .unwrap();
        let a1 = put(&s, src.id, "plan.md", b"plan v1");
        let a2 = put(&s, src.id, "plan.md", b"plan v2");
        let big = common::json_text(200_000, 5);
        put(&s, src.id, "data.json", &big);
        let cp = s
            .create_checkpoint(src.id, NewCheckpoint::new("good"))
            .unwrap();
        // After the checkpoint: not in the fork.
        put(&s, src.id, "after.txt", b"later");
        let blobs_before = s.stats().unwrap().blobs;
        let stored_before = s.stats().unwrap().stored_bytes;

        let fork = s
            .fork(src.id, Some(cp.id), NewSession::new().name("try-b"))
            .unwrap();
        assert_eq!(fork.parent_id, Some(src.id));
        assert_eq!(fork.name.as_deref(), Some("try-b"));
        assert_eq!(fork.status, SessionStatus::Active);
        // No content copied: same blobs, same stored bytes.
        assert_eq!(s.stats().unwrap().blobs, blobs_before);
        assert_eq!(s.stats().unwrap().stored_bytes, stored_before);

        // The fork holds exactly the checkpoint's versions, under new ids.
        let f = names(&s, fork.id);
        assert_eq!(
            f,
            vec![
                ("data.json".into(), 1, big.clone()),
                ("plan.md".into(), 1, b"plan v1".to_vec()),
                ("plan.md".into(), 2, b"plan v2".to_vec()),
            ]
        );
        let fa = s.artifact_by_name(fork.id, "plan.md", None).unwrap();
        assert_eq!(fa.version, 2);
        assert_eq!(fa.hash, a2.hash);
        assert_ne!(fa.id, a2.id);
        assert_eq!(fa.tags, vec!["t".to_string()]);
        // Source ids are not visible through the fork.
        assert!(s.artifact(fork.id, a1.id).is_err());

        // First event records the origin.
        let first = &s.events(fork.id, None, 1).unwrap().items[0];
        assert_eq!(first.seq, 1);
        assert_eq!(
            first.kind,
            EventKind::Forked {
                source_session: src.id,
                checkpoint_id: Some(cp.id)
            }
        );

        // Writes on one side do not show on the other, both ways.
        put(&s, fork.id, "plan.md", b"fork's plan v3");
        put(&s, fork.id, "only-fork.txt", b"f");
        put(&s, src.id, "plan.md", b"source's plan v3");
        assert_eq!(
            s.read(
                fork.id,
                s.artifact_by_name(fork.id, "plan.md", None).unwrap().id
            )
            .unwrap(),
            b"fork's plan v3"
        );
        assert_eq!(
            s.read(
                src.id,
                s.artifact_by_name(src.id, "plan.md", None).unwrap().id
            )
            .unwrap(),
            b"source's plan v3"
        );
        assert!(s.artifact_by_name(src.id, "only-fork.txt", None).is_err());
        assert!(s.artifact_by_name(fork.id, "after.txt", None).is_err());
        // Deleting in the source does not touch the fork's content, even after GC.
        s.delete_artifact(src.id, a1.id).unwrap();
        s.gc().unwrap();
        let fv1 = s.artifact_by_name(fork.id, "plan.md", Some(1)).unwrap();
        assert_eq!(s.read(fork.id, fv1.id).unwrap(), b"plan v1");
        // Deleting the fork leaves the source alone.
        s.delete_session(fork.id, false).unwrap();
        s.gc().unwrap();
        assert_eq!(
            s.read(
                src.id,
                s.artifact_by_name(src.id, "data.json", None).unwrap().id
            )
            .unwrap(),
            big
        );
    }
}

#[test]
fn fork_at_current_state_and_of_a_finished_session() {
    let s = Store::memory();
    let src = s
        .create_session(NewSession::new().name("done").options(SessionOptions {
            max_history: Some(5),
            ..Default::default()
        }))
        .unwrap();
    put(&s, src.id, "x", b"x1");
    s.complete(src.id).unwrap();
    let fork = s.fork(src.id, None, NewSession::new()).unwrap();
    assert_eq!(
        fork.name.as_deref(),
        Some("done"),
        "name defaults to the source's"
    );
    assert_eq!(
        fork.options.max_history,
        Some(5),
        "options default to the source's"
    );
    assert_eq!(names(&s, fork.id), vec![("x".into(), 1, b"x1".to_vec())]);
    // The fork is live and takes writes; the source stays finished.
    put(&s, fork.id, "x", b"x2");
    assert_eq!(s.session(src.id).unwrap().status, SessionStatus::Completed);
    let first = &s.events(fork.id, None, 1).unwrap().items[0];
    assert_eq!(
        first.kind,
        EventKind::Forked {
            source_session: src.id,
            checkpoint_id: None
        }
    );
}

#[test]
fn lineage_and_forks() {
    let (s, dir) = common::store(BackendKind::Sled, Config::default());
    let root = s.create_session(NewSession::new()).unwrap();
    put(&s, root.id, "a", b"a");
    let cp = s
        .create_checkpoint(root.id, NewCheckpoint::new("c"))
        .unwrap();
    let f1 = s.fork(root.id, Some(cp.id), NewSession::new()).unwrap();
    let f2 = s.fork(root.id, None, NewSession::new()).unwrap();
    let f1a = s.fork(f1.id, None, NewSession::new()).unwrap();
    let copy = s.copy_session(root.id, CopyOptions::new()).unwrap();

    assert!(s.lineage(root.id).unwrap().is_empty());
    let l1 = s.lineage(f1.id).unwrap();
    assert_eq!(l1.len(), 1);
    assert_eq!(
        (l1[0].session, l1[0].source, l1[0].checkpoint, l1[0].kind),
        (f1.id, root.id, Some(cp.id), LineageKind::Fork)
    );
    assert_eq!(s.lineage(f1a.id).unwrap()[0].source, f1.id);
    assert_eq!(s.lineage(copy.id).unwrap()[0].kind, LineageKind::Copy);
    let forks: Vec<_> = s
        .forks(root.id)
        .unwrap()
        .iter()
        .map(|l| (l.session, l.kind))
        .collect();
    assert_eq!(
        forks,
        [
            (f1.id, LineageKind::Fork),
            (f2.id, LineageKind::Fork),
            (copy.id, LineageKind::Copy)
        ]
    );
    assert_eq!(s.forks(f1.id).unwrap().len(), 1);

    // Lineage is on disk.
    drop(s);
    let s = Store::open(dir.path().join("store")).unwrap();
    assert_eq!(s.forks(root.id).unwrap().len(), 3);

    // Deleting a derived session drops its lineage record; deleting a source keeps its
    // copies' lineage (they still came from it).
    s.delete_session(f2.id, false).unwrap();
    assert_eq!(s.forks(root.id).unwrap().len(), 2);
    s.delete_session(root.id, true).unwrap(); // takes f1 and f1a (children) with it
    let l = s.lineage(copy.id).unwrap();
    assert_eq!((l[0].source, l[0].kind), (root.id, LineageKind::Copy));
    assert!(s.forks(root.id).unwrap_err().is_not_found());
}

#[test]
fn fork_refuses_bad_requests_and_changes_nothing() {
    let s = Store::memory();
    let a = s.create_session(NewSession::new()).unwrap();
    let b = s.create_session(NewSession::new()).unwrap();
    let cp_b = s.create_checkpoint(b.id, NewCheckpoint::new("b")).unwrap();
    let before = s.stats().unwrap().sessions;
    let e = s.fork(a.id, Some(cp_b.id), NewSession::new()).unwrap_err();
    assert!(e.to_string().contains("belongs to session"), "{e}");
    let e = s
        .fork(a.id, None, NewSession::new().parent(b.id))
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    let e = s
        .fork(a.id, Some(CheckpointId::new()), NewSession::new())
        .unwrap_err();
    assert!(matches!(e, Error::CheckpointNotFound { .. }));
    assert!(s
        .fork(SessionId::new(), None, NewSession::new())
        .unwrap_err()
        .is_not_found());
    s.create_session(NewSession::new().key("taken")).unwrap();
    let e = s
        .fork(a.id, None, NewSession::new().key("taken"))
        .unwrap_err();
    assert!(matches!(e, Error::KeyConflict { .. }), "{e}");
    assert_eq!(s.stats().unwrap().sessions, before + 1);
    assert!(s.forks(a.id).unwrap().is_empty());
}

#[test]
fn copy_a_subtree_keeps_shape_content_and_history() {
    let s = Store::memory();
    let parent = s.create_session(NewSession::new().name("p")).unwrap();
    let top = s
        .create_session(
            NewSession::new()
                .name("top")
                .key("unique")
                .tag("keep")
                .meta("m", 1)
                .parent(parent.id),
        )
        .unwrap();
    let kid = s
        .create_session(NewSession::new().name("kid").parent(top.id))
        .unwrap();
    let grandkid = s
        .create_session(NewSession::new().name("gk").parent(kid.id))
        .unwrap();
    put(&s, top.id, "t", b"top");
    put(&s, kid.id, "k", b"kid");
    put(&s, kid.id, "k", b"kid2");
    put(&s, grandkid.id, "g", b"gk");
    s.say(top.id, Role::User, "hi", Default::default()).unwrap();
    s.say(top.id, Role::Assistant, "hello", Default::default())
        .unwrap();
    s.complete(kid.id).unwrap();
    let blobs = s.stats().unwrap().blobs;

    let copy = s
        .copy_session(top.id, CopyOptions::new().subtree(true))
        .unwrap();
    assert_eq!(s.stats().unwrap().blobs, blobs, "no content copied");
    assert_eq!(copy.name.as_deref(), Some("top"));
    assert_eq!(copy.parent_id, Some(parent.id), "a sibling of the source");
    assert_eq!(copy.key, None, "keys are unique: not copied");
    assert_eq!(copy.tags, vec!["keep".to_string()]);
    assert_eq!(copy.metadata["m"], json!(1));
    assert_eq!(names(&s, copy.id), names(&s, top.id));
    let kids = s.children(copy.id).unwrap();
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].name.as_deref(), Some("kid"));
    assert_eq!(kids[0].status, SessionStatus::Active);
    assert_eq!(names(&s, kids[0].id), names(&s, kid.id));
    let gks = s.children(kids[0].id).unwrap();
    assert_eq!(names(&s, gks[0].id), names(&s, grandkid.id));
    assert_eq!(s.lineage(gks[0].id).unwrap()[0].source, grandkid.id);
    let h: Vec<_> = s
        .history(copy.id, None)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.role, m.content))
        .collect();
    assert_eq!(
        h,
        vec![
            (1, Role::User, "hi".to_string()),
            (2, Role::Assistant, "hello".to_string())
        ]
    );
    // The copy is independent.
    put(&s, kids[0].id, "k", b"copy's kid3");
    assert_eq!(s.versions(kid.id, "k").unwrap().len(), 2);

    // Without subtree: one session; as a root, renamed.
    let solo = s
        .copy_session(top.id, CopyOptions::new().parent(None).name("solo"))
        .unwrap();
    assert_eq!(solo.parent_id, None);
    assert_eq!(solo.name.as_deref(), Some("solo"));
    assert!(s.children(solo.id).unwrap().is_empty());
}

#[test]
fn merge_makes_successive_versions_in_time_order() {
    let s = Store::memory();
    let a = s.create_session(NewSession::new()).unwrap();
    let b = s.create_session(NewSession::new()).unwrap();
    // Interleaved in time: a1, b1, a2, b2 for the same name.
    let x_a1 = put(&s, a.id, "notes", b"a first");
    let x_b1 = put(&s, b.id, "notes", b"b first");
    let x_a2 = put(&s, a.id, "notes", b"a second");
    let x_b2 = put(&s, b.id, "notes", b"b second");
    put(&s, b.id, "only-b", b"ob");
    s.say(b.id, Role::User, "from b", Default::default())
        .unwrap();
    s.say(a.id, Role::User, "from a", Default::default())
        .unwrap();
    let blobs = s.stats().unwrap().blobs;

    let m = s
        .merge_sessions(&[a.id, b.id], NewSession::new().name("merged"))
        .unwrap();
    assert_eq!(s.stats().unwrap().blobs, blobs, "no content copied");
    let v = s.versions(m.id, "notes").unwrap();
    let got: Vec<_> = v
        .iter()
        .map(|x| (x.version, s.read(m.id, x.id).unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, b"a first".to_vec()),
            (2, b"b first".to_vec()),
            (3, b"a second".to_vec()),
            (4, b"b second".to_vec()),
        ]
    );
    for (x, orig) in v.iter().zip([&x_a1, &x_b1, &x_a2, &x_b2]) {
        assert_eq!(x.hash, orig.hash);
    }
    assert_eq!(s.artifact_by_name(m.id, "notes", None).unwrap().version, 4);
    assert_eq!(s.artifact_by_name(m.id, "only-b", None).unwrap().version, 1);
    let h: Vec<_> = s
        .history(m.id, None)
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(h, ["from b", "from a"], "conversations merge in time order");
    let l = s.lineage(m.id).unwrap();
    assert_eq!(
        l.iter().map(|l| (l.source, l.kind)).collect::<Vec<_>>(),
        [(a.id, LineageKind::Merge), (b.id, LineageKind::Merge)]
    );
    // Sources are untouched.
    assert_eq!(s.versions(a.id, "notes").unwrap().len(), 2);

    assert_eq!(
        s.merge_sessions(&[], NewSession::new()).unwrap_err().code(),
        "invalid_input"
    );
    assert!(s
        .merge_sessions(&[a.id, a.id], NewSession::new())
        .unwrap_err()
        .to_string()
        .contains("twice"));
    assert!(s
        .merge_sessions(&[a.id, SessionId::new()], NewSession::new())
        .unwrap_err()
        .is_not_found());
}

#[test]
fn derived_sessions_respect_limits_and_store_nothing_on_failure() {
    let limits = Limits {
        max_artifacts_per_session: 3,
        ..Limits::default()
    };
    let s = Store::memory_with(Config::default().limits(limits)).unwrap();
    let a = s.create_session(NewSession::new()).unwrap();
    let b = s.create_session(NewSession::new()).unwrap();
    for i in 0..2 {
        put(&s, a.id, &format!("a{i}"), b"x");
        put(&s, b.id, &format!("b{i}"), b"y");
    }
    let before = s.stats().unwrap();
    let e = s
        .merge_sessions(&[a.id, b.id], NewSession::new())
        .unwrap_err();
    let matched = matches!(
        e,
        Error::LimitExceeded {
            limit: "max_artifacts_per_session",
            ..
        }
    );
    assert!(matched, "{e}");
    let after = s.stats().unwrap();
    assert_eq!(after.sessions, before.sessions);
    assert_eq!(after.artifacts, before.artifacts);
    assert!(s.forks(a.id).unwrap().is_empty());
}
