//! Checkpoints, lineage, timelines and conversation history: the types. (The `Pipeline` helper
//! that resumes step-by-step work from the last checkpoint is in `pipeline.rs`.)
//!
//! The store operations live in `store/checkpoints.rs`; see DESIGN.md, "Checkpoints, forks and
//! history", for the records and how they hold references on content.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::artifact::{Artifact, ArtifactKind};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::ids::{ArtifactId, CheckpointId, ContentHash, SessionId};

/// Longest checkpoint label, in bytes.
pub const MAX_LABEL_LEN: usize = 256;

/// An immutable record of a session at one moment: a label, a JSON state, an optional binary
/// state, the exact artifact versions the session held, and the position in its event log.
///
/// Creating one copies no content: it takes one reference on every blob it needs, so that
/// content survives deletes and garbage collection for as long as the checkpoint exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// Its id (UUID v7).
    pub id: CheckpointId,
    /// The session it captures.
    pub session_id: SessionId,
    /// The caller's label (several checkpoints may share one; the latest wins in lookups).
    pub label: String,
    /// The JSON state payload (`null` when none was given).
    pub state: Value,
    /// The larger binary state, stored as content, if one was given.
    pub state_blob: Option<StateBlob>,
    /// How many artifact versions it captured (see [`Store::checkpoint_artifacts`](crate::Store::checkpoint_artifacts)).
    pub artifact_count: u64,
    /// The sequence number of its `checkpoint_created` event: every event up to and including
    /// this one happened before the checkpoint.
    pub event_seq: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The binary state of a checkpoint: content addressed by hash like any artifact's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateBlob {
    /// BLAKE3 of the bytes.
    pub hash: ContentHash,
    /// Length in bytes.
    pub size: u64,
}

/// What to checkpoint: build with [`NewCheckpoint::new`].
#[derive(Clone, Debug)]
pub struct NewCheckpoint {
    pub(crate) label: String,
    pub(crate) state: Value,
    pub(crate) state_bytes: Option<Vec<u8>>,
}

impl NewCheckpoint {
    /// A checkpoint labelled `label` with a `null` state.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            state: Value::Null,
            state_bytes: None,
        }
    }
    /// Sets the JSON state (at most `limits.max_metadata_bytes` of JSON; larger state belongs in
    /// [`NewCheckpoint::state_bytes`]).
    pub fn state(mut self, state: Value) -> Self {
        self.state = state;
        self
    }
    /// Sets a binary state, stored (deduplicated, compressed) as content.
    pub fn state_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.state_bytes = Some(bytes.into());
        self
    }
}

/// Checks a checkpoint label: 1 to [`MAX_LABEL_LEN`] bytes, no control characters.
pub fn validate_label(label: &str) -> Result<()> {
    if label.is_empty() {
        return Err(Error::invalid(
            "checkpoint label",
            "the label is empty; give a label such as \"after-transform\"",
        ));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(Error::invalid(
            "checkpoint label",
            format!(
                "{:?} is longer than {MAX_LABEL_LEN} bytes; use a shorter label",
                crate::artifact::truncate_for_message(label)
            ),
        ));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::invalid(
            "checkpoint label",
            format!("{label:?} contains control characters; labels must be printable text"),
        ));
    }
    Ok(())
}

/// What [`Store::restore_checkpoint`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreReport {
    /// The checkpoint restored.
    pub checkpoint: CheckpointId,
    /// A checkpoint of the state just before the restore (label `before-restore`), so that a
    /// restore never loses anything: restore it to undo.
    pub backup: CheckpointId,
    /// Artifacts removed because the checkpoint did not hold them.
    pub removed: Vec<ArtifactId>,
    /// Artifacts put back (with their original ids and versions) because they had been deleted.
    pub reinstated: Vec<ArtifactId>,
}

/// How a derived session was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LineageKind {
    /// [`Store::fork`](crate::Store::fork): a child of its source, at a checkpoint or at the source's state then.
    Fork,
    /// [`Store::copy_session`](crate::Store::copy_session).
    Copy,
    /// [`Store::merge_sessions`](crate::Store::merge_sessions): one record per source.
    Merge,
}

