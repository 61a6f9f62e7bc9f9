//! The backend conformance suite: every test runs on every backend in `common::backends()`.

use crate::common;

use std::collections::HashSet;

use cairn::*;
use chrono::{Duration, Utc};
use serde_json::json;

fn each(f: impl FnMut(Store)) {
    each_with(Config::default(), f)
}

/// Every embedded engine, then PostgreSQL (a server on 127.0.0.1, see `common::pg`), then
/// PostgreSQL with its content on an S3-compatible server (moto on 127.0.0.1, see
/// `common::s3`; GC grace 0, so that GC behaves as on the other backends).
fn each_with(config: Config, mut f: impl FnMut(Store)) {
    for kind in common::backends() {
        let (s, _dir) = common::store(kind, config.clone());
        f(s);
    }
    #[cfg(feature = "postgres")]
    if let Some(s) = common::pg::store(config.clone()) {
        f(s);
    }
    #[cfg(all(feature = "postgres", feature = "s3"))]
    if let Some(s) = common::s3::pg_store(config) {
        ON_OBJECT_STORE.with(|c| c.set(true));
        f(s);
        ON_OBJECT_STORE.with(|c| c.set(false));
    }
}

thread_local! {
    /// Set while `each_with` runs a test on the store whose content is on S3.
    static ON_OBJECT_STORE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the store keeps large content outside its engine (blob files or objects).
fn content_outside_engine(s: &Store) -> bool {
    s.path().is_some() || ON_OBJECT_STORE.with(|c| c.get())
}

fn tool(name: &str) -> NewArtifact {
    NewArtifact::new(ArtifactKind::ToolResult, name)
}

#[test]
fn sessions_fields_keys_and_metadata() {
    each(|s| {
        let a = s
            .create_session(
                NewSession::new()
                    .name("run")
                    .description("first run\nwith two lines")
                    .key("user-42")
                    .tag("b")
                    .tag("a")
                    .tag("a")
                    .meta("model", "gpt")
                    .meta("n", 3),
            )
            .unwrap();
        assert_eq!(a.tags, vec!["a", "b"], "tags are sorted and unique");
        assert_eq!(a.status, SessionStatus::Active);
        assert_eq!(s.session(a.id).unwrap(), a);
        assert_eq!(s.session_by_key("user-42").unwrap().unwrap().id, a.id);
        let err = s
            .create_session(NewSession::new().key("user-42"))
            .unwrap_err();
        assert!(matches!(err, Error::KeyConflict { existing, .. } if existing == a.id));
        let (same, created) = s
            .get_or_create_by_key("user-42", NewSession::new())
            .unwrap();
        assert!(!created);
        assert_eq!(same.id, a.id);
        let (other, created) = s
            .get_or_create_by_key("user-43", NewSession::new())
            .unwrap();
        assert!(created);
        assert_ne!(other.id, a.id);

        let mut patch = serde_json::Map::new();
        patch.insert("n".into(), json!(4));
        patch.insert("model".into(), json!(null));
        patch.insert("extra".into(), json!({"x": [1, 2]}));
        let m = s
            .update_metadata(a.id, MetadataUpdate::Merge(patch))
            .unwrap();
        assert_eq!(m.metadata.get("n"), Some(&json!(4)));
        assert!(!m.metadata.contains_key("model"), "null removes a key");
        assert_eq!(m.metadata.get("extra"), Some(&json!({"x": [1, 2]})));
        let mut rep = serde_json::Map::new();
        rep.insert("only".into(), json!(true));
        let r = s
            .update_metadata(a.id, MetadataUpdate::Replace(rep.clone()))
            .unwrap();
        assert_eq!(r.metadata, rep);
        assert!(r.updated_at >= a.updated_at);
        let t = s.update_tags(a.id, &["c".into()], &["a".into()]).unwrap();
        assert_eq!(t.tags, vec!["b", "c"]);
        let page = s.list_sessions(&SessionFilter::new().tag("c")).unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(s
            .list_sessions(&SessionFilter::new().tag("a"))
            .unwrap()
            .items
            .is_empty());
        assert!(s.session(SessionId::new()).unwrap_err().is_not_found());
    });
}

#[test]
fn lifecycle_transitions_are_enforced() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        assert_eq!(s.suspend(a.id).unwrap().status, SessionStatus::Suspended);
        assert_eq!(s.resume(a.id).unwrap().status, SessionStatus::Active);
        let f = s.fail(a.id, Some("tool crashed")).unwrap();
        assert_eq!(f.status, SessionStatus::Failed);
        assert_eq!(f.reason.as_deref(), Some("tool crashed"));
        assert!(f.ended_at.is_some());
        let before = s.session(a.id).unwrap();
        let err = s.resume(a.id).unwrap_err();
        match &err {
            Error::InvalidTransition { id, from, to } => {
                assert_eq!(*id, a.id);
                assert_eq!(*from, SessionStatus::Failed);
                assert_eq!(*to, SessionStatus::Active);
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("failed") && msg.contains("active") && msg.contains(&a.id.to_string())
        );
        assert_eq!(
            s.session(a.id).unwrap(),
            before,
            "an invalid transition changes nothing"
        );
        for to in [
            SessionStatus::Completed,
            SessionStatus::Cancelled,
            SessionStatus::Expired,
            SessionStatus::TimedOut,
        ] {
            let b = s.create_session(NewSession::new()).unwrap();
            s.transition(b.id, to, None).unwrap();
            assert!(s.transition(b.id, SessionStatus::Active, None).is_err());
            assert!(s.transition(b.id, SessionStatus::Suspended, None).is_err());
        }
        // A terminal session takes no new artifacts.
        let e = s.put(a.id, tool("x"), b"x").unwrap_err();
        assert!(matches!(e, Error::SessionClosed { .. }), "{e}");
        let st = s.stats().unwrap();
        assert_eq!(st.sessions_by_status.get("failed"), Some(&1));
        assert_eq!(st.sessions_by_status.get("completed"), Some(&1));
    });
}

