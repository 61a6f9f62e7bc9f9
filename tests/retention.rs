//! Expiry of idle sessions and retention policies, each rule with and without a dry run.
use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use cairn::*;
use chrono::{DateTime, Utc};

const DAY: Duration = Duration::from_secs(86_400);

/// A time strictly between everything before and everything after the call.
fn instant_between() -> DateTime<Utc> {
    std::thread::sleep(Duration::from_millis(3));
    let t = Utc::now();
    std::thread::sleep(Duration::from_millis(3));
    t
}

fn art(kind: ArtifactKind, name: &str) -> NewArtifact {
    NewArtifact::new(kind, name)
}

#[test]
fn expire_inactive_moves_idle_live_sessions_and_spares_pinned_and_recent() {
    let store = Store::memory_with(Config {
        default_idle_timeout_secs: Some(3600),
        ..Config::default()
    })
    .unwrap();
    let idle = store
        .create_session(NewSession::new().name("idle"))
        .unwrap()
        .id;
    let idle_suspended = store.create_session(NewSession::new()).unwrap().id;
    store.suspend(idle_suspended).unwrap();
    let pinned = store
        .create_session(NewSession::new().options(SessionOptions {
            pinned: true,
            ..Default::default()
        }))
        .unwrap()
        .id;
    let finished = store.create_session(NewSession::new()).unwrap().id;
    store.complete(finished).unwrap();
    let by_artifact = store.create_session(NewSession::new()).unwrap().id;
    let by_metrics = store.create_session(NewSession::new()).unwrap().id;
    let by_event = store.create_session(NewSession::new()).unwrap().id;
    let t = instant_between();
    store
        .put(by_artifact, art(ArtifactKind::ToolResult, "out.txt"), b"x")
        .unwrap();
    store
        .record_metrics(by_metrics, &MetricsDelta::new().requests(1))
        .unwrap();
    store
        .append_event(by_event, "heartbeat", serde_json::json!({}))
        .unwrap();
    assert!(store.last_activity(by_artifact).unwrap() > t);
    assert!(store.last_activity(idle).unwrap() < t);

    let hour = Duration::from_secs(3600);
    let as_of = t + chrono::Duration::hours(1);
    let r = store.expire_inactive_at(hour, as_of).unwrap();
    let mut want = vec![idle, idle_suspended];
    want.sort();
    assert_eq!(r.expired, want);
    assert_eq!(r.pinned_skipped, 1);
    assert_eq!(r.checked, 7 - 1, "every live session was looked at");
    for id in &want {
        let s = store.session(*id).unwrap();
        assert_eq!(s.status, SessionStatus::Expired);
        assert!(s.reason.unwrap().contains("inactive for more than 1h"));
    }
    assert_eq!(store.session(pinned).unwrap().status, SessionStatus::Active);
    assert_eq!(
        store.session(finished).unwrap().status,
        SessionStatus::Completed
    );
    for id in [by_artifact, by_metrics, by_event] {
        assert_eq!(store.session(id).unwrap().status, SessionStatus::Active);
    }
    // The configured default applies when no duration is given; later, everyone is idle.
    let r = store
        .expire_inactive_at(None, as_of + chrono::Duration::hours(2))
        .unwrap();
    assert_eq!(r.expired.len(), 3);
    assert_eq!(r.max_idle_secs, 3600.0);
    // Without a default, a missing duration is a clear error.
    let e = Store::memory().expire_inactive(None).unwrap_err();
    assert!(e.to_string().contains("default_idle_timeout_secs"), "{e}");
    // Real time: nothing here has been idle for a day.
    assert!(store.expire_inactive(DAY).unwrap().expired.is_empty());
}

struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
    t: DateTime<Utc>,
    old_completed: SessionId,
    old_failed: SessionId,
    old_tagged: SessionId,
    old_pinned: SessionId,
    old_with_pinned_artifact: SessionId,
    parent_with_live_child: SessionId,
    live_child: SessionId,
    old_parent: SessionId,
    old_child: SessionId,
    recent: SessionId,
    shared_bytes: Vec<u8>,
}

fn pinned_opts() -> SessionOptions {
    SessionOptions {
        pinned: true,
        ..Default::default()
    }
}

