//! The one write path: subscribers receive only acknowledged (flushed) writes, in commit order,
//! bundle imports included; counters refuse to go negative or read garbage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::*;
use serde_json::json;

/// A memory engine that records applies and flushes, and at each flush how many deliveries the
/// watched subscription held: a delivery before the flush of its batch shows up here.
#[derive(Clone, Default)]
struct Probe {
    log: Arc<Mutex<Vec<String>>>,
    watched: Arc<Mutex<Option<Subscription>>>,
    fail_flush: Arc<AtomicBool>,
}

struct Instrumented {
    inner: MemoryBackend,
    probe: Probe,
}

impl Backend for Instrumented {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(&self, s: &[u8], e: &[u8], rev: bool, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(s, e, rev, limit)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.probe.log.lock().unwrap().push("apply".into());
        self.inner.apply(ops)
    }
    fn flush(&self) -> Result<()> {
        let queued = self
            .probe
            .watched
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |s| s.queued());
        self.probe
            .log
            .lock()
            .unwrap()
            .push(format!("flush({queued})"));
        if self.probe.fail_flush.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                message: "injected flush failure".into(),
            });
        }
        Ok(())
    }
    fn flush_is_fsync(&self) -> bool {
        true
    }
}

fn instrumented(config: Config) -> (Store, Probe) {
    let probe = Probe::default();
    let backend = Instrumented {
        inner: MemoryBackend::new(),
        probe: probe.clone(),
    };
    (
        Store::with_backend(Box::new(backend), config).unwrap(),
        probe,
    )
}

fn watch(store: &Store, probe: &Probe) {
    let sub = store.subscribe(SubscriptionFilter::new()).unwrap();
    *probe.watched.lock().unwrap() = Some(sub);
    probe.log.lock().unwrap().clear();
}

fn queued(probe: &Probe) -> usize {
    probe.watched.lock().unwrap().as_ref().unwrap().queued()
}

#[test]
fn a_subscriber_receives_a_batch_only_after_its_flush() {
    let (store, probe) = instrumented(Config::default());
    let s = store.create_session(NewSession::new()).unwrap();
    watch(&store, &probe);
    store
        .put(
            s.id,
            NewArtifact::new(ArtifactKind::ToolResult, "a.txt"),
            b"hello",
        )
        .unwrap();
    // Applied, then flushed with nothing delivered yet, then delivered.
    assert_eq!(*probe.log.lock().unwrap(), vec!["apply", "flush(0)"]);
    assert_eq!(queued(&probe), 1);
    store.append_event(s.id, "step", json!({"n": 1})).unwrap();
    assert_eq!(
        *probe.log.lock().unwrap(),
        vec!["apply", "flush(0)", "apply", "flush(1)"]
    );
    assert_eq!(queued(&probe), 2);
}

#[test]
fn a_failed_flush_delivers_nothing_until_a_flush_succeeds() {
    let (store, probe) = instrumented(Config::default());
    let s = store.create_session(NewSession::new()).unwrap();
    watch(&store, &probe);
    probe.fail_flush.store(true, Ordering::SeqCst);
    let err = store
        .put(
            s.id,
            NewArtifact::new(ArtifactKind::ToolResult, "a.txt"),
            b"x",
        )
        .unwrap_err();
    assert_eq!(err.code(), "backend", "{err}");
    assert_eq!(
        queued(&probe),
        0,
        "an unacknowledged write reached a subscriber"
    );
    probe.fail_flush.store(false, Ordering::SeqCst);
    store.flush().unwrap();
    assert_eq!(queued(&probe), 1);
    let sub = probe.watched.lock().unwrap().take().unwrap();
    match sub.try_recv() {
        Some(Delivery::Event(e)) => assert_eq!(e.kind.type_name(), "artifact_stored"),
        other => panic!("expected the stored event, got {other:?}"),
    }
}

#[test]
fn group_commit_delivers_at_the_flush_not_at_the_commit() {
    // An interval far longer than the test: only the explicit flush below makes it durable.
    let config = Config::default().durability(Durability::Group {
        interval_ms: 60_000,
    });
    let (store, probe) = instrumented(config);
    let s = store.create_session(NewSession::new()).unwrap();
    watch(&store, &probe);
    store.append_event(s.id, "step", json!({})).unwrap();
    assert_eq!(*probe.log.lock().unwrap(), vec!["apply"]);
    assert_eq!(queued(&probe), 0);
    store.flush().unwrap();
    assert_eq!(*probe.log.lock().unwrap(), vec!["apply", "flush(0)"]);
    assert_eq!(queued(&probe), 1);
}