#[test]
fn tree_children_ancestors_subtree_and_recursive_delete() {
    each(|s| {
        let root = s.create_session(NewSession::new().name("root")).unwrap();
        let c1 = s.create_session(NewSession::new().parent(root.id)).unwrap();
        let c2 = s.create_session(NewSession::new().parent(root.id)).unwrap();
        let g = s.create_session(NewSession::new().parent(c1.id)).unwrap();
        let ids = |v: Vec<Session>| v.into_iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(s.children(root.id).unwrap()), vec![c1.id, c2.id]);
        assert_eq!(ids(s.ancestors(g.id).unwrap()), vec![c1.id, root.id]);
        assert_eq!(
            s.subtree_ids(root.id).unwrap(),
            vec![root.id, c1.id, c2.id, g.id]
        );
        assert!(matches!(
            s.create_session(NewSession::new().parent(SessionId::new())),
            Err(Error::SessionNotFound { .. })
        ));
        let page = s.list_sessions(&SessionFilter::new().roots()).unwrap();
        assert_eq!(ids(page.items), vec![root.id]);
        let page = s
            .list_sessions(&SessionFilter::new().parent(c1.id))
            .unwrap();
        assert_eq!(ids(page.items), vec![g.id]);

        let shared = b"shared content".to_vec();
        s.put(root.id, tool("r"), &shared).unwrap();
        let ga = s.put(g.id, tool("g"), &shared).unwrap();
        s.put(g.id, tool("g2"), b"only in g").unwrap();
        let err = s.delete_session(c1.id, false).unwrap_err();
        assert!(matches!(err, Error::HasChildren { children: 1, .. }));
        assert!(s.session(c1.id).is_ok(), "a refused delete changes nothing");
        let rep = s.delete_session(c1.id, true).unwrap();
        assert_eq!(
            rep,
            DeleteReport {
                sessions: 2,
                artifacts: 2
            }
        );
        assert!(s.session(g.id).unwrap_err().is_not_found());
        assert!(s.admin().artifact(ga.id).unwrap_err().is_not_found());
        assert_eq!(ids(s.children(root.id).unwrap()), vec![c2.id]);
        let gc = s.gc().unwrap();
        assert_eq!(gc.blobs_removed, 1, "only the content unique to g goes");
        assert_eq!(s.content_info(&ga.hash).unwrap().unwrap().refs, 1);
        let st = s.stats().unwrap();
        assert_eq!(st.sessions, 2);
        assert_eq!(st.artifacts, 1);
    });
}

