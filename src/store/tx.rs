//! The one write path: [`Store::write`] and the transaction [`Tx`] its closure receives.
//!
//! Every change to the store goes through here:
//! 1. take the store's write lock (one writer per process: version numbers, reference counts and
//!    counters need no finer locking);
//! 2. begin the engine's write transaction ([`Backend::begin_write`](crate::Backend::begin_write))
//!    and run the caller's closure on a [`Tx`], whose methods are the record operations (reads
//!    inside see the transaction's own writes);
//! 3. commit: counters are folded into the same batch, which the engine applies atomically; a
//!    serialization conflict (an engine shared with other processes) runs the closure again;
//! 4. release the lock, then make the batch durable per the configured durability (a flush now,
//!    or the background group flush), and only then offer its events to subscribers.
//!
//! So a subscriber never sees a write that a crash can still lose: "acknowledged" means flushed.
//! Batches are numbered in commit order under the lock; after a flush every batch up to the
//! number read before that flush is durable, and the publish queue hands their events out in
//! commit order whichever thread's flush covered them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::counters;
use super::event_log;
use super::Store;
use crate::backend::WriteTx;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::SessionId;
use crate::keys;

/// A write that lost a serialization race runs again at least this many times, and for as
/// long as [`CONFLICT_TIME`] allows, before the conflict is returned to the caller. Every lost
/// race means another writer committed (serializable isolation always lets one through), so
/// many writers on one hot session make progress; a count alone gave up under load while the
/// others were still committing.
const CONFLICT_RETRIES: usize = 16;
/// How long a write keeps running again after lost races (see [`CONFLICT_RETRIES`]).
const CONFLICT_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Mutable state guarded by the write lock: caches of counters and event sequence numbers.
#[derive(Default)]
pub(crate) struct WriteState {
    counters: HashMap<Vec<u8>, i64>,
    next_seq: HashMap<SessionId, u64>,
    /// Number of the last batch committed.
    committed: u64,
}

/// Committed batches whose events wait for the flush that makes them durable.
#[derive(Default)]
pub(crate) struct Acks {
    queue: Mutex<AckQueue>,
}

#[derive(Default)]
struct AckQueue {
    /// (batch number, its events), in commit order.
    pending: VecDeque<(u64, Vec<Event>)>,
    /// Highest batch number known committed (set under the write lock).
    committed: u64,
}

impl Acks {
    fn lock(&self) -> MutexGuard<'_, AckQueue> {
        // The queue is consistent after any panic (push and pop are single steps): keep going.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a committed batch. Called under the write lock, so numbers arrive in order.
    fn committed(&self, n: u64, events: Vec<Event>) {
        let mut q = self.lock();
        q.committed = n;
        if !events.is_empty() {
            q.pending.push_back((n, events));
        }
    }

    /// The highest committed batch number.
    pub(crate) fn last_committed(&self) -> u64 {
        self.lock().committed
    }

    /// Hands the events of every batch up to `upto` (durable now) to the subscriptions, in
    /// commit order. The queue lock is held while publishing so that two flushing threads
    /// cannot interleave their batches.
    pub(crate) fn publish_upto(&self, upto: u64, hub: &crate::subscribe::Hub) {
        let mut q = self.lock();
        while q.pending.front().is_some_and(|(n, _)| *n <= upto) {
            if let Some((n, events)) = q.pending.pop_front() {
                hub.publish(n, &events);
            }
        }
    }
}

/// One atomic batch: the engine's write transaction plus the store's bookkeeping (counter
/// deltas, event sequence numbers, the events to publish). Reads see the batch's own writes.
pub(crate) struct Tx<'a> {
    pub(crate) store: &'a Store,
    state: &'a mut WriteState,
    wtx: Box<dyn WriteTx + 'a>,
    counters: BTreeMap<Vec<u8>, i64>,
    seqs: HashMap<SessionId, u64>,
    /// The batch's events in commit order: written into the log at commit, then published.
    events: Vec<Event>,
    /// Sessions deleted by this batch: their events are not written.
    deleted: Vec<SessionId>,
}

/// See [`Tx::prefix`].
pub(crate) struct TxRange<'t, 'a> {
    tx: &'t Tx<'a>,
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    page: usize,
    buf: VecDeque<crate::backend::Entry>,
    done: bool,
}

