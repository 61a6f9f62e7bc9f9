//! Portable bundles: export a session (optionally its subtree) with its artifacts, events,
//! extension records (checkpoints) and content into one file, and import it into any store.
//!
//! The format is documented in DESIGN.md ("Bundle format"). In short: a magic and a format
//! version, then framed records (`tag`, `u32` length, payload): a header, the sessions (parents
//! first), artifacts, events, extension records, then every distinct content blob once, zstd
//! compressed and split into chunks of at most 1 MiB, and a trailer with the counts and a BLAKE3
//! of every byte before it. Writing and reading stream: memory stays bounded whatever the size.
//!
//! A bundle is untrusted input. The reader bounds every size and count, checks every hash and the
//! trailer, and never uses anything in a bundle as a file system path. Import is all or nothing:
//! content is staged and verified first, then every record is written in one atomic batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::artifact::{validate_name, validate_tag, Artifact, NewArtifact};
use crate::backend::RangeIter;
use crate::content::{self, BlobMeta, Codec};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::{ArtifactId, CheckpointId, ContentHash, SessionId};
use crate::keys::{self, Key};
use crate::session::Session;
use crate::store::{session_count_key, status_counter, PendingGuard, Store, Tx};

/// The first 8 bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"CAIRNBDL";
/// The bundle format this version writes and reads.
pub const BUNDLE_FORMAT: u16 = 1;
/// Largest record frame (header, session, artifact, event, extension) the format allows.
pub const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Largest content chunk frame a reader accepts (this version writes 1 MiB chunks).
pub const MAX_CHUNK_BYTES: u32 = 4 << 20;
/// Chunk size the writer uses.
const WRITE_CHUNK: usize = 1 << 20;
/// The same zstd window bound as the store's own reader (2^24): bounds decoder memory.
const MAX_WINDOW_LOG: u32 = 24;
/// Size of the trailer payload: seven u64 counts and a 32-byte BLAKE3.
const TRAILER_LEN: u32 = 7 * 8 + 32;
/// Size of a blob frame payload: hash, content size, codec.
const BLOB_LEN: u32 = 32 + 8 + 1;

// Frame tags, in the order their sections must appear.
const TAG_HEADER: u8 = b'H';
const TAG_SESSION: u8 = b'S';
const TAG_ARTIFACT: u8 = b'A';
const TAG_EVENT: u8 = b'E';
const TAG_EXTENSION: u8 = b'X';
const TAG_BLOB: u8 = b'B';
const TAG_CHUNK: u8 = b'C';
const TAG_BLOB_END: u8 = b'Z';
const TAG_TRAILER: u8 = b'T';

fn section_rank(tag: u8) -> Option<u8> {
    Some(match tag {
        TAG_HEADER => 0,
        TAG_SESSION => 1,
        TAG_ARTIFACT => 2,
        TAG_EVENT => 3,
        TAG_EXTENSION => 4,
        TAG_BLOB => 5,
        TAG_TRAILER => 6,
        _ => return None,
    })
}

fn tag_name(tag: u8) -> String {
    match tag {
        TAG_HEADER => "header".into(),
        TAG_SESSION => "session".into(),
        TAG_ARTIFACT => "artifact".into(),
        TAG_EVENT => "event".into(),
        TAG_EXTENSION => "extension".into(),
        TAG_BLOB => "blob".into(),
        TAG_CHUNK => "content chunk".into(),
        TAG_BLOB_END => "blob end".into(),
        TAG_TRAILER => "trailer".into(),
        other => format!("unknown frame type 0x{other:02x}"),
    }
}

/// The first record of a bundle: what it holds and who wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// The bundle format (the same number as in the binary preamble).
    pub format: u16,
    /// The Cairn version that wrote it.
    pub cairn_version: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The exported session; the first session record.
    pub root: SessionId,
    /// Whether the root's whole subtree is included.
    pub subtree: bool,
}

impl BundleHeader {
    /// A header for a bundle of `root` written now by this version.
    pub fn new(root: SessionId, subtree: bool) -> Self {
        Self {
            format: BUNDLE_FORMAT,
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: Utc::now(),
            root,
            subtree,
        }
    }
}

/// Data another module keeps per session (checkpoints, lineage...), carried as a typed record.
///
/// `kind` names the module that reads it back. An importer that does not know `kind` rejects the
/// bundle if `required`, and skips the record otherwise. `hashes` lists the content the record
/// references; each is stored in the bundle as a blob like an artifact's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionRecord {
    /// Which module it belongs to, e.g. `checkpoint` (lowercase identifier).
    pub kind: String,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Whether an importer must understand it.
    pub required: bool,
    /// Content it references.
    #[serde(default)]
    pub hashes: Vec<ContentHash>,
    /// The module's own record, as JSON.
    pub body: Value,
}

/// Limits a reader enforces on an untrusted bundle. Exceeding one rejects the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundleLimits {
    /// Most sessions.
    pub max_sessions: u64,
    /// Most artifacts.
    pub max_artifacts: u64,
    /// Most events.
    pub max_events: u64,
    /// Most extension records.
    pub max_extensions: u64,
    /// Most blobs.
    pub max_blobs: u64,
    /// Largest record frame, in bytes (at most [`MAX_RECORD_BYTES`]).
    pub max_record_bytes: u32,
    /// Largest content of one blob, in bytes (an importing store also applies its own
    /// `max_artifact_size`).
    pub max_blob_size: u64,
    /// Most bytes an import holds in memory until its commit: records, plus content small enough
    /// to live inline (all content, for an in-memory store).
    pub max_buffered_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            max_artifacts: 1_000_000,
            max_events: 10_000_000,
            max_extensions: 1_000_000,
            max_blobs: 1_000_000,
            max_record_bytes: MAX_RECORD_BYTES,
            max_blob_size: 16 << 30,
            max_buffered_bytes: 1 << 30,
        }
    }
}

