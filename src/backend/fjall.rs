//! The LSM backend: fjall 3.x, a log-structured merge tree with a write-ahead journal.
//!
//! Mapping of the backend trait (see DESIGN.md, "Engine choice"):
//! - [`Backend::apply`] is one fjall write batch: atomic (one journal record, one sequence number,
//!   applied to the memtable under the journal lock) and visible to readers at once. It reaches
//!   the operating system's buffers, not yet the disk.
//! - [`Backend::flush`] is `Database::persist(PersistMode::SyncAll)`: an `fsync` of the journal,
//!   which makes every earlier batch durable. Concurrent callers share that fsync: a flush that
//!   finds its batches already made durable by another thread returns at once (group commit).
//!
//! On a crash or a power loss fjall replays the journal up to its last intact batch, never a part
//! of one; memtables are written to sorted tables (and old journals dropped) by fjall's own
//! background workers, each step synced before the journal it replaces is removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Backend, Entry, Op};
use crate::error::{Error, Result};

/// The one keyspace; the version suffix lets a later format add keyspaces beside it.
const KEYSPACE: &str = "cairn.v1";

/// fjall, one keyspace, every key prefixed by its table byte.
pub struct FjallBackend {
    db: Database,
    keyspace: Keyspace,
    path: PathBuf,
    /// Number of batches applied so far.
    applied: AtomicU64,
    /// Number of applied batches known to be durable; the mutex also serialises fsyncs.
    durable: Mutex<u64>,
}

impl FjallBackend {
    /// Opens (or creates) the fjall database in `dir` with the default page cache.
    ///
    /// Errors: [`Error::Locked`] if another process (or another `Store` in this process) has it
    /// open; [`Error::NotAStore`] if the files are damaged or not a fjall database.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, super::DEFAULT_ENGINE_CACHE)
    }

    /// Opens (or creates) the fjall database in `dir` with a block cache of about `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        // fjall releases its lock file when its background workers let go of the database, which
        // can be shortly after the last handle is dropped: retry briefly, as for sled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut wait = std::time::Duration::from_millis(2);
        let db = loop {
            match open_db(dir, cache_bytes) {
                Ok(db) => break db,
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        let keyspace = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| open_error(dir, e))?;
        let backend = Self {
            db,
            keyspace,
            path: dir.to_path_buf(),
            applied: AtomicU64::new(0),
            durable: Mutex::new(0),
        };
        // The keyspace's creation is durable before the first batch relies on it.
        backend
            .db
            .persist(PersistMode::SyncAll)
            .map_err(|e| backend.err(e))?;
        Ok(backend)
    }

    /// Bytes the database (journals and tables) takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.disk_space().map_err(|e| self.err(e))
    }

    fn err(&self, e: fjall::Error) -> Error {
        match e {
            fjall::Error::Io(source) => Error::io(&self.path, source),
            fjall::Error::Storage(lsm_error) => Error::Backend {
                message: format!("fjall ({}): {lsm_error:?}", self.path.display()),
            },
            fjall::Error::Poisoned => Error::Backend {
                message: format!(
                    "fjall ({}): an earlier write to disk failed, so the engine refuses further \
                     writes; close the store and open it again to recover",
                    self.path.display()
                ),
            },
            other => Error::Backend {
                message: format!("fjall ({}): {other:?}", self.path.display()),
            },
        }
    }
}

fn open_db(dir: &Path, cache_bytes: u64) -> Result<Database> {
    let opened = std::panic::catch_unwind(|| Database::builder(dir).cache_size(cache_bytes).open());
    match opened {
        Ok(r) => r.map_err(|e| open_error(dir, e)),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(Error::NotAStore {
                path: dir.to_path_buf(),
                message: format!(
                    "the fjall database is damaged (fjall panicked while opening it: {why}); \
                     restore the store from a backup or export what a copy can still read"
                ),
            })
        }
    }
}

fn open_error(dir: &Path, e: fjall::Error) -> Error {
    let locked = || Error::Locked {
        path: dir.parent().unwrap_or(dir).to_path_buf(),
    };
    match e {
        fjall::Error::Locked => locked(),
        fjall::Error::Io(source) if source.kind() == std::io::ErrorKind::WouldBlock => locked(),
        fjall::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            Error::NotAStore {
                path: dir.to_path_buf(),
                message: format!(
                    "the fjall database cannot be read ({source}); it is damaged or not a fjall \
                     database"
                ),
            }
        }
        fjall::Error::Io(source) => Error::io(dir, source),
        other => Error::NotAStore {
            path: dir.to_path_buf(),
            message: format!(
                "the fjall database cannot be opened ({other:?}); it is damaged, not a fjall \
                 database, or from an unsupported fjall format"
            ),
        },
    }
}

impl Backend for FjallBackend {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .keyspace
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        if (!end.is_empty() && start >= end) || limit == 0 {
            return Ok(Vec::new());
        }
        let iter = if end.is_empty() {
            self.keyspace.range::<&[u8], _>(start..)
        } else {
            self.keyspace.range::<&[u8], _>(start..end)
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |g: fjall::Guard| -> Result<bool> {
            let (k, v) = g.into_inner().map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.to_vec()));
            Ok(out.len() < limit)
        };
        if reverse {
            for g in iter.rev() {
                if !push(g)? {
                    break;
                }
            }
        } else {
            for g in iter {
                if !push(g)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(&self.keyspace, k, v),
                Op::Delete(k) => batch.remove(&self.keyspace, k),
            }
        }
        batch.commit().map_err(|e| self.err(e))?;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let target = self.applied.load(Ordering::SeqCst);
        let mut durable = self.durable.lock().map_err(|_| Error::Backend {
            message: "fjall flush lock poisoned by a panic in another thread".into(),
        })?;
        if *durable >= target {
            return Ok(());
        }
        // Everything applied before this point is covered by the fsync below.
        let covered = self.applied.load(Ordering::SeqCst);
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.err(e))?;
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
    fn batches_survive_reopen_and_a_second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = FjallBackend::open(dir.path()).unwrap();
            b.apply(vec![
                Op::Put(b"a".to_vec(), b"1".to_vec()),
                Op::Put(b"b".to_vec(), b"2".to_vec()),
            ])
            .unwrap();
            b.apply(vec![Op::Delete(b"b".to_vec())]).unwrap();
            b.flush().unwrap();
            assert_eq!(*b.durable.lock().unwrap(), 2);
            // Nothing new: the second flush is a no-op and keeps the count.
            b.flush().unwrap();
            assert_eq!(*b.durable.lock().unwrap(), 2);
            let e = open_db(dir.path(), 1 << 20).err().unwrap();
            assert!(matches!(e, Error::Locked { .. }), "{e}");
        }
        let b = FjallBackend::open(dir.path()).unwrap();
        assert_eq!(b.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(b.get(b"b").unwrap(), None);
        assert!(b.size_on_disk().unwrap() > 0);
    }
}