#[test]
fn session_listing_filters_and_pages() {
    each(|s| {
        let mut all = Vec::new();
        for i in 0..25 {
            let n = NewSession::new().tag(if i % 2 == 0 { "even" } else { "odd" });
            let x = s.create_session(n).unwrap();
            if i % 5 == 0 {
                s.complete(x.id).unwrap();
            }
            all.push(x.id);
        }
        let mut seen = Vec::new();
        let mut f = SessionFilter::new().limit(7);
        loop {
            let p = s.list_sessions(&f).unwrap();
            seen.extend(p.items.iter().map(|x| x.id));
            match p.next_cursor {
                Some(c) => f = SessionFilter::new().limit(7).after(c.parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(seen, all, "every session once, in creation order");
        let done = s
            .list_sessions(&SessionFilter::new().status(SessionStatus::Completed))
            .unwrap();
        assert_eq!(done.items.len(), 5);
        let even_active = s
            .list_sessions(
                &SessionFilter::new()
                    .tag("even")
                    .status(SessionStatus::Active),
            )
            .unwrap();
        assert_eq!(even_active.items.len(), 13 - 3);
        let future = s
            .list_sessions(
                &SessionFilter::new().created_between(Some(Utc::now() + Duration::hours(1)), None),
            )
            .unwrap();
        assert!(future.items.is_empty());
        let past = s
            .list_sessions(
                &SessionFilter::new()
                    .created_between(None, Some(Utc::now() + Duration::seconds(1))),
            )
            .unwrap();
        assert_eq!(past.items.len(), 25);
        assert!(s.list_sessions(&SessionFilter::new().limit(0)).is_err());
    });
}

#[test]
fn event_log_is_ordered_and_readable_from_a_cursor() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let art = s.put(a.id, tool("x"), b"1").unwrap();
        s.append_event(a.id, "thought", json!({"text": "hmm"}))
            .unwrap();
        s.suspend(a.id).unwrap();
        s.admin().delete(art.id).unwrap();
        let all = s.events(a.id, None, 100).unwrap();
        let types: Vec<_> = all.items.iter().map(|e| e.kind.type_name()).collect();
        assert_eq!(
            types,
            vec![
                "created",
                "artifact_stored",
                "custom",
                "status_changed",
                "artifact_deleted"
            ]
        );
        let seqs: Vec<u64> = all.items.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let p1 = s.events(a.id, None, 2).unwrap();
        assert_eq!(p1.items.len(), 2);
        let c: u64 = p1.next_cursor.unwrap().parse().unwrap();
        let rest = s.events(a.id, Some(c), 100).unwrap();
        assert_eq!(rest.items.len(), 3);
        assert_eq!(rest.items[0].seq, 3);
        assert!(rest.next_cursor.is_none());
        assert!(all.items.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(s.append_event(a.id, "", json!(1)).is_err());
    });
}

#[test]
fn artifacts_versions_and_names() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let v1 = s
            .put(
                a.id,
                tool("out/result.json")
                    .tag("x")
                    .meta("step", 1)
                    .mime_type("application/json"),
                b"{\"v\":1}",
            )
            .unwrap();
        let v2 = s.put(a.id, tool("out/result.json"), b"{\"v\":2}").unwrap();
        let other = s
            .put(
                a.id,
                NewArtifact::new(ArtifactKind::AgentOutput, "other"),
                b"{\"v\":1}",
            )
            .unwrap();
        assert_eq!((v1.version, v2.version, other.version), (1, 2, 1));
        assert_ne!(v1.id, other.id, "same bytes, different artifacts");
        assert_eq!(v1.hash, other.hash);
        assert_eq!(v1.mime_type.as_deref(), Some("application/json"));
        assert_eq!(v1.metadata.get("step"), Some(&json!(1)));
        assert_eq!(
            s.artifact_by_name(a.id, "out/result.json", None)
                .unwrap()
                .id,
            v2.id
        );
        assert_eq!(
            s.artifact_by_name(a.id, "out/result.json", Some(1))
                .unwrap()
                .id,
            v1.id
        );
        assert!(s
            .artifact_by_name(a.id, "out/result.json", Some(3))
            .unwrap_err()
            .is_not_found());
        let vs: Vec<u32> = s
            .versions(a.id, "out/result.json")
            .unwrap()
            .iter()
            .map(|x| x.version)
            .collect();
        assert_eq!(vs, vec![1, 2]);
        // Deleting the latest moves "latest" back; version numbers keep counting up.
        s.delete_artifact(a.id, v2.id).unwrap();
        assert_eq!(
            s.artifact_by_name(a.id, "out/result.json", None)
                .unwrap()
                .id,
            v1.id
        );
        let v3 = s.put(a.id, tool("out/result.json"), b"3").unwrap();
        assert_eq!(v3.version, 2);
        // The two artifacts with identical content are independent.
        s.delete_artifact(a.id, other.id).unwrap();
        assert_eq!(s.read(a.id, v1.id).unwrap(), b"{\"v\":1}");
        assert_eq!(
            s.artifact(a.id, v1.id).unwrap().kind,
            ArtifactKind::ToolResult
        );

        for bad in ["", "a\0b", "tab\there", &"n".repeat(2000)] {
            let e = s.put(a.id, tool(bad), b"x").unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{bad:?}: {e}");
        }
        assert!(
            s.put(a.id, tool("../../etc/passwd"), b"ok").is_ok(),
            "names are logical"
        );
        let custom = ArtifactKind::custom("embedding").unwrap();
        let c = s
            .put(a.id, NewArtifact::new(custom.clone(), "e"), b"x")
            .unwrap();
        assert_eq!(c.kind, custom);
        assert!(ArtifactKind::custom("Bad Kind").is_err());
        assert!(s
            .put(SessionId::new(), tool("x"), b"x")
            .unwrap_err()
            .is_not_found());
    });
}

