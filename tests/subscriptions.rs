//! In-process subscriptions: ordering across threads, filters, and the missed count of a slow
//! subscriber.
use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn::*;

const WAIT: Duration = Duration::from_secs(30);

fn next_event(sub: &Subscription) -> Event {
    match sub.recv_timeout(WAIT) {
        Some(Delivery::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn events_arrive_in_commit_order_across_threads() {
    for kind in common::backends() {
        let (store, _d) = common::store(
            kind,
            Config::default().durability(Durability::Group { interval_ms: 20 }),
        );
        let shared = store
            .create_session(NewSession::new().name("shared"))
            .unwrap()
            .id;
        let sub = store
            .subscribe(SubscriptionFilter::new().capacity(100_000))
            .unwrap();
        let (threads, per) = (6u64, 60u64);
        let consumer = std::thread::spawn(move || {
            let mut seen: HashMap<SessionId, Vec<u64>> = HashMap::new();
            let mut total = 0;
            // Each writer creates a session (1 event) and appends `per` events to it and `per`
            // to the shared session.
            while total < threads * (1 + 2 * per) {
                let e = next_event(&sub);
                seen.entry(e.session_id).or_default().push(e.seq);
                total += 1;
            }
            assert_eq!(sub.try_recv(), None, "nothing beyond what was written");
            assert_eq!(sub.missed_total(), 0);
            seen
        });
        let store = Arc::new(store);
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let own = store.create_session(NewSession::new()).unwrap().id;
                    for i in 0..per {
                        store
                            .append_event(own, "step", serde_json::json!({ "t": t, "i": i }))
                            .unwrap();
                        store
                            .append_event(shared, "step", serde_json::json!({ "t": t, "i": i }))
                            .unwrap();
                    }
                    own
                })
            })
            .collect();
        let owns: Vec<SessionId> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        let seen = consumer.join().unwrap();
        // Every session's events arrive exactly once, in seq order, with no gap.
        let shared_seqs = &seen[&shared];
        assert_eq!(*shared_seqs, (2..=threads * per + 1).collect::<Vec<_>>());
        for own in owns {
            assert_eq!(seen[&own], (1..=per + 1).collect::<Vec<_>>());
        }
    }
}

#[test]
fn filters_by_subtree_session_and_type() {
    let store = Store::memory();
    let root = store
        .create_session(NewSession::new().name("root"))
        .unwrap()
        .id;
    let child = store
        .create_session(NewSession::new().parent(root))
        .unwrap()
        .id;
    let other = store
        .create_session(NewSession::new().name("other"))
        .unwrap()
        .id;
    let tree = store
        .subscribe(SubscriptionFilter::new().subtree(root))
        .unwrap();
    let stored = store
        .subscribe(
            SubscriptionFilter::new()
                .subtree(root)
                .event_type("artifact_stored"),
        )
        .unwrap();
    let only_child = store
        .subscribe(SubscriptionFilter::new().session(child))
        .unwrap();
    let status = store
        .subscribe(SubscriptionFilter::new().event_type("status_changed"))
        .unwrap();

    store
        .put(
            other,
            NewArtifact::new(ArtifactKind::ToolResult, "o.txt"),
            b"o",
        )
        .unwrap();
    let a = store
        .put(
            child,
            NewArtifact::new(ArtifactKind::ToolResult, "c.txt"),
            b"c",
        )
        .unwrap();
    // A grandchild created after subscribing belongs to the subtree too.
    let grandchild = store
        .create_session(NewSession::new().parent(child))
        .unwrap()
        .id;
    let g = store
        .put(
            grandchild,
            NewArtifact::new(ArtifactKind::AgentOutput, "g.txt"),
            b"g",
        )
        .unwrap();
    store.complete(other).unwrap();
    store.delete_artifact(child, a.id).unwrap();

    let drain = |s: &Subscription| -> Vec<Event> {
        std::iter::from_fn(|| match s.try_recv() {
            Some(Delivery::Event(e)) => Some(e),
            Some(Delivery::Missed(n)) => panic!("missed {n}"),
            None => None,
        })
        .collect()
    };
    let types = |evs: &[Event]| -> Vec<(SessionId, &'static str)> {
        evs.iter()
            .map(|e| (e.session_id, e.kind.type_name()))
            .collect()
    };
    assert_eq!(
        types(&drain(&tree)),
        vec![
            (child, "artifact_stored"),
            (grandchild, "created"),
            (grandchild, "artifact_stored"),
            (child, "artifact_deleted"),
        ]
    );
    let st = drain(&stored);
    assert_eq!(
        types(&st),
        vec![(child, "artifact_stored"), (grandchild, "artifact_stored")]
    );
    let matched = matches!(&st[1].kind, EventKind::ArtifactStored { artifact_id, .. } if *artifact_id == g.id);
    assert!(matched);
    assert_eq!(
        types(&drain(&only_child)),
        vec![(child, "artifact_stored"), (child, "artifact_deleted")]
    );
    let sc = drain(&status);
    assert_eq!(types(&sc), vec![(other, "status_changed")]);
    // Events serialize to JSON with a `type`, for streaming to other processes.
    let j = serde_json::to_value(Delivery::Event(sc[0].clone())).unwrap();
    assert_eq!(j["event"]["type"], "status_changed");
    assert_eq!(j["event"]["to"], "completed");
    assert_eq!(j["event"]["session_id"], other.to_string());

    let e = store
        .subscribe(SubscriptionFilter::new().event_type("stored"))
        .unwrap_err();
    assert!(e.to_string().contains("artifact_stored"), "{e}");
    assert!(store
        .subscribe(SubscriptionFilter::new().capacity(1))
        .is_err());
    assert!(store
        .subscribe(SubscriptionFilter::new().subtree(SessionId::new()))
        .unwrap_err()
        .is_not_found());
}