/// How to import a bundle: build with [`ImportOptions::new`].
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub(crate) new_ids: bool,
    pub(crate) parent: Option<SessionId>,
    pub(crate) drop_keys: bool,
    pub(crate) limits: BundleLimits,
}

impl ImportOptions {
    /// Keep the original ids, import the root as a root session, keep session keys.
    pub fn new() -> Self {
        Self::default()
    }
    /// Give every session, artifact and checkpoint a new id (same creation time, new random
    /// part): a copy that can live beside the original.
    pub fn new_ids(mut self, yes: bool) -> Self {
        self.new_ids = yes;
        self
    }
    /// Import the bundle's root as a child of `parent` (which must exist).
    pub fn parent(mut self, parent: SessionId) -> Self {
        self.parent = Some(parent);
        self
    }
    /// Drop the sessions' unique keys (a copy in the same store would conflict with them).
    pub fn drop_keys(mut self, yes: bool) -> Self {
        self.drop_keys = yes;
        self
    }
    /// Replaces the reader's limits.
    pub fn limits(mut self, limits: BundleLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportReport {
    /// The exported session.
    pub root: SessionId,
    /// Sessions written.
    pub sessions: u64,
    /// Artifacts written.
    pub artifacts: u64,
    /// Events written.
    pub events: u64,
    /// Extension records written.
    pub extensions: u64,
    /// Distinct blobs written.
    pub blobs: u64,
    /// Their total size before compression.
    pub content_bytes: u64,
    /// The bundle's size in bytes.
    pub bundle_bytes: u64,
    /// BLAKE3 of every byte before the trailer (as recorded in the trailer).
    pub hash: ContentHash,
}

/// One imported session: its id in the bundle and in this store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportedSession {
    /// The id in the bundle.
    pub original: SessionId,
    /// The id in this store (the same unless `new_ids`).
    pub id: SessionId,
}

/// What an import stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReport {
    /// The imported root's id in this store.
    pub root: SessionId,
    /// Every imported session, parents first.
    pub sessions: Vec<ImportedSession>,
    /// Artifacts imported.
    pub artifacts: u64,
    /// Events imported (not counting the `imported` event appended to each session).
    pub events: u64,
    /// Blobs in the bundle.
    pub blobs: u64,
    /// Of those, blobs this store did not hold yet.
    pub blobs_new: u64,
    /// Stored bytes those new blobs take.
    pub stored_bytes_new: u64,
    /// Extension records imported.
    pub extensions_imported: u64,
    /// Optional extension records of kinds this version does not know, skipped.
    pub extensions_skipped: u64,
    /// The bundle's size in bytes.
    pub bundle_bytes: u64,
    /// BLAKE3 of every byte before the trailer.
    pub hash: ContentHash,
}

/// What [`inspect`] found in a bundle that passed every check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleSummary {
    /// The header.
    pub header: BundleHeader,
    /// The session records, parents first.
    pub sessions: Vec<Session>,
    /// Number of artifacts.
    pub artifacts: u64,
    /// Number of events.
    pub events: u64,
    /// Number of extension records.
    pub extensions: u64,
    /// Extension records by kind.
    pub extension_kinds: BTreeMap<String, u64>,
    /// Number of distinct blobs.
    pub blobs: u64,
    /// Their total size before compression.
    pub content_bytes: u64,
    /// The bundle's size in bytes.
    pub bundle_bytes: u64,
    /// BLAKE3 of every byte before the trailer.
    pub hash: ContentHash,
}

/// Reads and checks a whole bundle without a store: every frame, bound, hash and the trailer.
/// Content is decompressed and hashed as it streams and then dropped, so memory stays bounded.
pub fn inspect(reader: impl Read) -> Result<BundleSummary> {
    inspect_with(reader, &BundleLimits::default())
}

/// [`inspect`] with explicit limits.
pub fn inspect_with(reader: impl Read, limits: &BundleLimits) -> Result<BundleSummary> {
    let mut sink = VerifySink;
    let p = parse(reader, limits, &mut sink, None)?;
    let mut extension_kinds = BTreeMap::new();
    for x in &p.extensions {
        *extension_kinds.entry(x.kind.clone()).or_insert(0) += 1;
    }
    Ok(BundleSummary {
        header: p.header,
        sessions: p.sessions,
        artifacts: p.artifacts.len() as u64,
        events: p.events.len() as u64,
        extensions: p.extensions.len() as u64,
        extension_kinds,
        blobs: p.trailer.blobs,
        content_bytes: p.trailer.content_bytes,
        bundle_bytes: p.trailer.bundle_bytes + 5 + TRAILER_LEN as u64,
        hash: ContentHash::from_bytes(p.trailer.hash),
    })
}

// ---------------------------------------------------------------------------------------------
// Extension hooks
// ---------------------------------------------------------------------------------------------

/// Old-to-new id mapping of one import. Ids of things inside the bundle map to their new ids;
/// ids of anything outside it (a fork's source in another store) are kept as they are.
pub(crate) struct IdMap {
    new_ids: bool,
    sessions: HashMap<SessionId, SessionId>,
    artifacts: HashMap<ArtifactId, ArtifactId>,
    checkpoints: HashMap<CheckpointId, CheckpointId>,
}

impl IdMap {
    /// The new id of a session of the bundle; other ids unchanged.
    pub(crate) fn session(&self, old: SessionId) -> SessionId {
        self.sessions.get(&old).copied().unwrap_or(old)
    }
    /// The new id of an artifact (ids of artifacts deleted before export get a fresh id too,
    /// the same one every time).
    pub(crate) fn artifact(&mut self, old: ArtifactId) -> ArtifactId {
        if !self.new_ids {
            return old;
        }
        *self
            .artifacts
            .entry(old)
            .or_insert_with(|| ArtifactId::from_uuid(fresh_like(old.as_uuid())))
    }
    /// The new id of a checkpoint, the same one every time.
    pub(crate) fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId {
        if !self.new_ids {
            return old;
        }
        *self
            .checkpoints
            .entry(old)
            .or_insert_with(|| CheckpointId::from_uuid(fresh_like(old.as_uuid())))
    }
}