#[test]
fn put_from_reader_file_and_streaming_reads() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let big = common::json_text(12 << 20, 5); // above the 8 MiB streaming buffer
        let x = s.put_reader(a.id, tool("big.jsonl"), &big[..]).unwrap();
        assert_eq!(x.size, big.len() as u64);
        assert!(x.compressed);
        assert!(x.stored_size < x.size / 3);
        let mut r = s.open_reader(a.id, x.id).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut back).unwrap();
        assert!(back == big);
        assert_eq!(
            s.read_range(a.id, x.id, 1000, 50).unwrap(),
            &big[1000..1050]
        );
        assert_eq!(
            s.read_range(a.id, x.id, big.len() as u64 - 3, 50).unwrap(),
            &big[big.len() - 3..]
        );
        assert!(s.read_range(a.id, x.id, big.len() as u64 + 1, 1).is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        std::fs::write(&p, b"from a file").unwrap();
        let f = s.put_file(a.id, tool("f.txt"), &p).unwrap();
        assert_eq!(s.read(a.id, f.id).unwrap(), b"from a file");
        let missing = s
            .put_file(a.id, tool("nope"), dir.path().join("missing"))
            .unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
        assert!(missing.to_string().contains("missing"));
        let empty = s.put(a.id, tool("empty"), b"").unwrap();
        assert_eq!(s.read(a.id, empty.id).unwrap(), b"");
    });
}

#[test]
fn dedup_shares_one_blob_and_counts_references() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let b = s.create_session(NewSession::new()).unwrap();
        let content = common::json_text(100_000, 9);
        let mut arts = Vec::new();
        for i in 0..5 {
            arts.push(
                s.put(
                    if i % 2 == 0 { a.id } else { b.id },
                    tool(&format!("n{i}")),
                    &content,
                )
                .unwrap(),
            );
        }
        let h = arts[0].hash;
        assert!(arts.iter().all(|x| x.hash == h));
        let info = s.content_info(&h).unwrap().unwrap();
        assert_eq!(info.refs, 5);
        let st = s.stats().unwrap();
        assert_eq!(st.blobs, 1);
        assert_eq!(st.logical_bytes, 5 * content.len() as u64);
        assert_eq!(st.content_bytes, content.len() as u64);
        assert!(st.dedup_ratio > 4.99 && st.dedup_ratio < 5.01);
        assert!(st.compression_ratio > 2.0);
        for x in &arts[..4] {
            s.admin().delete(x.id).unwrap();
            assert_eq!(s.gc().unwrap().blobs_removed, 0, "still referenced");
        }
        assert_eq!(s.read(a.id, arts[4].id).unwrap(), content);
        s.admin().delete(arts[4].id).unwrap();
        assert_eq!(s.content_info(&h).unwrap().unwrap().refs, 0);
        let gc = s.gc().unwrap();
        assert_eq!(gc.blobs_removed, 1);
        assert_eq!(gc.bytes_freed, info.stored_size);
        assert!(s.content_info(&h).unwrap().is_none());
        assert!(
            s.admin().read(arts[4].id).unwrap_err().is_not_found(),
            "deleted reads fail clearly"
        );
        assert_eq!(s.stats().unwrap().stored_bytes, 0);
        if let Some(p) = s.path() {
            assert!(
                common::files_under(&p.join("blobs")).is_empty(),
                "the blob file is gone"
            );
        }
    });
}

