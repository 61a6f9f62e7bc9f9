//! The store's export and import: `Store::export_session`, `Store::import_bundle`.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// The store's export and import
// ---------------------------------------------------------------------------------------------

impl Store {
    /// Writes session `id` (with `subtree`, also all its descendants) into a bundle on `out`:
    /// sessions, artifacts, events, extension records (checkpoints) and every distinct content
    /// blob once, compressed. Streams: memory stays bounded whatever the size.
    ///
    /// Export reads committed records as it goes; it is not a snapshot of a session that is
    /// being written at the same time (a blob deleted and collected meanwhile fails the export).
    pub fn export_session(
        &self,
        id: SessionId,
        subtree: bool,
        out: impl Write,
    ) -> Result<ExportReport> {
        self.export_inner(id, subtree, out, None)
    }

    /// [`Store::export_session`] into a file: written to a temporary file beside `path`, synced,
    /// then renamed over `path`, so a failed export leaves no partial bundle.
    pub fn export_session_to_path(
        &self,
        id: SessionId,
        subtree: bool,
        path: impl AsRef<Path>,
    ) -> Result<ExportReport> {
        let path = path.as_ref();
        self.session(id)?;
        if path.file_name().is_none() {
            return Err(Error::invalid(
                "bundle path",
                format!("{} names no file", path.display()),
            ));
        }
        crate::fsutil::atomic_write_with(path, |w| self.export_inner(id, subtree, w, Some(path)))
    }

    pub(super) fn export_inner<W: Write>(
        &self,
        id: SessionId,
        subtree: bool,
        out: W,
        label: Option<&Path>,
    ) -> Result<ExportReport> {
        let ids = if subtree {
            self.subtree_ids(id)?
        } else {
            self.session(id)?;
            vec![id]
        };
        let mut w = BundleWriter::new(out, &BundleHeader::new(id, subtree))?
            .compression_level(self.inner.config.compression_level);
        if let Some(p) = label {
            w = w.label(p);
        }
        for sid in &ids {
            w.session(&self.session(*sid)?)?;
        }
        // Distinct content in first-use order; 40 bytes per blob is all export keeps in memory.
        let mut blobs: Vec<(ContentHash, Option<u64>)> = Vec::new();
        let mut seen: HashSet<ContentHash> = HashSet::new();
        for sid in &ids {
            let prefix = Key::new(keys::SESSION_ARTIFACT).sid(sid).build();
            for e in RangeIter::prefix(self.backend(), &prefix, false) {
                let aid = ArtifactId::from_bytes(keys::tail16(&e?.0)?);
                let a = match self.artifact_any(aid) {
                    Ok(a) => a,
                    Err(Error::ArtifactNotFound { .. }) => continue, // deleted meanwhile
                    Err(e) => return Err(e),
                };
                if seen.insert(a.hash) {
                    blobs.push((a.hash, Some(a.size)));
                }
                w.artifact(&a)?;
            }
        }
        for sid in &ids {
            let mut after = None;
            loop {
                let page = self.events(*sid, after, 1000)?;
                for e in &page.items {
                    w.event(e)?;
                }
                match page.items.last() {
                    Some(last) if page.has_more() => after = Some(last.seq),
                    _ => break,
                }
            }
        }
        for h in EXTENSIONS {
            for sid in &ids {
                (h.export)(self, *sid, &mut |x: ExtensionRecord| {
                    for hash in &x.hashes {
                        if seen.insert(*hash) {
                            blobs.push((*hash, None));
                        }
                    }
                    w.extension(&x)
                })?;
            }
        }
        for (hash, size) in blobs {
            let size = match size {
                Some(s) => s,
                None => {
                    let b = self
                        .backend()
                        .get(&keys::blob(&hash))?
                        .ok_or(Error::ContentMissing { hash })?;
                    BlobMeta::decode(&b)?.size
                }
            };
            let _pin = self.pin_pending(hash);
            let r = self.open_content(&hash, size)?;
            w.blob(hash, size, r)?;
        }
        let (_, t) = w.finish()?;
        Ok(ExportReport {
            root: id,
            sessions: t.sessions,
            artifacts: t.artifacts,
            events: t.events,
            extensions: t.extensions,
            blobs: t.blobs,
            content_bytes: t.content_bytes,
            bundle_bytes: t.bundle_bytes,
            hash: t.hash,
        })
    }

