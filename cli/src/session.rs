//! `cairn session ...`: create, show, list, tree, lifecycle, metadata, events, delete.

use std::collections::HashMap;
use std::io::{self, Write};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use cairn::{
    DeleteReport, Event, ExportReport, ImportReport, MetadataUpdate, NewSession, Page, Session,
    SessionFilter, SessionId, SessionStatus,
};

use super::args::{self, remote_session_ref, session_ref};
use super::context::{CliResult, Ctx, Failure};
use super::output::{relative_time, Cell, Colour, Style, Table};
use super::remote::{Params, Remote};
use super::session_ops;
use super::session_view::{display_name, print_session, session_table};

/// Session verbs. A SESSION argument is a session id, or `key:KEY` for the session with that key.
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Create a session (a root, or a child with --parent) and print it.
    Create(CreateArgs),
    /// Print one session.
    Show {
        /// The session (id or key:KEY).
        session: String,
    },
    /// List sessions, oldest first, one page at a time.
    List(ListArgs),
    /// Print a session and all its descendants as a tree.
    Tree {
        /// The session at the top (id or key:KEY).
        session: String,
    },
    /// Pause an active session.
    Suspend {
        /// The session (id or key:KEY).
        session: String,
    },
    /// Resume a suspended session.
    Resume {
        /// The session (id or key:KEY).
        session: String,
    },
    /// Mark a session completed (terminal).
    Complete {
        /// The session (id or key:KEY).
        session: String,
    },
    /// Mark a session failed (terminal), with an optional reason.
    Fail(ReasonArgs),
    /// Cancel a session (terminal), with an optional reason.
    Cancel(ReasonArgs),
    /// Set or remove metadata keys of a session.
    Meta(MetaArgs),
    /// Print a session's event log, in order, one page at a time.
    Events(EventsArgs),
    /// Delete a session (with --recursive, its whole subtree) and its artifacts.
    Delete(DeleteArgs),
    /// Fork a session (at a checkpoint, or at its state now) into a new child session.
    Fork(session_ops::ForkArgs),
    /// Print a session's (or subtree's) events and artifacts in time order, one page at a time.
    Timeline(session_ops::TimelineArgs),
    /// Append a message to a session's conversation.
    Say(session_ops::SayArgs),
    /// Print a session's conversation, oldest first.
    History(session_ops::HistoryArgs),
    /// Statistics across sessions: counts by status, success and error rates, iteration and
    /// duration percentiles, token totals.
    Stats(session_ops::StatsArgs),
    /// Write a session (with --subtree, its whole subtree) into one bundle file: sessions,
    /// artifacts, events, checkpoints and each distinct content once, compressed.
    Export(ExportArgs),
    /// Import a bundle file, all or nothing: original ids by default, or new ids (a copy).
    Import(ImportArgs),
}

/// `session export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// The bundle file to write (replaced if it exists), or `-` for stdout.
    pub file: std::path::PathBuf,
    /// Also export every descendant session.
    #[arg(long)]
    pub subtree: bool,
}

/// `session import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle file to read, or `-` for stdin.
    pub file: std::path::PathBuf,
    /// Give every session, artifact and checkpoint a new id (to import a copy beside the original).
    #[arg(long)]
    pub new_ids: bool,
    /// Import the bundle's root session as a child of this session (id or key:KEY).
    #[arg(long, value_name = "SESSION")]
    pub parent: Option<String>,
    /// Drop the sessions' unique keys (a copy in the same store would conflict with them).
    #[arg(long)]
    pub drop_keys: bool,
}

/// `session create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// A unique key to find the session by (refer to it later as key:KEY).
    #[arg(long)]
    pub key: Option<String>,
    /// Make it a child of this session (id or key:KEY).
    #[arg(long, value_name = "SESSION")]
    pub parent: Option<String>,
    /// A tag (repeat for several).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Metadata KEY=VALUE; VALUE is JSON if it parses as JSON, else text (repeat for several).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

/// `session list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this status (repeat: any of several): active, suspended, completed, failed,
    /// cancelled, expired, timed_out.
    #[arg(long = "status", value_name = "STATUS")]
    pub statuses: Vec<String>,
    /// Only sessions with this tag (repeat: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only direct children of this session (id or key:KEY).
    #[arg(long, value_name = "SESSION", conflicts_with = "roots")]
    pub parent: Option<String>,
    /// Only root sessions.
    #[arg(long)]
    pub roots: bool,
    /// At most N sessions (default 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Continue after a previous page (its next_cursor).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// `session fail` and `session cancel`.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Why.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `session meta`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["set", "unset"])))]
