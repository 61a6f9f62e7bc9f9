//! The bundle format: magic, frame tags, bounds, records and the public reports.

#[allow(unused_imports)]
use super::*;

/// The first 8 bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"CAIRNBDL";
/// The bundle format this version writes and reads.
pub const BUNDLE_FORMAT: u16 = 1;
/// Largest record frame (header, session, artifact, event, extension) the format allows.
pub const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Largest content chunk frame a reader accepts (this version writes 1 MiB chunks).
pub const MAX_CHUNK_BYTES: u32 = 4 << 20;
/// Chunk size the writer uses.
pub(super) const WRITE_CHUNK: usize = 1 << 20;
/// The same zstd window bound as the store's own reader (2^24): bounds decoder memory.
pub(super) const MAX_WINDOW_LOG: u32 = 24;
/// Size of the trailer payload: seven u64 counts and a 32-byte BLAKE3.
pub(super) const TRAILER_LEN: u32 = 7 * 8 + 32;
/// Size of a blob frame payload: hash, content size, codec.
pub(super) const BLOB_LEN: u32 = 32 + 8 + 1;

// Frame tags, in the order their sections must appear.
pub(super) const TAG_HEADER: u8 = b'H';
pub(super) const TAG_SESSION: u8 = b'S';
pub(super) const TAG_ARTIFACT: u8 = b'A';
pub(super) const TAG_EVENT: u8 = b'E';
pub(super) const TAG_EXTENSION: u8 = b'X';
pub(super) const TAG_BLOB: u8 = b'B';
pub(super) const TAG_CHUNK: u8 = b'C';
pub(super) const TAG_BLOB_END: u8 = b'Z';
pub(super) const TAG_TRAILER: u8 = b'T';

pub(super) fn section_rank(tag: u8) -> Option<u8> {
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

pub(super) fn tag_name(tag: u8) -> String {
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
