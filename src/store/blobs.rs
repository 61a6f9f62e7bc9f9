//! Blobs: content by hash, inline in the engine (small) or in a file (large); reference counts,
//! garbage entries, pins of hashes a write is about to reference, and the byte counters.
//!
//! Every writer of content goes through here: `put` (via [`Store::stage`]) and bundle import
//! (via [`Store::stage_encoded`]) stage content outside the write lock, and the transaction's
//! [`Tx::add_blob`] / [`Tx::retain_blob`] / [`Tx::release_blob`] keep records and counters.
//! The blob *files* sit behind [`BlobFiles`] (local files now; an object store later).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::counters;
use super::{Store, Tx};
use crate::content::{self, BlobMeta, Codec, Encoded, Prepared, PreparedData};
use crate::error::{Error, Result};
use crate::ids::ContentHash;
use crate::keys;

pub(crate) use crate::blob_files::{BlobFiles, LocalFiles};

/// Inline blobs whose encoded bytes are at most this long are kept inside their blob record
/// (format 2) instead of under a `D` key of their own: one engine key per new small blob
/// instead of two. Larger inline blobs keep the `D` key, so that a reference change (which
/// rewrites the record) never copies more than this.
pub(crate) const RECORD_DATA_MAX: usize = 4096;

/// Content hashes a write is about to reference: GC leaves their records and files alone.
#[derive(Default)]
pub(crate) struct Pins(Mutex<HashMap<ContentHash, usize>>);

/// Keeps a content hash pinned until dropped.
pub(crate) struct PendingGuard<'a> {
    pins: &'a Pins,
    hash: ContentHash,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pins.0.lock() {
            if let Some(n) = p.get_mut(&self.hash) {
                *n -= 1;
                if *n == 0 {
                    p.remove(&self.hash);
                }
            }
        }
    }
}

impl Pins {
    /// Runs `f` with the pin set locked: no pin can be taken meanwhile.
    pub(crate) fn locked<T>(&self, f: impl FnOnce(&HashMap<ContentHash, usize>) -> T) -> Result<T> {
        let pins = self.0.lock().map_err(|_| Error::Backend {
            message: "pending-put set poisoned by a panic in another thread".into(),
        })?;
        Ok(f(&pins))
    }
}

/// Content staged before the batch: hashed, and (if its blob was new at staging) encoded and
/// its file in place. Pinned until dropped.
pub(crate) struct Staged<'a> {
    pub(crate) hash: ContentHash,
    pub(crate) size: u64,
    data: StagedData<'a>,
    /// Partial reads (issue 13): the preview computed while streaming, if any.
    preview: Option<crate::preview::Preview>,
    _pin: PendingGuard<'a>,
}

enum StagedData<'a> {
    Memory {
        /// The caller's bytes (`put` of a slice: never copied) or an owned buffer.
        raw: Cow<'a, [u8]>,
        encoded: Option<Encoded>,
        file_written: bool,
    },
    File {
        tmp: Option<PathBuf>,
        codec: Codec,
        stored_size: u64,
    },
}