pub struct MetaArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// KEY=VALUE to set; VALUE is JSON if it parses as JSON, else text (repeat for several).
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// KEY to remove (repeat for several).
    #[arg(long, value_name = "KEY")]
    pub unset: Vec<String>,
}

/// `session events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Only events after this sequence number (a previous page's next_cursor).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// At most N events (default 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `session delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Also delete every descendant session (required when it has children).
    #[arg(long)]
    pub recursive: bool,
}

/// Runs a session verb.
pub fn run(ctx: &Ctx, cmd: SessionCmd) -> CliResult {
    match cmd {
        SessionCmd::Create(a) => create(ctx, a),
        SessionCmd::Show { session } => show(ctx, &session),
        SessionCmd::List(a) => list(ctx, a),
        SessionCmd::Tree { session } => tree(ctx, &session),
        SessionCmd::Suspend { session } => {
            transition(ctx, &session, SessionStatus::Suspended, None)
        }
        SessionCmd::Resume { session } => transition(ctx, &session, SessionStatus::Active, None),
        SessionCmd::Complete { session } => {
            transition(ctx, &session, SessionStatus::Completed, None)
        }
        SessionCmd::Fail(a) => transition(ctx, &a.session, SessionStatus::Failed, a.reason),
        SessionCmd::Cancel(a) => transition(ctx, &a.session, SessionStatus::Cancelled, a.reason),
        SessionCmd::Meta(a) => meta(ctx, a),
        SessionCmd::Events(a) => events(ctx, a),
        SessionCmd::Delete(a) => delete(ctx, a),
        SessionCmd::Fork(a) => session_ops::fork(ctx, a),
        SessionCmd::Timeline(a) => session_ops::timeline(ctx, a),
        SessionCmd::Say(a) => session_ops::say(ctx, a),
        SessionCmd::History(a) => session_ops::history(ctx, a),
        SessionCmd::Stats(a) => session_ops::stats(ctx, a),
        SessionCmd::Export(a) => export(ctx, a),
        SessionCmd::Import(a) => import(ctx, a),
    }
}

fn create(ctx: &Ctx, a: CreateArgs) -> CliResult {
    // Validate everything the command line owns before touching (or creating) the store.
    let metadata = args::parse_meta(&a.meta, "--meta")?;
    if let Some(r) = ctx.remote() {
        let parent = a
            .parent
            .as_deref()
            .map(|p| remote_session_ref(r, p))
            .transpose()?;
        let body = json!({
            "name": a.name, "description": a.description, "key": a.key, "parent": parent,
            "tags": a.tags, "metadata": metadata,
        });
        let s: Session = r.send("POST", "/v1/sessions", &Params::new(), &body)?;
        return print_session(ctx, &s);
    }
    let store = ctx.store()?;
    let mut new = NewSession::new().metadata(metadata);
    if let Some(n) = a.name {
        new = new.name(n);
    }
    if let Some(d) = a.description {
        new = new.description(d);
    }
    if let Some(k) = a.key {
        new = new.key(k);
    }
    if let Some(p) = a.parent {
        new = new.parent(session_ref(store, &p)?);
    }
    for t in a.tags {
        new = new.tag(t);
    }
    let s = store.create_session(new)?;
    print_session(ctx, &s)
}

fn show(ctx: &Ctx, session: &str) -> CliResult {
    if let Some(r) = ctx.remote() {
        let id = remote_session_ref(r, session)?;
        let s: Session = r.get(&format!("/v1/sessions/{id}"), &Params::new())?;
        return print_session(ctx, &s);
    }
    let store = ctx.reading_store()?;
    let s = store.session(session_ref(store, session)?)?;
    print_session(ctx, &s)
}

