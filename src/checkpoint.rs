//! Checkpoints, lineage, timelines and conversation history: the types, and the [`Pipeline`]
//! helper that resumes step-by-step work from the last checkpoint.
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
use crate::store::Store;

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
    /// How many artifact versions it captured (see [`Store::checkpoint_artifacts`]).
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

/// What [`Store::restore`] did.
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
    /// [`Store::fork`]: a child of its source, at a checkpoint or at the source's state then.
    Fork,
    /// [`Store::copy_session`].
    Copy,
    /// [`Store::merge_sessions`]: one record per source.
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

/// Options for [`Store::copy_session`]: build with [`CopyOptions::new`].
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

/// Options for [`Store::timeline`]: build with [`TimelineOptions::new`].
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
/// still exists). Read the artifact's content on demand with [`Store::read`].
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

/// The context a pipeline step runs in.
pub struct StepContext<'a> {
    store: &'a Store,
    session: SessionId,
    pipeline: &'a str,
    step: &'a str,
    input: &'a Value,
}

impl StepContext<'_> {
    /// The store.
    pub fn store(&self) -> &Store {
        self.store
    }
    /// The session the pipeline runs in.
    pub fn session(&self) -> SessionId {
        self.session
    }
    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        self.pipeline
    }
    /// This step's name.
    pub fn step(&self) -> &str {
        self.step
    }
    /// The state the previous step returned (for the first step, the pipeline's initial state).
    pub fn input(&self) -> &Value {
        self.input
    }
}

type StepFn<'s> = Box<dyn FnMut(&StepContext<'_>) -> Result<Value> + 's>;

/// Step-by-step work that survives being killed: after each step succeeds, its output is saved
/// in a checkpoint labelled `<pipeline>/<step>`. Running the pipeline again skips the leading
/// steps whose checkpoint exists and hands the next step the saved output of the last one.
///
/// Once a step runs, every later step runs too (their older checkpoints would be stale).
/// A failed step saves nothing, so the next run retries it. Before each step runs, the pipeline
/// appends a `pipeline.step_started` event to the session (an audit trail of executions).
///
/// ```
/// use cairn::{NewSession, Pipeline, Store};
/// use serde_json::json;
///
/// # fn main() -> cairn::Result<()> {
/// let store = Store::memory();
/// let s = store.create_session(NewSession::new().name("etl"))?;
/// let run = Pipeline::new(&store, s.id, "etl")
///     .step("double", |ctx| Ok(json!(ctx.input().as_i64().unwrap_or(0) * 2)))
///     .step("plus_one", |ctx| Ok(json!(ctx.input().as_i64().unwrap_or(0) + 1)))
///     .run(json!(20))?;
/// assert_eq!(run.output, json!(41));
/// assert_eq!(run.executed, ["double", "plus_one"]);
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<'s> {
    store: &'s Store,
    session: SessionId,
    name: String,
    steps: Vec<(String, StepFn<'s>)>,
}

/// What a pipeline run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineRun {
    /// Steps skipped because their checkpoint existed, in order.
    pub skipped: Vec<String>,
    /// Steps run now, in order.
    pub executed: Vec<String>,
    /// The checkpoint of every step (found or created), in step order.
    pub checkpoints: Vec<CheckpointId>,
    /// The last step's output (the initial state if there are no steps).
    pub output: Value,
}