/// Sessions that ended before `t`, and one after.
fn fixture(kind: BackendKind) -> Fixture {
    let (store, dir) = common::store(kind, Config::default().inline_threshold(4096));
    let mk = |new: NewSession, n: u64| {
        let s = store.create_session(new).unwrap().id;
        store
            .put(
                s,
                art(ArtifactKind::ToolResult, "log.json"),
                common::json_text(20_000, n),
            )
            .unwrap();
        store
            .put(
                s,
                art(ArtifactKind::AgentOutput, "note.txt"),
                format!("note {n}"),
            )
            .unwrap();
        s
    };
    let shared_bytes = common::random_bytes(10_000, 99);
    let old_completed = mk(NewSession::new().name("old_completed"), 1);
    store
        .put(
            old_completed,
            art(ArtifactKind::UserInput, "shared.bin"),
            &shared_bytes,
        )
        .unwrap();
    store.complete(old_completed).unwrap();
    let old_failed = mk(NewSession::new(), 2);
    store.fail(old_failed, Some("boom")).unwrap();
    let old_tagged = mk(NewSession::new().tag("nightly"), 3);
    store.cancel(old_tagged, None).unwrap();
    let old_pinned = mk(NewSession::new().options(pinned_opts()), 4);
    store.complete(old_pinned).unwrap();
    let old_with_pinned_artifact = mk(NewSession::new(), 5);
    store
        .put(
            old_with_pinned_artifact,
            art(ArtifactKind::AgentOutput, "keep.md").pinned(true),
            b"keep me",
        )
        .unwrap();
    store.complete(old_with_pinned_artifact).unwrap();
    let parent_with_live_child = mk(NewSession::new(), 6);
    let live_child = mk(NewSession::new().parent(parent_with_live_child), 7);
    store.complete(parent_with_live_child).unwrap();
    let old_parent = mk(NewSession::new(), 8);
    let old_child = mk(NewSession::new().parent(old_parent), 9);
    store.complete(old_child).unwrap();
    store.complete(old_parent).unwrap();
    let t = instant_between();
    let recent = mk(NewSession::new(), 10);
    store
        .put(
            recent,
            art(ArtifactKind::UserInput, "shared.bin"),
            &shared_bytes,
        )
        .unwrap();
    store.complete(recent).unwrap();
    Fixture {
        store,
        _dir: dir,
        t,
        old_completed,
        old_failed,
        old_tagged,
        old_pinned,
        old_with_pinned_artifact,
        parent_with_live_child,
        live_child,
        old_parent,
        old_child,
        recent,
        shared_bytes,
    }
}

fn session_ids(r: &RetentionReport) -> Vec<SessionId> {
    r.sessions.iter().map(|s| s.id).collect()
}

/// What the store holds, to prove a dry run changed nothing.
fn snapshot(store: &Store) -> (Stats, Vec<SessionId>, u64) {
    let ids = store
        .list_sessions(&SessionFilter::new())
        .unwrap()
        .items
        .iter()
        .map(|s| s.id)
        .collect();
    (store.stats().unwrap(), ids, store.garbage_count().unwrap())
}