#[test]
fn events_of_a_bundle_import_reach_subscribers() {
    let src = Store::memory();
    let root = src.create_session(NewSession::new().name("r")).unwrap();
    src.put(
        root.id,
        NewArtifact::new(ArtifactKind::ToolResult, "f"),
        b"content",
    )
    .unwrap();
    src.append_event(root.id, "step", json!({"n": 1})).unwrap();
    let mut bundle = Vec::new();
    src.export_session(root.id, true, &mut bundle).unwrap();
    let log = src.events(root.id, None, 100).unwrap().items;

    let (dst, probe) = instrumented(Config::default());
    watch(&dst, &probe);
    let report = dst
        .import_bundle(&bundle[..], &ImportOptions::new())
        .unwrap();
    let sub = probe.watched.lock().unwrap().take().unwrap();
    let mut got = Vec::new();
    while let Some(d) = sub.try_recv() {
        match d {
            Delivery::Event(e) => got.push(e),
            Delivery::Missed(n) => panic!("missed {n}"),
        }
    }
    // The bundle's own log, as stored, then the import's own event, all after one flush.
    assert_eq!(got.len(), log.len() + 1, "{got:?}");
    for (a, b) in got.iter().zip(&log) {
        assert_eq!(
            (a.session_id, a.seq, a.kind.type_name()),
            (b.session_id, b.seq, b.kind.type_name())
        );
    }
    let last = got.last().unwrap();
    assert_eq!(last.session_id, report.root);
    assert_eq!(last.seq, log.len() as u64 + 1);
    let imported = matches!(&last.kind, EventKind::Custom { name, .. } if name == "imported");
    assert!(imported, "{last:?}");
    let flushes: Vec<_> = probe.log.lock().unwrap().clone();
    assert_eq!(flushes, vec!["apply", "flush(0)"]);
    // Stored as delivered.
    let stored = dst.events(report.root, None, 100).unwrap().items;
    assert_eq!(stored.len(), got.len());
}

#[test]
fn a_subscriber_sees_only_batches_committed_after_it_subscribed() {
    let config = Config::default().durability(Durability::Group {
        interval_ms: 60_000,
    });
    let (store, probe) = instrumented(config);
    let s = store.create_session(NewSession::new()).unwrap();
    store.append_event(s.id, "before", json!({})).unwrap();
    // Committed, not yet flushed: the new subscriber must not receive it at the flush.
    watch(&store, &probe);
    store.append_event(s.id, "after", json!({})).unwrap();
    store.flush().unwrap();
    let sub = probe.watched.lock().unwrap().take().unwrap();
    match sub.recv_timeout(Duration::from_secs(5)) {
        Some(Delivery::Event(e)) => {
            let after = matches!(&e.kind, EventKind::Custom { name, .. } if name == "after");
            assert!(after, "{e:?}")
        }
        other => panic!("expected the later event, got {other:?}"),
    }
    assert!(sub.try_recv().is_none());
}

/// A memory engine the test can still reach after handing it to a store.
struct Shared(Arc<MemoryBackend>);

impl Backend for Shared {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan(&self, s: &[u8], e: &[u8], rev: bool, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0.scan(s, e, rev, limit)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.0.apply(ops)
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn flush_is_fsync(&self) -> bool {
        false
    }
}

fn counter_key(name: &str) -> Vec<u8> {
    let mut k = vec![b'#'];
    k.extend_from_slice(name.as_bytes());
    k
}

#[test]
fn a_counter_that_would_go_negative_is_an_error_and_writes_nothing() {
    let engine = Arc::new(MemoryBackend::new());
    let store = Store::with_backend(Box::new(Shared(engine.clone())), Config::default()).unwrap();
    let s = store.create_session(NewSession::new()).unwrap();
    let a = store
        .put(s.id, NewArtifact::new(ArtifactKind::ToolResult, "a"), b"x")
        .unwrap();
    // Counters out of step with the records (as after a bug or a hand edit).
    engine
        .apply(vec![Op::Put(
            counter_key("artifacts"),
            0u64.to_be_bytes().to_vec(),
        )])
        .unwrap();
    let store = Store::with_backend(Box::new(Shared(engine.clone())), Config::default()).unwrap();
    let err = store.delete_artifact(s.id, a.id).unwrap_err();
    assert_eq!(err.code(), "corrupt", "{err}");
    assert!(err.to_string().contains("artifacts"), "{err}");
    // Nothing was written: the artifact is still there and readable.
    assert_eq!(store.read(s.id, a.id).unwrap(), b"x");
    // Repair recomputes the counter; then the delete goes through.
    store.repair().unwrap();
    assert_eq!(store.stats().unwrap().artifacts, 1);
    store.delete_artifact(s.id, a.id).unwrap();
    assert_eq!(store.stats().unwrap().artifacts, 0);
}

#[test]
fn a_wrong_length_counter_is_corrupt_not_zero() {
    let engine = Arc::new(MemoryBackend::new());
    let store = Store::with_backend(Box::new(Shared(engine.clone())), Config::default()).unwrap();
    let s = store.create_session(NewSession::new()).unwrap();
    store
        .put(s.id, NewArtifact::new(ArtifactKind::ToolResult, "a"), b"x")
        .unwrap();
    engine
        .apply(vec![Op::Put(counter_key("sessions"), vec![1, 2, 3])])
        .unwrap();
    let err = store.stats().unwrap_err();
    assert_eq!(err.code(), "corrupt", "{err}");
    assert!(err.to_string().contains("3 bytes"), "{err}");
    // A write that needs the counter refuses rather than starting from 0.
    let store = Store::with_backend(Box::new(Shared(engine.clone())), Config::default()).unwrap();
    assert_eq!(
        store.create_session(NewSession::new()).unwrap_err().code(),
        "corrupt"
    );
    // verify reports it as a counter problem; repair rewrites it.
    let report = store.verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("undecodable")),
        "{report:?}"
    );
    store.repair().unwrap();
    assert_eq!(store.stats().unwrap().sessions, 1);
}