fn transition(ctx: &Ctx, session: &str, to: SessionStatus, reason: Option<String>) -> CliResult {
    if let Some(r) = ctx.remote() {
        let id = remote_session_ref(r, session)?;
        let verb = match to {
            SessionStatus::Active => "resume",
            SessionStatus::Suspended => "suspend",
            SessionStatus::Completed => "complete",
            SessionStatus::Failed => "fail",
            _ => "cancel",
        };
        let s: Session = r.send(
            "POST",
            &format!("/v1/sessions/{id}/{verb}"),
            &Params::new(),
            &json!({ "reason": reason }),
        )?;
        return print_session(ctx, &s);
    }
    let store = ctx.existing_store()?;
    let id = session_ref(store, session)?;
    let s = store.transition(id, to, reason.as_deref())?;
    print_session(ctx, &s)
}

fn meta(ctx: &Ctx, a: MetaArgs) -> CliResult {
    let mut patch = args::parse_meta(&a.set, "--set")?;
    for k in a.unset {
        if patch.contains_key(&k) {
            return Err(Failure::invalid(
                "--unset",
                format!("{k:?} is also given to --set; set it or unset it, not both"),
            ));
        }
        patch.insert(k, Value::Null);
    }
    if let Some(r) = ctx.remote() {
        let id = remote_session_ref(r, &a.session)?;
        let s: Session = r.send(
            "PATCH",
            &format!("/v1/sessions/{id}"),
            &Params::new(),
            &json!({ "metadata": patch }),
        )?;
        return print_session(ctx, &s);
    }
    let store = ctx.existing_store()?;
    let id = session_ref(store, &a.session)?;
    let s = store.update_metadata(id, MetadataUpdate::Merge(patch))?;
    print_session(ctx, &s)
}

fn list(ctx: &Ctx, a: ListArgs) -> CliResult {
    let mut filter = SessionFilter::new();
    for s in &a.statuses {
        filter = filter.status(args::status(s)?);
    }
    for t in &a.tags {
        filter = filter.tag(t.clone());
    }
    if let Some(n) = a.limit {
        filter = filter.limit(n);
    }
    if let Some(c) = &a.cursor {
        let id = c.parse::<SessionId>().map_err(|_| {
            Failure::invalid(
                "cursor",
                format!(
                    "{c:?} is not a cursor from a previous page; pass next_cursor back unchanged"
                ),
            )
        })?;
        filter = filter.after(id);
    }
    if a.roots {
        filter = filter.roots();
    }
    let page = if let Some(r) = ctx.remote() {
        remote_list(r, &a)?
    } else {
        let store = ctx.reading_store()?;
        if let Some(p) = &a.parent {
            let pid = session_ref(store, p)?;
            store.session(pid)?; // a clear "not found" instead of an empty list
            filter = filter.parent(pid);
        }
        store.list_sessions(&filter)?
    };
    ctx.emit(&page, |w, style| {
        if page.items.is_empty() {
            return writeln!(w, "no sessions");
        }
        session_table(&page.items).write(w, style)?;
        if let Some(c) = &page.next_cursor {
            writeln!(w, "more sessions: add --cursor {c}")?;
        }
        Ok(())
    })
}

/// `session list` against a server (the flags were checked by the caller).
fn remote_list(r: &Remote, a: &ListArgs) -> CliResult<Page<Session>> {
    let mut q = Params::new()
        .add("limit", a.limit.unwrap_or(cairn::DEFAULT_LIMIT))
        .opt("cursor", a.cursor.as_deref())
        .flag("roots", a.roots);
    for st in &a.statuses {
        q = q.add("status", st);
    }
    for t in &a.tags {
        q = q.add("tag", t);
    }
    if let Some(p) = &a.parent {
        let pid = remote_session_ref(r, p)?;
        let _: Session = r.get(&format!("/v1/sessions/{pid}"), &Params::new())?;
        q = q.add("parent", pid);
    }
    Ok(r.get("/v1/sessions", &q)?)
}

/// Deepest tree printed as nested JSON: serializing (and dropping) nested values recurses.
const MAX_JSON_DEPTH: usize = 1000;