#[test]
fn slow_subscriber_is_told_what_it_missed_and_never_blocks_writers() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap().id;
    let slow = store
        .subscribe(SubscriptionFilter::new().session(s).capacity(4))
        .unwrap();
    let fast = store
        .subscribe(SubscriptionFilter::new().session(s))
        .unwrap();
    // Nobody reads while 10 events are written: the writer finishes regardless.
    for i in 0..10 {
        store.append_event(s, "tick", serde_json::json!(i)).unwrap();
    }
    assert_eq!(slow.missed_total(), 6);
    let mut got = Vec::new();
    while let Some(d) = slow.try_recv() {
        got.push(d);
    }
    let seqs: Vec<String> = got
        .iter()
        .map(|d| match d {
            Delivery::Event(e) => e.seq.to_string(),
            Delivery::Missed(n) => format!("missed {n}"),
        })
        .collect();
    // Session creation was seq 1 (before subscribing), so the ticks are seqs 2 to 11.
    assert_eq!(seqs, ["2", "3", "4", "5", "missed 6"]);
    store
        .append_event(s, "tick", serde_json::json!(10))
        .unwrap();
    assert_eq!(next_event(&slow).seq, 12, "delivery resumes after the gap");
    // The other subscriber lost nothing.
    let all: Vec<u64> = std::iter::from_fn(|| fast.try_recv())
        .map(|d| match d {
            Delivery::Event(e) => e.seq,
            Delivery::Missed(n) => panic!("missed {n}"),
        })
        .collect();
    assert_eq!(all, (2..=12).collect::<Vec<_>>());
}

#[test]
fn a_blocked_receiver_wakes_and_ends_when_the_store_closes() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap().id;
    let sub = store.subscribe(SubscriptionFilter::new()).unwrap();
    let reader = std::thread::spawn(move || {
        let first = next_event(&sub);
        let rest: Vec<Delivery> = sub.collect(); // blocks until the store is gone
        (first, rest)
    });
    let budget = SessionOptions {
        max_iterations: Some(1),
        ..Default::default()
    };
    store.set_session_options(s, budget).unwrap();
    store.increment_iterations(s).unwrap();
    drop(store);
    let (first, rest) = reader.join().unwrap();
    assert_eq!(first.kind.type_name(), "metadata_updated");
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(matches!(
        &rest[0],
        Delivery::Event(Event {
            kind: EventKind::StatusChanged {
                to: SessionStatus::TimedOut,
                ..
            },
            ..
        })
    ));
    assert!(!matches!(&rest[0], Delivery::Missed(_)));
}

