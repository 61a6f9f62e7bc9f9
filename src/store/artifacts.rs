//! Artifact operations: the put path (stage content, then one atomic batch), reads, versions, deletes.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::counters;
use super::{Staged, Store, Tx};
use crate::artifact::{validate_name, Artifact, NewArtifact};
use crate::backend::RangeIter;
use crate::content::{self, Codec, Prepared};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::ids::{ArtifactId, ContentHash, SessionId};
use crate::keys::{self, Key};
use crate::query::{Page, Query};

/// Validated artifact options.
#[derive(Clone)]
pub(crate) struct Checked {
    pub(crate) new: NewArtifact,
}

impl Store {
    pub(crate) fn check_new(&self, mut new: NewArtifact) -> Result<Checked> {
        validate_name(&new.name)?;
        new.tags = self.check_tags(&new.tags)?;
        self.check_metadata(&new.metadata)?;
        if let Some(m) = &new.mime_type {
            if m.is_empty() || m.len() > 255 || m.chars().any(|c| c.is_control()) {
                return Err(Error::invalid(
                    "MIME type",
                    format!("{m:?}: use a type such as application/json"),
                ));
            }
        }
        if let Some(r) = &new.request_id {
            let max = crate::artifact::MAX_REQUEST_ID_LEN;
            if r.is_empty() || r.len() > max || r.chars().any(|c| c.is_control()) {
                return Err(Error::invalid(
                    "request id",
                    format!(
                        "{:?}: give 1 to {max} bytes without control characters, such as a UUID",
                        crate::artifact::truncate_for_message(r)
                    ),
                ));
            }
        }
        Ok(Checked { new })
    }

    /// Stores `bytes` as a new artifact (or a new version of `new.name`) in `session`.
    pub fn put(
        &self,
        session: SessionId,
        new: NewArtifact,
        bytes: impl AsRef<[u8]>,
    ) -> Result<Artifact> {
        let bytes = bytes.as_ref();
        if bytes.len() > content::STREAM_BUFFER {
            return self.put_reader(session, new, bytes);
        }
        // In memory already: hash the caller's bytes and copy them once (no growing buffer).
        let max = self.inner.config.limits.max_artifact_size;
        if bytes.len() as u64 > max {
            return Err(Error::LimitExceeded {
                limit: "max_artifact_size",
                message: format!(
                    "the input is {} bytes, larger than {max}; nothing was stored (raise limits.max_artifact_size to accept it)",
                    bytes.len()
                ),
            });
        }
        let checked = self.check_new(new)?;
        self.check_writable(session)?;
        // The caller's slice is staged as is: no copy, and a duplicate is never encoded.
        let staged = self.stage_slice(bytes)?;
        self.write(|tx| self.insert_artifact(tx, session, checked.clone(), &staged, None))
    }

    /// Stores everything `reader` yields, streaming: a large input is never held in memory whole.
    pub fn put_reader(
        &self,
        session: SessionId,
        new: NewArtifact,
        mut reader: impl Read,
    ) -> Result<Artifact> {
        let checked = self.check_new(new)?;
        self.check_writable(session)?;
        let prepared = self.prepare(&mut reader)?;
        self.put_prepared(session, checked, prepared)
    }

    fn put_prepared(
        &self,
        session: SessionId,
        checked: Checked,
        prepared: Prepared,
    ) -> Result<Artifact> {
        let staged = self.stage(prepared)?;
        self.write(|tx| {
            let a = self.insert_artifact(tx, session, checked.clone(), &staged, None)?;
            Ok(a)
        })
    }