#[test]
fn compression_threshold_and_inline_threshold_are_honoured() {
    let text = common::json_text(50_000, 1);
    each_with(
        Config::default().compression_threshold(Config::NEVER_COMPRESS),
        |s| {
            let a = s.create_session(NewSession::new()).unwrap();
            let x = s.put(a.id, tool("t"), &text).unwrap();
            assert!(!x.compressed);
            assert_eq!(x.stored_size, x.size);
            assert_eq!(s.read(a.id, x.id).unwrap(), text);
        },
    );
    each_with(
        Config::default().compression_threshold(Config::ALWAYS_COMPRESS),
        |s| {
            let a = s.create_session(NewSession::new()).unwrap();
            let small =
                b"{\"a\":1,\"a\":1,\"a\":1,\"a\":1,\"a\":1,\"a\":1,\"a\":1,\"a\":1}".repeat(4);
            let x = s.put(a.id, tool("t"), &small).unwrap();
            assert!(x.compressed);
            assert_eq!(s.read(a.id, x.id).unwrap(), small);
            let r = common::random_bytes(20_000, 2);
            let y = s.put(a.id, tool("r"), &r).unwrap();
            assert!(!y.compressed, "incompressible data is kept raw");
            assert_eq!(s.read(a.id, y.id).unwrap(), r);
        },
    );
    // Default: 10 KiB threshold.
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let below = common::json_text(10 * 1024 - 1, 3);
        let at = common::json_text(10 * 1024, 4);
        assert!(!s.put(a.id, tool("b"), &below).unwrap().compressed);
        assert!(s.put(a.id, tool("a"), &at).unwrap().compressed);
        let big = common::random_bytes(200_000, 4);
        let x = s.put(a.id, tool("big"), &big).unwrap();
        let info = s.content_info(&x.hash).unwrap().unwrap();
        assert_eq!(
            info.inline,
            !content_outside_engine(&s),
            "large blobs live in files on disk stores and in objects on S3"
        );
    });
}

#[test]
fn session_isolation_hides_other_sessions_artifacts() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let b = s.create_session(NewSession::new()).unwrap();
        let x = s.put(a.id, tool("secret"), b"a's data").unwrap();
        let e = s.artifact(b.id, x.id).unwrap_err();
        assert!(matches!(e, Error::ArtifactNotFound { .. }));
        let e2 = s.artifact(b.id, ArtifactId::new()).unwrap_err();
        assert_eq!(
            e.to_string().replace(&x.id.to_string(), "ID"),
            e2.to_string().replace(&e2_id(&e2), "ID"),
            "no hint that it exists elsewhere"
        );
        assert!(s.read(b.id, x.id).unwrap_err().is_not_found());
        assert!(s.open_reader(b.id, x.id).is_err());
        assert!(s.delete_artifact(b.id, x.id).unwrap_err().is_not_found());
        assert!(s
            .artifact_by_name(b.id, "secret", None)
            .unwrap_err()
            .is_not_found());
        assert!(s
            .list_artifacts(b.id, false, 100, None)
            .unwrap()
            .items
            .is_empty());
        assert_eq!(s.read(a.id, x.id).unwrap(), b"a's data", "still there");
    });
}

fn e2_id(e: &Error) -> String {
    match e {
        Error::ArtifactNotFound { id } => id.clone(),
        _ => String::new(),
    }
}

