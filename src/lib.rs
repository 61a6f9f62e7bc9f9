//! # Cairn: an artifact store for AI agents
//!
//! Sessions form a parent/child tree with a lifecycle; artifacts belong to a session and are
//! content-addressed (BLAKE3), deduplicated, compressed with zstd above a threshold, and indexed
//! for queries by kind, tag, name glob, size and time. The default store is sled on local disk.
//!
//! ```
//! use cairn::{ArtifactKind, NewArtifact, NewSession, Query, Store};
//!
//! # fn main() -> cairn::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("store"))?;
//! let run = store.create_session(NewSession::new().name("run-1").tag("demo"))?;
//! let a = store.put(
//!     run.id,
//!     NewArtifact::new(ArtifactKind::ToolResult, "grep/out.txt").tag("grep"),
//!     b"src/main.rs:3: fn main()",
//! )?;
//! assert_eq!(store.read(run.id, a.id)?, b"src/main.rs:3: fn main()");
//!
//! let page = store.query(&Query::new().kind(ArtifactKind::ToolResult).name_glob("*.txt"))?;
//! assert_eq!(page.items.len(), 1);
//! assert!(!page.has_more());
//! store.complete(run.id)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod artifact;
mod backend;
mod blob_files;
pub mod bundle;
mod by_hash;
mod checkpoint;
mod config;
mod content;
#[cfg(feature = "s3")]
mod content_store;
mod error;
mod events;
mod fsutil;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod keys;
mod metrics;
// Partial reads, previews and memoization (issue 13).
mod memo;
mod partial;
mod pipeline;
mod preview;
mod query;
mod session;
mod store;
mod subscribe;

pub use artifact::{
    validate_name, validate_tag, Artifact, ArtifactKind, NewArtifact, MAX_NAME_LEN, MAX_TAG_LEN,
};
#[cfg(feature = "fjall")]
pub use backend::FjallBackend;
#[cfg(feature = "redb")]
pub use backend::RedbBackend;
pub use backend::{Backend, BatchTx, MemoryBackend, Op, SledBackend, WriteTx};
#[cfg(feature = "postgres")]
pub use backend::{EventListener, PostgresBackend};
pub use bundle::{BundleLimits, ExportReport, ImportOptions, ImportReport};
pub use checkpoint::{
    validate_label, Checkpoint, CopyOptions, Lineage, LineageKind, Message, NewCheckpoint,
    RestoreReport, Role, StateBlob, TimelineEntry, TimelineOptions, MAX_LABEL_LEN,
};
pub use config::{default_store_path, Config, Durability, Limits};
pub use content::ContentReader;
#[cfg(feature = "s3")]
pub use content_store::{S3Config, DEFAULT_GC_GRACE, DEFAULT_MULTIPART_THRESHOLD};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use ids::{ArtifactId, CheckpointId, ContentHash, SessionId};
pub use memo::{MemoHit, MemoKey, MemoScope, MemoStats, MAX_MEMO_ARGS, MAX_TOOL_NAME};
pub use metrics::{
    Distribution, IterationOutcome, MetricsDelta, SessionMetrics, SessionStats, MAX_METRIC_NAME_LEN,
};
pub use partial::{
    to_pointer, Data, GrepLine, JsonItem, Line, Part, PartContent, PartLimits, PartResult,
    ReadCost, DEFAULT_LINE_BYTES, DEFAULT_MATCHES, DEFAULT_PART_BYTES, MAX_CONTEXT,
    MAX_JSON_DOCUMENT, MAX_MATCHES, MAX_PART_BYTES, MAX_PATTERN_LEN, SCAN_LINE_BYTES,
};
pub use pipeline::{Pipeline, PipelineRun, StepContext};
pub use preview::{Preview, PREVIEW_JSON_KEYS, PREVIEW_LINES, PREVIEW_TEXT_BYTES};
pub use query::{Page, Query, DEFAULT_LIMIT, MAX_LIMIT};
pub use session::{
    MetadataUpdate, NewSession, Session, SessionFilter, SessionOptions, SessionStatus,
};
pub use store::retention::{
    ArtifactRemoval, ExpiryReport, RetentionPolicy, RetentionProgress, RetentionReport,
    RetentionRule, SessionRemoval,
};
pub use store::verify::{Problem, RepairReport, VerifyReport};
#[cfg(feature = "postgres")]
pub use store::POSTGRES_MAX_ARTIFACT_SIZE;
pub use store::{
    Admin, BackendKind, ContentInfo, DeleteReport, GcReport, Stats, Store, FORMAT_VERSION,
};
pub use subscribe::{
    Delivery, Subscription, SubscriptionFilter, DEFAULT_SUBSCRIPTION_CAPACITY, EVENT_TYPES,
    MAX_SUBSCRIPTION_CAPACITY,
};

/// The README's examples run as doc tests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
