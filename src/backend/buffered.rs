//! Group commit in front of an embedded engine: with [`Durability::Group`](crate::Durability),
//! committed batches collect in memory and reach the engine as **one** batch per flush.
//!
//! Why: redb pays a copy-on-write transaction per `apply` (page copies and a commit record),
//! whatever the batch's size, so one `put()` per transaction ran at a third of `put_batch`'s
//! rate (BENCHMARKS.md, "Issue 10 on a quiet machine"). In group mode an acknowledged write is
//! durable only after the next flush anyway, and an engine's non-durable commit does not
//! survive a crash either (redb reopens at its last durable commit), so holding the batch here
//! until the flush loses nothing that the engine would have kept.
//!
//! Readers see every committed batch at once: reads lay the pending batches over the engine
//! ([`layered_scan`]). A flush moves the pending batches aside (`flushing`, still read),
//! applies them to the engine as one atomic batch, then flushes the engine. A write
//! transaction reads one engine snapshot (redb's shared read transaction) under the pending
//! batches, so batches applied while it lives stay readable (`applied`) until it ends. A batch
//! that would take the pending bytes past [`Buffered::MAX_PENDING_BYTES`] first hands what is
//! pending to the engine, and is refused whole if the engine refuses that: memory stays
//! bounded, and an engine error reaches the writer instead of piling up in memory.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use super::{Backend, Entry, Op, Overlay, WriteTx};
use crate::error::{Error, Result};

type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A view under a layer: `base(start, end, n)` returns the first `n` entries of `start..end`.
pub(crate) type BaseScan<'a> = dyn FnMut(&[u8], &[u8], usize) -> Result<Vec<Entry>> + 'a;

/// A layer's entries in one direction.
type LayerIter<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a>;

#[derive(Default)]
struct Pending {
    /// Batches committed since the last flush began (newest wins).
    active: Layer,
    /// Key and value bytes in `active`.
    active_bytes: usize,
    /// The batches a flush is applying to the engine right now: still read until applied.
    flushing: Layer,
    /// Batches already in the engine, kept readable while a write transaction lives whose
    /// engine snapshot may predate them (see [`Buffered::gate`]); older than `flushing`.
    applied: Layer,
}

impl Pending {
    /// The newest pending value of `key`: `Some(None)` if it is pending deletion, `None` if
    /// nothing pending names it.
    fn lookup(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.active
            .get(key)
            .or_else(|| self.flushing.get(key))
            .or_else(|| self.applied.get(key))
    }

    /// [`Backend::scan`] of `base` (the engine's view) with every pending layer laid over it.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
        base: &mut BaseScan<'_>,
    ) -> Result<Vec<Entry>> {
        layered_scan(&self.active, start, end, reverse, limit, &mut |s, e, n| {
            layered_scan(&self.flushing, s, e, reverse, n, &mut |s2, e2, n2| {
                layered_scan(&self.applied, s2, e2, reverse, n2, base)
            })
        })
    }
}

/// An engine with its committed batches held in memory until the next flush. See the module.
pub struct Buffered {
    inner: Box<dyn Backend>,
    pending: RwLock<Pending>,
    /// One flush (or size-triggered hand-over) at a time, so batches reach the engine in order.
    flush_lock: Mutex<()>,
    /// [`Buffered::MAX_PENDING_BYTES`] (smaller in tests).
    max_pending: usize,
    /// Held (shared) by every live write transaction: its reads of the engine come from one
    /// snapshot that may predate a flush, so the batches a flush applied move to `applied` and
    /// are dropped only when no transaction is live (at that flush, or when the last
    /// transaction ends).
    gate: RwLock<()>,
}

impl Buffered {
    /// Pending writes past this many key and value bytes go to the engine before more are taken.
    pub const MAX_PENDING_BYTES: usize = 32 << 20;

