//! Writing a bundle: framed records and chunked content, streamed, with the trailer hash.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Where written bytes go: counts them and hashes them for the trailer.
pub(super) struct Sink<W: Write> {
    pub(super) out: W,
    pub(super) hasher: blake3::Hasher,
    pub(super) pos: u64,
    pub(super) label: PathBuf,
}

impl<W: Write> Sink<W> {
    pub(super) fn write(&mut self, b: &[u8], hash: bool) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(&self.label, e))?;
        if hash {
            self.hasher.update(b);
        }
        self.pos += b.len() as u64;
        Ok(())
    }

    pub(super) fn frame(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            Error::invalid("bundle record", "a record is larger than 4 GiB".to_string())
        })?;
        let hash = tag != TAG_TRAILER;
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&len.to_be_bytes());
        self.write(&head, hash)?;
        self.write(payload, hash)
    }
}

/// Collects encoder output into chunk frames of at most [`WRITE_CHUNK`] bytes.
pub(super) struct ChunkFrames<'a, W: Write> {
    pub(super) sink: &'a mut Sink<W>,
    pub(super) buf: Vec<u8>,
    pub(super) total: u64,
    pub(super) error: Option<Error>,
}

impl<W: Write> ChunkFrames<'_, W> {
    pub(super) fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.sink.frame(TAG_CHUNK, &self.buf);
        self.total += self.buf.len() as u64;
        self.buf.clear();
        r.map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            io::Error::other(m)
        })
    }
}

