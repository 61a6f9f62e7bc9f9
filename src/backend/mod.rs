//! The storage engine beneath the store: one ordered key space with atomic batches.
//!
//! Every backend passes the same conformance suite (`tests/conformance.rs`). The trait is small and
//! object-safe on purpose: all the meaning (records, indexes, reference counts) lives in the store,
//! which writes each logical change as one atomic batch.

mod buffered;
#[cfg(feature = "fjall")]
mod fjall;
mod kind;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redb")]
mod redb;
mod sled;

pub use self::buffered::Buffered;
#[cfg(feature = "fjall")]
pub use self::fjall::FjallBackend;
pub use self::kind::{BackendKind, DEFAULT_ENGINE_CACHE};
pub use self::memory::MemoryBackend;
#[cfg(feature = "postgres")]
pub use self::postgres::{EventListener, PostgresBackend};
#[cfg(feature = "redb")]
pub use self::redb::RedbBackend;
pub use self::sled::SledBackend;

use std::collections::BTreeMap;

use crate::error::Result;

/// One write in an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or overwrite a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key (no error if absent).
    Delete(Vec<u8>),
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered key-value engine with atomic multi-key batches.
pub trait Backend: Send + Sync + 'static {
    /// A short name: `memory`, `sled`, `redb`, `fjall`.
    fn name(&self) -> &'static str;
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Up to `limit` entries with `start <= key < end` (an empty `end` means no upper bound),
    /// in ascending order, or descending with `reverse`.
    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>>;
    /// The values of several keys, in order, read from one consistent view where the engine
    /// has one (a query loads its hits' records with one call). The default reads them one by one.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Applies every op or none, atomically with respect to crashes and readers.
    fn apply(&self, ops: Vec<Op>) -> Result<()>;
    /// Makes every applied batch durable (as far as the engine can: see DESIGN.md).
    fn flush(&self) -> Result<()>;
    /// Whether [`Backend::flush`] is a real fsync (survives power loss) or only survives a killed process.
    fn flush_is_fsync(&self) -> bool;
    /// Begins a write transaction: reads through it see its own writes, and
    /// [`WriteTx::commit`] applies all of its writes atomically or none.
    ///
    /// The store calls this with its in-process write lock held, so an embedded engine needs no
    /// isolation of its own: the default is a [`BatchTx`] (an overlay of the writes, then one
    /// [`Backend::apply`]). An engine with its own serializable transactions (a database server
    /// shared by several processes) returns its own transaction instead and reports a lost race
    /// from `commit` as [`Error::WriteConflict`](crate::Error::WriteConflict): the store then runs
    /// the whole write again.
    fn begin_write(&self) -> Result<Box<dyn WriteTx + '_>> {
        Ok(Box::new(BatchTx::new(self)))
    }
    /// Whether other processes write the same key space (a database server shared by several
    /// stores). The store then keeps nothing read from the engine between transactions (counter
    /// values, event sequence numbers): every write reads them again in its own transaction.
    fn is_shared(&self) -> bool {
        false
    }
}

/// A write transaction of a [`Backend`]. See [`Backend::begin_write`].
pub trait WriteTx {
    /// The value of `key` as this transaction sees it (its own writes first).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Like [`Backend::scan`], as this transaction sees the key space (its own writes included).
    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>>;
    /// Inserts or overwrites `key` in this transaction.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    /// Removes `key` in this transaction (no error if absent).
    fn delete(&mut self, key: Vec<u8>);
    /// Whether this transaction has written nothing.
    fn is_empty(&self) -> bool;
    /// Applies every write atomically, or none (an error). Dropping a transaction without
    /// committing discards it.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// The write transaction of an engine whose writers the store serializes: writes gather in an
/// ordered overlay that reads consult first, and commit is one atomic [`Backend::apply`].
pub struct BatchTx<'a, B: ?Sized> {
    backend: &'a B,
    overlay: Overlay,
}

impl<'a, B: Backend + ?Sized> BatchTx<'a, B> {
    /// An empty transaction over `backend`.
    pub fn new(backend: &'a B) -> Self {
        Self {
            backend,
            overlay: Overlay::default(),
        }
    }
}

impl<B: Backend + ?Sized> WriteTx for BatchTx<'_, B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v),
            None => self.backend.get(key),
        }
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        self.overlay.scan(start, end, reverse, limit, |s, e, n| {
            self.backend.scan(s, e, reverse, n)
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

    fn commit(self: Box<Self>) -> Result<()> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        self.backend.apply(self.overlay.into_ops())
    }
}

/// The pending writes of a transaction, in key order: what [`BatchTx`] and the PostgreSQL
/// transaction lay over the committed key space so that reads see their own writes.
#[derive(Default)]
pub(crate) struct Overlay(BTreeMap<Vec<u8>, Option<Vec<u8>>>);