#[test]
fn limits_are_enforced_and_store_nothing() {
    let limits = Limits {
        max_sessions: 3,
        max_artifacts_per_session: 2,
        max_artifact_size: 1000,
        max_tags: 2,
        max_metadata_bytes: 50,
    };
    each_with(Config::default().limits(limits.clone()), |s| {
        let a = s.create_session(NewSession::new()).unwrap();
        s.create_session(NewSession::new()).unwrap();
        s.create_session(NewSession::new()).unwrap();
        let e = s.create_session(NewSession::new()).unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_sessions",
                ..
            }
        );
        assert!(matched, "{e}");
        assert_eq!(s.stats().unwrap().sessions, 3);

        let e = s.put(a.id, tool("big"), vec![7u8; 1001]).unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_artifact_size",
                ..
            }
        );
        assert!(matched, "{e}");
        let e = s
            .put_reader(a.id, tool("big"), std::io::repeat(1).take_ext(50_000_000))
            .unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_artifact_size",
                ..
            }
        );
        assert!(matched, "{e}");
        let e = s
            .put(a.id, tool("t").tag("1").tag("2").tag("3"), b"x")
            .unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_tags",
                ..
            }
        );
        assert!(matched, "{e}");
        let e = s
            .put(a.id, tool("m").meta("k", "v".repeat(100)), b"x")
            .unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_metadata_bytes",
                ..
            }
        );
        assert!(matched, "{e}");
        let e = s
            .create_session(NewSession::new().meta("k", "v".repeat(100)))
            .unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        assert_eq!(s.stats().unwrap().artifacts, 0, "nothing was stored");
        s.put(a.id, tool("1"), vec![1u8; 1000]).unwrap();
        s.put(a.id, tool("2"), b"2").unwrap();
        let e = s.put(a.id, tool("3"), b"3").unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_artifacts_per_session",
                ..
            }
        );
        assert!(matched, "{e}");
        let e = s
            .put_batch(vec![(a.id, tool("4"), b"4".to_vec())])
            .unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        assert_eq!(s.stats().unwrap().artifacts, 2);
        assert_eq!(s.stats().unwrap().blobs, 2);
        if let Some(p) = s.path() {
            assert!(
                common::files_under(&p.join("tmp")).is_empty(),
                "no temporary file left"
            );
        }
    });
}

trait TakeExt: std::io::Read + Sized {
    fn take_ext(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeExt for R {}

#[test]
fn put_batch_is_all_or_nothing_and_dedups_within_the_batch() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let items: Vec<_> = (0..40)
            .map(|i| {
                (
                    a.id,
                    tool(&format!("f{}", i % 10)),
                    common::json_text(2000 + (i % 4) * 10_000, i as u64 % 4),
                )
            })
            .collect();
        let out = s.put_batch(items.clone()).unwrap();
        assert_eq!(out.len(), 40);
        assert_eq!(s.stats().unwrap().blobs, 4);
        assert_eq!(s.versions(a.id, "f3").unwrap().len(), 4);
        for (x, (_, _, bytes)) in out.iter().zip(&items) {
            assert_eq!(&s.read(a.id, x.id).unwrap(), bytes);
        }
        let h = out[0].hash;
        assert_eq!(s.content_info(&h).unwrap().unwrap().refs, 10);
        let bad = vec![
            (a.id, tool("ok"), b"1".to_vec()),
            (a.id, tool(""), b"2".to_vec()),
        ];
        assert!(s.put_batch(bad).is_err());
        assert!(
            s.artifact_by_name(a.id, "ok", None).is_err(),
            "nothing from a failed batch"
        );
    });
}

