//! Conversation history (say/history, max_history) and the timeline (events and artifacts in
//! time order, paged by cursor, across a subtree).

use crate::common;

use std::collections::HashSet;

use cairn::*;
use serde_json::{json, Map, Value};

fn meta(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn say_stores_messages_as_artifacts_in_order() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let sess = s.create_session(NewSession::new()).unwrap();
        let turns = [
            (Role::System, "You are terse."),
            (Role::User, "List files."),
            (Role::Assistant, "Calling ls."),
            (Role::Tool, "a.txt\nb.txt\n"),
            (Role::Assistant, "Two files: a.txt, b.txt — done ✓"),
        ];
        let mut said = Vec::new();
        for (i, (role, text)) in turns.iter().enumerate() {
            let m = s
                .say(sess.id, *role, text, meta(json!({ "turn": i })))
                .unwrap();
            assert_eq!(m.seq, i as u64 + 1);
            said.push(m);
        }
        // Stored as artifacts of the right kinds.
        let kinds: Vec<_> = said
            .iter()
            .map(|m| s.artifact(sess.id, m.artifact_id).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                ArtifactKind::AgentOutput,
                ArtifactKind::UserInput,
                ArtifactKind::AgentOutput,
                ArtifactKind::ToolResult,
                ArtifactKind::AgentOutput
            ]
        );
        let q = s
            .query(&Query::new().session(sess.id).kind(ArtifactKind::UserInput))
            .unwrap();
        assert_eq!(q.items.len(), 1);
        assert_eq!(s.read(sess.id, q.items[0].id).unwrap(), b"List files.");

        let h = s.history(sess.id, None).unwrap();
        assert_eq!(h, said);
        assert_eq!(h[3].metadata["turn"], json!(3));
        let last2 = s.history(sess.id, Some(2)).unwrap();
        assert_eq!(
            last2.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [4, 5],
            "the latest, oldest first"
        );
        assert!(s.history(sess.id, Some(0)).unwrap().is_empty());
        assert_eq!(s.history(sess.id, Some(100)).unwrap().len(), 5);
    }
}