#[test]
fn old_terminal_sessions_go_and_dry_run_reports_exactly_that() {
    for kind in common::backends() {
        let f = fixture(kind);
        let s = &f.store;
        let policy = RetentionPolicy::new()
            .sessions_older_than(30 * DAY)
            .as_of(f.t + chrono::Duration::days(30));
        let before = snapshot(s);
        let dry = s.apply_retention(&policy.clone().dry_run(true)).unwrap();
        assert!(dry.dry_run);
        assert_eq!(snapshot(s), before, "a dry run changes nothing");

        let ids = session_ids(&dry);
        let want: BTreeSet<SessionId> = [
            f.old_completed,
            f.old_failed,
            f.old_tagged,
            f.old_parent,
            f.old_child,
        ]
        .into();
        assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), want);
        let pos = |id| ids.iter().position(|x| *x == id).unwrap();
        assert!(
            pos(f.old_child) < pos(f.old_parent),
            "children before parents"
        );
        assert_eq!(dry.kept_pinned_sessions, 1);
        assert_eq!(dry.kept_pinned_artifacts, 1);
        assert_eq!(dry.kept_with_kept_children, 1);
        assert_eq!(dry.artifacts_removed, 5 * 2 + 1);
        assert!(dry.artifacts.is_empty());
        // Unique content of the five sessions goes; shared.bin is still used by `recent`.
        assert_eq!(dry.blobs_freed, 10);
        assert!(dry.bytes_freed > 0);

        let real = s.apply_retention(&policy).unwrap();
        assert!(!real.dry_run);
        assert_eq!(real.sessions, dry.sessions);
        assert_eq!(real.artifacts_removed, dry.artifacts_removed);
        assert_eq!(real.logical_bytes_removed, dry.logical_bytes_removed);
        assert_eq!(real.blobs_freed, dry.blobs_freed);
        assert_eq!(real.bytes_freed, dry.bytes_freed, "{kind:?}");
        for id in &want {
            assert!(s.session(*id).unwrap_err().is_not_found());
        }
        for id in [
            f.old_pinned,
            f.old_with_pinned_artifact,
            f.parent_with_live_child,
            f.live_child,
            f.recent,
        ] {
            assert!(s.session(id).is_ok());
        }
        let shared = s.artifact_by_name(f.recent, "shared.bin", None).unwrap();
        assert_eq!(s.read(f.recent, shared.id).unwrap(), f.shared_bytes);
        let st = s.stats().unwrap();
        assert_eq!(st.sessions, 5);
        assert_eq!(st.artifacts, 5 * 2 + 2);
        assert_eq!(s.garbage_count().unwrap(), 0);
        // Nothing left to do: a second run removes nothing.
        let again = s.apply_retention(&policy).unwrap();
        assert!(again.sessions.is_empty() && again.artifacts_removed == 0);
    }
}

#[test]
fn session_rule_filters_by_status_and_tag() {
    let f = fixture(BackendKind::Memory);
    let base = RetentionPolicy::new()
        .sessions_older_than(30 * DAY)
        .as_of(f.t + chrono::Duration::days(30));
    let failed = base.clone().status(SessionStatus::Failed).dry_run(true);
    assert_eq!(
        session_ids(&f.store.apply_retention(&failed).unwrap()),
        vec![f.old_failed]
    );
    let tagged = base.clone().tag("nightly");
    let r = f.store.apply_retention(&tagged).unwrap();
    assert_eq!(session_ids(&r), vec![f.old_tagged]);
    assert!(f.store.session(f.old_tagged).unwrap_err().is_not_found());
    assert!(f.store.session(f.old_failed).is_ok());
    // Not old enough yet: as of a day after `t`, nothing is 30 days old.
    let young = RetentionPolicy::new()
        .sessions_older_than(30 * DAY)
        .as_of(f.t + chrono::Duration::days(1));
    assert!(f.store.apply_retention(&young).unwrap().sessions.is_empty());
    assert!(f.store.session(f.old_completed).is_ok());
    // Zero age with a status: every failed session, whatever its age.
    let r = f
        .store
        .apply_retention(
            &RetentionPolicy::new()
                .sessions_older_than(Duration::ZERO)
                .status(SessionStatus::Failed),
        )
        .unwrap();
    assert_eq!(session_ids(&r), vec![f.old_failed]);
}

