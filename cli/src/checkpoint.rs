//! `cairn checkpoint ...`: create, list, show, read the state of, restore and delete checkpoints.
//!
//! The state given to `create --state FILE|-` is stored as the checkpoint's JSON state when the
//! bytes are a JSON document that fits the store's `max_metadata_bytes` limit, and as its binary
//! state (content addressed like any artifact, deduplicated and compressed) otherwise, or always
//! with `--binary`. `checkpoint state ID` prints back exactly what was stored.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use cairn::{Artifact, Checkpoint, NewCheckpoint, Page, RestoreReport};

use super::args::{self, remote_session_ref, session_ref};
use super::artifact::artifact_table;
use super::context::{CliResult, Ctx, Failure};
use super::output::{ellipsize, human_size, relative_time, Cell, Colour, Table};
use super::remote::Params;

/// Checkpoint verbs. A SESSION argument is a session id, or `key:KEY` for the session with that key.
#[derive(Debug, Subcommand)]
pub enum CheckpointCmd {
    /// Record a checkpoint of a session: a label, an optional state, and the artifact versions
    /// it holds now (no content is copied).
    Create(CreateArgs),
    /// List a session's checkpoints, oldest first, one page at a time.
    List(ListArgs),
    /// Print one checkpoint and the artifact versions it captured.
    Show {
        /// The checkpoint id.
        id: String,
    },
    /// Print a checkpoint's state as stored: its binary state if it has one, else its JSON state.
    State(StateArgs),
    /// Put the session back to a checkpoint's artifact versions (a `before-restore` checkpoint
    /// of the current state is taken first: restore that one to undo).
    Restore {
        /// The checkpoint id.
        id: String,
    },
    /// Delete a checkpoint (content only it referenced becomes garbage for `cairn gc`).
    Delete {
        /// The checkpoint id.
        id: String,
    },
}

/// `checkpoint create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// The label, e.g. `after-transform` (several checkpoints may share one).
    #[arg(long)]
    pub label: String,
    /// The state: a file, or `-` for stdin. A JSON document becomes the JSON state; anything
    /// else (or JSON larger than the metadata limit) becomes the binary state.
    #[arg(long, value_name = "FILE|-")]
    pub state: Option<PathBuf>,
    /// Store the state as binary state even when it is JSON.
    #[arg(long, requires = "state")]
    pub binary: bool,
}

/// `checkpoint list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// At most N checkpoints (default 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Continue after a previous page (its next_cursor).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// `checkpoint state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The checkpoint id.
    pub id: String,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs a checkpoint verb.
pub fn run(ctx: &Ctx, cmd: CheckpointCmd) -> CliResult {
    match cmd {
        CheckpointCmd::Create(a) => create(ctx, a),
        CheckpointCmd::List(a) => list(ctx, a),
        CheckpointCmd::Show { id } => show(ctx, &id),
        CheckpointCmd::State(a) => state(ctx, a),
        CheckpointCmd::Restore { id } => restore(ctx, &id),
        CheckpointCmd::Delete { id } => delete(ctx, &id),
    }
}

fn create(ctx: &Ctx, a: CreateArgs) -> CliResult {
    cairn::validate_label(&a.label)?;
    if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        // The server's limits are its own; these bound what is read and sent from here.
        let limits = cairn::Config::default().limits;
        let state = match &a.state {
            None => Value::Null,
            Some(path) => {
                let bytes = read_state(path, limits.max_artifact_size)?;
                let as_json = if a.binary || bytes.len() > limits.max_metadata_bytes {
                    None
                } else {
                    serde_json::from_slice::<Value>(&bytes).ok()
                };
                match as_json {
                    Some(v) => v,
                    None => return remote_binary_state(ctx, sid, &a.label, bytes),
                }
            }
        };
        let cp: Checkpoint = r.send(
            "POST",
            &format!("/v1/sessions/{sid}/checkpoints"),
            &Params::new(),
            &serde_json::json!({ "label": a.label, "state": state }),
        )?;
        return print_checkpoint(ctx, &cp, None);
    }
    let store = ctx.existing_store()?;
    let sid = session_ref(store, &a.session)?;
    let mut new = NewCheckpoint::new(a.label);
    if let Some(path) = &a.state {
        let max = store.config().limits.max_artifact_size;
        let bytes = read_state(path, max)?;
        let json_max = store.config().limits.max_metadata_bytes;
        let as_json = if a.binary || bytes.len() > json_max {
            None
        } else {
            serde_json::from_slice::<Value>(&bytes).ok()
        };
        new = match as_json {
            Some(v) => new.state(v),
            None => new.state_bytes(bytes),
        };
    }
    let cp = store.create_checkpoint(sid, new)?;
    print_checkpoint(ctx, &cp, None)
}