impl Drop for StagedData<'_> {
    fn drop(&mut self) {
        if let StagedData::File { tmp: Some(p), .. } = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Encoded content to stage (bundle import): in memory, or in a synced temporary file.
pub(crate) enum EncodedBytes {
    Memory(Vec<u8>),
    File(PathBuf),
}

impl Store {
    pub(crate) fn pin_pending(&self, hash: ContentHash) -> PendingGuard<'_> {
        if let Ok(mut p) = self.inner.pins.0.lock() {
            *p.entry(hash).or_insert(0) += 1;
        }
        PendingGuard {
            pins: &self.inner.pins,
            hash,
        }
    }

    pub(crate) fn is_pending(&self, hash: &ContentHash) -> bool {
        self.inner
            .pins
            .0
            .lock()
            .map(|p| p.contains_key(hash))
            .unwrap_or(true)
    }

    pub(crate) fn blob_meta(&self, hash: &ContentHash) -> Result<Option<BlobMeta>> {
        self.backend()
            .get(&keys::blob(hash))?
            .map(|b| BlobMeta::decode(&b))
            .transpose()
    }

    /// Where a large put's temporary file goes: the store's `tmp/` folder, or the blob layer's
    /// spool folder (an object store); `None` (in memory): the content stays in memory.
    pub(crate) fn staging_dir(&self) -> Option<&Path> {
        match &self.inner.paths {
            Some(p) => Some(p.tmp.as_path()),
            None => self.inner.files.as_ref().and_then(|f| f.spool_dir()),
        }
    }

    /// Stages the caller's bytes without copying them: hashed here, encoded (and any file
    /// written) only if the blob is new. A put of content the store already holds (dedup) then
    /// costs one hash and one record lookup before its batch.
    pub(crate) fn stage_slice<'a>(&'a self, bytes: &'a [u8]) -> Result<Staged<'a>> {
        let hash = content::hash_bytes(bytes);
        let pin = self.pin_pending(hash);
        let data = StagedData::Memory {
            raw: Cow::Borrowed(bytes),
            encoded: None,
            file_written: false,
        };
        self.finish_staging(hash, bytes.len() as u64, data, pin)
    }

    /// Hashes are known; if the blob is new, encode it and put any file in place now, outside
    /// the lock.
    pub(crate) fn stage(&self, p: Prepared) -> Result<Staged<'_>> {
        let pin = self.pin_pending(p.hash);
        let data = match p.data {
            PreparedData::Memory(raw) => StagedData::Memory {
                raw: Cow::Owned(raw),
                encoded: None,
                file_written: false,
            },
            PreparedData::TempFile {
                path,
                codec,
                stored_size,
            } => StagedData::File {
                tmp: Some(path),
                codec,
                stored_size,
            },
        };
        let mut staged = self.finish_staging(p.hash, p.size, data, pin)?;
        staged.preview = p.preview;
        Ok(staged)
    }

    /// Stages content that arrives encoded and verified (bundle import). Nothing is written
    /// yet: [`Tx::add_blob`] puts a new blob's file in place inside the batch, so an import
    /// refused before its blobs leaves no files behind.
    pub(crate) fn stage_encoded(
        &self,
        hash: ContentHash,
        size: u64,
        codec: Codec,
        bytes: EncodedBytes,
    ) -> Result<Staged<'_>> {
        let pin = self.pin_pending(hash);
        let data = match bytes {
            EncodedBytes::Memory(bytes) => StagedData::Memory {
                raw: Cow::Borrowed(&[]),
                encoded: Some(Encoded { codec, bytes }),
                file_written: false,
            },
            EncodedBytes::File(path) => {
                let stored_size = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len();
                if self.inner.files.is_none() {
                    // No file store (in memory): the bytes live inline.
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    let _ = std::fs::remove_file(&path);
                    StagedData::Memory {
                        raw: Cow::Borrowed(&[]),
                        encoded: Some(Encoded { codec, bytes }),
                        file_written: false,
                    }
                } else {
                    StagedData::File {
                        tmp: Some(path),
                        codec,
                        stored_size,
                    }
                }
            }
        };
        Ok(Staged {
            hash,
            size,
            data,
            preview: None,
            _pin: pin,
        })
    }

    fn finish_staging<'a>(
        &'a self,
        hash: ContentHash,
        size: u64,
        mut data: StagedData<'a>,
        pin: PendingGuard<'a>,
    ) -> Result<Staged<'a>> {
        if self.blob_meta(&hash)?.is_none() {
            self.materialize(&hash, &mut data)?;
        }
        Ok(Staged {
            hash,
            size,
            data,
            preview: None,
            _pin: pin,
        })
    }

    /// Stages many in-memory contents, compressing on all cores.
    pub(crate) fn stage_parallel(&self, raw: Vec<Vec<u8>>) -> Result<Vec<Staged<'_>>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(raw.len().max(1));
        if threads <= 1 || raw.len() < 8 {
            return raw
                .into_iter()
                .map(|b| self.stage(prepared_bytes(b)))
                .collect();
        }
        let mut slots: Vec<Option<Vec<u8>>> = raw.into_iter().map(Some).collect();
        let chunk = slots.len().div_ceil(threads);
        let results: Vec<Result<Vec<Staged<'_>>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = slots
                .chunks_mut(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter_mut()
                            .map(|b| self.stage(prepared_bytes(b.take().unwrap_or_default())))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles.into_iter().map(content::joined).collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Whether encoded content of this length goes to a file (else inline in the engine).
    fn to_file(&self, encoded_len: u64) -> bool {
        self.inner.files.is_some() && encoded_len >= self.inner.config.inline_threshold
    }

    /// Encodes memory content and writes large encoded content to its file; installs temp files.
    fn materialize(&self, hash: &ContentHash, data: &mut StagedData<'_>) -> Result<()> {
        let c = &self.inner.config;
        match data {
            StagedData::Memory {
                raw,
                encoded,
                file_written,
            } => {
                if encoded.is_none() {
                    *encoded = Some(content::encode_with(raw, &content::EncodeOptions::of(c))?);
                }
                if let (Some(e), Some(files)) = (encoded.as_ref(), &self.inner.files) {
                    if self.to_file(e.bytes.len() as u64) && !*file_written {
                        files.write(hash, e.codec, &e.bytes)?;
                        *file_written = true;
                    }
                }
            }
            StagedData::File { tmp, codec, .. } => {
                if let (Some(t), Some(files)) = (tmp.as_ref(), &self.inner.files) {
                    files.install(t, hash, *codec)?;
                    if files.consumes_temp() {
                        *tmp = None;
                    }
                }
            }
        }
        Ok(())
    }

    /// The encoded bytes of an inline blob: from its record (format 2) or its `D` entry.
    pub(crate) fn inline_bytes(&self, hash: &ContentHash) -> Result<Vec<u8>> {
        let record = self
            .backend()
            .get(&keys::blob(hash))?
            .ok_or(Error::ContentMissing { hash: *hash })?;
        match BlobMeta::data(&record) {
            Some(d) => Ok(d.to_vec()),
            None => self
                .backend()
                .get(&keys::blob_data(hash))?
                .ok_or(Error::ContentMissing { hash: *hash }),
        }
    }

    /// The encoded bytes of a blob and its record: inline from the engine, or its file.
    pub(crate) fn encoded_source(
        &self,
        hash: &ContentHash,
    ) -> Result<(BlobMeta, Box<dyn Read + Send>)> {
        let m = self
            .blob_meta(hash)?
            .ok_or(Error::ContentMissing { hash: *hash })?;
        let src: Box<dyn Read + Send> = if m.inline {
            content::bytes_source(self.inline_bytes(hash)?)
        } else {
            let files = self
                .inner
                .files
                .as_ref()
                .ok_or(Error::ContentMissing { hash: *hash })?;
            match files.open(hash, m.codec)? {
                Some(r) => r,
                None => {
                    return Err(Error::Integrity {
                        hash: *hash,
                        message: format!(
                            "its blob file {} is missing",
                            files.describe(hash, m.codec)
                        ),
                    })
                }
            }
        };
        Ok((m, src))
    }
}