    /// Imports a bundle read from `input`. All or nothing: every frame, bound and hash is
    /// checked and the content is staged first; then every record is written in one atomic
    /// batch. On any error nothing is visible (staged content files are removed; content of a
    /// failed commit is left for [`Store::gc`]).
    ///
    /// By default the original ids are kept (an id already in the store is an
    /// [`Error::AlreadyExists`] and nothing changes), the root is imported as a root session,
    /// and each session gets an `imported` event at the end of its log.
    pub fn import_bundle(&self, input: impl Read, options: &ImportOptions) -> Result<ImportReport> {
        if let Some(p) = options.parent {
            self.session(p)?;
        }
        let mut sink = StageSink {
            store: self,
            staged: Vec::new(),
            pins: Vec::new(),
            buffered: 0,
            max_buffered: options.limits.max_buffered_bytes,
            max_size: self.inner.config.limits.max_artifact_size,
        };
        let known = |k: &str| handler(k).is_some();
        let parsed = parse(input, &options.limits, &mut sink, Some(&known))?;
        let staged = std::mem::take(&mut sink.staged);
        let report = self.commit_import(parsed, staged, options);
        drop(sink);
        report
    }

    /// [`Store::import_bundle`] from a file.
    pub fn import_bundle_from_path(
        &self,
        path: impl AsRef<Path>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        self.import_bundle(f, options).map_err(|e| match e {
            Error::InputIo { source } => Error::io(path, source),
            Error::InvalidInput { what, message } if what == "bundle" => Error::InvalidInput {
                what: format!("bundle {}", path.display()),
                message,
            },
            other => other,
        })
    }