impl<'s> Pipeline<'s> {
    /// A pipeline named `name` (part of every checkpoint label) in `session`.
    pub fn new(store: &'s Store, session: SessionId, name: impl Into<String>) -> Self {
        Self {
            store,
            session,
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Adds a step: it gets the previous step's output and returns its own.
    pub fn step(
        mut self,
        name: impl Into<String>,
        f: impl FnMut(&StepContext<'_>) -> Result<Value> + 's,
    ) -> Self {
        self.steps.push((name.into(), Box::new(f)));
        self
    }

    /// The checkpoint label of `step`.
    pub fn label(&self, step: &str) -> String {
        format!("{}/{}", self.name, step)
    }

    fn check(&self) -> Result<()> {
        if self.name.is_empty() || self.name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "pipeline name",
                format!("{:?}: give a non-empty printable name", self.name),
            ));
        }
        for (i, (step, _)) in self.steps.iter().enumerate() {
            validate_label(&self.label(step))?;
            if step.is_empty() {
                return Err(Error::invalid("pipeline step name", "a step name is empty"));
            }
            if self.steps[..i].iter().any(|(s, _)| s == step) {
                return Err(Error::invalid(
                    "pipeline step name",
                    format!("{step:?} appears twice; step names must be unique"),
                ));
            }
        }
        Ok(())
    }

    /// Runs the steps not yet done, in order, starting from `initial` (used only when the first
    /// step runs). A step's error stops the run and is returned naming the step.
    pub fn run(&mut self, initial: Value) -> Result<PipelineRun> {
        self.check()?;
        let store = self.store;
        let mut run = PipelineRun {
            skipped: Vec::new(),
            executed: Vec::new(),
            checkpoints: Vec::new(),
            output: initial,
        };
        let mut resuming = true;
        for i in 0..self.steps.len() {
            let label = self.label(&self.steps[i].0);
            if resuming {
                if let Some(cp) = store.latest_checkpoint(self.session, Some(&label))? {
                    run.output = self.saved_output(&cp)?;
                    run.skipped.push(self.steps[i].0.clone());
                    run.checkpoints.push(cp.id);
                    continue;
                }
                resuming = false;
            }
            let (step, f) = &mut self.steps[i];
            store.append_event(
                self.session,
                "pipeline.step_started",
                serde_json::json!({ "pipeline": self.name, "step": step }),
            )?;
            let ctx = StepContext {
                store,
                session: self.session,
                pipeline: &self.name,
                step,
                input: &run.output,
            };
            let out = f(&ctx).map_err(|e| Error::Other {
                message: format!("pipeline {:?}: step {step:?} failed: {e}", self.name),
            })?;
            let step = step.clone();
            let cp = store
                .create_checkpoint(self.session, self.output_checkpoint(&label, &step, &out))?;
            run.executed.push(step);
            run.checkpoints.push(cp.id);
            run.output = out;
        }
        Ok(run)
    }

    /// Small outputs live in the checkpoint's JSON state; large ones in its binary state.
    fn output_checkpoint(&self, label: &str, step: &str, out: &Value) -> NewCheckpoint {
        let json = serde_json::to_vec(out).unwrap_or_default();
        let max = self.store.config().limits.max_metadata_bytes;
        let base = NewCheckpoint::new(label);
        if json.len() + 256 + self.name.len() + step.len() <= max {
            base.state(serde_json::json!({
                "pipeline": self.name, "step": step, "output": out
            }))
        } else {
            base.state(serde_json::json!({
                "pipeline": self.name, "step": step, "output_in_state_bytes": true
            }))
            .state_bytes(json)
        }
    }

    fn saved_output(&self, cp: &Checkpoint) -> Result<Value> {
        if cp.state.get("output_in_state_bytes") == Some(&Value::Bool(true)) {
            let bytes =
                self.store
                    .checkpoint_state_bytes(cp.id)?
                    .ok_or_else(|| Error::Corrupt {
                        what: format!(
                        "checkpoint {} says its output is in its binary state, which it has not",
                        cp.id
                    ),
                    })?;
            return serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                what: format!(
                    "checkpoint {} binary state is not the JSON output: {e}",
                    cp.id
                ),
            });
        }
        cp.state.get("output").cloned().ok_or_else(|| Error::InvalidInput {
            what: "pipeline checkpoint".into(),
            message: format!(
                "checkpoint {} labelled {:?} has no pipeline output in its state; it was not written \
                 by this pipeline: delete it or rename the pipeline",
                cp.id, cp.label
            ),
        })
    }
}