/// One edge of the lineage graph: `session` was made from `source`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lineage {
    /// The derived session.
    pub session: SessionId,
    /// The session it came from (it may have been deleted since).
    pub source: SessionId,
    /// The checkpoint of `source` it was made at, if any.
    pub checkpoint: Option<CheckpointId>,
    /// Fork, copy or merge.
    pub kind: LineageKind,
    /// When.
    pub at: DateTime<Utc>,
}

/// Options for [`Store::copy_session`](crate::Store::copy_session): build with [`CopyOptions::new`].
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    pub(crate) subtree: bool,
    pub(crate) parent: Option<Option<SessionId>>,
    pub(crate) name: Option<String>,
}

impl CopyOptions {
    /// Copy one session, as a sibling of the source (same parent), keeping its name.
    pub fn new() -> Self {
        Self::default()
    }
    /// Also copy every descendant, keeping the tree's shape under the copy.
    pub fn subtree(mut self, yes: bool) -> Self {
        self.subtree = yes;
        self
    }
    /// Put the copy under `parent` (`None`: make it a root) instead of beside the source.
    pub fn parent(mut self, parent: Option<SessionId>) -> Self {
        self.parent = Some(parent);
        self
    }
    /// Name the top copy `name` instead of the source's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Options for [`Store::timeline`](crate::Store::timeline): build with [`TimelineOptions::new`].
#[derive(Clone, Debug)]
pub struct TimelineOptions {
    pub(crate) subtree: bool,
    pub(crate) cursor: Option<String>,
    pub(crate) limit: usize,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        Self {
            subtree: false,
            cursor: None,
            limit: crate::query::DEFAULT_LIMIT,
        }
    }
}

impl TimelineOptions {
    /// One session, from the start, [`crate::DEFAULT_LIMIT`] entries per page.
    pub fn new() -> Self {
        Self::default()
    }
    /// Interleave the whole subtree's events.
    pub fn subtree(mut self, yes: bool) -> Self {
        self.subtree = yes;
        self
    }
    /// Continue after this cursor (a page's `next_cursor`).
    pub fn cursor(mut self, c: impl Into<String>) -> Self {
        self.cursor = Some(c.into());
        self
    }
    /// At most `n` entries per page (1 to [`crate::MAX_LIMIT`]).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }
}

/// One entry of a timeline: an event, with the artifact or checkpoint it is about (when that
/// still exists). Read the artifact's content on demand with [`Store::read`](crate::Store::read).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    /// The event.
    pub event: Event,
    /// For `artifact_stored`: the artifact, unless it was deleted since.
    pub artifact: Option<Artifact>,
    /// For `checkpoint_created`: the checkpoint, unless it was deleted since.
    pub checkpoint: Option<Checkpoint>,
}

/// Who said a message in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The user: stored as `user_input`.
    User,
    /// The model: stored as `agent_output`.
    Assistant,
    /// System prompt or instructions: stored as `agent_output`.
    System,
    /// A tool's answer: stored as `tool_result`.
    Tool,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }

    /// The artifact kind a message of this role is stored as.
    pub fn artifact_kind(self) -> ArtifactKind {
        match self {
            Role::User => ArtifactKind::UserInput,
            Role::Assistant | Role::System => ArtifactKind::AgentOutput,
            Role::Tool => ArtifactKind::ToolResult,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "system" => Ok(Role::System),
            "tool" => Ok(Role::Tool),
            _ => Err(Error::invalid(
                "message role",
                format!("{s:?}; use user, assistant, system or tool"),
            )),
        }
    }
}

/// One message of a session's conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Position in the session's conversation, from 1.
    pub seq: u64,
    /// Who said it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// The caller's metadata.
    pub metadata: Map<String, Value>,
    /// The artifact that holds it.
    pub artifact_id: ArtifactId,
    /// When it was said.
    pub at: DateTime<Utc>,
}