    pub(super) fn commit_import(
        &self,
        p: Parsed,
        staged: Vec<StagedBlob>,
        options: &ImportOptions,
    ) -> Result<ImportReport> {
        let limits = &self.inner.config.limits;
        // Store-specific checks that need no lock.
        for s in &p.sessions {
            self.check_tags(&s.tags)?;
            self.check_metadata(&s.metadata)?;
        }
        let mut per_session: HashMap<SessionId, u64> = HashMap::new();
        for a in &p.artifacts {
            let mut n = NewArtifact::new(a.kind.clone(), a.name.clone())
                .tags(a.tags.clone())
                .metadata(a.metadata.clone());
            if let Some(m) = &a.mime_type {
                n = n.mime_type(m.clone());
            }
            self.check_new(n)?;
            if a.size > limits.max_artifact_size {
                return Err(Error::LimitExceeded {
                    limit: "max_artifact_size",
                    message: format!(
                        "artifact {:?} is {} bytes; this store accepts at most {}; nothing was imported",
                        a.name, a.size, limits.max_artifact_size
                    ),
                });
            }
            let c = per_session.entry(a.session_id).or_insert(0);
            *c += 1;
            if *c > limits.max_artifacts_per_session {
                return Err(Error::LimitExceeded {
                    limit: "max_artifacts_per_session",
                    message: format!(
                        "session {} in the bundle holds more than {} artifacts; nothing was imported",
                        a.session_id, limits.max_artifacts_per_session
                    ),
                });
            }
        }

        let mut map = IdMap {
            new_ids: options.new_ids,
            sessions: HashMap::new(),
            artifacts: HashMap::new(),
            checkpoints: HashMap::new(),
        };
        if options.new_ids {
            let olds: Vec<uuid::Uuid> = p.sessions.iter().map(|s| *s.id.as_uuid()).collect();
            for (o, n) in fresh_ids(&olds) {
                map.sessions
                    .insert(SessionId::from_uuid(o), SessionId::from_uuid(n));
            }
            let olds: Vec<uuid::Uuid> = p.artifacts.iter().map(|a| *a.id.as_uuid()).collect();
            for (o, n) in fresh_ids(&olds) {
                map.artifacts
                    .insert(ArtifactId::from_uuid(o), ArtifactId::from_uuid(n));
            }
        }
        let root_old = p.header.root;
        let eo = content::EncodeOptions::of(&self.inner.config);
        let staged = staged
            .into_iter()
            .map(|mut b| {
                reencode_seekable(&mut b, &eo)?;
                let bytes = match &mut b.bytes {
                    StagedBytes::Memory(m) => EncodedBytes::Memory(std::mem::take(m)),
                    // The path moves to the staged blob, which removes it if it is not installed.
                    StagedBytes::File(t) => EncodedBytes::File(t.0.take().unwrap_or_default()),
                };
                self.stage_encoded(b.hash, b.size, b.codec, bytes)
            })
            .collect::<Result<Vec<_>>>()?;

        let (imported, new_blobs, stored_bytes_new, extensions_imported, extensions_skipped) =
            self.write(|tx| {
                let mut map = map.clone();
            let sessions_now = tx.counter(counters::SESSIONS)? as u64;
            if sessions_now + p.sessions.len() as u64 > limits.max_sessions {
                return Err(Error::LimitExceeded {
                    limit: "max_sessions",
                    message: format!(
                        "the store holds {sessions_now} sessions and the bundle {}; the limit is {}",
                        p.sessions.len(),
                        limits.max_sessions
                    ),
                });
            }
            if let Some(parent) = options.parent {
                if tx.get(&keys::session(&parent))?.is_none() {
                    return Err(Error::session_not_found(parent));
                }
            }
            let mut imported = Vec::with_capacity(p.sessions.len());
            for s in &p.sessions {
                let mut s = s.clone();
                let original = s.id;
                s.id = map.session(original);
                s.parent_id = if original == root_old {
                    options.parent
                } else {
                    s.parent_id.map(|x| map.session(x))
                };
                if options.drop_keys {
                    s.key = None;
                }
                if tx.get(&keys::session(&s.id))?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "session {} (from the bundle); nothing was imported. Import with new ids \
                             (--new-ids) to make a copy beside it",
                            s.id
                        ),
                    });
                }
                if let Some(k) = &s.key {
                    let kk = Key::new(keys::SESSION_KEY).bytes(k.as_bytes()).build();
                    if let Some(v) = tx.get(&kk)? {
                        return Err(Error::KeyConflict {
                            key: k.clone(),
                            existing: SessionId::from_slice(&v)?,
                        });
                    }
                }
                self.write_session_indexes(tx, &s);
                tx.add(counters::SESSIONS, 1);
                tx.add(counters::sessions_in(s.status), 1);
                imported.push(ImportedSession { original, id: s.id });
            }

            // Content: new blobs get their record, listed as garbage until the references
            // below take them off the list; known ones are shared.
            let mut metas: HashMap<ContentHash, BlobMeta> = HashMap::new();
            let mut new_blobs = Vec::new();
            let mut stored_bytes_new = 0u64;
            for b in &staged {
                let (m, new) = tx.add_blob(b, 0)?;
                if new {
                    stored_bytes_new += m.stored_size;
                    new_blobs.push(b.hash);
                }
                metas.insert(b.hash, m);
            }

            for a in &p.artifacts {
                let mut a = a.clone();
                a.id = map.artifact(a.id);
                a.session_id = map.session(a.session_id);
                if tx.get(&keys::artifact(&a.id))?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "artifact {} (from the bundle); nothing was imported. Import with new ids \
                             (--new-ids) to make a copy",
                            a.id
                        ),
                    });
                }
                let m = metas
                    .get(&a.hash)
                    .ok_or(Error::ContentMissing { hash: a.hash })?;
                a.stored_size = m.stored_size;
                a.compressed = m.codec == Codec::Zstd;
                self.write_artifact_indexes(tx, &a);
                tx.retain_blob(&a.hash)?;
                tx.add(counters::session_artifacts(&a.session_id), 1);
            }

            for e in &p.events {
                let e = remap_event(e, &mut map);
                tx.append_event(e);
            }

            let mut extensions_imported = 0;
            let mut extensions_skipped = 0;
            for x in &p.extensions {
                match handler(&x.kind) {
                    Some(h) => {
                        (h.import)(self, tx, &mut map, x)?;
                        extensions_imported += 1;
                    }
                    None => extensions_skipped += 1,
                }
            }
            // Content only a skipped record referenced keeps no reference: it stays garbage.

            for s in &imported {
                tx.event(
                    s.id,
                    EventKind::Custom {
                        name: "imported".into(),
                        payload: json!({
                            "original_id": s.original,
                            "bundle_root": root_old,
                            "bundle_created_at": p.header.created_at,
                            "new_ids": options.new_ids,
                        }),
                    },
                )?;
            }
                Ok((imported, new_blobs, stored_bytes_new, extensions_imported, extensions_skipped))
            })?;
        Ok(ImportReport {
            root: map.session(root_old),
            sessions: imported,
            artifacts: p.artifacts.len() as u64,
            events: p.events.len() as u64,
            blobs: staged.len() as u64,
            blobs_new: new_blobs.len() as u64,
            stored_bytes_new,
            extensions_imported,
            extensions_skipped,
            bundle_bytes: p.trailer.bundle_bytes + 5 + TRAILER_LEN as u64,
            hash: ContentHash::from_bytes(p.trailer.hash),
        })
    }
}