impl Iterator for TxRange<'_, '_> {
    type Item = Result<crate::backend::Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            match self
                .tx
                .scan(&self.start, &self.end, self.reverse, self.page)
            {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(v) => {
                    self.done = v.len() < self.page;
                    if let Some((last, _)) = v.last() {
                        if self.reverse {
                            self.end = last.clone();
                        } else {
                            self.start = last.clone();
                            self.start.push(0);
                        }
                    }
                    self.page = (self.page * 4).min(4096);
                    self.buf.extend(v);
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// The write lock held across several batches (each atomic on its own), for long operations
/// that must not interleave with other writers but must not build one unbounded batch
/// (deleting a large session, pruning, repair). See [`Store::write_batches`].
pub(crate) struct Writer<'a> {
    store: &'a Store,
    state: MutexGuard<'a, WriteState>,
    last: Option<u64>,
}

impl Writer<'_> {
    /// Runs `f` on a new transaction and commits it as one batch (again on a serialization
    /// conflict, so `f` must have no effects outside the transaction).
    pub(crate) fn batch<T>(&mut self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        let started = std::time::Instant::now();
        let again =
            |attempt: usize| attempt < CONFLICT_RETRIES || started.elapsed() < CONFLICT_TIME;
        let shared = self.store.backend().is_shared();
        loop {
            if shared {
                // Other processes write too: nothing cached from an earlier transaction holds.
                self.state.counters.clear();
                self.state.next_seq.clear();
            }
            let mut tx = Tx {
                store: self.store,
                state: &mut self.state,
                wtx: self.store.backend().begin_write()?,
                counters: BTreeMap::new(),
                seqs: HashMap::new(),
                events: Vec::new(),
                deleted: Vec::new(),
            };
            // An error from `f` drops the transaction: nothing is written. A shared engine
            // may report a lost race on any read, not only at commit: run `f` again then too.
            let out = match f(&mut tx) {
                Ok(out) => out,
                Err(Error::WriteConflict { .. }) if again(attempt) => {
                    attempt += 1;
                    backoff(attempt);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match tx.commit() {
                Ok(Some(n)) => {
                    self.last = Some(n);
                    return Ok(out);
                }
                Ok(None) => return Ok(out),
                Err(Error::WriteConflict { .. }) if again(attempt) => {
                    attempt += 1;
                    backoff(attempt);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Waits a random time, growing with `attempt`, before a write that lost a race runs again, so
/// that writers of several processes that keep colliding spread out instead of colliding again.
fn backoff(attempt: usize) {
    use std::hash::{BuildHasher, Hasher};
    let cap_us = 200u64 << attempt.min(8); // 0.4 ms up to 51 ms
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::thread::sleep(std::time::Duration::from_micros(r % cap_us));
}

impl Store {
    /// The write path: runs `f` on a transaction under the write lock, commits it as one atomic
    /// batch, makes it durable per the configured durability, then publishes its events.
    ///
    /// `f` may run more than once (after a serialization conflict of a shared engine): it must
    /// have no effects outside the transaction. An error from `f` writes nothing.
    pub(crate) fn write<T>(&self, f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.write_batches(|w| w.batch(f))
    }

    /// Like [`Store::write`] for operations of several batches: `f` commits each with
    /// [`Writer::batch`] while the lock stays held. Whatever was committed is flushed and
    /// published when `f` returns, even if it returns an error.
    pub(crate) fn write_batches<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut w = Writer {
            store: self,
            state: self.lock()?,
            last: None,
        };
        let out = f(&mut w);
        let last = w.last;
        drop(w);
        if let Some(n) = last {
            if self.inner.config.group_interval().is_none() {
                if let Err(e) = self.inner.backend.flush() {
                    return Err(out.err().unwrap_or(e));
                }
                self.inner.acks.publish_upto(n, &self.inner.hub);
            }
            // Group commit: the background flush publishes the batch once it is durable.
        }
        out
    }

    /// Flushes the engine, then publishes every batch committed before the flush began.
    pub(crate) fn flush_and_publish(inner: &super::Inner) -> Result<()> {
        let upto = inner.acks.last_committed();
        inner.backend.flush()?;
        inner.acks.publish_upto(upto, &inner.hub);
        Ok(())
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, WriteState>> {
        self.inner.write.lock().map_err(|_| Error::Backend {
            message: "write lock poisoned by a panic in another thread".into(),
        })
    }
}

impl Tx<'_> {
    /// A value as this batch sees it.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.wtx.get(key)
    }

    /// The highest stored version of `name` in `session`, as this batch sees it: one reverse
    /// scan of the name's `n` entries. (The retired `l` table of older stores is never read:
    /// its stale pointers stay where they are, ignored.)
    pub(crate) fn latest_version(&self, session: &SessionId, name: &str) -> Result<Option<u32>> {
        let prefix = keys::name_versions_prefix(session, name);
        let end = crate::backend::prefix_end(&prefix);
        Ok(self
            .wtx
            .scan(&prefix, &end, true, 1)?
            .first()
            .and_then(|(k, _)| keys::version_of(&prefix, k)))
    }

    /// Up to `limit` entries in `start..end` as this batch sees them (see `Backend::scan`).
    pub(crate) fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<crate::backend::Entry>> {
        self.wtx.scan(start, end, reverse, limit)
    }

    /// The entries under `prefix` as this batch sees them, fetched lazily in growing pages.
    /// The iterator borrows the batch: collect what you need before writing.
    pub(crate) fn prefix(&self, prefix: &[u8], reverse: bool) -> TxRange<'_, '_> {
        TxRange {
            tx: self,
            start: prefix.to_vec(),
            end: crate::backend::prefix_end(prefix),
            reverse,
            page: 8,
            buf: VecDeque::new(),
            done: false,
        }
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.wtx.put(key, value);
    }

    pub(crate) fn del(&mut self, key: Vec<u8>) {
        self.wtx.delete(key);
    }

    /// Adds `delta` to a counter in this batch (see [`counters`]).
    pub(crate) fn add(&mut self, counter: impl AsRef<[u8]>, delta: i64) {
        *self.counters.entry(counter.as_ref().to_vec()).or_insert(0) += delta;
    }

    /// Sets a counter to `value` whatever it holds now (repair).
    pub(crate) fn set_counter(&mut self, counter: &[u8], value: i64) -> Result<()> {
        let encoded = counters::encode(counter, value)?;
        self.counters.remove(counter);
        self.state.counters.remove(counter);
        self.wtx.put(keys::counter(counter), encoded);
        Ok(())
    }

    /// The committed-plus-pending value of a counter.
    pub(crate) fn counter(&mut self, counter: &[u8]) -> Result<i64> {
        let base = self.base_counter(counter)?;
        Ok(base + self.counters.get(counter).copied().unwrap_or(0))
    }

    fn base_counter(&mut self, counter: &[u8]) -> Result<i64> {
        if let Some(v) = self.state.counters.get(counter) {
            return Ok(*v);
        }
        let v = match self.wtx.get(&keys::counter(counter))? {
            Some(v) => counters::decode(counter, &v)?,
            None => 0,
        };
        self.state.counters.insert(counter.to_vec(), v);
        Ok(v)
    }

    /// Appends an event to a session's log in this batch.
    pub(crate) fn event(&mut self, session_id: SessionId, kind: EventKind) -> Result<Event> {
        let seq = match self.seqs.get(&session_id) {
            Some(s) => *s,
            None => match self.state.next_seq.get(&session_id) {
                Some(s) => *s,
                None => {
                    // The last record's key holds the last number (a run is keyed by its last).
                    let prefix = event_log::prefix(&session_id);
                    let last =
                        self.wtx
                            .scan(&prefix, &crate::backend::prefix_end(&prefix), true, 1)?;
                    match last.first() {
                        Some((k, _)) if k.len() == prefix.len() + 8 => {
                            keys::u64_value(&k[prefix.len()..]) + 1
                        }
                        _ => 1,
                    }
                }
            },
        };
        self.seqs.insert(session_id, seq + 1);
        let ev = Event {
            session_id,
            seq,
            at: chrono::Utc::now(),
            kind,
        };
        self.events.push(ev.clone());
        Ok(ev)
    }

    /// Writes an event with its own sequence number (an imported log), to be published with
    /// the batch. Later events of its session in this batch follow it.
    pub(crate) fn append_event(&mut self, ev: Event) {
        let next = self.seqs.entry(ev.session_id).or_insert(0);
        *next = (*next).max(ev.seq + 1);
        self.events.push(ev);
    }

    /// Forgets the cached event sequence of a session (it is being deleted): events this batch
    /// made for it are published but not written (its log goes with it).
    pub(crate) fn forget_session(&mut self, id: &SessionId) {
        self.seqs.remove(id);
        self.state.next_seq.remove(id);
        self.deleted.push(*id);
    }

    /// Writes the batch's events into the log: per session, a run of consecutive events is one
    /// record (see `event_log`), so a `put_batch` of n artifacts writes one event key per
    /// session, not n.
    fn write_events(&mut self) {
        let mut by_session: BTreeMap<SessionId, Vec<&Event>> = BTreeMap::new();
        for e in &self.events {
            if !self.deleted.contains(&e.session_id) {
                by_session.entry(e.session_id).or_default().push(e);
            }
        }
        let mut writes = Vec::new();
        for evs in by_session.values_mut() {
            // Imported logs arrive in order too; sorting keeps a run a run whatever the order.
            evs.sort_by_key(|e| e.seq);
            writes.extend(event_log::records(evs));
        }
        for (k, v) in writes {
            self.wtx.put(k, v);
        }
    }

    /// Applies the batch atomically. Returns its batch number, or `None` if it wrote nothing.
    fn commit(mut self) -> Result<Option<u64>> {
        let mut finals = Vec::with_capacity(self.counters.len());
        let deltas = std::mem::take(&mut self.counters);
        for (name, delta) in deltas {
            if delta == 0 {
                continue;
            }
            let v = self.base_counter(&name)? + delta;
            let value = counters::encode(&name, v)?;
            self.wtx.put(keys::counter(&name), value);
            finals.push((name, v));
        }
        if self.wtx.is_empty() && self.events.is_empty() {
            return Ok(None);
        }
        self.write_events();
        let state = self.state;
        if let Err(e) = self.wtx.commit() {
            // The caches may now disagree with a partially failed engine: reload them later.
            state.counters.clear();
            state.next_seq.clear();
            return Err(e);
        }
        for (name, v) in finals {
            state.counters.insert(name, v);
        }
        for (sid, s) in self.seqs.drain() {
            state.next_seq.insert(sid, s);
        }
        state.committed += 1;
        let n = state.committed;
        self.store.inner.acks.committed(n, self.events);
        Ok(Some(n))
    }
}