#[test]
fn queries_combine_every_filter() {
    each(|s| {
        let root = s.create_session(NewSession::new()).unwrap();
        let child = s.create_session(NewSession::new().parent(root.id)).unwrap();
        let other = s.create_session(NewSession::new()).unwrap();
        let mut made = Vec::new();
        let names = [
            "a.json",
            "logs/x/y.log",
            "logs/z.log",
            "report_1.csv",
            "report_2.csv",
            "b.json",
            "deep/dir/c.json",
        ];
        for (i, n) in names.iter().enumerate() {
            let sess = [root.id, child.id, other.id][i % 3];
            let kind = if i % 2 == 0 {
                ArtifactKind::ToolResult
            } else {
                ArtifactKind::AgentOutput
            };
            let mut na = NewArtifact::new(kind, *n).tag(format!("t{}", i % 3));
            if i % 2 == 0 {
                na = na.tag("even");
            }
            made.push(s.put(sess, na, vec![b'x'; 100 * (i + 1)]).unwrap());
        }
        let q = |q: Query| -> Vec<String> {
            let mut v: Vec<String> = s
                .query(&q)
                .unwrap()
                .items
                .into_iter()
                .map(|a| a.name)
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            q(Query::new().name_glob("*.json")),
            vec!["a.json", "b.json", "deep/dir/c.json"]
        );
        assert_eq!(
            q(Query::new().name_glob("logs/**/*.log")),
            vec!["logs/x/y.log", "logs/z.log"],
            "**/ matches zero or more folders"
        );
        assert_eq!(
            q(Query::new().name_glob("logs/*/*.log")),
            vec!["logs/x/y.log"]
        );
        assert_eq!(
            q(Query::new().name_glob("logs/*.log")),
            vec!["logs/x/y.log", "logs/z.log"],
            "* matches / as in globset"
        );
        assert_eq!(
            q(Query::new().name_glob("report_*")),
            vec!["report_1.csv", "report_2.csv"]
        );
        assert_eq!(
            q(Query::new().name_glob("{a,b}.json")),
            vec!["a.json", "b.json"]
        );
        assert_eq!(
            q(Query::new().kind(ArtifactKind::AgentOutput)),
            vec!["b.json", "logs/x/y.log", "report_1.csv"]
        );
        assert_eq!(
            q(Query::new()
                .kind(ArtifactKind::AgentOutput)
                .kind(ArtifactKind::ToolResult))
            .len(),
            7
        );
        assert_eq!(
            q(Query::new().tag("even").tag("t0")),
            vec!["a.json", "deep/dir/c.json"]
        );
        assert_eq!(q(Query::new().any_tag("t1").any_tag("t2")).len(), 4);
        assert_eq!(
            q(Query::new().min_size(200).max_size(400)),
            vec!["logs/x/y.log", "logs/z.log", "report_1.csv"]
        );
        assert_eq!(q(Query::new().min_size(700)), vec!["deep/dir/c.json"]);
        assert_eq!(
            q(Query::new().session(root.id)),
            vec!["a.json", "deep/dir/c.json", "report_1.csv"]
        );
        assert_eq!(q(Query::new().session(root.id).subtree(true)).len(), 5);
        assert_eq!(
            q(Query::new()
                .session(root.id)
                .subtree(true)
                .kind(ArtifactKind::ToolResult)
                .name_glob("*.json")),
            vec!["a.json", "deep/dir/c.json"]
        );
        let t0 = made[0].created_at;
        let t_last = made[6].created_at;
        assert_eq!(q(Query::new().created_from(t0)).len(), 7);
        assert_eq!(q(Query::new().created_to(t0)).len(), 0, "to is exclusive");
        assert!(q(Query::new().created_from(t_last)).contains(&"deep/dir/c.json".to_string()));
        assert_eq!(
            q(Query::new().created_from(Utc::now() + Duration::hours(1))).len(),
            0
        );
        // Bounds inside a millisecond: created_at has millisecond precision (the id's time).
        let half_ms = Duration::microseconds(500);
        assert!(
            q(Query::new().created_to(t_last + half_ms)).contains(&"deep/dir/c.json".to_string())
        );
        assert!(!q(Query::new().created_from(t_last + half_ms))
            .contains(&"deep/dir/c.json".to_string()));

        // latest-only
        s.put(root.id, tool("a.json"), b"newer").unwrap();
        assert_eq!(q(Query::new().name_glob("a.json")).len(), 2);
        let latest = s
            .query(&Query::new().name_glob("a.json").latest_only(true))
            .unwrap();
        assert_eq!(latest.items.len(), 1);
        assert_eq!(latest.items[0].version, 2);

        // descending order
        let desc = s.query(&Query::new().descending(true)).unwrap().items;
        assert!(desc.windows(2).all(|w| w[0].id > w[1].id));

        // errors
        assert!(matches!(
            s.query(&Query::new().name_glob("a[")),
            Err(Error::InvalidGlob { .. })
        ));
        assert!(s.query(&Query::new().min_size(10).max_size(5)).is_err());
        assert!(s
            .query(&Query::new().created_from(t_last).created_to(t0))
            .is_err());
        assert!(s.query(&Query::new().limit(0)).is_err());
        assert!(s.query(&Query::new().cursor("garbage")).is_err());
        assert!(s
            .query(&Query::new().session(SessionId::new()))
            .unwrap_err()
            .is_not_found());
    });
}