/// A binary checkpoint state sent to a server: `PUT /v1/sessions/{id}/checkpoints?label=L`
/// with the bytes as the body.
fn remote_binary_state(ctx: &Ctx, sid: cairn::SessionId, label: &str, bytes: Vec<u8>) -> CliResult {
    let Some(r) = ctx.remote() else {
        return Err(Failure::usage("no server"));
    };
    let len = bytes.len() as u64;
    let mut body: &[u8] = &bytes;
    let cp: Checkpoint = r.upload(
        "PUT",
        &format!("/v1/sessions/{sid}/checkpoints"),
        &Params::new().add("label", label),
        &mut body,
        Some(len),
        None,
    )?;
    print_checkpoint(ctx, &cp, None)
}

/// The state from a file or stdin, at most `max` bytes.
fn read_state(path: &Path, max: u64) -> CliResult<Vec<u8>> {
    if path == Path::new("-") {
        if io::stdin().is_terminal() {
            super::context::note("reading the checkpoint's state from stdin; end it with Ctrl-D");
        }
        return args::read_stdin_bounded(max, "the checkpoint state");
    }
    let f = File::open(path).map_err(|e| Failure::input(path, e))?;
    let mut buf = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Failure::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(Failure {
            code: "limit_exceeded".into(),
            message: format!(
                "{}: the state is larger than the store's max_artifact_size ({max} bytes)",
                path.display()
            ),
            exit: 5,
        });
    }
    Ok(buf)
}

fn list(ctx: &Ctx, a: ListArgs) -> CliResult {
    let limit = a.limit.unwrap_or(cairn::DEFAULT_LIMIT);
    if limit == 0 || limit > cairn::MAX_LIMIT {
        return Err(Failure::invalid(
            "--limit",
            format!("{limit}; use 1 to {}", cairn::MAX_LIMIT),
        ));
    }
    let after = match &a.cursor {
        None => None,
        Some(c) => Some(args::checkpoint_id(c).map_err(|_| {
            Failure::invalid(
                "cursor",
                format!(
                    "{c:?} is not a cursor from a previous page; pass next_cursor back unchanged"
                ),
            )
        })?),
    };
    let page: Page<Checkpoint> = if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        let q = Params::new().add("limit", limit).opt("cursor", after);
        r.get(&format!("/v1/sessions/{sid}/checkpoints"), &q)?
    } else {
        let store = ctx.existing_store()?;
        let sid = session_ref(store, &a.session)?;
        store.checkpoints_page(sid, after, limit)?
    };
    ctx.emit(&page, |w, style| {
        if page.items.is_empty() {
            return writeln!(w, "no checkpoints");
        }
        let mut t = Table::new(&["ID", "LABEL", ">ARTIFACTS", ">EVENT", "STATE", "CREATED"]);
        for c in &page.items {
            t.row(vec![
                Cell::painted(c.id.to_string(), Colour::Cyan),
                c.label.clone().into(),
                c.artifact_count.to_string().into(),
                c.event_seq.to_string().into(),
                state_summary(c).into(),
                relative_time(c.created_at).into(),
            ]);
        }
        t.write(w, style)?;
        if let Some(c) = &page.next_cursor {
            writeln!(w, "more checkpoints: add --cursor {c}")?;
        }
        Ok(())
    })
}

/// A checkpoint with the artifact versions it captured (the JSON of `checkpoint show`).
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    checkpoint: &'a Checkpoint,
    artifacts: &'a [Artifact],
}

fn show(ctx: &Ctx, id: &str) -> CliResult {
    let id = args::checkpoint_id(id)?;
    let (cp, arts): (Checkpoint, Vec<Artifact>) = if let Some(r) = ctx.remote() {
        (
            r.get(&format!("/v1/checkpoints/{id}"), &Params::new())?,
            r.get(&format!("/v1/checkpoints/{id}/artifacts"), &Params::new())?,
        )
    } else {
        let store = ctx.existing_store()?;
        (store.checkpoint(id)?, store.checkpoint_artifacts(id)?)
    };
    print_checkpoint(ctx, &cp, Some(&arts))
}

