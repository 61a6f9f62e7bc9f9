//! Import staging: content verified and held in memory or a temporary file until the commit.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Import staging
// ---------------------------------------------------------------------------------------------

/// Removes a temporary file on drop unless taken.
pub(super) struct TempFile(pub(super) Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

pub(super) enum StagedBytes {
    Memory(Vec<u8>),
    File(TempFile),
}

/// One blob's encoded bytes, verified, waiting for the commit.
pub(super) struct StagedBlob {
    pub(super) hash: ContentHash,
    pub(super) size: u64,
    pub(super) codec: Codec,
    pub(super) bytes: StagedBytes,
}

/// Stages content for import: small content in memory, larger content in a temporary file in
/// the store's `tmp/`, each verified by decoding it the way the store will read it.
pub(super) struct StageSink<'s> {
    pub(super) store: &'s Store,
    pub(super) staged: Vec<StagedBlob>,
    pub(super) pins: Vec<PendingGuard<'s>>,
    pub(super) buffered: u64,
    pub(super) max_buffered: u64,
    pub(super) max_size: u64,
}

/// Collects bytes in memory while they could live inline, in a temporary file beyond that.
pub(super) struct Spool<'a> {
    pub(super) tmp_dir: Option<PathBuf>,
    pub(super) inline_max: u64,
    pub(super) buffered: &'a mut u64,
    pub(super) max_buffered: u64,
    pub(super) mem: Vec<u8>,
    pub(super) file: Option<(TempFile, BufWriter<File>)>,
    pub(super) total: u64,
}

impl Spool<'_> {
    pub(super) fn write(&mut self, b: &[u8]) -> Result<()> {
        self.total += b.len() as u64;
        if let Some((t, w)) = self.file.as_mut() {
            let p = t.0.clone().unwrap_or_default();
            return w.write_all(b).map_err(|e| Error::io(p, e));
        }
        if let Some(tmp) = self
            .tmp_dir
            .as_ref()
            .filter(|_| (self.mem.len() + b.len()) as u64 >= self.inline_max)
        {
            // Too large to live inline: it will be a file, so stage it in one.
            let path = content::temp_path(tmp);
            let t = TempFile(Some(path.clone()));
            let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            w.write_all(&self.mem).map_err(|e| Error::io(&path, e))?;
            w.write_all(b).map_err(|e| Error::io(&path, e))?;
            *self.buffered -= self.mem.len() as u64;
            self.mem = Vec::new();
            self.file = Some((t, w));
            return Ok(());
        }
        *self.buffered += b.len() as u64;
        if *self.buffered > self.max_buffered {
            return Err(over(
                "bundle max_buffered_bytes",
                "bytes to hold in memory",
                self.max_buffered,
            ));
        }
        self.mem.extend_from_slice(b);
        Ok(())
    }

    /// The staged bytes (a file is synced, ready to be renamed into place) and their length.
    pub(super) fn finish(self) -> Result<(StagedBytes, u64)> {
        match self.file {
            Some((t, w)) => {
                let path = t.0.clone().unwrap_or_default();
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?;
                f.sync_all().map_err(|e| Error::io(&path, e))?;
                Ok((StagedBytes::File(t), self.total))
            }
            None => Ok((StagedBytes::Memory(self.mem), self.total)),
        }
    }
}

impl StagedBytes {
    pub(super) fn reader(&self) -> Result<Box<dyn Read + '_>> {
        Ok(match self {
            StagedBytes::Memory(m) => Box::new(&m[..]),
            StagedBytes::File(t) => {
                let path = t.0.clone().unwrap_or_default();
                let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
                Box::new(BufReader::with_capacity(256 << 10, f))
            }
        })
    }

    pub(super) fn memory_len(&self) -> u64 {
        match self {
            StagedBytes::Memory(m) => m.len() as u64,
            StagedBytes::File(_) => 0,
        }
    }
}

impl StageSink<'_> {
    pub(super) fn spool(&mut self) -> Spool<'_> {
        Spool {
            tmp_dir: self.store.inner.paths.as_ref().map(|p| p.tmp.clone()),
            inline_max: self.store.inner.config.inline_threshold,
            buffered: &mut self.buffered,
            max_buffered: self.max_buffered,
            mem: Vec::new(),
            file: None,
            total: 0,
        }
    }
}

