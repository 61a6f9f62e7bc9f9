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

/// A garbage entry (`G` + hash) that waits for its grace period: `[b'g', ms since epoch u64 BE]`.
/// Entries written by earlier versions are empty (listed at an unknown time).
const LISTED: u8 = b'g';
/// A garbage entry whose object a GC is deleting: `[b'd', ms since epoch u64 BE]`. No write may
/// take the blob back while it is set; the GC removes the entry (and the record) once the object
/// is gone.
const DELETING: u8 = b'd';
/// How many garbage entries one shared-content GC step marks, deletes and clears at a time: a
/// put of the same content waits (retries) at most one step.
const SHARED_STEP: usize = 64;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn garbage_value(state: u8, at_ms: u64) -> Vec<u8> {
    let mut v = vec![state];
    v.extend_from_slice(&at_ms.to_be_bytes());
    v
}

/// The value of a garbage entry listed now.
pub(crate) fn garbage_listed_now() -> Vec<u8> {
    garbage_value(LISTED, now_ms())
}

/// Whether a garbage entry says a GC is deleting the object.
pub(crate) fn is_deleting(v: &[u8]) -> bool {
    v.first() == Some(&DELETING)
}

/// A garbage entry's state and time (`None`: an entry of an earlier version, time unknown).
fn decode_garbage(v: &[u8]) -> Option<(u8, u64)> {
    let at: [u8; 8] = v.get(1..9)?.try_into().ok()?;
    Some((v[0], u64::from_be_bytes(at)))
}

impl Store {
    /// Removes every blob whose reference count is zero, and orphaned blob files.
    ///
    /// With content on an object store shared by several servers, a blob is deleted only once
    /// its garbage entry is older than the grace period, in three steps recorded in the
    /// metadata (DESIGN.md, "Content on object storage"); orphan objects are listed as garbage
    /// first and deleted by a later run.
    pub fn gc(&self) -> Result<GcReport> {
        match self.inner.files.as_ref().and_then(|f| f.shared()) {
            Some(grace) => self.gc_shared(grace),
            None => self.gc_local(std::time::Duration::ZERO),
        }
    }

    /// Like [`Store::gc`], with a grace period: content whose last reference was dropped less
    /// than `grace` ago stays (a put of the same content takes it back without storing it
    /// again). With content on an object store this replaces the configured grace period
    /// ([`crate::S3Config::gc_grace`]) for this run; keep it at least as long as any server's
    /// longest GC run there (DESIGN.md, "Content on object storage").
    pub fn gc_with_grace(&self, grace: std::time::Duration) -> Result<GcReport> {
        if self.inner.files.as_ref().and_then(|f| f.shared()).is_some() {
            return self.gc_shared(grace);
        }
        self.gc_local(grace)
    }

    fn gc_local(&self, grace: std::time::Duration) -> Result<GcReport> {
        let grace_ms = grace.as_millis() as u64;
        let mut report = GcReport::default();
        // A cursor over the list: entries left (pending, or within the grace period) are not
        // read again by this run.
        let mut start = vec![keys::GARBAGE];
        loop {
            let batch = self
                .backend()
                .scan(&start, &[keys::GARBAGE + 1], false, 512)?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            self.write_batches(|w| {
                let (files, removed, freed) = w.batch(|tx| {
                    let mut files = Vec::new();
                    let (mut removed, mut freed) = (0, 0);
                    let now = now_ms();
                    for (k, v) in &batch {
                        let hash = ContentHash::from_slice(&k[1..])?;
                        if self.is_pending(&hash) {
                            continue;
                        }
                        // Within its grace period (an entry of an earlier version has no time:
                        // it was listed before this version ran, so long enough ago).
                        if grace_ms > 0
                            && decode_garbage(v)
                                .is_some_and(|(_, at)| now.saturating_sub(at) < grace_ms)
                        {
                            continue;
                        }
                        let Some(m) = tx.remove_garbage_blob(&hash)? else {
                            continue;
                        };
                        if !m.inline {
                            files.push((hash, m.codec));
                        }
                        removed += 1;
                        freed += m.stored_size;
                    }
                    Ok((files, removed, freed))
                })?;
                report.blobs_removed += removed;
                report.bytes_freed += freed;
                // The records are gone (durably) before the files go: a crash in between leaves
                // orphan files, which the sweep below removes, never a record without its file.
                self.flush()?;
                if let Some(paths) = &self.inner.paths {
                    for (hash, codec) in files {
                        let p = content::blob_path(&paths.blobs, &hash, codec);
                        self.remove_unless_pending(&hash, &p)?;
                    }
                }
                Ok(())
            })?;
        }
        report.orphan_files_removed = self.sweep_orphans()?;
        Ok(report)
    }