impl<W: Write> Write for ChunkFrames<'_, W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let room = WRITE_CHUNK - self.buf.len();
        let n = b.len().min(room);
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == WRITE_CHUNK {
            self.emit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes and counts what is read through it.
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: blake3::Hasher,
    pub(super) n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.hasher.update(&b[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Writes a bundle frame by frame. [`Store::export_session`] uses it; it is public so tools can
/// write bundles from other sources. Sections must come in order: sessions (the header's root
/// first, parents before children), artifacts, events, extension records, blobs; then
/// [`BundleWriter::finish`] writes the trailer. Nothing is buffered beyond one 1 MiB chunk.
pub struct BundleWriter<W: Write> {
    pub(super) sink: Sink<W>,
    pub(super) rank: u8,
    pub(super) level: i32,
    pub(super) counts: [u64; 6],
    pub(super) failed: bool,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle: writes the magic, the format version and `header`.
    pub fn new(out: W, header: &BundleHeader) -> Result<Self> {
        let mut w = Self {
            sink: Sink {
                out,
                hasher: blake3::Hasher::new(),
                pos: 0,
                label: PathBuf::from("<bundle output>"),
            },
            rank: 0,
            level: 3,
            counts: [0; 6],
            failed: false,
        };
        w.sink.write(MAGIC, true)?;
        w.sink.write(&BUNDLE_FORMAT.to_be_bytes(), true)?;
        w.record(TAG_HEADER, header)?;
        Ok(w)
    }

    /// Names the output in I/O errors (the bundle's path).
    pub fn label(mut self, path: impl Into<PathBuf>) -> Self {
        self.sink.label = path.into();
        self
    }

    /// Sets the zstd level for content (1 to 19; default 3).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.level = level.clamp(1, 19);
        self
    }

    pub(super) fn enter(&mut self, tag: u8) -> Result<()> {
        if self.failed {
            return Err(Error::invalid(
                "bundle writer",
                "an earlier write failed; the bundle is incomplete, start again",
            ));
        }
        let rank = section_rank(tag).unwrap_or(u8::MAX);
        if rank < self.rank {
            return Err(Error::invalid(
                "bundle writer",
                format!(
                    "a {} record cannot follow {} records; write sessions, artifacts, events, \
                     extension records, then blobs",
                    tag_name(tag),
                    self.rank_name()
                ),
            ));
        }
        self.rank = rank;
        Ok(())
    }

    pub(super) fn rank_name(&self) -> &'static str {
        match self.rank {
            0 => "header",
            1 => "session",
            2 => "artifact",
            3 => "event",
            4 => "extension",
            5 => "blob",
            _ => "trailer",
        }
    }

    pub(super) fn record<T: Serialize>(&mut self, tag: u8, v: &T) -> Result<()> {
        self.enter(tag)?;
        let body = serde_json::to_vec(v).map_err(|e| Error::Other {
            message: format!("cannot encode a bundle record: {e}"),
        })?;
        if body.len() > MAX_RECORD_BYTES as usize {
            self.failed = true;
            return Err(Error::LimitExceeded {
                limit: "bundle record size",
                message: format!(
                    "a {} record is {} bytes; bundles hold records of at most {MAX_RECORD_BYTES} bytes",
                    tag_name(tag),
                    body.len()
                ),
            });
        }
        let r = self.sink.frame(tag, &body);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Writes a session record.
    pub fn session(&mut self, s: &Session) -> Result<()> {
        self.record(TAG_SESSION, s)?;
        self.counts[0] += 1;
        Ok(())
    }

    /// Writes an artifact record.
    pub fn artifact(&mut self, a: &Artifact) -> Result<()> {
        self.record(TAG_ARTIFACT, a)?;
        self.counts[1] += 1;
        Ok(())
    }

    /// Writes an event.
    pub fn event(&mut self, e: &Event) -> Result<()> {
        self.record(TAG_EVENT, e)?;
        self.counts[2] += 1;
        Ok(())
    }

    /// Writes an extension record.
    pub fn extension(&mut self, x: &ExtensionRecord) -> Result<()> {
        self.record(TAG_EXTENSION, x)?;
        self.counts[3] += 1;
        Ok(())
    }

    /// Writes one blob: `size` bytes read from `content`, which must hash to `hash`, compressed
    /// with zstd as they stream. Returns the compressed size. If the content does not match
    /// `hash` and `size`, the writer is poisoned: the bundle cannot be finished.
    pub fn blob(&mut self, hash: ContentHash, size: u64, content: impl Read) -> Result<u64> {
        self.enter(TAG_BLOB)?;
        self.failed = true; // until the blob is complete
        let mut head = Vec::with_capacity(BLOB_LEN as usize);
        head.extend_from_slice(hash.as_bytes());
        head.extend_from_slice(&size.to_be_bytes());
        head.push(Codec::Zstd as u8);
        self.sink.frame(TAG_BLOB, &head)?;
        let mut src = HashingReader {
            inner: content.take(size.saturating_add(1)),
            hasher: blake3::Hasher::new(),
            n: 0,
        };
        let mut chunks = ChunkFrames {
            sink: &mut self.sink,
            buf: Vec::with_capacity(WRITE_CHUNK),
            total: 0,
            error: None,
        };
        let copied = (|| -> io::Result<()> {
            let mut enc = zstd::stream::write::Encoder::new(&mut chunks, self.level)?;
            enc.include_contentsize(true)?;
            enc.set_pledged_src_size(Some(size))?;
            io::copy(&mut src, &mut enc)?;
            enc.finish()?;
            Ok(())
        })();
        let copied = copied.and_then(|()| chunks.emit());
        if let Err(e) = copied {
            if let Some(err) = chunks.error.take() {
                return Err(err);
            }
            if src.n != size {
                return Err(Error::invalid(
                    "bundle blob",
                    format!("content {hash} yielded {} bytes, expected {size}", src.n),
                ));
            }
            return Err(match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                Some(_) => content::unwrap_integrity(e, hash),
                None => Error::InputIo { source: e },
            });
        }
        let encoded = chunks.total;
        let got: ContentHash = src.hasher.finalize().into();
        if src.n != size || got != hash {
            return Err(Error::Integrity {
                hash,
                message: format!(
                    "the content read for the bundle is {} bytes hashing to {got}, expected {size} bytes",
                    src.n
                ),
            });
        }
        self.sink.frame(TAG_BLOB_END, &encoded.to_be_bytes())?;
        self.failed = false;
        self.counts[4] += 1;
        self.counts[5] += size;
        Ok(encoded)
    }

    /// Writes the trailer and flushes; returns the output and the BLAKE3 of everything before
    /// the trailer.
    pub fn finish(mut self) -> Result<(W, BundleTotals)> {
        self.enter(TAG_TRAILER)?;
        let hash: ContentHash = self.sink.hasher.finalize().into();
        let bundle_bytes = self.sink.pos;
        let mut t = Vec::with_capacity(TRAILER_LEN as usize);
        for n in [
            self.counts[0],
            self.counts[1],
            self.counts[2],
            self.counts[3],
            self.counts[4],
            self.counts[5],
            bundle_bytes,
        ] {
            t.extend_from_slice(&n.to_be_bytes());
        }
        t.extend_from_slice(hash.as_bytes());
        self.sink.frame(TAG_TRAILER, &t)?;
        let label = self.sink.label.clone();
        self.sink.out.flush().map_err(|e| Error::io(&label, e))?;
        let totals = BundleTotals {
            sessions: self.counts[0],
            artifacts: self.counts[1],
            events: self.counts[2],
            extensions: self.counts[3],
            blobs: self.counts[4],
            content_bytes: self.counts[5],
            bundle_bytes: self.sink.pos,
            hash,
        };
        Ok((self.sink.out, totals))
    }
}

/// What a finished [`BundleWriter`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleTotals {
    /// Session records.
    pub sessions: u64,
    /// Artifact records.
    pub artifacts: u64,
    /// Events.
    pub events: u64,
    /// Extension records.
    pub extensions: u64,
    /// Blobs.
    pub blobs: u64,
    /// Total content size of the blobs.
    pub content_bytes: u64,
    /// Size of the whole bundle.
    pub bundle_bytes: u64,
    /// BLAKE3 of every byte before the trailer.
    pub hash: ContentHash,
}