fn tree(ctx: &Ctx, session: &str) -> CliResult {
    let (root, all) = if let Some(r) = ctx.remote() {
        let root = remote_session_ref(r, session)?;
        let all: Vec<Session> = r.get(&format!("/v1/sessions/{root}/tree"), &Params::new())?;
        (root, all)
    } else {
        let store = ctx.reading_store()?;
        let root = session_ref(store, session)?;
        // Breadth first: every parent comes before its children.
        (root, store.subtree(root)?)
    };
    let mut kids: HashMap<SessionId, Vec<&Session>> = HashMap::new();
    let mut depth: HashMap<SessionId, usize> = HashMap::new();
    depth.insert(root, 0);
    for s in &all {
        if s.id == root {
            continue;
        }
        if let Some(p) = s.parent_id {
            kids.entry(p).or_default().push(s);
            let d = depth.get(&p).copied().unwrap_or(0) + 1;
            depth.insert(s.id, d);
        }
    }
    let Some(top) = all.iter().find(|s| s.id == root) else {
        return Err(cairn::Error::SessionNotFound {
            id: root.to_string(),
        }
        .into());
    };
    if ctx.json {
        let deepest = depth.values().copied().max().unwrap_or(0);
        if deepest > MAX_JSON_DEPTH {
            return Err(Failure {
                code: "limit_exceeded".into(),
                message: format!(
                    "the tree is {deepest} levels deep; nested JSON is printed up to {MAX_JSON_DEPTH} levels: \
                     walk it with `cairn session list --parent ID` instead"
                ),
                exit: 5,
            });
        }
        let v = tree_json(&all, &kids)?;
        return ctx.emit(&v, |_, _| Ok(()));
    }
    ctx.emit(&(), |w, style| write_tree(w, style, top, &kids))
}

/// Nested JSON with `children` arrays, built bottom up (no recursion over the tree's depth).
fn tree_json(bfs: &[Session], kids: &HashMap<SessionId, Vec<&Session>>) -> CliResult<Value> {
    let mut built: HashMap<SessionId, Value> = HashMap::new();
    for s in bfs.iter().rev() {
        let mut v = serde_json::to_value(s).map_err(|e| Failure {
            code: "other".into(),
            message: format!("cannot encode session {}: {e}", s.id),
            exit: 1,
        })?;
        let children: Vec<Value> = kids
            .get(&s.id)
            .map(|cs| cs.iter().filter_map(|c| built.remove(&c.id)).collect())
            .unwrap_or_default();
        if let Value::Object(m) = &mut v {
            m.insert("children".into(), Value::Array(children));
        }
        built.insert(s.id, v);
    }
    bfs.first()
        .and_then(|s| built.remove(&s.id))
        .ok_or_else(|| Failure {
            code: "other".into(),
            message: "empty session tree".into(),
            exit: 1,
        })
}

/// An indented tree for people, depth first, without recursion.
fn write_tree(
    w: &mut dyn Write,
    style: &Style,
    top: &Session,
    kids: &HashMap<SessionId, Vec<&Session>>,
) -> io::Result<()> {
    // (session, prefix for its line, whether it is its parent's last child, whether it is the top)
    let mut stack: Vec<(&Session, String, bool, bool)> = vec![(top, String::new(), true, true)];
    while let Some((s, prefix, last, is_top)) = stack.pop() {
        let branch = if is_top {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let mut line = format!(
            "{prefix}{branch}{} {} {}",
            style.paint(Colour::Bold, &display_name(s)),
            style.paint(Style::status_colour(s.status), &format!("[{}]", s.status)),
            style.paint(Colour::Dim, &s.id.to_string()),
        );
        if let Some(r) = &s.reason {
            line.push_str(&format!(" ({r})"));
        }
        writeln!(w, "{line}")?;
        let child_prefix = if is_top {
            String::new()
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}│  ")
        };
        if let Some(cs) = kids.get(&s.id) {
            for (i, c) in cs.iter().enumerate().rev() {
                stack.push((c, child_prefix.clone(), i + 1 == cs.len(), false));
            }
        }
    }
    Ok(())
}