#[test]
fn max_history_bounds_what_history_returns() {
    let s = Store::memory();
    let sess = s
        .create_session(NewSession::new().options(SessionOptions {
            max_history: Some(3),
            ..Default::default()
        }))
        .unwrap();
    for i in 1..=10 {
        s.say(sess.id, Role::User, &format!("m{i}"), Map::new())
            .unwrap();
    }
    let all: Vec<_> = s
        .history(sess.id, None)
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(all, ["m8", "m9", "m10"]);
    assert_eq!(s.history(sess.id, Some(50)).unwrap().len(), 3);
    assert_eq!(s.history(sess.id, Some(2)).unwrap()[0].content, "m9");
    // Everything is still stored: the bound is on what history returns.
    assert_eq!(
        s.list_artifacts(sess.id, false, 100, None)
            .unwrap()
            .items
            .len(),
        10
    );
    // Raising the bound shows more.
    s.set_session_options(
        sess.id,
        SessionOptions {
            max_history: Some(5),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.history(sess.id, None).unwrap()[0].content, "m6");
}

#[test]
fn deleted_messages_leave_the_history_and_history_survives_restart() {
    let (s, dir) = common::store(BackendKind::Sled, Config::default());
    let sess = s.create_session(NewSession::new()).unwrap();
    let m1 = s.say(sess.id, Role::User, "one", Map::new()).unwrap();
    let m2 = s.say(sess.id, Role::Assistant, "two", Map::new()).unwrap();
    s.say(sess.id, Role::User, "three", Map::new()).unwrap();
    s.delete_artifact(sess.id, m2.artifact_id).unwrap();
    let h = s.history(sess.id, Some(2)).unwrap();
    assert_eq!(
        h.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["one", "three"],
        "last 2 live messages"
    );
    drop(s);
    let s = Store::open(dir.path().join("store")).unwrap();
    let m4 = s.say(sess.id, Role::Tool, "four", Map::new()).unwrap();
    assert_eq!(m4.seq, 4, "numbering continues after a restart");
    let h = s.history(sess.id, None).unwrap();
    assert_eq!(h[0], m1);
    assert_eq!(h.len(), 3);
}

#[test]
fn say_refuses_bad_input() {
    let s = Store::memory();
    let sess = s.create_session(NewSession::new()).unwrap();
    assert!("robot".parse::<Role>().is_err());
    assert_eq!("Assistant".parse::<Role>().unwrap(), Role::Assistant);
    let too_big = meta(json!({ "x": "y".repeat(70_000) }));
    let e = s.say(sess.id, Role::User, "hi", too_big).unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    assert!(s
        .say(SessionId::new(), Role::User, "hi", Map::new())
        .unwrap_err()
        .is_not_found());
    s.complete(sess.id).unwrap();
    let e = s.say(sess.id, Role::User, "hi", Map::new()).unwrap_err();
    assert!(matches!(e, Error::SessionClosed { .. }), "{e}");
    assert!(s.history(sess.id, None).unwrap().is_empty());
}

#[test]
fn timeline_interleaves_events_and_artifacts_in_time_order() {
    let (s, _d) = common::store(BackendKind::Sled, Config::default());
    let sess = s.create_session(NewSession::new()).unwrap();
    // Real tool-call content from the fixture corpus.
    let corpus = common::fixtures_dir().join("agent-runs/organized");
    let files = common::files_under(&corpus);
    assert!(files.len() >= 4);
    let mut stored = Vec::new();
    for (rel, path) in files.iter().take(6) {
        let a = s
            .put_file(
                sess.id,
                NewArtifact::new(ArtifactKind::ToolResult, rel.clone()),
                path,
            )
            .unwrap();
        stored.push(a);
    }
    let cp = s
        .create_checkpoint(sess.id, NewCheckpoint::new("mid"))
        .unwrap();
    s.append_event(sess.id, "note", json!({"k": 1})).unwrap();
    s.delete_artifact(sess.id, stored[0].id).unwrap();

    let page = s.timeline(sess.id, &TimelineOptions::new()).unwrap();
    assert!(!page.has_more());
    let seqs: Vec<u64> = page.items.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let types: Vec<&str> = page
        .items
        .iter()
        .map(|e| e.event.kind.type_name())
        .collect();
    assert_eq!(types[0], "created");
    assert_eq!(types.iter().filter(|t| **t == "artifact_stored").count(), 6);
    assert_eq!(
        &types[7..],
        ["checkpoint_created", "custom", "artifact_deleted"]
    );
    for w in page.items.windows(2) {
        assert!(w[0].event.at <= w[1].event.at);
    }
    // Artifacts are attached (and their content readable on demand), except the deleted one.
    for (e, a) in page.items[1..7].iter().zip(&stored) {
        match &e.artifact {
            Some(got) => {
                assert_eq!(got, a);
                assert_eq!(
                    s.read(sess.id, got.id).unwrap(),
                    std::fs::read(&files.iter().find(|f| f.0 == got.name).unwrap().1).unwrap()
                );
            }
            None => assert_eq!(a.id, stored[0].id),
        }
    }
    assert!(page.items[1].artifact.is_none());
    assert_eq!(page.items[7].checkpoint.as_ref().unwrap().id, cp.id);
}

#[test]
fn timeline_pages_with_a_cursor_over_a_subtree() {
    let s = Store::memory();
    let root = s.create_session(NewSession::new()).unwrap();
    let kid = s.create_session(NewSession::new().parent(root.id)).unwrap();
    let gk = s.create_session(NewSession::new().parent(kid.id)).unwrap();
    let other = s.create_session(NewSession::new()).unwrap();
    let sessions = [root.id, kid.id, gk.id];
    for i in 0..40 {
        let sid = sessions[i % 3];
        s.put(
            sid,
            NewArtifact::new(ArtifactKind::AgentOutput, format!("f{i}")),
            format!("{i}").as_bytes(),
        )
        .unwrap();
        s.put(
            other.id,
            NewArtifact::new(ArtifactKind::AgentOutput, "noise"),
            b"n",
        )
        .unwrap();
    }
    let full = s
        .timeline(root.id, &TimelineOptions::new().subtree(true))
        .unwrap();
    assert!(!full.has_more());
    assert_eq!(full.items.len(), 3 + 40, "3 created events, 40 artifacts");
    assert!(full
        .items
        .iter()
        .all(|e| sessions.contains(&e.event.session_id)));
    // Stored order is time order across sessions.
    let names: Vec<_> = full
        .items
        .iter()
        .filter_map(|e| e.artifact.as_ref().map(|a| a.name.clone()))
        .collect();
    assert_eq!(names, (0..40).map(|i| format!("f{i}")).collect::<Vec<_>>());

    // Paging with a small limit yields the same sequence, each entry once.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut o = TimelineOptions::new().subtree(true).limit(7);
        if let Some(c) = &cursor {
            o = o.cursor(c.clone());
        }
        let p = s.timeline(root.id, &o).unwrap();
        assert!(p.items.len() <= 7);
        pages += 1;
        paged.extend(p.items);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 7);
    assert_eq!(paged, full.items);
    let unique: HashSet<_> = paged
        .iter()
        .map(|e| (e.event.session_id, e.event.seq))
        .collect();
    assert_eq!(unique.len(), paged.len());

    // Without subtree: only the root's own events.
    let own = s.timeline(root.id, &TimelineOptions::new()).unwrap();
    assert!(own.items.iter().all(|e| e.event.session_id == root.id));
    assert_eq!(own.items.len(), 1 + 14);

    for bad in ["", "nope", "1:2:3", "12:not-a-uuid:4"] {
        let e = s
            .timeline(root.id, &TimelineOptions::new().cursor(bad))
            .unwrap_err();
        assert!(e.to_string().contains("timeline cursor"), "{bad:?}: {e}");
    }
    assert!(s
        .timeline(root.id, &TimelineOptions::new().limit(0))
        .is_err());
    assert!(s
        .timeline(SessionId::new(), &TimelineOptions::new())
        .unwrap_err()
        .is_not_found());
}
