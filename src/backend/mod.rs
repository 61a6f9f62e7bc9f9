//! The storage engine beneath the store: one ordered key space with atomic batches.
//!
//! Every backend passes the same conformance suite (`tests/conformance.rs`). The trait is small and
//! object-safe on purpose: all the meaning (records, indexes, reference counts) lives in the store,
//! which writes each logical change as one atomic batch.

#[cfg(feature = "fjall")]
mod fjall;
mod memory;
#[cfg(feature = "redb")]
mod redb;
mod sled;

#[cfg(feature = "fjall")]
pub use self::fjall::FjallBackend;
pub use self::memory::MemoryBackend;
#[cfg(feature = "redb")]
pub use self::redb::RedbBackend;
pub use self::sled::SledBackend;

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
    /// Applies every op or none, atomically with respect to crashes and readers.
    fn apply(&self, ops: Vec<Op>) -> Result<()>;
    /// Makes every applied batch durable (as far as the engine can: see DESIGN.md).
    fn flush(&self) -> Result<()>;
    /// Whether [`Backend::flush`] is a real fsync (survives power loss) or only survives a killed process.
    fn flush_is_fsync(&self) -> bool;
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
}