fn events(ctx: &Ctx, a: EventsArgs) -> CliResult {
    let after = match &a.after {
        None => None,
        Some(c) => Some(c.trim().parse::<u64>().map_err(|_| {
            Failure::invalid(
                "--after",
                format!("{c:?} is not an event cursor; pass a previous page's next_cursor (a sequence number)"),
            )
        })?),
    };
    let limit = a.limit.unwrap_or(cairn::DEFAULT_LIMIT);
    if limit == 0 || limit > cairn::MAX_LIMIT {
        return Err(Failure::invalid(
            "--limit",
            format!("{limit}; use 1 to {}", cairn::MAX_LIMIT),
        ));
    }
    let page: Page<Event> = if let Some(r) = ctx.remote() {
        let id = remote_session_ref(r, &a.session)?;
        let q = Params::new().opt("after", after).add("limit", limit);
        r.get(&format!("/v1/sessions/{id}/events"), &q)?
    } else {
        let store = ctx.existing_store()?;
        let id = session_ref(store, &a.session)?;
        store.events(id, after, limit)?
    };
    ctx.emit(&page, |w, style| {
        if page.items.is_empty() {
            return writeln!(w, "no events");
        }
        let mut t = Table::new(&[">SEQ", "WHEN", "TYPE", "DETAILS"]);
        for e in &page.items {
            let mut details = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut details {
                m.remove("type");
            }
            t.row(vec![
                e.seq.to_string().into(),
                relative_time(e.at).into(),
                Cell::painted(e.kind.type_name(), Colour::Cyan),
                super::output::ellipsize(&details.to_string(), 100).into(),
            ]);
        }
        t.write(w, style)?;
        if let Some(c) = &page.next_cursor {
            writeln!(w, "more events: add --after {c}")?;
        }
        Ok(())
    })
}

fn delete(ctx: &Ctx, a: DeleteArgs) -> CliResult {
    let report: DeleteReport = if let Some(r) = ctx.remote() {
        let id = remote_session_ref(r, &a.session)?;
        r.delete(
            &format!("/v1/sessions/{id}"),
            &Params::new().flag("recursive", a.recursive),
        )?
    } else {
        let store = ctx.existing_store()?;
        let id = session_ref(store, &a.session)?;
        store.delete_session(id, a.recursive)?
    };
    ctx.emit(&report, |w, _| {
        writeln!(
            w,
            "deleted {} session(s) and {} artifact(s); run `cairn gc` to reclaim unreferenced content",
            report.sessions, report.artifacts
        )
    })
}

fn export(ctx: &Ctx, a: ExportArgs) -> CliResult {
    if let Some(r) = ctx.remote() {
        return remote_export(ctx, r, a);
    }
    let store = ctx.existing_store()?;
    let id = session_ref(store, &a.session)?;
    if a.file.as_os_str() == "-" {
        // The bundle goes to stdout, so the report goes to stderr.
        let stdout = io::stdout();
        let w = io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let r = store.export_session(id, a.subtree, w)?;
        super::context::note(&format!(
            "exported {} session(s), {} artifact(s), {} blob(s): {} bytes",
            r.sessions, r.artifacts, r.blobs, r.bundle_bytes
        ));
        return Ok(());
    }
    let spin = super::progress::Spinner::start("exporting", ctx.progress_enabled());
    let r = store.export_session_to_path(id, a.subtree, &a.file);
    drop(spin);
    print_export(ctx, &r?, &a.file)
}

fn print_export(ctx: &Ctx, r: &ExportReport, file: &std::path::Path) -> CliResult {
    ctx.emit(r, |w, _| {
        writeln!(
            w,
            "exported {} session(s), {} artifact(s), {} event(s), {} blob(s) ({}) to {} ({})",
            r.sessions,
            r.artifacts,
            r.events,
            r.blobs,
            super::output::human_size(r.content_bytes),
            file.display(),
            super::output::human_size(r.bundle_bytes)
        )
    })
}

