//! The per-session append-only event log: the audit trail that replay and streaming build on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ArtifactId, CheckpointId, ContentHash, SessionId};
use crate::session::SessionStatus;

/// One entry of a session's event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Position in the session's log, from 1; also the cursor for reading on.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an event records. Serialized with a `type` field, so other processes can read it as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The session was created.
    Created {
        /// Its parent, if any.
        parent_id: Option<SessionId>,
    },
    /// The status changed.
    StatusChanged {
        /// Old status.
        from: SessionStatus,
        /// New status.
        to: SessionStatus,
        /// Reason given.
        reason: Option<String>,
    },
    /// An artifact was stored.
    ArtifactStored {
        /// The artifact.
        artifact_id: ArtifactId,
        /// Its name.
        name: String,
        /// Its version.
        version: u32,
        /// Its content hash.
        hash: ContentHash,
        /// Its size.
        size: u64,
    },
    /// An artifact was deleted.
    ArtifactDeleted {
        /// The artifact.
        artifact_id: ArtifactId,
        /// Its name.
        name: String,
        /// Its version.
        version: u32,
    },
    /// Metadata (or tags) changed.
    MetadataUpdated {
        /// The metadata after the change.
        metadata: Map<String, Value>,
    },
    /// A checkpoint was created.
    CheckpointCreated {
        /// The checkpoint.
        checkpoint_id: CheckpointId,
        /// Its label.
        label: String,
    },
    /// The session was made as a fork or copy of another.
    Forked {
        /// Where it came from.
        source_session: SessionId,
        /// The checkpoint it was forked at, if any.
        checkpoint_id: Option<CheckpointId>,
    },
    /// A caller-defined event.
    Custom {
        /// Event name.
        name: String,
        /// Any JSON payload.
        payload: Value,
    },
}

impl EventKind {
    /// The `type` name of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "created",
            EventKind::StatusChanged { .. } => "status_changed",
            EventKind::ArtifactStored { .. } => "artifact_stored",
            EventKind::ArtifactDeleted { .. } => "artifact_deleted",
            EventKind::MetadataUpdated { .. } => "metadata_updated",
            EventKind::CheckpointCreated { .. } => "checkpoint_created",
            EventKind::Forked { .. } => "forked",
            EventKind::Custom { .. } => "custom",
        }
    }
}