/// Content that `put` would store seekable (partial reads, issue 13) is written seekable on
/// import too, so that a range read of imported content has the same bounded cost. A bundle
/// carries plain zstd: the staged (already verified) bytes are decoded and re-encoded, streaming,
/// into a new temporary file (or memory) that replaces them; the content hash is checked again
/// on the way, so the frames' chaining values can only describe the right content.
fn reencode_seekable(b: &mut StagedBlob, eo: &content::EncodeOptions) -> Result<()> {
    if b.codec != Codec::Zstd || !eo.seekable(b.size) || staged_is_seekable(&b.bytes)? {
        return Ok(());
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let source: Box<dyn Read + Send + '_> = match &b.bytes {
        StagedBytes::Memory(m) => Box::new(&m[..]),
        StagedBytes::File(t) => {
            let path = t.0.clone().unwrap_or_default();
            let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            Box::new(BufReader::with_capacity(256 << 10, f))
        }
    };
    let dec = content::decoder(Codec::Zstd, source).map_err(|e| Error::Integrity {
        hash: b.hash,
        message: format!("staged content cannot be decoded: {e}"),
    })?;
    let mut reader = content::ContentReader::new(dec, b.hash, b.size);
    let copy = |w: &mut dyn FnMut(&[u8]) -> Result<()>, r: &mut dyn Read| -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => w(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(content::unwrap_integrity(e, b.hash)),
            }
        }
    };
    let new = match &b.bytes {
        StagedBytes::Memory(_) => {
            let mut w = crate::content::seekable::SeekableWriter::new(
                Vec::new(),
                eo.frame_size,
                eo.level,
                workers,
            )?;
            copy(&mut |d| w.push(d), &mut reader)?;
            StagedBytes::Memory(w.finish()?.0)
        }
        StagedBytes::File(t) => {
            let old = t.0.clone().unwrap_or_default();
            let dir = old.parent().unwrap_or(Path::new("."));
            let path = content::temp_path(dir);
            let guard = TempFile(Some(path.clone()));
            let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut w = crate::content::seekable::SeekableWriter::new(
                BufWriter::with_capacity(1 << 20, f),
                eo.frame_size,
                eo.level,
                workers,
            )?;
            copy(&mut |d| w.push(d), &mut reader)?;
            let (out, _) = w.finish()?;
            let f = out
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
            StagedBytes::File(guard)
        }
    };
    drop(reader);
    // The old staged bytes (a temporary file is removed when its guard drops) are replaced.
    b.bytes = new;
    Ok(())
}

/// Whether staged bytes are already in the seekable format (a bundle written by a store that
/// exports seekable blobs as they are).
fn staged_is_seekable(bytes: &StagedBytes) -> Result<bool> {
    let n = crate::content::seekable::FOOTER_MAGIC_LEN;
    match bytes {
        StagedBytes::Memory(m) => Ok(crate::content::seekable::has_footer(m)),
        StagedBytes::File(t) => {
            let path = t.0.clone().unwrap_or_default();
            let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            if len < n {
                return Ok(false);
            }
            use std::io::{Seek, SeekFrom};
            let mut tail = [0u8; 8];
            f.seek(SeekFrom::Start(len - n))
                .and_then(|_| f.read_exact(&mut tail))
                .map_err(|e| Error::io(&path, e))?;
            Ok(crate::content::seekable::has_footer(&tail))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn fresh_ids_keep_time_and_order() {
        let olds: Vec<uuid::Uuid> = (0..50).map(|_| uuid::Uuid::now_v7()).collect();
        let m = fresh_ids(&olds);
        assert_eq!(m.len(), 50);
        for w in olds.windows(2) {
            assert!(m[&w[0]] < m[&w[1]], "order kept");
        }
        for o in &olds {
            let n = m[o];
            assert_ne!(n, *o);
            assert_eq!(
                ArtifactId::from_uuid(n).timestamp(),
                ArtifactId::from_uuid(*o).timestamp()
            );
        }
    }

    #[test]
    pub(super) fn writer_refuses_out_of_order_sections() {
        let h = BundleHeader::new(SessionId::new(), false);
        let mut w = BundleWriter::new(Vec::new(), &h).unwrap();
        let e = Event {
            session_id: h.root,
            seq: 1,
            at: Utc::now(),
            kind: EventKind::Created { parent_id: None },
        };
        w.event(&e).unwrap();
        let s = Store::memory();
        let sess = s.create_session(crate::NewSession::new()).unwrap();
        let err = w.session(&sess).unwrap_err();
        assert!(err.to_string().contains("cannot follow"), "{err}");
    }

    #[test]
    pub(super) fn writer_rejects_content_that_does_not_match_its_hash() {
        let h = BundleHeader::new(SessionId::new(), false);
        let mut w = BundleWriter::new(Vec::new(), &h).unwrap();
        let err = w.blob(ContentHash::of(b"abc"), 3, &b"abd"[..]).unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
        assert!(w.finish().is_err(), "a poisoned writer cannot finish");
    }
}