    /// `inner` with group commit in front of it.
    pub fn new(inner: Box<dyn Backend>) -> Self {
        Self {
            inner,
            pending: RwLock::new(Pending::default()),
            flush_lock: Mutex::new(()),
            max_pending: Self::MAX_PENDING_BYTES,
            gate: RwLock::new(()),
        }
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Pending>> {
        self.pending.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Pending>> {
        self.pending.write().map_err(|_| poisoned())
    }

    /// Drops the batches kept for live transactions once none is live. Never waits.
    fn release_applied(&self) {
        if let Ok(mut p) = self.pending.try_write() {
            if !p.applied.is_empty() {
                if let Ok(_none_live) = self.gate.try_write() {
                    p.applied.clear();
                }
            }
        }
    }

    /// Hands the batches committed since the last hand-over to the engine as one atomic batch
    /// (no flush of the engine). On an error they stay pending, and readable.
    fn drain(&self) -> Result<()> {
        let _one = self.flush_lock.lock().map_err(|_| poisoned())?;
        let ops: Vec<Op> = {
            let mut p = self.write()?;
            if p.active.is_empty() {
                drop(p);
                self.release_applied();
                return Ok(());
            }
            p.flushing = std::mem::take(&mut p.active);
            p.active_bytes = 0;
            p.flushing
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Op::Put(k.clone(), v.clone()),
                    None => Op::Delete(k.clone()),
                })
                .collect()
        };
        let applied = self.inner.apply(ops);
        let mut p = self.write()?;
        let done = std::mem::take(&mut p.flushing);
        match applied {
            Ok(()) => {
                if self.gate.try_write().is_err() {
                    // A live transaction's snapshot may predate them: keep them readable.
                    p.applied.extend(done);
                } else {
                    p.applied.clear();
                }
                Ok(())
            }
            Err(e) => {
                // Pending again, and readable; newer writes in `active` win over them.
                for (k, v) in done {
                    if !p.active.contains_key(&k) {
                        p.active_bytes += k.len() + v.as_ref().map_or(0, Vec::len);
                        p.active.insert(k, v);
                    }
                }
                Err(e)
            }
        }
    }
}

fn poisoned() -> Error {
    Error::Backend {
        message: "the group-commit buffer's lock was poisoned by a panic in another thread".into(),
    }
}

impl Backend for Buffered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let p = self.read()?;
        if let Some(v) = p.lookup(key) {
            return Ok(v.clone());
        }
        // Under the read lock: a flush cannot drop a layer before the engine has it.
        self.inner.get(key)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let p = self.read()?;
        let mut out: Vec<Option<Option<Vec<u8>>>> =
            keys.iter().map(|k| p.lookup(k).cloned()).collect();
        let missing: Vec<Vec<u8>> = keys
            .iter()
            .zip(&out)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if !missing.is_empty() {
            let mut found = self.inner.get_many(&missing)?.into_iter();
            for slot in out.iter_mut().filter(|v| v.is_none()) {
                *slot = Some(found.next().flatten());
            }
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        let p = self.read()?;
        p.scan(start, end, reverse, limit, &mut |s, e, n| {
            self.inner.scan(s, e, reverse, n)
        })
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let bytes: usize = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => k.len() + v.len(),
                Op::Delete(k) => k.len(),
            })
            .sum();
        let pending = self.read()?.active_bytes;
        if pending > 0 && pending + bytes > self.max_pending {
            // Make room first: if the engine refuses what is pending, this batch is refused
            // too, whole, and nothing of it is visible.
            self.drain()?;
        }
        let mut p = self.write()?;
        for op in ops {
            let (k, v) = match op {
                Op::Put(k, v) => (k, Some(v)),
                Op::Delete(k) => (k, None),
            };
            p.active_bytes += k.len() + v.as_ref().map_or(0, Vec::len);
            p.active.insert(k, v);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Sync what earlier hand-overs applied even when this one fails.
        let drained = self.drain();
        let synced = self.inner.flush();
        drained.and(synced)
    }

    fn flush_is_fsync(&self) -> bool {
        self.inner.flush_is_fsync()
    }

    /// Reads see the transaction's own writes, then the pending batches, then one snapshot of
    /// the engine (the engine's own transaction, used only to read: redb's shares one read
    /// transaction for all of a batch's lookups). Commit adds the writes to the pending batches.
    fn begin_write(&self) -> Result<Box<dyn WriteTx + '_>> {
        let gate = self.gate.read().map_err(|_| poisoned())?;
        Ok(Box::new(BufferedTx {
            b: self,
            base: Some(self.inner.begin_write()?),
            overlay: Overlay::default(),
            gate: Some(gate),
        }))
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
}

/// See [`Buffered::begin_write`].
struct BufferedTx<'a> {
    b: &'a Buffered,
    /// The engine's transaction, only read from and never committed.
    base: Option<Box<dyn WriteTx + 'a>>,
    overlay: Overlay,
    gate: Option<RwLockReadGuard<'a, ()>>,
}