/// Issue 10: a batch's events of one session are one engine key, yet the log, the timeline and
/// subscribers see one event per artifact, with its own number, and reading from a cursor in
/// the middle of a run starts at the right event.
#[test]
fn a_batch_writes_one_event_key_per_session_and_readers_see_every_event() {
    for kind in common::backends() {
        let (store, _d) = common::store(kind, Config::default());
        let a = store
            .create_session(NewSession::new().name("a"))
            .unwrap()
            .id;
        let b = store
            .create_session(NewSession::new().name("b"))
            .unwrap()
            .id;
        let sub = store
            .subscribe(SubscriptionFilter::new().capacity(10_000))
            .unwrap();
        let event_keys = |s: &Store| {
            s.engine_scan(b"E", b"F", 100_000)
                .unwrap()
                .into_iter()
                .filter(|(k, _)| k.first() == Some(&b'E'))
                .count()
        };
        let before = event_keys(&store);
        let items: Vec<_> = (0..300)
            .map(|i| {
                let sid = if i % 3 == 0 { b } else { a };
                (
                    sid,
                    NewArtifact::new(ArtifactKind::ToolResult, format!("n{i}.json")),
                    format!("content {i}").into_bytes(),
                )
            })
            .collect();
        let stored = store.put_batch(items).unwrap();
        assert_eq!(
            event_keys(&store) - before,
            2,
            "{kind:?}: one event key per session of the batch"
        );
        // Subscribers: one artifact_stored per artifact, in commit order, numbered per session.
        let mut got = Vec::new();
        for _ in 0..300 {
            got.push(next_event(&sub));
        }
        assert_eq!(sub.try_recv(), None);
        let ids: Vec<ArtifactId> = got
            .iter()
            .map(|e| match &e.kind {
                EventKind::ArtifactStored { artifact_id, .. } => *artifact_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, stored.iter().map(|x| x.id).collect::<Vec<_>>());
        // The log: session a has its `created` event (1) and 200 artifact events (2..=201).
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = store.events(a, after, 37).unwrap();
            all.extend(page.items.iter().cloned());
            match page.next_cursor {
                Some(c) => after = Some(c.parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=201).collect::<Vec<_>>()
        );
        let in_a: Vec<&Event> = got.iter().filter(|e| e.session_id == a).collect();
        assert_eq!(all[1..].iter().collect::<Vec<_>>(), in_a, "{kind:?}");
        // From a cursor inside the run.
        let page = store.events(a, Some(100), 3).unwrap();
        assert_eq!(
            page.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![101, 102, 103]
        );
        assert_eq!(store.last_event_seq(a).unwrap(), 201);
        assert_eq!(store.last_event_seq(b).unwrap(), 101);
        // The next event continues the numbering after the run, as its own record.
        let e = store
            .append_event(b, "after", serde_json::json!({}))
            .unwrap();
        assert_eq!(e.seq, 102);
        assert_eq!(event_keys(&store) - before, 3);
        // The timeline of the subtree-less session interleaves nothing and loses nothing.
        let tl = store
            .timeline(b, &TimelineOptions::default().limit(1000))
            .unwrap();
        assert_eq!(
            tl.items.iter().map(|t| t.event.seq).collect::<Vec<_>>(),
            (1..=102).collect::<Vec<_>>()
        );
        assert!(
            tl.items[1].artifact.is_some(),
            "timeline entries carry their artifact"
        );
        // Deleting a session drops its whole log, runs included.
        store.delete_session(a, false).unwrap();
        let left = store
            .engine_scan(b"E", b"F", 100_000)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.get(1..17) == Some(a.as_bytes().as_slice()))
            .count();
        assert_eq!(left, 0, "{kind:?}");
    }
}