impl Overlay {
    /// `Some(value or None for deleted)` if this overlay wrote `key`, else `None`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.0.get(key).cloned()
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.0.insert(key, None);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The writes as ops, in key order.
    pub(crate) fn into_ops(self) -> Vec<Op> {
        self.0
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => Op::Put(k, v),
                None => Op::Delete(k),
            })
            .collect()
    }

    /// [`Backend::scan`] of the view `base(start, end, n)` (the first `n` entries of a range of
    /// the committed key space, in the same direction) with this overlay laid over it.
    pub(crate) fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
        mut base: impl FnMut(&[u8], &[u8], usize) -> Result<Vec<Entry>>,
    ) -> Result<Vec<Entry>> {
        buffered::layered_scan(&self.0, start, end, reverse, limit, &mut base)
    }
}

/// The smallest key greater than every key starting with `prefix` (empty: no upper bound).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Iterates `start..end` in pages of `page` entries, fetching lazily.
pub(crate) struct RangeIter<'a> {
    backend: &'a dyn Backend,
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    page: usize,
    buf: std::collections::VecDeque<Entry>,
    done: bool,
}

impl<'a> RangeIter<'a> {
    pub(crate) fn new(
        backend: &'a dyn Backend,
        start: Vec<u8>,
        end: Vec<u8>,
        reverse: bool,
        page: usize,
    ) -> Self {
        Self {
            backend,
            start,
            end,
            reverse,
            page: page.max(1),
            buf: Default::default(),
            done: false,
        }
    }

    pub(crate) fn prefix(backend: &'a dyn Backend, prefix: &[u8], reverse: bool) -> Self {
        Self::new(backend, prefix.to_vec(), prefix_end(prefix), reverse, 256)
    }
}

impl Iterator for RangeIter<'_> {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Result<Entry>> {
        if self.buf.is_empty() && !self.done {
            match self
                .backend
                .scan(&self.start, &self.end, self.reverse, self.page)
            {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(v) => {
                    if v.len() < self.page {
                        self.done = true;
                    }
                    if let Some((last, _)) = v.last() {
                        if self.reverse {
                            self.end = last.clone();
                        } else {
                            let mut next = last.clone();
                            next.push(0);
                            self.start = next;
                        }
                    }
                    self.page = (self.page * 2).min(4096);
                    self.buf.extend(v);
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_works() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
    }

    #[test]
    fn range_iter_pages_both_ways() {
        let b = MemoryBackend::new();
        b.apply((0u8..100).map(|i| Op::Put(vec![7, i], vec![i])).collect())
            .unwrap();
        b.apply(vec![Op::Put(vec![8], vec![])]).unwrap();
        let fwd: Vec<u8> = RangeIter::new(&b, vec![7], vec![8], false, 7)
            .map(|e| e.unwrap().1[0])
            .collect();
        assert_eq!(fwd, (0..100).collect::<Vec<_>>());
        let rev: Vec<u8> = RangeIter::prefix(&b, &[7], true)
            .map(|e| e.unwrap().1[0])
            .collect();
        assert_eq!(rev, (0..100).rev().collect::<Vec<_>>());
    }

    #[test]
    fn batch_tx_reads_its_own_writes_and_commits_all_at_once() {
        let b = MemoryBackend::new();
        b.apply((0u8..10).map(|i| Op::Put(vec![i], vec![i])).collect())
            .unwrap();
        let mut tx = b.begin_write().unwrap();
        tx.delete(vec![2]);
        tx.delete(vec![3]);
        tx.put(vec![4], vec![40]);
        tx.put(vec![3, 5], vec![35]);
        assert_eq!(tx.get(&[4]).unwrap(), Some(vec![40]));
        assert_eq!(tx.get(&[2]).unwrap(), None);
        // The engine sees nothing before commit.
        assert_eq!(b.get(&[2]).unwrap(), Some(vec![2]));
        let keys = |v: Vec<Entry>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(tx.scan(&[1], &[6], false, 4).unwrap()),
            vec![vec![1], vec![3, 5], vec![4], vec![5]]
        );
        assert_eq!(
            keys(tx.scan(&[0], &[], true, 3).unwrap()),
            vec![vec![9], vec![8], vec![7]]
        );
        assert_eq!(
            keys(tx.scan(&[1], &[5], true, 10).unwrap()),
            vec![vec![4], vec![3, 5], vec![1]]
        );
        assert_eq!(tx.scan(&[5], &[5], false, 10).unwrap(), vec![]);
        tx.commit().unwrap();
        assert_eq!(b.get(&[2]).unwrap(), None);
        assert_eq!(b.get(&[4]).unwrap(), Some(vec![40]));
        assert_eq!(b.get(&[3, 5]).unwrap(), Some(vec![35]));
    }

    #[test]
    fn dropped_batch_tx_writes_nothing() {
        let b = MemoryBackend::new();
        let mut tx = b.begin_write().unwrap();
        tx.put(vec![1], vec![1]);
        drop(tx);
        assert_eq!(b.get(&[1]).unwrap(), None);
    }
}