impl BufferedTx<'_> {
    fn base(&self) -> Result<&(dyn WriteTx + '_)> {
        self.base.as_deref().ok_or_else(|| Error::Backend {
            message: "a group-commit transaction was used after its commit".into(),
        })
    }
}

impl WriteTx for BufferedTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v);
        }
        {
            let p = self.b.read()?;
            if let Some(v) = p.lookup(key) {
                return Ok(v.clone());
            }
        }
        self.base()?.get(key)
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        let base = self.base()?;
        self.overlay.scan(start, end, reverse, limit, |s, e, n| {
            let p = self.b.read()?;
            p.scan(s, e, reverse, n, &mut |s2, e2, n2| {
                base.scan(s2, e2, reverse, n2)
            })
        })
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.put(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.overlay.delete(key);
    }

    fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        // The engine snapshot and the gate go first: the batch may fill the buffer, and the
        // flush that empties it must be free to drop what it applied.
        self.base = None;
        self.gate = None;
        self.b.release_applied();
        let overlay = std::mem::take(&mut self.overlay);
        if overlay.is_empty() {
            return Ok(());
        }
        self.b.apply(overlay.into_ops())
    }
}

impl Drop for BufferedTx<'_> {
    fn drop(&mut self) {
        // A transaction dropped without its commit (an error in the write) ends here too.
        if self.gate.take().is_some() {
            self.base = None;
            self.b.release_applied();
        }
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        // The store flushes before it lets go of its engine; this is the last resort.
        let _ = self.flush();
    }
}

/// The first `limit` entries of `start..end` (an empty `end`: unbounded) in the view of `base`
/// with `layer` laid over it: a key in `layer` replaces the base's value, or hides it if `None`.
/// `base(start, end, n)` returns the first `n` entries of its own view of a range, in the same
/// direction. Pages of the base are fetched as needed, so a layer of deletions that hides a
/// whole page still yields the entries behind it.
pub(crate) fn layered_scan(
    layer: &Layer,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
    base: &mut BaseScan<'_>,
) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    if limit == 0 || (!end.is_empty() && start >= end) {
        return Ok(out);
    }
    if layer.is_empty() {
        return base(start, end, limit);
    }
    // The part of the range not yet merged: [lo, hi).
    let (mut lo, mut hi) = (start.to_vec(), end.to_vec());
    let mut ask = 0;
    loop {
        let want = limit - out.len();
        // Each page after the first is larger, so a run of deletions in the layer costs a
        // few engine calls, not one per deleted key.
        ask = want.max((ask * 2).min(4096));
        let page = base(&lo, &hi, ask)?;
        let full = page.len() == ask;
        // Layer keys that merge with this page: up to the page's last key if the base may have
        // more beyond it, else the whole remaining range.
        let (from, to): (Bound<&[u8]>, Bound<&[u8]>) = match (full, reverse, page.last()) {
            (true, false, Some((last, _))) => (Bound::Included(&lo), Bound::Included(last)),
            (true, true, Some((last, _))) => (Bound::Included(last), upper(&hi)),
            _ => (Bound::Included(&lo), upper(&hi)),
        };
        let mut layered: LayerIter<'_> = if reverse {
            Box::new(layer.range::<[u8], _>((from, to)).rev())
        } else {
            Box::new(layer.range::<[u8], _>((from, to)))
        };
        let boundary = page.last().map(|(k, _)| k.clone());
        let mut next_l = layered.next();
        let mut page = page.into_iter().peekable();
        while out.len() < limit {
            let take_layer = match (next_l, page.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((lk, _)), Some((bk, _))) => {
                    if lk == bk {
                        page.next(); // the layer replaces or hides this base entry
                        true
                    } else {
                        (lk < bk) != reverse
                    }
                }
            };
            if take_layer {
                if let Some((k, Some(v))) = next_l {
                    out.push((k.clone(), v.clone()));
                }
                next_l = layered.next();
            } else if let Some(e) = page.next() {
                out.push(e);
            }
        }
        if out.len() >= limit || !full {
            return Ok(out);
        }
        // The base had a full page, and the layer hid some of it: go on after its last key.
        match boundary {
            // Below the empty key there is nothing (and an empty end would mean unbounded).
            Some(b) if reverse && b.is_empty() => return Ok(out),
            Some(b) if reverse => hi = b,
            Some(mut b) => {
                b.push(0);
                lo = b;
            }
            None => return Ok(out),
        }
        if !hi.is_empty() && lo >= hi {
            return Ok(out);
        }
    }
}