#[test]
fn keep_versions_keeps_the_newest_and_pinned_ones() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let a = s.create_session(NewSession::new()).unwrap().id;
        let pinned = s
            .create_session(NewSession::new().options(pinned_opts()))
            .unwrap()
            .id;
        let mut plan_ids = Vec::new();
        for v in 1..=5u32 {
            let pin = v == 2;
            let x = s
                .put(
                    a,
                    art(ArtifactKind::AgentOutput, "plan.md").pinned(pin),
                    format!("plan v{v}"),
                )
                .unwrap();
            plan_ids.push(x.id);
            s.put(
                pinned,
                art(ArtifactKind::AgentOutput, "plan.md"),
                format!("pinned v{v}"),
            )
            .unwrap();
        }
        s.put(a, art(ArtifactKind::AgentOutput, "other.md"), b"only one")
            .unwrap();
        for v in 1..=3u32 {
            s.put(
                a,
                art(ArtifactKind::ToolResult, "out.txt"),
                format!("out v{v}"),
            )
            .unwrap();
        }
        let policy = RetentionPolicy::new().keep_versions(2);
        let before = snapshot(&s);
        let dry = s.apply_retention(&policy.clone().dry_run(true)).unwrap();
        assert_eq!(snapshot(&s), before);
        let got: Vec<(String, u32)> = dry
            .artifacts
            .iter()
            .map(|r| (r.name.clone(), r.version))
            .collect();
        let mut want = vec![
            ("plan.md".to_string(), 1),
            ("plan.md".to_string(), 3),
            ("out.txt".to_string(), 1),
        ];
        want.sort_by_key(|(n, v)| {
            let a = s.artifact_by_name(a, n, Some(*v)).unwrap();
            a.id
        });
        assert_eq!(got, want);
        assert!(dry
            .artifacts
            .iter()
            .all(|r| r.rule == RetentionRule::KeepVersions));
        assert_eq!(dry.kept_pinned_artifacts, 1);
        assert_eq!(dry.kept_pinned_sessions, 1);
        assert_eq!(dry.blobs_freed, 3);

        let real = s.apply_retention(&policy).unwrap();
        assert_eq!(real.artifacts, dry.artifacts);
        assert_eq!(real.bytes_freed, dry.bytes_freed);
        assert_eq!(real.blobs_freed, 3);
        let versions: Vec<u32> = s
            .versions(a, "plan.md")
            .unwrap()
            .iter()
            .map(|x| x.version)
            .collect();
        assert_eq!(versions, vec![2, 4, 5]);
        assert_eq!(s.artifact_by_name(a, "plan.md", None).unwrap().version, 5);
        assert_eq!(
            s.versions(pinned, "plan.md").unwrap().len(),
            5,
            "pinned session untouched"
        );
        assert_eq!(s.versions(a, "other.md").unwrap().len(), 1);
        assert_eq!(s.read(a, plan_ids[1]).unwrap(), b"plan v2");
        // Idempotent.
        assert!(s.apply_retention(&policy).unwrap().artifacts.is_empty());
    }
}

#[test]
fn kind_ttl_removes_only_old_artifacts_of_that_kind() {
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let a = s.create_session(NewSession::new()).unwrap().id;
        let pinned = s
            .create_session(NewSession::new().options(pinned_opts()))
            .unwrap()
            .id;
        let old1 = s
            .put(a, art(ArtifactKind::ToolResult, "grep.txt"), b"old grep")
            .unwrap();
        let old2 = s
            .put(a, art(ArtifactKind::ToolResult, "ls.txt"), b"old ls")
            .unwrap();
        let old_pinned = s
            .put(
                a,
                art(ArtifactKind::ToolResult, "keep.txt").pinned(true),
                b"pinned",
            )
            .unwrap();
        let old_other_kind = s
            .put(a, art(ArtifactKind::AgentOutput, "answer.md"), b"answer")
            .unwrap();
        s.put(
            pinned,
            art(ArtifactKind::ToolResult, "p.txt"),
            b"in pinned session",
        )
        .unwrap();
        let t = instant_between();
        let new = s
            .put(a, art(ArtifactKind::ToolResult, "grep.txt"), b"new grep")
            .unwrap();
        let policy = RetentionPolicy::new()
            .kind_ttl(ArtifactKind::ToolResult, DAY)
            .as_of(t + chrono::Duration::days(1));
        let before = snapshot(&s);
        let dry = s.apply_retention(&policy.clone().dry_run(true)).unwrap();
        assert_eq!(snapshot(&s), before);
        let ids: Vec<ArtifactId> = dry.artifacts.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![old1.id, old2.id]);
        assert!(dry
            .artifacts
            .iter()
            .all(|r| r.rule == RetentionRule::KindTtl));
        assert_eq!(
            (dry.kept_pinned_artifacts, dry.kept_pinned_sessions),
            (1, 1)
        );
        let real = s.apply_retention(&policy).unwrap();
        assert_eq!(real.artifacts, dry.artifacts);
        assert_eq!(
            (real.blobs_freed, real.bytes_freed),
            (dry.blobs_freed, dry.bytes_freed)
        );
        assert_eq!(real.blobs_freed, 2);
        assert!(s.artifact(a, old1.id).unwrap_err().is_not_found());
        assert!(s.read(a, old2.id).unwrap_err().is_not_found());
        for x in [&old_pinned, &old_other_kind, &new] {
            assert!(s.read(a, x.id).is_ok());
        }
        // Combined with keep_versions, an artifact both rules select is reported once.
        let both = RetentionPolicy::new()
            .kind_ttl(ArtifactKind::AgentOutput, Duration::ZERO)
            .keep_versions(1)
            .dry_run(true);
        let r = s.apply_retention(&both).unwrap();
        assert_eq!(r.artifacts.len(), 1);
        assert_eq!(r.artifacts[0].id, old_other_kind.id);
    }
}

