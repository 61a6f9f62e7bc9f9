//! The blob file layer: where the files of large blobs live, behind [`BlobFiles`]. A store's
//! own folder ([`LocalFiles`]) or an object store (`content_store::ObjectFiles`, feature `s3`).
//! The store's blob bookkeeping (`store/blobs.rs`) sits above this and decides what to write.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::content::{self, Codec};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::ContentHash;

/// Where the files of large blobs live. Writes are atomic and durable when they return.
pub(crate) trait BlobFiles: Send + Sync {
    /// Stores `bytes` (already encoded with `codec`) as the file of `hash`.
    fn write(&self, hash: &ContentHash, codec: Codec, bytes: &[u8]) -> Result<()>;
    /// Moves a finished, fsynced temporary file in as the file of `hash`. Installing the same
    /// file twice (a retried write) succeeds.
    fn install(&self, tmp: &Path, hash: &ContentHash, codec: Codec) -> Result<()>;
    /// Opens the file of `hash` for reading; `None` if it does not exist.
    fn open(&self, hash: &ContentHash, codec: Codec) -> Result<Option<Box<dyn Read + Send>>>;
    /// Where the file of `hash` is, for messages.
    fn describe(&self, hash: &ContentHash, codec: Codec) -> String;
    /// Whether [`BlobFiles::install`] moves the temporary file away (local files) or leaves
    /// it to the caller (an object store uploads a copy; the caller keeps it for a retry).
    fn consumes_temp(&self) -> bool {
        true
    }
    /// A local folder for the temporary files of large puts when the store has no folder of
    /// its own (an object store beside a shared engine): content is spooled there while it is
    /// hashed and encoded, so a put never holds its content in memory. `None`: the store's
    /// own `tmp/` (or, in memory, none).
    fn spool_dir(&self) -> Option<&Path> {
        None
    }
    /// Random access to the file of `hash` (partial reads); `None` if it does not exist.
    fn open_source(
        &self,
        hash: &ContentHash,
        codec: Codec,
    ) -> Result<Option<Box<dyn crate::content::seekable::BlobSource>>>;
    /// Stored length of the file of `hash`; `None` if it does not exist.
    fn stored_len(&self, hash: &ContentHash, codec: Codec) -> Result<Option<u64>>;
    /// Deletes the file of `hash` (absent is fine).
    fn delete(&self, hash: &ContentHash, codec: Codec) -> Result<()>;
    /// `Some(grace)` when other processes share these files (an object store): GC then
    /// records its intent in the metadata and waits `grace` (DESIGN.md, "Content on object
    /// storage"); `None` for a store's own folder, guarded by the in-process pins.
    fn shared(&self) -> Option<std::time::Duration> {
        None
    }
    /// Every blob file of a shared store, for GC's orphan listing (`None`: not listed this
    /// way; a store's own folder is swept by `gc`).
    fn list_all(&self) -> Result<Option<Vec<(ContentHash, Codec)>>> {
        Ok(None)
    }
    /// Moves the file of `hash` aside into the store's quarantine (`repair` of corrupt
    /// content: its bytes are kept for a person to judge, never deleted) and returns where it
    /// went; `None` if it was gone, or if this layer leaves quarantine to the store (local
    /// files: `<store>/quarantine/`, which `repair` handles with the store's pins).
    fn quarantine(&self, _hash: &ContentHash, _codec: Codec) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Blob files under `<store>/blobs/<first two hex>/<hex>.<raw|zst>`.
pub(crate) struct LocalFiles {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl LocalFiles {
    pub(crate) fn new(blobs: PathBuf, tmp: PathBuf) -> Self {
        Self { blobs, tmp }
    }

    fn dest(&self, hash: &ContentHash, codec: Codec) -> Result<PathBuf> {
        let dest = content::blob_path(&self.blobs, hash, codec);
        let parent = dest.parent().unwrap_or(&self.blobs);
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            fsutil::sync_dir(&self.blobs)?;
        }
        Ok(dest)
    }
}

impl BlobFiles for LocalFiles {
    fn write(&self, hash: &ContentHash, codec: Codec, bytes: &[u8]) -> Result<()> {
        let dest = self.dest(hash, codec)?;
        fsutil::atomic_write(&self.tmp, &dest, bytes)
    }

    fn install(&self, tmp: &Path, hash: &ContentHash, codec: Codec) -> Result<()> {
        let dest = self.dest(hash, codec)?;
        fsutil::install(tmp, &dest)
    }

    fn open(&self, hash: &ContentHash, codec: Codec) -> Result<Option<Box<dyn Read + Send>>> {
        let p = content::blob_path(&self.blobs, hash, codec);
        match std::fs::File::open(&p) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                256 << 10,
                f,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn describe(&self, hash: &ContentHash, codec: Codec) -> String {
        content::blob_path(&self.blobs, hash, codec)
            .display()
            .to_string()
    }

    fn open_source(
        &self,
        hash: &ContentHash,
        codec: Codec,
    ) -> Result<Option<Box<dyn crate::content::seekable::BlobSource>>> {
        let p = content::blob_path(&self.blobs, hash, codec);
        match std::fs::File::open(&p) {
            Ok(f) => Ok(Some(Box::new(
                crate::content::seekable::FileSource::new(f).map_err(|e| Error::io(&p, e))?,
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn stored_len(&self, hash: &ContentHash, codec: Codec) -> Result<Option<u64>> {
        let p = content::blob_path(&self.blobs, hash, codec);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn delete(&self, hash: &ContentHash, codec: Codec) -> Result<()> {
        let p = content::blob_path(&self.blobs, hash, codec);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(p, e)),
        }
    }
}
