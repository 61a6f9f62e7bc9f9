//! The second persistent backend: redb 4.x, one file, copy-on-write B-tree, real fsync.
//!
//! Mapping of the backend trait (see DESIGN.md, "The redb backend"):
//! - [`Backend::apply`] is one redb write transaction committed with [`redb::Durability::None`]:
//!   atomic and visible to readers at once, but not yet on disk.
//! - [`Backend::flush`] commits an empty write transaction with [`redb::Durability::Immediate`],
//!   which makes every earlier non-durable commit durable with one fsync. Concurrent callers share
//!   that fsync: a flush that finds its batches already made durable by another thread returns at
//!   once (group commit).
//!
//! On a crash or a power loss the file opens at the last durable commit, never in between.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redb::{ReadableDatabase, TableDefinition};

use super::{Backend, Entry, Op};
use crate::error::{Error, Result};

/// The one table; the version suffix lets a later format add tables beside it.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cairn.v1");

/// One entry of a redb range iterator.
type RangeItem<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// The database file inside the store's `db/` folder.
pub(crate) const FILE_NAME: &str = "cairn.redb";

/// redb, one table, every key prefixed by its table byte.
pub struct RedbBackend {
    db: Db,
    path: PathBuf,
    /// Number of batches applied so far.
    applied: AtomicU64,
    /// Number of applied batches known to be durable; the mutex also serialises fsyncs.
    durable: Mutex<u64>,
}

/// The database, opened to write (the default) or read-only ([`RedbBackend::open_read_only`]).
enum Db {
    Write(redb::Database),
    Read(redb::ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
    }

    fn writer(&self) -> Result<&redb::Database> {
        match self {
            Db::Write(db) => Ok(db),
            Db::Read(_) => Err(Error::Backend {
                message: "this store was opened read-only (Store::open_read_only); open it with \
                          Store::open to write"
                    .into(),
            }),
        }
    }
}

impl RedbBackend {
    /// Opens the existing database file `cairn.redb` in `dir` read-only: nothing is written,
    /// not even redb's open and close bookkeeping (a header write and an fsync at open, the
    /// allocator state and more fsyncs at close), which cost a short read-only command more
    /// than its query. Several read-only openers may share the file; a writer excludes them.
    /// Fails (and the caller opens it to write instead) if the file was not closed cleanly and
    /// needs the repair only a writer can do.
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let db = redb::ReadOnlyDatabase::open(&path).map_err(|e| open_error(dir, &path, e))?;
        Ok(Self {
            db: Db::Read(db),
            path,
            applied: AtomicU64::new(0),
            durable: Mutex::new(0),
        })
    }

    /// Opens (or creates) the redb database file `cairn.redb` in `dir`.
    ///
    /// Errors: [`Error::Locked`] if another process (or another `Store` in this process) has it
    /// open; [`Error::NotAStore`] if the file is damaged, not a redb file, or from an unsupported
    /// redb format.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        // A store closed an instant ago may still be held by a thread of this process that is
        // finishing with it (the group-commit flusher's last flush drops the final handle), so
        // a lock is retried for a short while before it is reported, as for sled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match redb::Database::create(&path).map_err(|e| open_error(dir, &path, e)) {
                Ok(db) => return Self::init(db, path),
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A redb database over any [`redb::StorageBackend`] instead of a file. It exists for the
    /// power-loss test (`tests/power_loss.rs`), which runs redb over a simulated disk that loses
    /// every write not yet synced; it is not part of the supported API.
    #[doc(hidden)]
    pub fn from_storage(storage: impl redb::StorageBackend) -> Result<Self> {
        let path = PathBuf::from("<redb storage backend>");
        let db = redb::Database::builder()
            .create_with_backend(storage)
            .map_err(|e| open_error(&path, &path, e))?;
        Self::init(db, path)
    }

    fn init(db: redb::Database, path: PathBuf) -> Result<Self> {
        let backend = Self {
            db: Db::Write(db),
            path,
            applied: AtomicU64::new(0),
            durable: Mutex::new(0),
        };
        // Create the table durably so that readers of a fresh file find it; an existing file
        // already has it, and opening it then writes nothing (a read-only command such as a
        // query must not pay a durable commit, two fsyncs, on every start).
        let exists = {
            let rtx = backend.db.begin_read().map_err(|e| backend.err(e))?;
            match rtx.open_table(TABLE) {
                Ok(_) => true,
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(backend.err(e)),
            }
        };
        if !exists {
            let tx = backend
                .db
                .writer()?
                .begin_write()
                .map_err(|e| backend.err(e))?;
            tx.open_table(TABLE).map_err(|e| backend.err(e))?;
            tx.commit().map_err(|e| backend.err(e))?;
        }
        Ok(backend)
    }

    /// Bytes the database file takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::io(&self.path, e))
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        match e.into() {
            redb::Error::Io(source) => Error::io(&self.path, source),
            redb::Error::Corrupted(message) => Error::Corrupt {
                what: format!(
                    "the redb file {} is damaged: {message}",
                    self.path.display()
                ),
            },
            other => Error::Backend {
                message: format!("redb ({}): {other}", self.path.display()),
            },
        }
    }

    /// A read-only view of the table at this instant.
    fn read_table(&self) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        tx.open_table(TABLE).map_err(|e| self.err(e))
    }

    /// [`Backend::scan`] over an open view.
    fn scan_in(
        &self,
        table: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        if (!end.is_empty() && start >= end) || limit == 0 {
            return Ok(Vec::new());
        }
        let range = if end.is_empty() {
            table.range::<&[u8]>(start..)
        } else {
            table.range::<&[u8]>(start..end)
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |r: RangeItem<'_>| -> Result<bool> {
            let (k, v) = r.map_err(|e| self.err(e))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
            Ok(out.len() < limit)
        };
        if reverse {
            for r in range.rev() {
                if !push(r)? {
                    break;
                }
            }
        } else {
            for r in range {
                if !push(r)? {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn open_error(dir: &Path, file: &Path, e: redb::DatabaseError) -> Error {
    let not_store = |message: String| Error::NotAStore {
        path: file.to_path_buf(),
        message,
    };
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
            path: dir.parent().unwrap_or(dir).to_path_buf(),
        },
        redb::DatabaseError::UpgradeRequired(v) => not_store(format!(
            "the redb file is in redb file format {v}, which this Cairn's redb 4 cannot open"
        )),
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => {
            if source.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    path: dir.parent().unwrap_or(dir).to_path_buf(),
                }
            } else if source.kind() == std::io::ErrorKind::InvalidData {
                not_store(format!(
                    "the file is not a readable redb database ({source}); it is damaged or was \
                     written by something else"
                ))
            } else {
                Error::io(file, source)
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => not_store(format!(
            "the redb database cannot be read ({m}); it is damaged or not a redb database"
        )),
        other => not_store(format!(
            "the redb database cannot be opened ({other}); it is damaged or not a redb database"
        )),
    }
}

/// The write transaction of the redb backend: like [`super::BatchTx`] (an overlay of the
/// writes, then one [`Backend::apply`]), but its reads share one read snapshot taken at the
/// first read instead of opening a redb read transaction per lookup (a put batch makes a few
/// lookups per artifact). The store's write lock is held throughout, so no other writer can
/// commit under the snapshot.
struct RedbTx<'a> {
    backend: &'a RedbBackend,
    snapshot: std::cell::OnceCell<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    overlay: super::Overlay,
}

impl RedbTx<'_> {
    fn view(&self) -> Result<&redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
        if let Some(t) = self.snapshot.get() {
            return Ok(t);
        }
        let t = self.backend.read_table()?;
        Ok(self.snapshot.get_or_init(|| t))
    }
}