    /// Stores the file at `path`. The name defaults to nothing: set it in `new`.
    pub fn put_file(
        &self,
        session: SessionId,
        new: NewArtifact,
        path: impl AsRef<Path>,
    ) -> Result<Artifact> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        self.put_reader(session, new, std::io::BufReader::with_capacity(1 << 20, f))
    }

    /// Stores many artifacts in one atomic batch with one flush: the bulk path.
    /// Content is compressed on all cores before the batch. Either every item is stored or none.
    pub fn put_batch(
        &self,
        items: Vec<(SessionId, NewArtifact, Vec<u8>)>,
    ) -> Result<Vec<Artifact>> {
        let mut checked = Vec::with_capacity(items.len());
        let mut raw = Vec::with_capacity(items.len());
        for (sid, new, bytes) in items {
            checked.push((sid, self.check_new(new)?));
            raw.push(bytes);
        }
        let max = self.inner.config.limits.max_artifact_size;
        for (b, (_, c)) in raw.iter().zip(&checked) {
            if b.len() as u64 > max {
                return Err(Error::LimitExceeded {
                    limit: "max_artifact_size",
                    message: format!(
                        "{:?} is {} bytes; the limit is {max}; nothing was stored",
                        c.new.name,
                        b.len()
                    ),
                });
            }
        }
        let staged = self.stage_parallel(raw)?;
        self.write(|tx| {
            let mut out = Vec::with_capacity(checked.len());
            for ((sid, c), st) in checked.iter().zip(&staged) {
                out.push(self.insert_artifact(tx, *sid, c.clone(), st, None)?);
            }
            Ok(out)
        })
    }

    fn check_writable(&self, session: SessionId) -> Result<()> {
        let s = self.session(session)?;
        if s.status.is_terminal() {
            return Err(Error::SessionClosed {
                id: session,
                status: s.status,
                message: "a finished session takes no new artifacts; fork or copy it to continue"
                    .into(),
            });
        }
        Ok(())
    }

    pub(crate) fn prepare(&self, reader: &mut dyn Read) -> Result<Prepared> {
        let c = &self.inner.config;
        content::prepare(
            reader,
            c.limits.max_artifact_size,
            self.staging_dir(),
            &content::EncodeOptions::of(c),
        )
    }

    /// Adds the artifact record, its index entries, the blob reference and an event to `tx`.
    /// `id` lets import choose ids.
    pub(crate) fn insert_artifact(
        &self,
        tx: &mut Tx<'_>,
        session: SessionId,
        checked: Checked,
        staged: &Staged<'_>,
        id: Option<ArtifactId>,
    ) -> Result<Artifact> {
        let new = checked.new;
        let new_request_id = new.request_id.clone();
        // An idempotent put seen before (its first attempt committed): that artifact, again.
        if let Some(rid) = &new.request_id {
            if let Some(a) = self.request_done(tx, session, rid, &new.name, &staged.hash)? {
                return Ok(a);
            }
        }
        let s = self.tx_session(tx, session)?;
        if s.status.is_terminal() && id.is_none() {
            return Err(Error::SessionClosed {
                id: session,
                status: s.status,
                message: "a finished session takes no new artifacts; fork or copy it to continue"
                    .into(),
            });
        }
        let limit = self.inner.config.limits.max_artifacts_per_session;
        let count_key = counters::session_artifacts(&session);
        if tx.counter(&count_key)? as u64 >= limit {
            return Err(Error::LimitExceeded {
                limit: "max_artifacts_per_session",
                message: format!("session {session} holds {limit} artifacts already"),
            });
        }
        let meta = tx.reference_blob(staged)?;
        let version = match tx.latest_version(&session, &new.name)? {
            Some(v) => v.checked_add(1).ok_or_else(|| Error::LimitExceeded {
                limit: "versions",
                message: format!("{:?} has reached the largest version number", new.name),
            })?,
            None => 1,
        };
        let id = id.unwrap_or_default();
        let a = Artifact {
            id,
            session_id: session,
            kind: new.kind,
            name: new.name,
            version,
            hash: staged.hash,
            size: staged.size,
            stored_size: meta.stored_size,
            compressed: meta.codec == Codec::Zstd,
            tags: new.tags,
            metadata: new.metadata,
            mime_type: new.mime_type,
            created_at: id.timestamp(),
            pinned: new.pinned,
        };
        self.add_artifact_in(tx, &a)?;
        if let Some(rid) = &new_request_id {
            tx.put(keys::request(&session, rid), a.id.as_bytes().to_vec());
        }
        Ok(a)
    }

    /// The artifact an earlier put with request id `rid` stored in `session`, read in `tx` (so
    /// two attempts racing on different servers serialize), if it still exists. The same id
    /// for another name or content is an error: ids name one request.
    fn request_done(
        &self,
        tx: &mut Tx<'_>,
        session: SessionId,
        rid: &str,
        name: &str,
        hash: &ContentHash,
    ) -> Result<Option<Artifact>> {
        let Some(aid) = tx.get(&keys::request(&session, rid))? else {
            return Ok(None);
        };
        let aid = ArtifactId::from_slice(&aid)?;
        let Some(rec) = tx.get(&keys::artifact(&aid))? else {
            return Ok(None); // deleted since: this put stores it anew
        };
        let a = crate::artifact::record::decode(&rec)?;
        if a.name != name || a.hash != *hash {
            return Err(Error::invalid(
                "request id",
                format!(
                    "{:?} was used for {:?} version {} with other content; give each put its \
                     own request id and reuse it only to retry that same put",
                    crate::artifact::truncate_for_message(rid),
                    a.name,
                    a.version
                ),
            ));
        }
        Ok(Some(a))
    }

    /// Writes a new artifact's record and index entries, counts it in its session, and logs
    /// `artifact_stored` (the caller has taken its blob reference and set the latest pointer).
    pub(crate) fn add_artifact_in(&self, tx: &mut Tx<'_>, a: &Artifact) -> Result<()> {
        self.write_artifact_indexes(tx, a);
        tx.add(counters::session_artifacts(&a.session_id), 1);
        tx.event(
            a.session_id,
            EventKind::ArtifactStored {
                artifact_id: a.id,
                name: a.name.clone(),
                version: a.version,
                hash: a.hash,
                size: a.size,
            },
        )?;
        Ok(())
    }

    /// Writes an artifact record and every index entry for it (not the latest pointer or counts
    /// per session), and counts it.
    pub(crate) fn write_artifact_indexes(&self, tx: &mut Tx<'_>, a: &Artifact) {
        tx.put(keys::artifact(&a.id), crate::artifact::record::encode(a));
        for (k, v) in artifact_index_entries(a) {
            tx.put(k, v);
        }
        for (name, delta) in artifact_counter_deltas(a) {
            tx.add(name, delta);
        }
    }

    /// The artifact `id`, if it belongs to `session`. Otherwise "not found", whether or not it
    /// exists in another session.
    pub fn artifact(&self, session: SessionId, id: ArtifactId) -> Result<Artifact> {
        let a = self.artifact_any(id)?;
        if a.session_id != session {
            return Err(Error::artifact_not_found(id));
        }
        Ok(a)
    }

    pub(crate) fn artifact_any(&self, id: ArtifactId) -> Result<Artifact> {
        match self.backend().get(&keys::artifact(&id))? {
            Some(b) => crate::artifact::record::decode(&b),
            None => Err(Error::artifact_not_found(id)),
        }
    }

    /// The highest stored version of `name` in `session`: the last of its `n` entries (the `l`
    /// pointers of older stores are not read).
    pub(crate) fn latest_version(&self, session: &SessionId, name: &str) -> Result<Option<u32>> {
        let prefix = keys::name_versions_prefix(session, name);
        let end = crate::backend::prefix_end(&prefix);
        Ok(self
            .backend()
            .scan(&prefix, &end, true, 1)?
            .first()
            .and_then(|(k, _)| keys::version_of(&prefix, k)))
    }

    /// The artifact named `name` in `session`: the latest version, or `version` if given.
    pub fn artifact_by_name(
        &self,
        session: SessionId,
        name: &str,
        version: Option<u32>,
    ) -> Result<Artifact> {
        let nf = || Error::ArtifactNotFound {
            id: match version {
                Some(v) => format!("{session}/{name}@{v}"),
                None => format!("{session}/{name}"),
            },
        };
        let v = match version {
            Some(v) => v,
            None => self.latest_version(&session, name)?.ok_or_else(nf)?,
        };
        let k = Key::new(keys::NAME_VERSION)
            .sid(&session)
            .str0(name)
            .u32(v)
            .build();
        match self.backend().get(&k)? {
            Some(aid) => self.artifact(session, ArtifactId::from_slice(&aid)?),
            None => Err(nf()),
        }
    }

    /// Every stored version of `name` in `session`, oldest first.
    pub fn versions(&self, session: SessionId, name: &str) -> Result<Vec<Artifact>> {
        self.session(session)?;
        let prefix = keys::name_versions_prefix(&session, name);
        RangeIter::prefix(self.backend(), &prefix, false)
            .map(|e| self.artifact(session, ArtifactId::from_slice(&e?.1)?))
            .collect()
    }

    /// The artifacts of a session (with `recursive`, of its whole subtree), one page at a time.
    pub fn list_artifacts(
        &self,
        session: SessionId,
        recursive: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Artifact>> {
        let mut q = Query::new()
            .session(session)
            .subtree(recursive)
            .limit(limit);
        if let Some(c) = cursor {
            q = q.cursor(c);
        }
        self.query(&q)
    }

    /// The whole content of an artifact of `session`, verified against its hash.
    pub fn read(&self, session: SessionId, id: ArtifactId) -> Result<Vec<u8>> {
        let a = self.artifact(session, id)?;
        self.read_content(&a.hash, a.size)
    }

    /// A reader over an artifact's content. Content up to 8 MiB is verified before the first byte
    /// is returned; larger content is verified as it streams, and a mismatch turns the end of the
    /// stream into an `InvalidData` error instead of a clean end.
    pub fn open_reader(
        &self,
        session: SessionId,
        id: ArtifactId,
    ) -> Result<Box<dyn Read + Send + 'static>> {
        let a = self.artifact(session, id)?;
        self.open_content(&a.hash, a.size)
    }

    /// `len` bytes from `offset` of an artifact's content (fewer at the end). The whole content is
    /// verified on the way, so a range is never served from corrupt content.
    pub fn read_range(
        &self,
        session: SessionId,
        id: ArtifactId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let a = self.artifact(session, id)?;
        if offset > a.size {
            return Err(Error::invalid(
                "range",
                format!("offset {offset} is past the end ({} bytes)", a.size),
            ));
        }
        // Seekable content: only the frames holding the range are read and verified.
        self.read_range_verified(&a.hash, a.size, offset, len)
    }

    /// Reads and verifies content by hash.
    pub(crate) fn read_content(&self, hash: &ContentHash, size: u64) -> Result<Vec<u8>> {
        let (m, src) = self.encoded_source(hash)?;
        content::read_verified(m.codec, src, *hash, size)
    }

    pub(crate) fn open_content(
        &self,
        hash: &ContentHash,
        size: u64,
    ) -> Result<Box<dyn Read + Send + 'static>> {
        if size <= content::VERIFY_BEFORE_READ {
            return Ok(content::bytes_source(self.read_content(hash, size)?));
        }
        let (m, src) = self.encoded_source(hash)?;
        let dec = content::decoder(m.codec, src).map_err(|e| Error::Integrity {
            hash: *hash,
            message: format!("the stored content cannot be decoded: {e}"),
        })?;
        Ok(Box::new(content::ContentReader::new(dec, *hash, size)))
    }

    /// Deletes an artifact of `session`. Its content becomes garbage if nothing else references it.
    pub fn delete_artifact(&self, session: SessionId, id: ArtifactId) -> Result<Artifact> {
        let a = self.artifact(session, id)?;
        self.delete_artifact_record(a)
    }

    fn delete_artifact_record(&self, a: Artifact) -> Result<Artifact> {
        self.write(|tx| {
            if !self.remove_artifact_in(tx, a.id)? {
                return Err(Error::artifact_not_found(a.id));
            }
            Ok(())
        })?;
        Ok(a)
    }

    /// Removes an artifact's record and indexes and drops its blob reference. Returns false if the
    /// record does not exist. If it was the latest version, the highest remaining version becomes
    /// the latest (the last `n` entry), and the next put continues after it.
    pub(crate) fn remove_artifact_in(&self, tx: &mut Tx<'_>, id: ArtifactId) -> Result<bool> {
        let a: Artifact = match tx.get(&keys::artifact(&id))? {
            Some(b) => crate::artifact::record::decode(&b)?,
            None => return Ok(false),
        };
        let sid = a.session_id;
        tx.del(keys::artifact(&id));
        tx.del(Key::new(keys::SESSION_ARTIFACT).sid(&sid).aid(&id).build());
        let nv = Key::new(keys::NAME_VERSION)
            .sid(&sid)
            .str0(&a.name)
            .u32(a.version)
            .build();
        tx.del(nv);
        for k in index_keys(&a) {
            tx.del(k);
        }
        tx.release_blob(&a.hash)?;
        for (name, delta) in artifact_counter_deltas(&a) {
            tx.add(name, -delta);
        }
        tx.add(counters::session_artifacts(&sid), -1);
        tx.event(
            sid,
            EventKind::ArtifactDeleted {
                artifact_id: id,
                name: a.name.clone(),
                version: a.version,
            },
        )?;
        Ok(true)
    }

    /// What the store knows about a piece of content: sizes, codec, and how many artifacts (and
    /// checkpoints) reference it. `None` if no blob with this hash is stored.
    pub fn content_info(&self, hash: &ContentHash) -> Result<Option<ContentInfo>> {
        Ok(self.blob_meta(hash)?.map(|m| ContentInfo {
            hash: *hash,
            size: m.size,
            stored_size: m.stored_size,
            compressed: m.codec == Codec::Zstd,
            inline: m.inline,
            refs: m.refs,
        }))
    }

    /// Store-wide calls that take only an artifact id (the local command line uses them).
    /// They bypass session isolation: do not expose them to untrusted callers.
    pub fn admin(&self) -> Admin<'_> {
        Admin { store: self }
    }
}

