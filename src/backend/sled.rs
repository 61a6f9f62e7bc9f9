//! The sled backend: sled 0.34 on local disk.
//!
//! sled's own `flush()` writes its log with `sync_file_range`, which survives a killed process
//! but not a power cut (it neither flushes the drive's cache nor the file's metadata), and it
//! writes its large-value files under `blobs/` without any sync. So [`Backend::flush`] here is
//! sled's flush followed by a real fsync of everything sled wrote: the log file `db`, every blob
//! file not yet synced, and the `blobs/` and database folders (see DESIGN.md, "Durability").

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Backend, Entry, Op};
use crate::error::{Error, Result};

/// sled, one tree (the default tree), every key prefixed by its table byte.
pub struct SledBackend {
    db: sled::Db,
    path: PathBuf,
    /// Number of batches applied so far.
    applied: AtomicU64,
    /// What is known durable; the mutex also serialises flushes, so concurrent callers share one.
    durable: Mutex<Durable>,
}

/// The fsync bookkeeping of a sled database.
struct Durable {
    /// Number of applied batches known to be durable.
    batches: u64,
    /// sled's blob files already fsynced (blob files are written once and never changed).
    blobs: HashSet<OsString>,
}

impl SledBackend {
    /// Opens (or creates) the sled database in `dir`.
    ///
    /// A damaged database gives [`Error::NotAStore`], never a panic: sled 0.34 panics on some
    /// corrupt files instead of returning an error, so the open runs under `catch_unwind`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, super::DEFAULT_ENGINE_CACHE)
    }

    /// Opens (or creates) the sled database in `dir` with a page cache of about `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        // sled releases its file lock from a background thread shortly after the last handle is
        // dropped, so a close followed at once by an open in the same process can see the lock
        // still held. Retry briefly before reporting that another process holds the store.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut wait = std::time::Duration::from_millis(2);
        loop {
            match open_db(dir, cache_bytes) {
                Ok(db) => {
                    let backend = Self {
                        db,
                        path: dir.to_path_buf(),
                        applied: AtomicU64::new(0),
                        durable: Mutex::new(Durable {
                            batches: 0,
                            blobs: HashSet::new(),
                        }),
                    };
                    // A new database's `conf` file and folder entries are made durable now.
                    let conf = dir.join("conf");
                    if conf.is_file() {
                        fsync_file(&conf)?;
                    }
                    {
                        let mut durable = backend.lock_durable()?;
                        backend.sync_files(&mut durable)?;
                    }
                    return Ok(backend);
                }
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(|e| self.err(e))
    }

    fn lock_durable(&self) -> Result<std::sync::MutexGuard<'_, Durable>> {
        self.durable.lock().map_err(|_| Error::Backend {
            message: "sled flush lock poisoned by a panic in another thread".into(),
        })
    }

    /// fsyncs sled's log file, the blob files not yet synced, and the folders that name them.
    fn sync_files(&self, durable: &mut Durable) -> Result<()> {
        let log = self.path.join("db");
        if log.is_file() {
            fsync_file(&log)?;
        }
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            let mut seen = HashSet::new();
            let entries = std::fs::read_dir(&blobs).map_err(|e| Error::io(&blobs, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&blobs, e))?;
                let name = entry.file_name();
                if !durable.blobs.contains(&name) {
                    match fsync_file(&entry.path()) {
                        Ok(()) => {}
                        // sled removed it meanwhile (its value was rewritten or deleted).
                        Err(Error::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            continue
                        }
                        Err(e) => return Err(e),
                    }
                }
                seen.insert(name);
            }
            crate::fsutil::sync_dir(&blobs)?;
            // Forget removed files, so the set stays as large as the folder.
            durable.blobs = seen;
        }
        crate::fsutil::sync_dir(&self.path)
    }

    fn err(&self, e: sled::Error) -> Error {
        match e {
            sled::Error::Io(source) => Error::io(&self.path, source),
            other => Error::Backend {
                message: other.to_string(),
            },
        }
    }
}

fn fsync_file(path: &Path) -> Result<()> {
    // fsync flushes the file's data and metadata whichever descriptor it is called on.
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let opened = std::panic::catch_unwind(|| {
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
    });
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
                    "the sled database is damaged (sled panicked while opening it: {why}); \
                     restore the store from a backup or export what a copy can still read"
                ),
            })
        }
    }
}

fn open_error(dir: &Path, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(source) => {
            let text = source.to_string();
            if source.kind() == std::io::ErrorKind::WouldBlock || text.contains("lock") {
                Error::Locked {
                    path: dir.parent().unwrap_or(dir).to_path_buf(),
                }
            } else {
                Error::io(dir, source)
            }
        }
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => Error::NotAStore {
            path: dir.to_path_buf(),
            message: format!(
                "the sled database cannot be read ({e}); it is damaged or not a sled database"
            ),
        },
        other => Error::NotAStore {
            path: dir.to_path_buf(),
            message: other.to_string(),
        },
    }
}

impl Backend for SledBackend {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        if !end.is_empty() && start >= end {
            return Ok(Vec::new());
        }
        let iter = if end.is_empty() {
            self.db.range(start..)
        } else {
            self.db.range(start..end)
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut push = |r: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool> {
            let (k, v) = r.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.to_vec()));
            Ok(out.len() < limit)
        };
        if reverse {
            for r in iter.rev() {
                if !push(r)? {
                    break;
                }
            }
        } else {
            for r in iter {
                if !push(r)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(|e| self.err(e))?;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let target = self.applied.load(Ordering::SeqCst);
        let mut durable = self.lock_durable()?;
        if durable.batches >= target {
            return Ok(());
        }
        // Everything applied before this point is covered by the flush and fsyncs below.
        let covered = self.applied.load(Ordering::SeqCst);
        self.db.flush().map_err(|e| self.err(e))?;
        self.sync_files(&mut durable)?;
        durable.batches = covered;
        Ok(())
    }

    fn flush_is_fsync(&self) -> bool {
        true
    }
}