#[test]
fn policies_are_validated_and_progress_is_reported() {
    let s = Store::memory();
    for (p, needle) in [
        (RetentionPolicy::new(), "no rule"),
        (RetentionPolicy::new().keep_versions(0), "keep at least 1"),
        (
            RetentionPolicy::new().status(SessionStatus::Failed),
            "sessions_older_than",
        ),
        (
            RetentionPolicy::new()
                .sessions_older_than(DAY)
                .status(SessionStatus::Active),
            "not terminal",
        ),
        (
            RetentionPolicy::new()
                .sessions_older_than(DAY)
                .tag("bad tag"),
            "tag",
        ),
    ] {
        let e = s.apply_retention(&p).unwrap_err();
        assert_eq!(e.code(), "invalid_input");
        assert!(e.to_string().contains(needle), "{e}");
    }
    let f = fixture(BackendKind::Memory);
    let mut phases = Vec::new();
    f.store
        .apply_retention_with_progress(
            &RetentionPolicy::new()
                .sessions_older_than(Duration::ZERO)
                .status(SessionStatus::Failed)
                .keep_versions(1),
            |p| phases.push((p.phase, p.done, p.total)),
        )
        .unwrap();
    assert_eq!(phases.first(), Some(&("planning", 0, 1)));
    assert!(phases.contains(&("sessions", 1, 1)), "{phases:?}");
    assert_eq!(phases.last(), Some(&("gc", 1, 1)));
}

/// A dry run counts the blob references held by the checkpoints of sessions it would delete, so
/// it predicts exactly the blobs and bytes the real run frees (found through the command line).
#[test]
fn dry_run_predicts_blobs_freed_through_checkpoints() {
    for kind in common::backends() {
        let (store, _d) = common::store(kind, Config::default());
        let old = store.create_session(NewSession::new()).unwrap().id;
        for i in 0..3u64 {
            store
                .put(
                    old,
                    art(ArtifactKind::ToolResult, &format!("f{i}")),
                    common::json_text(30_000, 100 + i),
                )
                .unwrap();
        }
        store
            .create_checkpoint(
                old,
                NewCheckpoint::new("cp").state_bytes(common::random_bytes(5_000, 9)),
            )
            .unwrap();
        // The checkpoint outlives an artifact it captured.
        let gone = store.artifact_by_name(old, "f0", None).unwrap();
        store.delete_artifact(old, gone.id).unwrap();
        store.complete(old).unwrap();
        let policy = RetentionPolicy::new()
            .sessions_older_than(Duration::ZERO)
            .as_of(Utc::now() + chrono::Duration::seconds(5));
        let dry = store
            .apply_retention(&policy.clone().dry_run(true))
            .unwrap();
        assert_eq!(
            store.stats().unwrap().blobs,
            4,
            "the dry run changed nothing"
        );
        let real = store.apply_retention(&policy).unwrap();
        assert_eq!(dry.sessions.len(), 1);
        assert_eq!(dry.blobs_freed, 4, "3 artifact contents + the binary state");
        assert_eq!(dry.blobs_freed, real.blobs_freed);
        assert_eq!(dry.bytes_freed, real.bytes_freed);
        assert_eq!(store.stats().unwrap().blobs, 0);
    }
}