/// Every index entry (key, value) of an artifact record, without the record itself.
pub(crate) fn artifact_index_entries(a: &Artifact) -> Vec<(Vec<u8>, Vec<u8>)> {
    let id = &a.id;
    let sid = a.session_id.as_bytes().to_vec();
    let mut out = Vec::with_capacity(7 + a.tags.len());
    out.push((
        Key::new(keys::SESSION_ARTIFACT)
            .sid(&a.session_id)
            .aid(id)
            .build(),
        vec![],
    ));
    out.push((
        Key::new(keys::NAME_VERSION)
            .sid(&a.session_id)
            .str0(&a.name)
            .u32(a.version)
            .build(),
        id.as_bytes().to_vec(),
    ));
    for k in index_keys(a) {
        out.push((k, sid.clone()));
    }
    out
}

/// The store-wide counter changes of adding an artifact record (its session's count aside).
pub(crate) fn artifact_counter_deltas(a: &Artifact) -> [(Vec<u8>, i64); 3] {
    [
        (counters::ARTIFACTS.to_vec(), 1),
        (counters::artifacts_of_kind(&a.kind), 1),
        (counters::LOGICAL_BYTES.to_vec(), a.size as i64),
    ]
}

/// The secondary index keys of an artifact (kind, tags, size, name, reversed name).
pub(crate) fn index_keys(a: &Artifact) -> Vec<Vec<u8>> {
    let id = &a.id;
    let mut v = Vec::with_capacity(4 + a.tags.len());
    v.push(Key::new(keys::KIND).str0(a.kind.as_str()).aid(id).build());
    for t in &a.tags {
        v.push(Key::new(keys::TAG).str0(t).aid(id).build());
    }
    v.push(Key::new(keys::SIZE).u64(a.size).aid(id).build());
    v.push(Key::new(keys::NAME).str0(&a.name).aid(id).build());
    v.push(
        Key::new(keys::RNAME)
            .bytes(&keys::reversed(&a.name))
            .u8(0)
            .aid(id)
            .build(),
    );
    v
}