/// Exports the extension records of one session through the callback.
pub(crate) type ExportHook =
    fn(&Store, SessionId, &mut dyn FnMut(ExtensionRecord) -> Result<()>) -> Result<()>;
/// Writes one extension record inside the import's batch. It must take a blob reference
/// (`Store::retain_blob`) for every hash it keeps, and map ids through the [`IdMap`].
pub(crate) type ImportHook = fn(&Store, &mut Tx<'_>, &mut IdMap, &ExtensionRecord) -> Result<()>;

/// A module whose per-session records travel in bundles.
pub(crate) struct ExtensionHandler {
    /// The `kind`s of its records.
    pub(crate) kinds: &'static [&'static str],
    /// Called once per exported session.
    pub(crate) export: ExportHook,
    /// Called once per record on import.
    pub(crate) import: ImportHook,
}

/// Every module whose records travel in bundles.
pub(crate) static EXTENSIONS: &[ExtensionHandler] = &[
    ExtensionHandler {
        kinds: &["checkpoint", "history", "lineage"],
        export: export_checkpoint_records,
        import: import_checkpoint_record,
    },
    ExtensionHandler {
        kinds: &["metrics"],
        export: export_metrics,
        import: import_metrics,
    },
];

/// Longest metric name (with its `tool_calls.` or `custom.` prefix) an import accepts.
const MAX_METRIC_KEY: usize = 256;

/// The session's usage counters (`M` table: name -> u64). Optional: an older reader may skip them.
fn export_metrics(
    store: &Store,
    session: SessionId,
    emit: &mut dyn FnMut(ExtensionRecord) -> Result<()>,
) -> Result<()> {
    let prefix = Key::new(keys::METRIC).sid(&session).build();
    let mut values = serde_json::Map::new();
    for e in RangeIter::prefix(store.backend(), &prefix, false) {
        let (k, v) = e?;
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        values.insert(name, json!(keys::u64_value(&v)));
    }
    if values.is_empty() {
        return Ok(());
    }
    emit(ExtensionRecord {
        kind: "metrics".into(),
        session_id: session,
        required: false,
        hashes: Vec::new(),
        body: json!({ "values": values }),
    })
}

fn import_metrics(
    store: &Store,
    tx: &mut Tx<'_>,
    map: &mut IdMap,
    x: &ExtensionRecord,
) -> Result<()> {
    let bad = |m: String| Error::invalid("bundle metrics record", m);
    let sid = map.session(x.session_id);
    store.tx_session(tx, sid)?;
    let values = x
        .body
        .get("values")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("it has no \"values\" object".into()))?;
    for (name, v) in values {
        if name.is_empty() || name.len() > MAX_METRIC_KEY || name.chars().any(char::is_control) {
            return Err(bad(format!(
                "metric name {name:?} is empty, too long or not text"
            )));
        }
        let n = v
            .as_u64()
            .ok_or_else(|| bad(format!("metric {name:?} is not a whole number")))?;
        tx.put(
            Key::new(keys::METRIC)
                .sid(&sid)
                .bytes(name.as_bytes())
                .build(),
            n.to_be_bytes().to_vec(),
        );
    }
    Ok(())
}

fn handler(kind: &str) -> Option<&'static ExtensionHandler> {
    EXTENSIONS.iter().find(|h| h.kinds.contains(&kind))
}

impl crate::store::RemapIds for IdMap {
    fn session(&mut self, old: SessionId) -> SessionId {
        IdMap::session(self, old)
    }
    fn artifact(&mut self, old: ArtifactId) -> ArtifactId {
        IdMap::artifact(self, old)
    }
    fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId {
        IdMap::checkpoint(self, old)
    }
}

/// Checkpoints (with the artifact versions they captured and their binary state), the
/// conversation order and lineage of a session. Required: a reader that cannot restore them
/// refuses the bundle rather than dropping them silently.
fn export_checkpoint_records(
    store: &Store,
    session: SessionId,
    emit: &mut dyn FnMut(ExtensionRecord) -> Result<()>,
) -> Result<()> {
    for r in store.export_checkpoint_data(session)? {
        emit(ExtensionRecord {
            kind: r.kind.to_string(),
            session_id: session,
            required: true,
            hashes: r.hashes,
            body: r.body,
        })?;
    }
    Ok(())
}

fn import_checkpoint_record(
    store: &Store,
    tx: &mut Tx<'_>,
    map: &mut IdMap,
    x: &ExtensionRecord,
) -> Result<()> {
    store.import_checkpoint_record_in(tx, map, x.session_id, &x.kind, &x.body)
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Where written bytes go: counts them and hashes them for the trailer.
struct Sink<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    pos: u64,
    label: PathBuf,
}

impl<W: Write> Sink<W> {
    fn write(&mut self, b: &[u8], hash: bool) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io(&self.label, e))?;
        if hash {
            self.hasher.update(b);
        }
        self.pos += b.len() as u64;
        Ok(())
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
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
struct ChunkFrames<'a, W: Write> {
    sink: &'a mut Sink<W>,
    buf: Vec<u8>,
    total: u64,
    error: Option<Error>,
}

