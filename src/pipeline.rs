//! [`Pipeline`]: step-by-step work that resumes from its last checkpoint. Built only on the
//! public API of [`Store`] (checkpoints and events), like any user code could be.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::{validate_label, Checkpoint, NewCheckpoint};
use crate::error::{Error, Result};
use crate::ids::{CheckpointId, SessionId};
use crate::store::Store;

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
