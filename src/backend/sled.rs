//! The default embedded backend: sled 0.34 on local disk.

use std::path::{Path, PathBuf};

use super::{Backend, Entry, Op};
use crate::error::{Error, Result};

/// sled, one tree (the default tree), every key prefixed by its table byte.
pub struct SledBackend {
    db: sled::Db,
    path: PathBuf,
}

impl SledBackend {
    /// Opens (or creates) the sled database in `dir`.
    ///
    /// A damaged database gives [`Error::NotAStore`], never a panic: sled 0.34 panics on some
    /// corrupt files instead of returning an error, so the open runs under `catch_unwind`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, crate::config::DEFAULT_ENGINE_CACHE)
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
                    return Ok(Self {
                        db,
                        path: dir.to_path_buf(),
                    })
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

    fn err(&self, e: sled::Error) -> Error {
        match e {
            sled::Error::Io(source) => Error::io(&self.path, source),
            other => Error::Backend {
                message: other.to_string(),
            },
        }
    }
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
        self.db.apply_batch(batch).map_err(|e| self.err(e))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    fn flush_is_fsync(&self) -> bool {
        false
    }
}