/// `session export` from a server: the bundle streams down into a temporary file, is checked
/// whole (`cairn::bundle::inspect`: every frame, hash and the trailer), and only then renamed
/// into place; the report is what the check counted. To stdout it streams through, checked on
/// the way by a second reader of the same bytes.
fn remote_export(ctx: &Ctx, r: &Remote, a: ExportArgs) -> CliResult {
    let id = remote_session_ref(r, &a.session)?;
    let q = Params::new().flag("subtree", a.subtree);
    let mut body = r.download(&format!("/v1/sessions/{id}/export"), &q)?;
    let broken = |e: io::Error| Failure {
        code: "server_unreachable".into(),
        message: format!("the bundle download from {} failed: {e}", r.url()),
        exit: 1,
    };
    if a.file.as_os_str() == "-" {
        // Streamed to stdout and, beside it, through the bundle check on a thread, so the note
        // says what the check counted (as locally) and a broken bundle fails.
        let (check_in, mut check_out) = io::pipe().map_err(|e| Failure {
            code: "io".into(),
            message: format!("cannot make a pipe for the bundle check: {e}"),
            exit: 1,
        })?;
        let checker =
            std::thread::spawn(move || cairn::bundle::inspect(io::BufReader::new(check_in)));
        let stdout = io::stdout();
        let mut w = io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let mut buf = vec![0u8; 64 << 10];
        let mut checking = true;
        let streamed = loop {
            let n = match io::Read::read(&mut body, &mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(broken(e)),
            };
            if let Err(e) = w.write_all(&buf[..n]) {
                break Err(Failure::stdout(e));
            }
            // The checker stops reading once it has found a problem; its verdict says which.
            if checking && check_out.write_all(&buf[..n]).is_err() {
                checking = false;
            }
        };
        let flushed = streamed.and_then(|()| w.flush().map_err(Failure::stdout));
        drop(check_out);
        let verdict = checker.join();
        flushed?;
        let s = match verdict {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Failure {
                    code: "integrity".into(),
                    message: format!("the bundle written to stdout failed its check: {e}"),
                    exit: 1,
                })
            }
            Err(_) => {
                return Err(Failure {
                    code: "other".into(),
                    message: "the bundle check stopped unexpectedly".into(),
                    exit: 1,
                })
            }
        };
        super::context::note(&format!(
            "exported {} session(s), {} artifact(s), {} blob(s): {} bytes",
            s.sessions.len(),
            s.artifacts,
            s.blobs,
            s.bundle_bytes
        ));
        return Ok(());
    }
    let spin = super::progress::Spinner::start("exporting", ctx.progress_enabled());
    let checked = super::atomic::write_file(&a.file, |w, tmp| {
        io::copy(&mut body, w).map_err(broken)?;
        w.flush().map_err(|e| Failure::io(tmp, e))?;
        let f = std::fs::File::open(tmp).map_err(|e| Failure::io(tmp, e))?;
        Ok(cairn::bundle::inspect(io::BufReader::new(f))?)
    });
    drop(spin);
    let s = checked?;
    let report = ExportReport {
        root: id,
        sessions: s.sessions.len() as u64,
        artifacts: s.artifacts,
        events: s.events,
        extensions: s.extensions,
        blobs: s.blobs,
        content_bytes: s.content_bytes,
        bundle_bytes: s.bundle_bytes,
        hash: s.hash,
    };
    print_export(ctx, &report, &a.file)
}

fn import(ctx: &Ctx, a: ImportArgs) -> CliResult {
    if let Some(r) = ctx.remote() {
        let parent = a
            .parent
            .as_deref()
            .map(|p| remote_session_ref(r, p))
            .transpose()?;
        let q = Params::new()
            .opt("parent", parent)
            .flag("new_ids", a.new_ids)
            .flag("drop_keys", a.drop_keys);
        let spin = super::progress::Spinner::start("importing", ctx.progress_enabled());
        let report: ImportReport = if a.file.as_os_str() == "-" {
            let mut stdin = io::stdin().lock();
            r.upload("POST", "/v1/import", &q, &mut stdin, None, None)?
        } else {
            let mut f = std::fs::File::open(&a.file).map_err(|e| Failure::input(&a.file, e))?;
            let len = f.metadata().map_err(|e| Failure::io(&a.file, e))?.len();
            r.upload("POST", "/v1/import", &q, &mut f, Some(len), None)?
        };
        drop(spin);
        return print_import(ctx, &report);
    }
    let store = ctx.store()?;
    let mut opts = cairn::ImportOptions::new()
        .new_ids(a.new_ids)
        .drop_keys(a.drop_keys);
    if let Some(p) = &a.parent {
        opts = opts.parent(session_ref(store, p)?);
    }
    let spin = super::progress::Spinner::start("importing", ctx.progress_enabled());
    let r = if a.file.as_os_str() == "-" {
        store.import_bundle(io::stdin(), &opts)?
    } else {
        if let Err(e) = std::fs::metadata(&a.file) {
            return Err(Failure::input(&a.file, e));
        }
        store.import_bundle_from_path(&a.file, &opts)?
    };
    drop(spin);
    print_import(ctx, &r)
}

fn print_import(ctx: &Ctx, r: &ImportReport) -> CliResult {
    ctx.emit(r, |w, _| {
        writeln!(
            w,
            "imported {} session(s), {} artifact(s), {} event(s), {} blob(s) ({} new); root {}",
            r.sessions.len(),
            r.artifacts,
            r.events,
            r.blobs,
            r.blobs_new,
            r.root
        )
    })
}