/// A blob as the store holds it. See [`Store::content_info`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContentInfo {
    /// The content hash.
    pub hash: ContentHash,
    /// Content length.
    pub size: u64,
    /// Bytes stored (after compression).
    pub stored_size: u64,
    /// Whether it is zstd-compressed.
    pub compressed: bool,
    /// Whether it lives inline in the engine (else in a file under `blobs/`).
    pub inline: bool,
    /// References from artifacts (and checkpoints). Zero means garbage awaiting GC.
    pub refs: u64,
}

/// Administrative access by artifact id alone, across sessions. See [`Store::admin`].
pub struct Admin<'a> {
    store: &'a Store,
}

impl Admin<'_> {
    /// Any artifact by id.
    pub fn artifact(&self, id: ArtifactId) -> Result<Artifact> {
        self.store.artifact_any(id)
    }
    /// Any artifact's content, verified.
    pub fn read(&self, id: ArtifactId) -> Result<Vec<u8>> {
        let a = self.store.artifact_any(id)?;
        self.store.read_content(&a.hash, a.size)
    }
    /// A verified reader over any artifact's content.
    pub fn open_reader(&self, id: ArtifactId) -> Result<Box<dyn Read + Send + 'static>> {
        let a = self.store.artifact_any(id)?;
        self.store.open_content(&a.hash, a.size)
    }
    /// Deletes any artifact.
    pub fn delete(&self, id: ArtifactId) -> Result<Artifact> {
        let a = self.store.artifact_any(id)?;
        self.store.delete_artifact_record(a)
    }
}