impl BlobSink for StageSink<'_> {
    fn accept(&mut self, info: &BlobInfo, body: &mut dyn Read) -> Result<()> {
        if info.size > self.max_size {
            return Err(Error::LimitExceeded {
                limit: "max_artifact_size",
                message: format!(
                    "content {} in the bundle is {} bytes; this store accepts at most {}; nothing was imported",
                    info.hash, info.size, self.max_size
                ),
            });
        }
        // Pinned before anything is decided, so GC leaves an existing copy alone until the commit.
        self.pins.push(self.store.pin_pending(info.hash));
        let mut spool = self.spool();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::InputIo { source: e }),
            };
            if n == 0 {
                break;
            }
            spool.write(&buf[..n])?;
        }
        let (mut bytes, encoded_len) = spool.finish()?;
        let fail = |m: String| bad(info.at, format!("blob {}: {m}", info.hash));
        // Verified the way the store will read it back: same decoder, same window bound.
        verify_content(info.codec, &mut bytes.reader()?, &info.hash, info.size).map_err(fail)?;
        // Store it as this store would have: raw below the compression threshold or when
        // compression does not pay (the bundle compresses everything).
        let c = &self.store.inner.config;
        let pays = encoded_len.saturating_mul(100) <= info.size.saturating_mul(95);
        let mut codec = info.codec;
        if codec == Codec::Zstd && (info.size < c.compression_threshold || !pays) {
            let mut spool = self.spool();
            {
                let src = bytes.reader()?;
                let mut dec = zstd::stream::read::Decoder::new(src)
                    .and_then(|mut d| d.window_log_max(MAX_WINDOW_LOG).map(|()| d))
                    .map_err(|e| fail(format!("the content does not decode: {e}")))?;
                loop {
                    let n = match dec.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(fail(format!("the content does not decode: {e}"))),
                    };
                    if n == 0 {
                        break;
                    }
                    spool.write(&buf[..n])?;
                }
            }
            let (raw, raw_len) = spool.finish()?;
            if raw_len != info.size {
                return Err(fail(format!(
                    "the content is {raw_len} bytes, declared {}",
                    info.size
                )));
            }
            self.buffered -= bytes.memory_len();
            bytes = raw;
            codec = Codec::Raw;
        }
        self.staged.push(StagedBlob {
            hash: info.hash,
            size: info.size,
            codec,
            bytes,
        });
        Ok(())
    }
}

/// A new id with the same creation millisecond as `old` and a fresh random part.
pub(super) fn fresh_like(old: &uuid::Uuid) -> uuid::Uuid {
    let (secs, nanos) = old.get_timestamp().map(|t| t.to_unix()).unwrap_or_else(|| {
        let now = Utc::now();
        (now.timestamp().max(0) as u64, now.timestamp_subsec_nanos())
    });
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos))
}

/// New ids for `olds` that keep their creation times and their relative order.
pub(super) fn fresh_ids(olds: &[uuid::Uuid]) -> HashMap<uuid::Uuid, uuid::Uuid> {
    let mut sorted = olds.to_vec();
    sorted.sort();
    let mut news: Vec<uuid::Uuid> = sorted.iter().map(fresh_like).collect();
    news.sort();
    sorted.into_iter().zip(news).collect()
}

pub(super) fn remap_event(e: &Event, map: &mut IdMap) -> Event {
    let kind = match &e.kind {
        EventKind::Created { parent_id } => EventKind::Created {
            parent_id: parent_id.map(|p| map.session(p)),
        },
        EventKind::ArtifactStored {
            artifact_id,
            name,
            version,
            hash,
            size,
        } => EventKind::ArtifactStored {
            artifact_id: map.artifact(*artifact_id),
            name: name.clone(),
            version: *version,
            hash: *hash,
            size: *size,
        },
        EventKind::ArtifactDeleted {
            artifact_id,
            name,
            version,
        } => EventKind::ArtifactDeleted {
            artifact_id: map.artifact(*artifact_id),
            name: name.clone(),
            version: *version,
        },
        EventKind::CheckpointCreated {
            checkpoint_id,
            label,
        } => EventKind::CheckpointCreated {
            checkpoint_id: map.checkpoint(*checkpoint_id),
            label: label.clone(),
        },
        EventKind::Forked {
            source_session,
            checkpoint_id,
        } => EventKind::Forked {
            source_session: map.session(*source_session),
            checkpoint_id: checkpoint_id.map(|c| map.checkpoint(c)),
        },
        k @ (EventKind::StatusChanged { .. }
        | EventKind::MetadataUpdated { .. }
        | EventKind::Custom { .. }) => k.clone(),
    };
    Event {
        session_id: map.session(e.session_id),
        seq: e.seq,
        at: e.at,
        kind,
    }
}