impl<W: Write> ChunkFrames<'_, W> {
    fn emit(&mut self) -> io::Result<()> {
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
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    n: u64,
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
    sink: Sink<W>,
    rank: u8,
    level: i32,
    counts: [u64; 6],
    failed: bool,
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

    fn enter(&mut self, tag: u8) -> Result<()> {
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

    fn rank_name(&self) -> &'static str {
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

    fn record<T: Serialize>(&mut self, tag: u8, v: &T) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

fn bad(offset: u64, message: impl std::fmt::Display) -> Error {
    Error::invalid(
        "bundle",
        format!("{message} (at byte {offset}); the bundle is damaged or not a Cairn bundle"),
    )
}

/// Reads frames, hashing every byte before the trailer.
struct FrameReader<R: Read> {
    inner: BufReader<R>,
    hasher: blake3::Hasher,
    pos: u64,
}

impl<R: Read> FrameReader<R> {
    fn read_exact(&mut self, buf: &mut [u8], hash: bool) -> Result<()> {
        let start = self.pos;
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(bad(
                        start + got as u64,
                        "the bundle ends early: it is truncated (copy it again)",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::InputIo { source }),
            }
        }
        if hash {
            self.hasher.update(buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes (at least one), hashed.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => {
                    return Err(bad(
                        self.pos,
                        "the bundle ends early: it is truncated (copy it again)",
                    ))
                }
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::InputIo { source }),
            }
        }
    }

    /// The next frame's tag and length, and its offset.
    fn header(&mut self) -> Result<(u8, u32, u64)> {
        let at = self.pos;
        let mut h = [0u8; 5];
        // The trailer frame is not part of the hash it carries.
        self.read_exact(&mut h[..1], false)?;
        self.read_exact(&mut h[1..], false)?;
        if h[0] != TAG_TRAILER {
            self.hasher.update(&h);
        }
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        Ok((h[0], len, at))
    }

    fn payload(&mut self, len: u32, hash: bool) -> Result<Vec<u8>> {
        // Grow as bytes arrive, so a forged length cannot make us allocate up front.
        let mut out = Vec::with_capacity((len as usize).min(64 << 10));
        let mut buf = [0u8; 8192];
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(buf.len());
            self.read_exact(&mut buf[..n], hash)?;
            out.extend_from_slice(&buf[..n]);
            left -= n;
        }
        Ok(out)
    }

    fn at_eof(&mut self) -> Result<bool> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::InputIo { source }),
            }
        }
    }
}

/// A blob's frame header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlobInfo {
    hash: ContentHash,
    size: u64,
    codec: Codec,
    /// Offset of the blob frame, for messages.
    at: u64,
}

/// The encoded bytes of one blob, read from its chunk frames up to the blob end frame.
struct BlobBody<'a, R: Read> {
    fr: &'a mut FrameReader<R>,
    info: BlobInfo,
    remaining: u32,
    encoded: u64,
    max_encoded: u64,
    done: bool,
    error: Option<Error>,
}

impl<R: Read> BlobBody<'_, R> {
    fn step(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if self.remaining > 0 {
                let want = buf.len().min(self.remaining as usize);
                let n = self.fr.read_some(&mut buf[..want])?;
                self.remaining -= n as u32;
                self.encoded += n as u64;
                if self.encoded > self.max_encoded {
                    return Err(bad(
                        self.fr.pos,
                        format!(
                            "blob {} holds more than {} encoded bytes for {} bytes of content",
                            self.info.hash, self.max_encoded, self.info.size
                        ),
                    ));
                }
                return Ok(n);
            }
            let (tag, len, at) = self.fr.header()?;
            match tag {
                TAG_CHUNK if len == 0 || len > MAX_CHUNK_BYTES => {
                    return Err(bad(
                        at,
                        format!("a content chunk of {len} bytes (1 to {MAX_CHUNK_BYTES} allowed)"),
                    ))
                }
                TAG_CHUNK => self.remaining = len,
                TAG_BLOB_END => {
                    if len != 8 {
                        return Err(bad(
                            at,
                            format!("a blob end frame of {len} bytes, expected 8"),
                        ));
                    }
                    let p = self.fr.payload(8, true)?;
                    let total = u64::from_be_bytes(p[..8].try_into().unwrap_or([0; 8]));
                    if total != self.encoded {
                        return Err(bad(
                            at,
                            format!(
                                "blob {} ends after {} encoded bytes but its end frame says {total}",
                                self.info.hash, self.encoded
                            ),
                        ));
                    }
                    self.done = true;
                }
                other => {
                    return Err(bad(
                        at,
                        format!(
                            "blob {} is incomplete: expected a content chunk or blob end, found {}",
                            self.info.hash,
                            tag_name(other)
                        ),
                    ))
                }
            }
        }
    }

    /// Reads to the blob end frame, discarding the rest.
    fn drain(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        while self.step(&mut buf)? > 0 {}
        Ok(())
    }
}

impl<R: Read> Read for BlobBody<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step(buf).map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            io::Error::other(m)
        })
    }
}

/// Decodes `src` with `codec` and checks that it is exactly `size` bytes hashing to `hash`,
/// the same way the store reads content back (same decoder and window bound).
fn verify_content(
    codec: Codec,
    src: &mut dyn Read,
    hash: &ContentHash,
    size: u64,
) -> std::result::Result<(), String> {
    let mut dec: Box<dyn Read + '_> = match codec {
        Codec::Raw => Box::new(src),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(src)
                .map_err(|e| format!("cannot start decoding: {e}"))?;
            d.window_log_max(MAX_WINDOW_LOG)
                .map_err(|e| format!("cannot start decoding: {e}"))?;
            Box::new(d)
        }
    };
    let mut hasher = blake3::Hasher::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = match dec.read(&mut buf) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("the content does not decode: {e}")),
        };
        if k == 0 {
            break;
        }
        n += k as u64;
        if n > size {
            return Err(format!(
                "the content is longer than its declared {size} bytes"
            ));
        }
        hasher.update(&buf[..k]);
    }
    if n != size {
        return Err(format!("the content is {n} bytes, declared {size}"));
    }
    let got: ContentHash = hasher.finalize().into();
    if got != *hash {
        return Err(format!(
            "the content hashes to {got}, not to its declared hash"
        ));
    }
    Ok(())
}

/// Receives each blob's encoded bytes while the bundle is parsed.
trait BlobSink {
    fn accept(&mut self, info: &BlobInfo, body: &mut dyn Read) -> Result<()>;
}

/// Verifies and drops content (for [`inspect`]).
struct VerifySink;