#[test]
fn query_pages_return_every_match_exactly_once_with_no_silent_cap() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let items: Vec<_> = (0..1500)
            .map(|i| {
                (
                    a.id,
                    NewArtifact::new(
                        if i % 3 == 0 {
                            ArtifactKind::ToolResult
                        } else {
                            ArtifactKind::AgentOutput
                        },
                        format!("f{i}.txt"),
                    )
                    .tag(if i % 2 == 0 { "even" } else { "odd" }),
                    format!("{i}").into_bytes(),
                )
            })
            .collect();
        s.put_batch(items).unwrap();
        let first = s.query(&Query::new()).unwrap();
        assert_eq!(first.items.len(), DEFAULT_LIMIT);
        assert!(first.has_more(), "a full page says more exist");
        for (query, expected, desc) in [
            (Query::new().kind(ArtifactKind::ToolResult), 500usize, false),
            (Query::new().tag("even"), 750, true),
            (Query::new().name_glob("f1*.txt"), 1 + 10 + 100 + 500, false),
            (
                Query::new()
                    .session(a.id)
                    .kind(ArtifactKind::AgentOutput)
                    .tag("odd"),
                500,
                true,
            ),
            (Query::new().min_size(3).max_size(3), 900, false),
        ] {
            let mut seen = HashSet::new();
            let mut last: Option<ArtifactId> = None;
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query.clone().limit(97).descending(desc);
                if let Some(c) = &cursor {
                    q = q.cursor(c.clone());
                }
                let p = s.query(&q).unwrap();
                for x in &p.items {
                    assert!(seen.insert(x.id), "duplicate across pages");
                    if let Some(l) = last {
                        assert!(if desc { x.id < l } else { x.id > l }, "time order");
                    }
                    last = Some(x.id);
                }
                match p.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen.len(), expected, "{query:?}");
        }
    });
}

#[test]
fn concurrent_writers_lose_nothing() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let threads = 8;
        let per = 50;
        std::thread::scope(|sc| {
            for t in 0..threads {
                let s = s.clone();
                sc.spawn(move || {
                    for i in 0..per {
                        // Same content from every thread, same name from every thread, and unique ones.
                        s.put(a.id, tool("shared-name"), b"same bytes everywhere")
                            .unwrap();
                        s.put(a.id, tool(&format!("t{t}-{i}")), format!("{t}-{i}"))
                            .unwrap();
                    }
                });
            }
        });
        let versions = s.versions(a.id, "shared-name").unwrap();
        let nums: Vec<u32> = versions.iter().map(|v| v.version).collect();
        assert_eq!(
            nums,
            (1..=(threads * per) as u32).collect::<Vec<_>>(),
            "versions unique and contiguous"
        );
        let st = s.stats().unwrap();
        assert_eq!(st.artifacts, (threads * per * 2) as u64);
        assert_eq!(st.blobs, (threads * per + 1) as u64);
        let h = versions[0].hash;
        assert_eq!(
            s.content_info(&h).unwrap().unwrap().refs,
            (threads * per) as u64
        );
        let mut n = 0;
        let mut cursor = None;
        loop {
            let p = s
                .list_artifacts(a.id, false, 1000, cursor.as_deref())
                .unwrap();
            n += p.items.len();
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(n, threads * per * 2);
    });
}

#[test]
fn gc_races_with_puts_of_the_same_content() {
    each(|s| {
        let a = s.create_session(NewSession::new()).unwrap();
        let content = common::json_text(120_000, 77);
        for round in 0..30 {
            let x = s.put(a.id, tool("x"), &content).unwrap();
            std::thread::scope(|sc| {
                let s1 = s.clone();
                let s2 = s.clone();
                let c = content.clone();
                sc.spawn(move || s1.delete_artifact(a.id, x.id).unwrap());
                sc.spawn(move || s2.gc().unwrap());
                let s3 = s.clone();
                sc.spawn(move || {
                    let y = s3.put(a.id, tool("y"), &c).unwrap();
                    assert_eq!(s3.read(a.id, y.id).unwrap(), c, "round {round}");
                });
            });
            s.gc().unwrap();
            let latest = s.artifact_by_name(a.id, "y", None).unwrap();
            assert_eq!(s.read(a.id, latest.id).unwrap(), content, "round {round}");
        }
    });
}

#[test]
fn config_from_toml_and_env_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cairn.toml");
    std::fs::write(&p, "compression_threshold = 0\n[limits]\nmax_tags = 1\n").unwrap();
    let c = Config::from_toml_file(&p).unwrap();
    assert_eq!(c.compression_threshold, 0);
    let s = Store::memory_with(c).unwrap();
    let a = s.create_session(NewSession::new()).unwrap();
    assert!(s.put(a.id, tool("x").tag("1").tag("2"), b"x").is_err());
    std::fs::write(&p, "limits = 3").unwrap();
    let e = Config::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("cairn.toml"), "{e}");
    assert!(Config::from_toml_file(dir.path().join("none.toml")).is_err());
}