impl super::WriteTx for RedbTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v);
        }
        let v = self.view()?.get(key).map_err(|e| self.backend.err(e))?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        self.overlay.scan(start, end, reverse, limit, |s, e, n| {
            self.backend.scan_in(self.view()?, s, e, reverse, n)
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
        let RedbTx {
            backend,
            snapshot,
            overlay,
        } = *self;
        // Release the snapshot first, so the commit may reuse the pages it pinned.
        drop(snapshot);
        if overlay.is_empty() {
            return Ok(());
        }
        backend.apply(overlay.into_ops())
    }
}

impl Backend for RedbBackend {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.read_table()?;
        let v = table.get(key).map_err(|e| self.err(e))?;
        Ok(v.map(|g| g.value().to_vec()))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        // One read transaction for all of them: its setup costs more than a point lookup.
        let table = self.read_table()?;
        keys.iter()
            .map(|k| {
                let v = table.get(k.as_slice()).map_err(|e| self.err(e))?;
                Ok(v.map(|g| g.value().to_vec()))
            })
            .collect()
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        let table = self.read_table()?;
        self.scan_in(&table, start, end, reverse, limit)
    }

    fn begin_write(&self) -> Result<Box<dyn super::WriteTx + '_>> {
        Ok(Box::new(RedbTx {
            backend: self,
            snapshot: std::cell::OnceCell::new(),
            overlay: super::Overlay::default(),
        }))
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let mut tx = self.db.writer()?.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(redb::Durability::None)
            .map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(TABLE).map_err(|e| self.err(e))?;
            for op in &ops {
                match op {
                    Op::Put(k, v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Op::Delete(k) => {
                        table.remove(k.as_slice()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        // An error before this point drops `tx`, which aborts it: nothing of the batch applies.
        tx.commit().map_err(|e| self.err(e))?;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let target = self.applied.load(Ordering::SeqCst);
        let mut durable = self.durable.lock().map_err(|_| Error::Backend {
            message: "redb flush lock poisoned by a panic in another thread".into(),
        })?;
        if *durable >= target {
            return Ok(());
        }
        // Everything applied before this point is covered by the durable commit below.
        let covered = self.applied.load(Ordering::SeqCst);
        let mut tx = self.db.writer()?.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        *durable = covered;
        Ok(())
    }

    fn flush_is_fsync(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen_only_after_flush_and_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = RedbBackend::open(dir.path()).unwrap();
            b.apply(vec![Op::Put(b"a".to_vec(), b"1".to_vec())])
                .unwrap();
            b.flush().unwrap();
            // A second open of the same file while it is held is a clear "locked" error.
            let e = RedbBackend::open(dir.path()).err().unwrap();
            assert!(matches!(e, Error::Locked { .. }), "{e}");
        }
        let b = RedbBackend::open(dir.path()).unwrap();
        assert_eq!(b.get(b"a").unwrap(), Some(b"1".to_vec()));
        drop(b);

        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let e = RedbBackend::open(bad.path()).err().unwrap();
        assert!(matches!(e, Error::NotAStore { .. }), "{e}");
        assert!(e.to_string().contains("redb"), "{e}");
    }

    #[test]
    fn flush_counts_applied_batches() {
        let dir = tempfile::tempdir().unwrap();
        let b = RedbBackend::open(dir.path()).unwrap();
        for i in 0..5u8 {
            b.apply(vec![Op::Put(vec![i], vec![i])]).unwrap();
        }
        assert_eq!(*b.durable.lock().unwrap(), 0);
        b.flush().unwrap();
        assert_eq!(*b.durable.lock().unwrap(), 5);
        // Nothing new: the second flush is a no-op and keeps the count.
        b.flush().unwrap();
        assert_eq!(*b.durable.lock().unwrap(), 5);
    }
}