impl BlobSink for VerifySink {
    fn accept(&mut self, info: &BlobInfo, body: &mut dyn Read) -> Result<()> {
        verify_content(info.codec, body, &info.hash, info.size)
            .map_err(|m| bad(info.at, format!("blob {}: {m}", info.hash)))
    }
}

struct Trailer {
    sessions: u64,
    artifacts: u64,
    events: u64,
    extensions: u64,
    blobs: u64,
    content_bytes: u64,
    bundle_bytes: u64,
    hash: [u8; 32],
}

/// A fully read and checked bundle (content went to the sink).
struct Parsed {
    header: BundleHeader,
    sessions: Vec<Session>,
    artifacts: Vec<Artifact>,
    events: Vec<Event>,
    extensions: Vec<ExtensionRecord>,
    trailer: Trailer,
}

const MAX_TEXT: usize = 4096;

fn check_text(what: &str, s: &str, newlines: bool, at: u64) -> Result<()> {
    if s.len() > MAX_TEXT
        || s.chars()
            .any(|c| c.is_control() && !(newlines && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(bad(
            at,
            format!(
                "a session's {what} is longer than {MAX_TEXT} bytes or holds control characters"
            ),
        ));
    }
    Ok(())
}

fn decode_record<T: serde::de::DeserializeOwned>(what: &str, p: &[u8], at: u64) -> Result<T> {
    serde_json::from_slice(p)
        .map_err(|e| bad(at, format!("the {what} record does not decode: {e}")))
}

fn over(limit: &'static str, what: &str, max: u64) -> Error {
    Error::LimitExceeded {
        limit,
        message: format!(
            "the bundle holds more than {max} {what}; nothing was imported (raise the bundle limit to accept it)"
        ),
    }
}

/// Reads and checks a whole bundle. `importable`: reject required extensions this version does
/// not know (import), or accept them (inspect).
fn parse(
    reader: impl Read,
    limits: &BundleLimits,
    sink: &mut dyn BlobSink,
    importable: Option<&dyn Fn(&str) -> bool>,
) -> Result<Parsed> {
    let mut fr = FrameReader {
        inner: BufReader::with_capacity(256 << 10, reader),
        hasher: blake3::Hasher::new(),
        pos: 0,
    };
    let mut pre = [0u8; 10];
    fr.read_exact(&mut pre[..8], true)?;
    if &pre[..8] != MAGIC {
        return Err(bad(
            0,
            "this is not a Cairn bundle (its first bytes are not CAIRNBDL)",
        ));
    }
    fr.read_exact(&mut pre[8..], true)?;
    let version = u16::from_be_bytes([pre[8], pre[9]]);
    if version != BUNDLE_FORMAT {
        return Err(Error::invalid(
            "bundle",
            format!(
                "bundle format {version}; this Cairn reads format {BUNDLE_FORMAT}{}",
                if version > BUNDLE_FORMAT {
                    " (written by a newer Cairn: upgrade)"
                } else {
                    ""
                }
            ),
        ));
    }
    let max_record = limits.max_record_bytes.min(MAX_RECORD_BYTES);
    let mut buffered = 0u64;
    let mut header: Option<BundleHeader> = None;
    let mut sessions: Vec<Session> = Vec::new();
    let mut session_ids: HashSet<SessionId> = HashSet::new();
    let mut artifacts: Vec<Artifact> = Vec::new();
    let mut artifact_ids: HashSet<ArtifactId> = HashSet::new();
    let mut name_versions: HashSet<(SessionId, String, u32)> = HashSet::new();
    let mut events: Vec<Event> = Vec::new();
    let mut last_seq: HashMap<SessionId, u64> = HashMap::new();
    let mut extensions: Vec<ExtensionRecord> = Vec::new();
    // Content referenced by records: hash -> size if an artifact gives it.
    let mut referenced: HashMap<ContentHash, Option<u64>> = HashMap::new();
    let mut blobs_seen: HashSet<ContentHash> = HashSet::new();
    let mut content_bytes = 0u64;
    let mut rank = 0u8;
    loop {
        let (tag, len, at) = fr.header()?;
        let Some(r) = section_rank(tag) else {
            return Err(bad(
                at,
                format!("{} where a record was expected", tag_name(tag)),
            ));
        };
        if r < rank || (r == 0 && header.is_some()) || (r > 0 && header.is_none()) {
            return Err(bad(
                at,
                format!(
                    "a {} frame out of order (sections are header, sessions, artifacts, events, \
                     extensions, blobs, trailer)",
                    tag_name(tag)
                ),
            ));
        }
        if r > 1 && sessions.is_empty() {
            return Err(bad(at, "the bundle holds no session"));
        }
        rank = r;
        match tag {
            TAG_TRAILER => {
                if len != TRAILER_LEN {
                    return Err(bad(
                        at,
                        format!("a trailer of {len} bytes, expected {TRAILER_LEN}"),
                    ));
                }
                let hash: ContentHash = fr.hasher.finalize().into();
                let p = fr.payload(len, false)?;
                let u =
                    |i: usize| u64::from_be_bytes(p[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                let mut th = [0u8; 32];
                th.copy_from_slice(&p[56..88]);
                let t = Trailer {
                    sessions: u(0),
                    artifacts: u(1),
                    events: u(2),
                    extensions: u(3),
                    blobs: u(4),
                    content_bytes: u(5),
                    bundle_bytes: u(6),
                    hash: th,
                };
                let got = [
                    sessions.len() as u64,
                    artifacts.len() as u64,
                    events.len() as u64,
                    extensions.len() as u64,
                    blobs_seen.len() as u64,
                    content_bytes,
                    at,
                ];
                let want = [
                    t.sessions,
                    t.artifacts,
                    t.events,
                    t.extensions,
                    t.blobs,
                    t.content_bytes,
                    t.bundle_bytes,
                ];
                if got != want {
                    return Err(bad(
                        at,
                        format!(
                            "the trailer's counts (sessions, artifacts, events, extensions, blobs, \
                             content bytes, length) are {want:?} but the bundle holds {got:?}"
                        ),
                    ));
                }
                if hash.as_bytes() != &t.hash {
                    return Err(bad(
                        at,
                        format!(
                            "the bundle hashes to {hash} but its trailer records {}: it was altered",
                            ContentHash::from_bytes(t.hash)
                        ),
                    ));
                }
                if !fr.at_eof()? {
                    return Err(bad(fr.pos, "bytes follow the trailer"));
                }
                if let Some((h, _)) = referenced.iter().find(|(h, _)| !blobs_seen.contains(*h)) {
                    return Err(bad(
                        at,
                        format!(
                            "content {h} is referenced but not in the bundle: it is incomplete"
                        ),
                    ));
                }
                let header = header.ok_or_else(|| bad(at, "no header"))?;
                return Ok(Parsed {
                    header,
                    sessions,
                    artifacts,
                    events,
                    extensions,
                    trailer: t,
                });
            }
            TAG_BLOB => {
                if len != BLOB_LEN {
                    return Err(bad(
                        at,
                        format!("a blob frame of {len} bytes, expected {BLOB_LEN}"),
                    ));
                }
                if blobs_seen.len() as u64 >= limits.max_blobs {
                    return Err(over("bundle max_blobs", "blobs", limits.max_blobs));
                }
                let p = fr.payload(len, true)?;
                let mut hb = [0u8; 32];
                hb.copy_from_slice(&p[..32]);
                let hash = ContentHash::from_bytes(hb);
                let size = u64::from_be_bytes(p[32..40].try_into().unwrap_or([0; 8]));
                let codec = match p[40] {
                    0 => Codec::Raw,
                    1 => Codec::Zstd,
                    c => return Err(bad(at, format!("blob {hash} has unknown codec {c}"))),
                };
                let Some(declared) = referenced.get(&hash) else {
                    return Err(bad(
                        at,
                        format!("blob {hash} is not referenced by any record"),
                    ));
                };
                if declared.is_some_and(|d| d != size) {
                    return Err(bad(
                        at,
                        format!("blob {hash} is {size} bytes but its artifacts say otherwise"),
                    ));
                }
                if !blobs_seen.insert(hash) {
                    return Err(bad(at, format!("blob {hash} appears twice")));
                }
                if size > limits.max_blob_size {
                    return Err(Error::LimitExceeded {
                        limit: "bundle max_blob_size",
                        message: format!(
                            "blob {hash} is {size} bytes; the limit is {}; nothing was imported",
                            limits.max_blob_size
                        ),
                    });
                }
                content_bytes = content_bytes.saturating_add(size);
                let info = BlobInfo {
                    hash,
                    size,
                    codec,
                    at,
                };
                let max_encoded = match codec {
                    Codec::Raw => size,
                    // zstd's worst case is a few bytes per 128 KiB block; this is generous.
                    Codec::Zstd => size.saturating_add(size / 64).saturating_add(64 << 10),
                };
                let mut body = BlobBody {
                    fr: &mut fr,
                    info,
                    remaining: 0,
                    encoded: 0,
                    max_encoded,
                    done: false,
                    error: None,
                };
                if let Err(e) = sink.accept(&info, &mut body) {
                    return Err(body.error.take().unwrap_or(e));
                }
                if let Some(e) = body.error.take() {
                    return Err(e);
                }
                body.drain()?;
            }
            _ => {
                if len > max_record {
                    return Err(bad(
                        at,
                        format!(
                            "a {} record of {len} bytes; the limit is {max_record}",
                            tag_name(tag)
                        ),
                    ));
                }
                buffered += len as u64;
                if buffered > limits.max_buffered_bytes {
                    return Err(over(
                        "bundle max_buffered_bytes",
                        "bytes of records",
                        limits.max_buffered_bytes,
                    ));
                }
                let p = fr.payload(len, true)?;
                match tag {
                    TAG_HEADER => {
                        let h: BundleHeader = decode_record("header", &p, at)?;
                        if h.format != BUNDLE_FORMAT {
                            return Err(bad(at, format!("the header says format {}", h.format)));
                        }
                        header = Some(h);
                    }
                    TAG_SESSION => {
                        if sessions.len() as u64 >= limits.max_sessions {
                            return Err(over(
                                "bundle max_sessions",
                                "sessions",
                                limits.max_sessions,
                            ));
                        }
                        let s: Session = decode_record("session", &p, at)?;
                        let root = header.as_ref().map(|h| h.root);
                        if sessions.is_empty() {
                            if Some(s.id) != root {
                                return Err(bad(at, "the first session is not the header's root"));
                            }
                        } else if !s.parent_id.is_some_and(|p| session_ids.contains(&p)) {
                            return Err(bad(
                                at,
                                format!(
                                    "session {} does not follow its parent in the bundle",
                                    s.id
                                ),
                            ));
                        }
                        if !session_ids.insert(s.id) {
                            return Err(bad(at, format!("session {} appears twice", s.id)));
                        }
                        if let Some(k) = &s.key {
                            if k.is_empty() {
                                return Err(bad(at, "a session key is empty"));
                            }
                            check_text("key", k, false, at)?;
                        }
                        if let Some(n) = &s.name {
                            check_text("name", n, false, at)?;
                        }
                        for (what, t) in [("description", &s.description), ("reason", &s.reason)] {
                            if let Some(t) = t {
                                check_text(what, t, true, at)?;
                            }
                        }
                        for t in &s.tags {
                            validate_tag(t).map_err(|e| bad(at, e))?;
                        }
                        sessions.push(s);
                    }
                    TAG_ARTIFACT => {
                        if artifacts.len() as u64 >= limits.max_artifacts {
                            return Err(over(
                                "bundle max_artifacts",
                                "artifacts",
                                limits.max_artifacts,
                            ));
                        }
                        let a: Artifact = decode_record("artifact", &p, at)?;
                        if !session_ids.contains(&a.session_id) {
                            return Err(bad(
                                at,
                                format!("artifact {} belongs to a session not in the bundle", a.id),
                            ));
                        }
                        if !artifact_ids.insert(a.id) {
                            return Err(bad(at, format!("artifact {} appears twice", a.id)));
                        }
                        validate_name(&a.name).map_err(|e| bad(at, e))?;
                        for t in &a.tags {
                            validate_tag(t).map_err(|e| bad(at, e))?;
                        }
                        if a.version == 0
                            || !name_versions.insert((a.session_id, a.name.clone(), a.version))
                        {
                            return Err(bad(
                                at,
                                format!(
                                    "artifact {} has version {} of a name, which is 0 or taken",
                                    a.id, a.version
                                ),
                            ));
                        }
                        match referenced.get(&a.hash) {
                            Some(Some(s)) if *s != a.size => {
                                return Err(bad(
                                    at,
                                    format!("content {} is given two different sizes", a.hash),
                                ))
                            }
                            _ => {
                                referenced.insert(a.hash, Some(a.size));
                            }
                        }
                        artifacts.push(a);
                    }
                    TAG_EVENT => {
                        if events.len() as u64 >= limits.max_events {
                            return Err(over("bundle max_events", "events", limits.max_events));
                        }
                        let e: Event = decode_record("event", &p, at)?;
                        if !session_ids.contains(&e.session_id) {
                            return Err(bad(at, "an event of a session not in the bundle"));
                        }
                        let last = last_seq.entry(e.session_id).or_insert(0);
                        if e.seq <= *last {
                            return Err(bad(
                                at,
                                format!(
                                    "event {} of session {} does not follow event {}",
                                    e.seq, e.session_id, last
                                ),
                            ));
                        }
                        *last = e.seq;
                        events.push(e);
                    }
                    TAG_EXTENSION => {
                        if extensions.len() as u64 >= limits.max_extensions {
                            return Err(over(
                                "bundle max_extensions",
                                "extension records",
                                limits.max_extensions,
                            ));
                        }
                        let x: ExtensionRecord = decode_record("extension", &p, at)?;
                        let ok_kind = !x.kind.is_empty()
                            && x.kind.len() <= 64
                            && x.kind
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                        if !ok_kind {
                            return Err(bad(at, "an extension record has an invalid kind"));
                        }
                        if !session_ids.contains(&x.session_id) {
                            return Err(bad(
                                at,
                                "an extension record of a session not in the bundle",
                            ));
                        }
                        if let Some(known) = importable {
                            if x.required && !known(&x.kind) {
                                return Err(Error::invalid(
                                    "bundle",
                                    format!(
                                        "it holds {:?} records, which this version of Cairn cannot \
                                         import; upgrade Cairn. Nothing was imported",
                                        x.kind
                                    ),
                                ));
                            }
                        }
                        for h in &x.hashes {
                            referenced.entry(*h).or_insert(None);
                        }
                        extensions.push(x);
                    }
                    _ => return Err(bad(at, format!("unexpected {} frame", tag_name(tag)))),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Import staging
// ---------------------------------------------------------------------------------------------

/// Removes a temporary file on drop unless taken.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

enum StagedBytes {
    Memory(Vec<u8>),
    File(TempFile),
}

/// One blob's encoded bytes, verified, waiting for the commit.
struct StagedBlob {
    hash: ContentHash,
    size: u64,
    codec: Codec,
    encoded_len: u64,
    bytes: StagedBytes,
}

/// Stages content for import: small content in memory, larger content in a temporary file in
/// the store's `tmp/`, each verified by decoding it the way the store will read it.
struct StageSink<'s> {
    store: &'s Store,
    staged: Vec<StagedBlob>,
    pins: Vec<PendingGuard<'s>>,
    buffered: u64,
    max_buffered: u64,
    max_size: u64,
}

/// Collects bytes in memory while they could live inline, in a temporary file beyond that.
struct Spool<'a> {
    tmp_dir: Option<PathBuf>,
    inline_max: u64,
    buffered: &'a mut u64,
    max_buffered: u64,
    mem: Vec<u8>,
    file: Option<(TempFile, BufWriter<File>)>,
    total: u64,
}

impl Spool<'_> {
    fn write(&mut self, b: &[u8]) -> Result<()> {
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
    fn finish(self) -> Result<(StagedBytes, u64)> {
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
    fn reader(&self) -> Result<Box<dyn Read + '_>> {
        Ok(match self {
            StagedBytes::Memory(m) => Box::new(&m[..]),
            StagedBytes::File(t) => {
                let path = t.0.clone().unwrap_or_default();
                let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
                Box::new(BufReader::with_capacity(256 << 10, f))
            }
        })
    }

    fn memory_len(&self) -> u64 {
        match self {
            StagedBytes::Memory(m) => m.len() as u64,
            StagedBytes::File(_) => 0,
        }
    }
}

impl StageSink<'_> {
    fn spool(&mut self) -> Spool<'_> {
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
        let (mut bytes, mut encoded_len) = spool.finish()?;
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
            encoded_len = raw_len;
            codec = Codec::Raw;
        }
        self.staged.push(StagedBlob {
            hash: info.hash,
            size: info.size,
            codec,
            encoded_len,
            bytes,
        });
        Ok(())
    }
}

/// A new id with the same creation millisecond as `old` and a fresh random part.
fn fresh_like(old: &uuid::Uuid) -> uuid::Uuid {
    let (secs, nanos) = old.get_timestamp().map(|t| t.to_unix()).unwrap_or_else(|| {
        let now = Utc::now();
        (now.timestamp().max(0) as u64, now.timestamp_subsec_nanos())
    });
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos))
}

/// New ids for `olds` that keep their creation times and their relative order.
fn fresh_ids(olds: &[uuid::Uuid]) -> HashMap<uuid::Uuid, uuid::Uuid> {
    let mut sorted = olds.to_vec();
    sorted.sort();
    let mut news: Vec<uuid::Uuid> = sorted.iter().map(fresh_like).collect();
    news.sort();
    sorted.into_iter().zip(news).collect()
}

fn remap_event(e: &Event, map: &mut IdMap) -> Event {
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
        let file_name = path.file_name().ok_or_else(|| {
            Error::invalid("bundle path", format!("{} names no file", path.display()))
        })?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".partial-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let mut guard = TempFile(Some(tmp.clone()));
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let w = BufWriter::with_capacity(1 << 20, f);
        let report = self.export_inner(id, subtree, w, Some(path))?;
        // `export_inner` flushed the writer; reopen to sync what reached the file.
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        guard.0 = None;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = content::sync_dir(parent);
        }
        Ok(report)
    }

    fn export_inner<W: Write>(
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

    fn commit_import(
        &self,
        p: Parsed,
        mut staged: Vec<StagedBlob>,
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

        let mut state = self.lock()?;
        let mut tx = self.tx(&mut state);
        let sessions_now = tx.counter(b"sessions")?.max(0) as u64;
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
            self.write_session_indexes(&mut tx, &s);
            tx.add(b"sessions", 1);
            tx.add(status_counter(s.status), 1);
            imported.push(ImportedSession { original, id: s.id });
        }

        // Content: new blobs get their record (references are added below); known ones are shared.
        let paths = self.inner.paths.clone();
        let inline_max = self.inner.config.inline_threshold;
        let mut metas: HashMap<ContentHash, BlobMeta> = HashMap::new();
        let mut new_blobs = Vec::new();
        let mut stored_bytes_new = 0u64;
        for b in staged.iter_mut() {
            if let Some(v) = tx.get(&keys::blob(&b.hash))? {
                metas.insert(b.hash, BlobMeta::decode(&v)?);
                continue;
            }
            let to_file = paths.is_some() && b.encoded_len >= inline_max;
            match (&mut b.bytes, &paths) {
                (StagedBytes::File(t), Some(pp)) if to_file => {
                    if let Some(tmp) = &t.0 {
                        content::install_temp(&pp.blobs, tmp, &b.hash, b.codec)?;
                    }
                }
                (StagedBytes::Memory(m), Some(pp)) if to_file => {
                    content::write_blob_file(&pp.blobs, &pp.tmp, &b.hash, b.codec, m)?;
                }
                (StagedBytes::Memory(m), _) => tx.put(keys::blob_data(&b.hash), std::mem::take(m)),
                (StagedBytes::File(t), _) => {
                    let path = t.0.clone().unwrap_or_default();
                    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    tx.put(keys::blob_data(&b.hash), bytes);
                }
            }
            let m = BlobMeta {
                codec: b.codec,
                inline: !to_file,
                size: b.size,
                stored_size: b.encoded_len,
                refs: 0,
            };
            tx.put(keys::blob(&b.hash), m.encode());
            tx.add(b"blobs", 1);
            tx.add(b"stored_bytes", m.stored_size as i64);
            tx.add(b"content_bytes", m.size as i64);
            stored_bytes_new += m.stored_size;
            metas.insert(b.hash, m);
            new_blobs.push(b.hash);
        }

        let mut latest: HashMap<(SessionId, String), u32> = HashMap::new();
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
            self.write_artifact_indexes(&mut tx, &a);
            self.retain_blob(&mut tx, &a.hash)?;
            tx.add(session_count_key(&a.session_id), 1);
            let v = latest.entry((a.session_id, a.name.clone())).or_insert(0);
            *v = (*v).max(a.version);
        }
        for ((sid, name), v) in latest {
            tx.put(keys::latest(&sid, &name), v.to_be_bytes().to_vec());
        }

        let mut last_seq: HashMap<SessionId, u64> = HashMap::new();
        for e in &p.events {
            let e = remap_event(e, &mut map);
            last_seq.insert(e.session_id, e.seq);
            tx.put(
                Key::new(keys::EVENT).sid(&e.session_id).u64(e.seq).build(),
                keys::encode(&e),
            );
        }

        let mut extensions_imported = 0;
        let mut extensions_skipped = 0;
        for x in &p.extensions {
            match handler(&x.kind) {
                Some(h) => {
                    (h.import)(self, &mut tx, &mut map, x)?;
                    extensions_imported += 1;
                }
                None => extensions_skipped += 1,
            }
        }
        // Content only a skipped record referenced has no reference: it is garbage for GC.
        for h in &new_blobs {
            if let Some(v) = tx.get(&keys::blob(h))? {
                if BlobMeta::decode(&v)?.refs == 0 {
                    tx.put(keys::garbage(h), vec![]);
                }
            }
        }

        let now = Utc::now();
        let mut new_events = Vec::with_capacity(imported.len());
        for s in &imported {
            let seq = last_seq.get(&s.id).copied().unwrap_or(0) + 1;
            let e = Event {
                session_id: s.id,
                seq,
                at: now,
                kind: EventKind::Custom {
                    name: "imported".into(),
                    payload: json!({
                        "original_id": s.original,
                        "bundle_root": root_old,
                        "bundle_created_at": p.header.created_at,
                        "new_ids": options.new_ids,
                    }),
                },
            };
            tx.put(
                Key::new(keys::EVENT).sid(&s.id).u64(seq).build(),
                keys::encode(&e),
            );
            new_events.push(e);
        }
        tx.commit()?;
        drop(state);
        self.after_commit(&new_events)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_keep_time_and_order() {
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
    fn writer_refuses_out_of_order_sections() {
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
    fn writer_rejects_content_that_does_not_match_its_hash() {
        let h = BundleHeader::new(SessionId::new(), false);
        let mut w = BundleWriter::new(Vec::new(), &h).unwrap();
        let err = w.blob(ContentHash::of(b"abc"), 3, &b"abd"[..]).unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err}");
        assert!(w.finish().is_err(), "a poisoned writer cannot finish");
    }
}