fn upper(end: &[u8]) -> Bound<&[u8]> {
    if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn model_scan(
        m: &BTreeMap<Vec<u8>, Vec<u8>>,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Vec<Entry> {
        let it = m
            .iter()
            .filter(|(k, _)| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
            .map(|(k, v)| (k.clone(), v.clone()));
        if reverse {
            it.rev().take(limit).collect()
        } else {
            it.take(limit).collect()
        }
    }

    /// Random batches (puts, deletes, flushes) against a plain map: every scan of the buffered
    /// engine, in both directions and at every limit, equals the map's.
    #[test]
    fn buffered_reads_equal_the_model_through_writes_and_flushes() {
        let b = Buffered::new(Box::new(MemoryBackend::new()));
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut flushes = 0;
        for round in 0..300 {
            let mut ops = Vec::new();
            for _ in 0..rnd(12) {
                let k = vec![b'k', rnd(40) as u8];
                if rnd(3) == 0 {
                    model.remove(&k);
                    ops.push(Op::Delete(k));
                } else {
                    let v = vec![round as u8, rnd(250) as u8];
                    model.insert(k.clone(), v.clone());
                    ops.push(Op::Put(k, v));
                }
            }
            b.apply(ops).unwrap();
            if rnd(5) == 0 {
                b.flush().unwrap();
                flushes += 1;
            }
            for k in 0..40u8 {
                assert_eq!(
                    b.get(&[b'k', k]).unwrap(),
                    model.get(&vec![b'k', k]).cloned()
                );
            }
            let (s, e) = (vec![b'k', rnd(40) as u8], vec![b'k', rnd(45) as u8]);
            for reverse in [false, true] {
                for limit in [1, 2, 3, 7, 100] {
                    for (s, e) in [(&s[..], &e[..]), (&b""[..], &b""[..]), (&s[..], &b""[..])] {
                        assert_eq!(
                            b.scan(s, e, reverse, limit).unwrap(),
                            model_scan(&model, s, e, reverse, limit),
                            "round {round}, {s:?}..{e:?}, reverse {reverse}, limit {limit}"
                        );
                    }
                }
            }
            let keys: Vec<Vec<u8>> = (0..5).map(|_| vec![b'k', rnd(40) as u8]).collect();
            let want: Vec<Option<Vec<u8>>> = keys.iter().map(|k| model.get(k).cloned()).collect();
            assert_eq!(b.get_many(&keys).unwrap(), want);
        }
        assert!(flushes > 20, "the test flushed {flushes} times");
        // After a flush the engine itself holds everything.
        b.flush().unwrap();
        assert_eq!(
            b.inner.scan(b"", b"", false, 1000).unwrap(),
            model_scan(&model, b"", b"", false, 1000)
        );
    }

    /// A layer of deletions that hides more than a page of the base still yields what lies
    /// behind it, in both directions.
    #[test]
    fn deletions_hiding_whole_pages_do_not_end_a_scan() {
        let b = Buffered::new(Box::new(MemoryBackend::new()));
        b.apply((0..50u8).map(|i| Op::Put(vec![i], vec![i])).collect())
            .unwrap();
        b.flush().unwrap();
        b.apply((0..45u8).map(|i| Op::Delete(vec![i])).collect())
            .unwrap();
        let fwd = b.scan(b"", b"", false, 3).unwrap();
        assert_eq!(
            fwd,
            vec![
                (vec![45], vec![45]),
                (vec![46], vec![46]),
                (vec![47], vec![47])
            ]
        );
        b.apply((5..50u8).map(|i| Op::Delete(vec![i])).collect())
            .unwrap();
        b.apply((0..5u8).map(|i| Op::Put(vec![i], vec![i])).collect())
            .unwrap();
        let rev = b.scan(b"", b"", true, 2).unwrap();
        assert_eq!(rev, vec![(vec![4], vec![4]), (vec![3], vec![3])]);
    }

    /// A transaction reads its own writes, the pending batches and the engine; a flush while
    /// it lives keeps what it applied readable (the transaction's engine snapshot may predate
    /// it), and the next flush after it drops them.
    #[test]
    fn a_flush_during_a_transaction_keeps_its_view_whole() {
        let b = Buffered::new(Box::new(MemoryBackend::new()));
        b.apply(vec![Op::Put(b"a".to_vec(), b"1".to_vec())])
            .unwrap();
        let mut tx = b.begin_write().unwrap();
        assert_eq!(tx.get(b"a").unwrap(), Some(b"1".to_vec()));
        tx.put(b"b".to_vec(), b"2".to_vec());
        std::thread::scope(|s| s.spawn(|| b.flush().unwrap()).join().unwrap());
        assert_eq!(b.inner.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            b.read().unwrap().applied.len(),
            1,
            "kept while the transaction lives"
        );
        assert_eq!(tx.get(b"a").unwrap(), Some(b"1".to_vec()));
        let keys: Vec<Vec<u8>> = tx
            .scan(b"", b"", false, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        tx.commit().unwrap();
        assert!(
            b.read().unwrap().applied.is_empty(),
            "dropped when the last one ends"
        );
        assert_eq!(b.get(b"b").unwrap(), Some(b"2".to_vec()));
        b.flush().unwrap();
        assert!(b.read().unwrap().applied.is_empty());
        assert!(b.read().unwrap().flushing.is_empty());
        assert!(b.read().unwrap().active.is_empty());
        assert_eq!(b.inner.get(b"b").unwrap(), Some(b"2".to_vec()));
    }

    /// An engine that refuses batches while its flag is set (the test keeps the other handle).
    struct Flaky(std::sync::Arc<(MemoryBackend, std::sync::atomic::AtomicBool)>);

    impl Backend for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.0 .0.get(key)
        }
        fn scan(&self, s: &[u8], e: &[u8], r: bool, n: usize) -> Result<Vec<Entry>> {
            self.0 .0.scan(s, e, r, n)
        }
        fn apply(&self, ops: Vec<Op>) -> Result<()> {
            if self.0 .1.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::Backend {
                    message: "disk full".into(),
                });
            }
            self.0 .0.apply(ops)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn flush_is_fsync(&self) -> bool {
            false
        }
    }

    /// A batch that needs room the engine will not give is refused whole, before any of it is
    /// visible; what was pending stays pending and reaches the engine once it works again.
    #[test]
    fn a_full_buffer_over_a_failing_engine_refuses_the_new_batch_whole() {
        let shared = std::sync::Arc::new((
            MemoryBackend::new(),
            std::sync::atomic::AtomicBool::new(false),
        ));
        let fail = |on: bool| shared.1.store(on, std::sync::atomic::Ordering::SeqCst);
        let mut b = Buffered::new(Box::new(Flaky(shared.clone())));
        b.max_pending = 10;
        b.apply(vec![Op::Put(b"a".to_vec(), b"1234".to_vec())])
            .unwrap();
        fail(true);
        let refused = b.apply(vec![Op::Put(b"b".to_vec(), b"123456789".to_vec())]);
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(
            b.get(b"b").unwrap(),
            None,
            "nothing of the refused batch is visible"
        );
        assert_eq!(
            b.get(b"a").unwrap(),
            Some(b"1234".to_vec()),
            "still pending"
        );
        assert!(b.flush().is_err());
        fail(false);
        b.flush().unwrap();
        assert_eq!(shared.0.get(b"a").unwrap(), Some(b"1234".to_vec()));
        assert_eq!(shared.0.get(b"b").unwrap(), None);
    }

    /// A reverse scan that pages down to the empty key stops there (an empty end bound would
    /// mean "unbounded" and start over from the top).
    #[test]
    fn a_reverse_scan_ends_at_the_empty_key() {
        let b = Buffered::new(Box::new(MemoryBackend::new()));
        b.apply(vec![
            Op::Put(b"".to_vec(), b"x".to_vec()),
            Op::Put(b"a".to_vec(), b"y".to_vec()),
        ])
        .unwrap();
        b.flush().unwrap();
        b.apply(vec![Op::Delete(b"a".to_vec())]).unwrap();
        assert_eq!(
            b.scan(b"", b"", true, 2).unwrap(),
            vec![(b"".to_vec(), b"x".to_vec())]
        );
    }

    /// Nothing reaches the engine before a flush; everything does after it.
    #[test]
    fn batches_reach_the_engine_at_the_flush() {
        let b = Buffered::new(Box::new(MemoryBackend::new()));
        b.apply(vec![Op::Put(b"a".to_vec(), b"1".to_vec())])
            .unwrap();
        assert_eq!(b.inner.get(b"a").unwrap(), None);
        assert_eq!(b.get(b"a").unwrap(), Some(b"1".to_vec()));
        b.flush().unwrap();
        assert_eq!(b.inner.get(b"a").unwrap(), Some(b"1".to_vec()));
    }
}
