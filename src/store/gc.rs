//! Garbage collection: reclaim blobs no artifact references.
//!
//! Safety argument (DESIGN.md, "Garbage collection"): a blob's reference count changes only inside
//! batches under the write lock, and GC removes a blob only under that lock, after re-reading its
//! count as zero and checking that no put has it pending. A put pins its hash as pending before it
//! checks whether the blob exists, and keeps its own copy of the content until its batch commits,
//! so a blob collected between a put's check and its batch is simply written again.

use std::fs;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::backend::RangeIter;
use crate::content::{self, BlobMeta};
use crate::error::{Error, Result};
use crate::ids::ContentHash;
use crate::keys;

/// What a collection reclaimed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GcReport {
    /// Blobs removed (records and content).
    pub blobs_removed: u64,
    /// Stored bytes freed.
    pub bytes_freed: u64,
    /// Blob files with no record (left by a crash between writing a file and its batch) removed.
    pub orphan_files_removed: u64,
}

impl Store {
    /// Removes every blob whose reference count is zero, and orphaned blob files.
    pub fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        loop {
            let batch = self
                .backend()
                .scan(&[keys::GARBAGE], &[keys::GARBAGE + 1], false, 512)?;
            if batch.is_empty() {
                break;
            }
            let mut files = Vec::new();
            let mut progressed = false;
            {
                let mut state = self.lock()?;
                let mut tx = self.tx(&mut state);
                for (k, _) in &batch {
                    let hash = ContentHash::from_slice(&k[1..])?;
                    if self.is_pending(&hash) {
                        continue;
                    }
                    tx.del(k.clone());
                    progressed = true;
                    let Some(b) = tx.get(&keys::blob(&hash))? else {
                        continue;
                    };
                    let m = BlobMeta::decode(&b)?;
                    if m.refs > 0 {
                        continue; // referenced again since it was listed
                    }
                    tx.del(keys::blob(&hash));
                    if m.inline {
                        tx.del(keys::blob_data(&hash));
                    } else {
                        files.push((hash, m.codec));
                    }
                    tx.add(b"blobs", -1);
                    tx.add(b"stored_bytes", -(m.stored_size as i64));
                    tx.add(b"content_bytes", -(m.size as i64));
                    report.blobs_removed += 1;
                    report.bytes_freed += m.stored_size;
                }
                tx.commit()?;
                // The records are gone (durably) before the files go: a crash in between leaves
                // orphan files, which the sweep below removes, never a record without its file.
                self.flush()?;
                if let Some(paths) = &self.inner.paths {
                    for (hash, codec) in files {
                        let p = content::blob_path(&paths.blobs, &hash, codec);
                        self.remove_unless_pending(&hash, &p)?;
                    }
                }
            }
            if !progressed {
                break; // everything left is pending: a later GC gets it
            }
        }
        report.orphan_files_removed = self.sweep_orphans()?;
        Ok(report)
    }

    /// Removes blob files that have no blob record and no pending put.
    fn sweep_orphans(&self) -> Result<u64> {
        let Some(paths) = &self.inner.paths else {
            return Ok(0);
        };
        let mut removed = 0;
        for (hash, path) in blob_files(&paths.blobs)? {
            let _state = self.lock()?;
            if self.is_pending(&hash) {
                continue;
            }
            let keep = match self.backend().get(&keys::blob(&hash))? {
                Some(b) => {
                    let m = BlobMeta::decode(&b)?;
                    !m.inline && content::blob_path(&paths.blobs, &hash, m.codec) == path
                }
                None => false,
            };
            if !keep && self.remove_unless_pending(&hash, &path)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes a blob file unless a put has its hash pinned, holding the pin set while it does.
    /// Puts stage files outside the write lock: a put pins its hash, then checks for the blob
    /// record, then writes the file. Holding the pins across check and removal means a put either
    /// pinned first (the file stays for it) or pins after the removal and, finding no record,
    /// writes the file itself. Checking the pin and removing without holding it lost files
    /// (`tests/crash.rs`, GC racing puts of the same content). Returns whether a file was removed.
    fn remove_unless_pending(&self, hash: &ContentHash, path: &std::path::Path) -> Result<bool> {
        let pins = self.inner.pending.lock().map_err(|_| Error::Backend {
            message: "pending-put set poisoned by a panic in another thread".into(),
        })?;
        if pins.contains_key(hash) {
            return Ok(false);
        }
        let removed = match fs::remove_file(path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        drop(pins);
        Ok(removed)
    }

    /// Number of blobs waiting for GC.
    pub fn garbage_count(&self) -> Result<u64> {
        let mut n = 0;
        for e in RangeIter::prefix(self.backend(), &[keys::GARBAGE], false) {
            e?;
            n += 1;
        }
        Ok(n)
    }
}

/// Every file under `blobs/` whose name parses as `<hash>.<ext>`, with its hash.
pub(crate) fn blob_files(
    blobs: &std::path::Path,
) -> Result<Vec<(ContentHash, std::path::PathBuf)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(blobs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(blobs, e)),
    };
    for sub in rd {
        let sub = sub.map_err(|e| Error::io(blobs, e))?;
        if !sub.path().is_dir() {
            continue;
        }
        let inner = fs::read_dir(sub.path()).map_err(|e| Error::io(sub.path(), e))?;
        for f in inner {
            let f = f.map_err(|e| Error::io(sub.path(), e))?;
            let p = f.path();
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if let Ok(h) = stem.parse::<ContentHash>() {
                out.push((h, p));
            }
        }
    }
    Ok(out)
}