pub(crate) fn prepared_bytes(b: Vec<u8>) -> Prepared {
    Prepared {
        hash: content::hash_bytes(&b),
        size: b.len() as u64,
        data: PreparedData::Memory(b),
        preview: None,
    }
}

impl Tx<'_> {
    /// Takes one reference on the staged blob, creating its record if it is new.
    pub(crate) fn reference_blob(&mut self, staged: &Staged<'_>) -> Result<BlobMeta> {
        Ok(self.add_blob(staged, 1)?.0)
    }

    /// Makes sure the staged blob has a record, adding `refs` references. A new blob with no
    /// reference is listed as garbage (a later [`Tx::retain_blob`] takes it off the list).
    /// Returns its record and whether it is new. If the blob was collected since staging, its
    /// content is written now, under the lock.
    pub(crate) fn add_blob(&mut self, staged: &Staged<'_>, refs: u64) -> Result<(BlobMeta, bool)> {
        let key = keys::blob(&staged.hash);
        if let Some(b) = self.get(&key)? {
            let mut m = BlobMeta::decode(&b)?;
            if refs > 0 {
                if m.refs == 0 {
                    self.unlist_garbage(&staged.hash)?;
                }
                m.refs += refs;
                self.put(key, BlobMeta::with_refs(&b, m.refs));
            }
            return Ok((m, false));
        }
        let store = self.store;
        let c = &store.inner.config;
        let mut record_data = None;
        // Content shared with other processes (an object store): GC may have deleted the
        // object since staging, or listed it as an orphan. Take it off the list (refused while
        // a GC deletes it) and make sure the object is there, in this transaction.
        let shared = store.inner.files.as_ref().filter(|f| f.shared().is_some());
        if shared.is_some() {
            self.unlist_garbage(&staged.hash)?;
        }
        let m = match &staged.data {
            StagedData::Memory {
                raw,
                encoded,
                file_written,
            } => {
                let enc_owned;
                let e = match encoded {
                    Some(e) => e,
                    None => {
                        enc_owned = content::encode_with(raw, &content::EncodeOptions::of(c))?;
                        &enc_owned
                    }
                };
                let to_file = store.to_file(e.bytes.len() as u64);
                if to_file {
                    if let Some(files) = shared {
                        if files.stored_len(&staged.hash, e.codec)?.is_none() {
                            files.write(&staged.hash, e.codec, &e.bytes)?;
                        }
                    } else if let (false, Some(files)) = (*file_written, &store.inner.files) {
                        files.write(&staged.hash, e.codec, &e.bytes)?;
                    }
                } else if e.bytes.len() <= RECORD_DATA_MAX {
                    record_data = Some(e.bytes.clone());
                } else {
                    self.put(keys::blob_data(&staged.hash), e.bytes.clone());
                }
                BlobMeta {
                    codec: e.codec,
                    inline: !to_file,
                    size: staged.size,
                    stored_size: e.bytes.len() as u64,
                    refs,
                }
            }
            StagedData::File {
                tmp,
                codec,
                stored_size,
            } => {
                if let (Some(t), Some(files)) = (tmp, shared) {
                    if files.stored_len(&staged.hash, *codec)?.is_none() {
                        files.install(t, &staged.hash, *codec)?;
                    }
                } else if let (Some(t), Some(files)) = (tmp, &store.inner.files) {
                    // Only when the blob existed at staging and was collected since.
                    files.install(t, &staged.hash, *codec)?;
                }
                BlobMeta {
                    codec: *codec,
                    inline: false,
                    size: staged.size,
                    stored_size: *stored_size,
                    refs,
                }
            }
        };
        // Partial reads (issue 13): one preview per new blob, in the same batch as its record.
        // Content staged without its raw bytes (bundle import stages it encoded) gets no stored
        // preview: `Store::preview` computes one from the content when asked, rather than an
        // empty one standing in for it.
        // Content of at most `RECORD_DATA_MAX` bytes kept in its blob record gets none either:
        // `Store::preview` computes the same preview from those bytes in one pass (one update
        // of the same builder), which is cheaper than an engine key per small blob.
        let small = record_data.is_some() && staged.size <= RECORD_DATA_MAX as u64;
        let preview = match (&staged.preview, &staged.data) {
            _ if small => None,
            (Some(p), _) => Some(p.clone()),
            (None, StagedData::Memory { raw, .. }) if raw.len() as u64 == staged.size => {
                Some(crate::preview::Preview::of(raw))
            }
            _ => None,
        };
        if let Some(p) = preview {
            self.put(keys::preview(&staged.hash), p.encode());
        }
        self.put(
            key,
            match &record_data {
                Some(d) => m.encode_with_data(d),
                None => m.encode(),
            },
        );
        if refs == 0 {
            self.put(keys::garbage(&staged.hash), super::gc::garbage_listed_now());
        }
        self.add(counters::BLOBS, 1);
        self.add(counters::STORED_BYTES, m.stored_size as i64);
        self.add(counters::CONTENT_BYTES, m.size as i64);
        Ok((m, true))
    }

    /// Takes one more reference on an existing blob (fork, copy, checkpoints, import). Errors if
    /// it is gone.
    pub(crate) fn retain_blob(&mut self, hash: &ContentHash) -> Result<BlobMeta> {
        let key = keys::blob(hash);
        let b = self
            .get(&key)?
            .ok_or(Error::ContentMissing { hash: *hash })?;
        let mut m = BlobMeta::decode(&b)?;
        if m.refs == 0 {
            self.unlist_garbage(hash)?;
        }
        m.refs += 1;
        self.put(key, BlobMeta::with_refs(&b, m.refs));
        Ok(m)
    }

    /// Drops one reference; at zero the blob is listed as garbage for GC.
    pub(crate) fn release_blob(&mut self, hash: &ContentHash) -> Result<()> {
        let key = keys::blob(hash);
        if let Some(b) = self.get(&key)? {
            let mut m = BlobMeta::decode(&b)?;
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 {
                self.put(keys::garbage(hash), super::gc::garbage_listed_now());
            }
            self.put(key, BlobMeta::with_refs(&b, m.refs));
        }
        Ok(())
    }

    /// Takes `hash` off the garbage list. With shared content (an object store) a GC on
    /// another process may be deleting its object right now: that is a conflict, and the
    /// write runs again once the GC has finished (and the content is written anew).
    fn unlist_garbage(&mut self, hash: &ContentHash) -> Result<()> {
        let key = keys::garbage(hash);
        let shared = self
            .store
            .inner
            .files
            .as_ref()
            .is_some_and(|f| f.shared().is_some());
        if shared {
            if let Some(v) = self.get(&key)? {
                if super::gc::is_deleting(&v) {
                    return Err(Error::WriteConflict {
                        message: format!(
                            "content {hash} is being deleted from the object store by a \
                             garbage collection"
                        ),
                    });
                }
            }
        }
        self.del(key);
        Ok(())
    }

    /// Removes a garbage blob's record (and inline bytes) with its counters, if it is still
    /// unreferenced. Returns its record when removed; the caller removes any file after the
    /// batch is durable.
    pub(crate) fn remove_garbage_blob(&mut self, hash: &ContentHash) -> Result<Option<BlobMeta>> {
        self.del(keys::garbage(hash));
        let Some(b) = self.get(&keys::blob(hash))? else {
            return Ok(None);
        };
        let m = BlobMeta::decode(&b)?;
        if m.refs > 0 {
            return Ok(None); // referenced again since it was listed
        }
        self.del(keys::blob(hash));
        self.del(keys::preview(hash)); // partial reads (issue 13): its preview
        if m.inline && BlobMeta::data(&b).is_none() {
            self.del(keys::blob_data(hash));
        }
        self.add(counters::BLOBS, -1);
        self.add(counters::STORED_BYTES, -(m.stored_size as i64));
        self.add(counters::CONTENT_BYTES, -(m.size as i64));
        Ok(Some(m))
    }
}