    /// GC of content shared with other processes. For each garbage entry older than `grace`:
    /// 1. one transaction marks it `DELETING` if the blob is still unreferenced (puts and
    ///    retains of that content now conflict and retry);
    /// 2. the object is deleted;
    /// 3. one transaction removes the record and the entry.
    ///
    /// A crash after 1 leaves a `DELETING` entry, which the next GC finishes once it is older
    /// than `grace` (so a GC must not stall longer than `grace` between 1 and 2). The record is
    /// never removed before its object: at worst garbage stays, never a dangling reference.
    fn gc_shared(&self, grace: std::time::Duration) -> Result<GcReport> {
        let mut report = GcReport::default();
        let Some(files) = self.inner.files.as_ref() else {
            return Ok(report);
        };
        let grace_ms = grace.as_millis() as u64;
        let mut start = vec![keys::GARBAGE];
        let end = vec![keys::GARBAGE + 1];
        loop {
            let entries = self.backend().scan(&start, &end, false, SHARED_STEP)?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            // 1. Mark what is old enough and unreferenced (re-read in the transaction).
            let marked = self.write(|tx| {
                let now = now_ms();
                let mut marked = Vec::new();
                for (k, _) in &entries {
                    let hash = ContentHash::from_slice(&k[1..])?;
                    if self.is_pending(&hash) {
                        continue;
                    }
                    let Some(v) = tx.get(k)? else { continue };
                    let Some((_, at)) = decode_garbage(&v) else {
                        // An entry of an earlier version: its grace period starts now.
                        tx.put(k.clone(), garbage_value(LISTED, now));
                        continue;
                    };
                    if now.saturating_sub(at) < grace_ms {
                        continue;
                    }
                    let meta = match tx.get(&keys::blob(&hash))? {
                        Some(b) => Some(BlobMeta::decode(&b)?),
                        None => None,
                    };
                    if meta.is_some_and(|m| m.refs > 0) {
                        tx.del(k.clone()); // referenced again: a stale entry
                        continue;
                    }
                    tx.put(k.clone(), garbage_value(DELETING, now));
                    marked.push((hash, meta));
                }
                Ok(marked)
            })?;
            // 2. Delete the objects (both codecs for an orphan, whose record says nothing).
            for (hash, meta) in &marked {
                match meta {
                    Some(m) if m.inline => {}
                    Some(m) => files.delete(hash, m.codec)?,
                    None => {
                        files.delete(hash, content::Codec::Raw)?;
                        files.delete(hash, content::Codec::Zstd)?;
                    }
                }
            }
            // 3. Remove the records and the entries.
            let (removed, freed, orphans) = self.write(|tx| {
                let (mut removed, mut freed, mut orphans) = (0u64, 0u64, 0u64);
                for (hash, meta) in &marked {
                    let k = keys::garbage(hash);
                    if !tx.get(&k)?.as_deref().is_some_and(is_deleting) {
                        continue; // another GC finished it
                    }
                    match tx.remove_garbage_blob(hash)? {
                        Some(m) => {
                            removed += 1;
                            freed += m.stored_size;
                        }
                        None if meta.is_none() => orphans += 1,
                        None => {}
                    }
                }
                Ok((removed, freed, orphans))
            })?;
            report.blobs_removed += removed;
            report.bytes_freed += freed;
            report.orphan_files_removed += orphans;
            if entries.len() < SHARED_STEP {
                break;
            }
        }
        self.list_orphan_objects()?;
        Ok(report)
    }

    /// Lists objects that have no blob record and no garbage entry (left by a put whose
    /// transaction never committed, or one still in flight) as garbage: a later GC deletes
    /// them after the grace period unless a put claims them first.
    fn list_orphan_objects(&self) -> Result<()> {
        let Some(files) = self.inner.files.as_ref() else {
            return Ok(());
        };
        let Some(objects) = files.list_all()? else {
            return Ok(());
        };
        for chunk in objects.chunks(SHARED_STEP) {
            self.write(|tx| {
                for (hash, _) in chunk {
                    if tx.get(&keys::blob(hash))?.is_none()
                        && tx.get(&keys::garbage(hash))?.is_none()
                    {
                        tx.put(keys::garbage(hash), garbage_listed_now());
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
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
        // The pin set stays locked across the removal, so no put can pin the hash meanwhile.
        self.inner.pins.locked(|pins| {
            if pins.contains_key(hash) {
                return Ok(false);
            }
            match fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io(path, e)),
            }
        })?
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