fn state(ctx: &Ctx, a: StateArgs) -> CliResult {
    let id = args::checkpoint_id(&a.id)?;
    let (cp, blob): (Checkpoint, Option<Vec<u8>>) = if let Some(r) = ctx.remote() {
        let cp: Checkpoint = r.get(&format!("/v1/checkpoints/{id}"), &Params::new())?;
        let blob = match cp.state_blob {
            None => None,
            Some(b) => {
                let body = r.download(&format!("/v1/checkpoints/{id}/state"), &Params::new())?;
                let mut v = Vec::new();
                super::artifact::Verified::new(body, b.hash, b.size)
                    .read_to_end(&mut v)
                    .map_err(|e| Failure {
                        code: "integrity".into(),
                        message: format!("reading the state of checkpoint {id}: {e}"),
                        exit: 1,
                    })?;
                Some(v)
            }
        };
        (cp, blob)
    } else {
        let store = ctx.existing_store()?;
        (store.checkpoint(id)?, store.checkpoint_state_bytes(id)?)
    };
    let bytes = match blob {
        Some(b) => b,
        None => {
            let mut v = serde_json::to_vec_pretty(&cp.state).map_err(|e| Failure {
                code: "other".into(),
                message: format!("cannot encode the state of checkpoint {id}: {e}"),
                exit: 1,
            })?;
            v.push(b'\n');
            v
        }
    };
    match a.output.as_deref() {
        Some(p) if p != Path::new("-") => {
            // Atomic and durable: a failure never leaves half a file under the name asked for,
            // and no other file in the folder is touched.
            super::atomic::write_bytes(p, &bytes)?;
            if !ctx.json {
                super::context::note(&format!(
                    "wrote {} to {}",
                    human_size(bytes.len() as u64),
                    p.display()
                ));
            }
            if ctx.json {
                let v = serde_json::json!({"checkpoint": id, "path": p, "bytes": bytes.len()});
                return ctx.emit(&v, |_, _| Ok(()));
            }
            Ok(())
        }
        _ if ctx.json && cp.state_blob.is_some() => Err(Failure::invalid(
            "output",
            format!(
                "checkpoint {id} has a binary state, which is not one JSON value: \
                 write it to a file with --output FILE, or drop --json"
            ),
        )),
        _ => {
            // The state itself is the output: the JSON state, or the caller's own bytes.
            let mut out = io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .map_err(Failure::stdout)
        }
    }
}

fn restore(ctx: &Ctx, id: &str) -> CliResult {
    let id = args::checkpoint_id(id)?;
    let r: RestoreReport = match ctx.remote() {
        Some(r) => r.send(
            "POST",
            &format!("/v1/checkpoints/{id}/restore"),
            &Params::new(),
            &serde_json::json!({}),
        )?,
        None => ctx.existing_store()?.restore_checkpoint(id)?,
    };
    ctx.emit(&r, |w, style| {
        writeln!(
            w,
            "restored checkpoint {}: removed {} artifact(s), reinstated {} artifact(s)",
            style.paint(Colour::Cyan, &r.checkpoint.to_string()),
            r.removed.len(),
            r.reinstated.len()
        )?;
        writeln!(
            w,
            "undo with `cairn checkpoint restore {}` (the state just before this restore)",
            r.backup
        )
    })
}

fn delete(ctx: &Ctx, id: &str) -> CliResult {
    let id = args::checkpoint_id(id)?;
    let cp: Checkpoint = match ctx.remote() {
        Some(r) => r.delete(&format!("/v1/checkpoints/{id}"), &Params::new())?,
        None => ctx.existing_store()?.delete_checkpoint(id)?,
    };
    ctx.emit(&cp, |w, _| {
        writeln!(
            w,
            "deleted checkpoint {} ({}); run `cairn gc` to reclaim content only it referenced",
            cp.id, cp.label
        )
    })
}

/// `json` (abbreviated), `N bytes binary`, both, or `-`.
fn state_summary(c: &Checkpoint) -> String {
    let mut parts = Vec::new();
    if !c.state.is_null() {
        parts.push(ellipsize(&c.state.to_string(), 40));
    }
    if let Some(b) = &c.state_blob {
        parts.push(format!("{} binary", human_size(b.size)));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" + ")
    }
}

/// Prints one checkpoint (with its artifacts when given): JSON, or fields and a table for people.
fn print_checkpoint(ctx: &Ctx, c: &Checkpoint, arts: Option<&[Artifact]>) -> CliResult {
    let human = |w: &mut dyn Write, style: &super::output::Style| -> io::Result<()> {
        let rows: Vec<(&str, String)> = vec![
            ("id", style.paint(Colour::Cyan, &c.id.to_string())),
            ("session", c.session_id.to_string()),
            ("label", c.label.clone()),
            (
                "state",
                if c.state.is_null() {
                    "-".into()
                } else {
                    ellipsize(&c.state.to_string(), 200)
                },
            ),
            (
                "binary state",
                c.state_blob
                    .map(|b| {
                        format!(
                            "{} ({} bytes, {})",
                            human_size(b.size),
                            b.size,
                            b.hash.short()
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
            ),
            ("artifacts", c.artifact_count.to_string()),
            ("event", format!("#{}", c.event_seq)),
            (
                "created",
                format!(
                    "{} ({})",
                    c.created_at.to_rfc3339(),
                    relative_time(c.created_at)
                ),
            ),
        ];
        for (k, v) in rows {
            writeln!(w, "{} {v}", style.paint(Colour::Bold, &format!("{k:<13}")))?;
        }
        if let Some(arts) = arts {
            if !arts.is_empty() {
                writeln!(w)?;
                artifact_table(arts).write(w, style)?;
            }
        }
        Ok(())
    };
    match arts {
        Some(arts) => ctx.emit(
            &Shown {
                checkpoint: c,
                artifacts: arts,
            },
            human,
        ),
        None => ctx.emit(c, human),
    }
}
