//! `cairn session fork | timeline | say | history | stats`: the session verbs for checkpointing
//! pipelines, conversations and statistics (the lifecycle verbs are in `session.rs`).

use std::io::{self, IsTerminal, Write};

use clap::Args;
use serde_json::{json, Value};

use cairn::{
    Message, NewSession, Page, Session, SessionFilter, SessionStats, TimelineEntry, TimelineOptions,
};

use super::args::{self, remote_session_ref, session_ref};
use super::context::{CliResult, Ctx, Failure};
use super::output::{ellipsize, human_size, relative_time, Cell, Colour, Style, Table};
use super::remote::Params;
use super::session_view::print_session;

/// `session fork`.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The session to fork (id or key:KEY).
    pub session: String,
    /// Fork at this checkpoint of the session (default: at its state now).
    #[arg(long, value_name = "CHECKPOINT")]
    pub checkpoint: Option<String>,
    /// Name of the fork (default: the source's name).
    #[arg(long)]
    pub name: Option<String>,
    /// A tag for the fork (repeat for several).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// `session timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Interleave the events of the whole subtree.
    #[arg(long)]
    pub subtree: bool,
    /// Continue after a previous page (its next_cursor).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// At most N entries (default 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `session say`.
#[derive(Debug, Args)]
pub struct SayArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Who says it: user, assistant, system or tool.
    #[arg(long)]
    pub role: String,
    /// The message text, or `-` to read it from stdin (UTF-8).
    #[arg(value_name = "TEXT|-")]
    pub text: String,
    /// Metadata KEY=VALUE; VALUE is JSON if it parses as JSON, else text (repeat for several).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

/// `session history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Only the last N messages (still printed oldest first).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

/// `session stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only sessions with this tag (repeat: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only this status (repeat: any of several).
    #[arg(long = "status", value_name = "STATUS")]
    pub statuses: Vec<String>,
    /// Only the session with this unique key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only direct children of this session (id or key:KEY).
    #[arg(long, value_name = "SESSION", conflicts_with = "roots")]
    pub parent: Option<String>,
    /// Only root sessions.
    #[arg(long)]
    pub roots: bool,
    /// Only sessions created at or after this time (RFC 3339, a date, or an age such as 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only sessions created before this time (RFC 3339, a date, or an age such as 1h).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// Forks a session at a checkpoint or at its state now.
pub fn fork(ctx: &Ctx, a: ForkArgs) -> CliResult {
    let cp = a
        .checkpoint
        .as_deref()
        .map(args::checkpoint_id)
        .transpose()?;
    if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        let body = json!({ "checkpoint": cp, "name": a.name, "tags": a.tags });
        let s: Session = r.send(
            "POST",
            &format!("/v1/sessions/{sid}/fork"),
            &Params::new(),
            &body,
        )?;
        return print_session(ctx, &s);
    }
    let store = ctx.existing_store()?;
    let sid = session_ref(store, &a.session)?;
    let mut new = NewSession::new();
    if let Some(n) = a.name {
        new = new.name(n);
    }
    for t in a.tags {
        new = new.tag(t);
    }
    let s = store.fork(sid, cp, new)?;
    print_session(ctx, &s)
}

/// Prints a page of a session's (or subtree's) events and artifacts in time order.
pub fn timeline(ctx: &Ctx, a: TimelineArgs) -> CliResult {
    let limit = a.limit.unwrap_or(cairn::DEFAULT_LIMIT);
    if limit == 0 || limit > cairn::MAX_LIMIT {
        return Err(Failure::invalid(
            "--limit",
            format!("{limit}; use 1 to {}", cairn::MAX_LIMIT),
        ));
    }
    let page: Page<TimelineEntry> = if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        let q = Params::new()
            .flag("subtree", a.subtree)
            .add("limit", limit)
            .opt("cursor", a.after.as_deref());
        r.get(&format!("/v1/sessions/{sid}/timeline"), &q)
            .map_err(|e| {
                // The server names the cursor as the library does; say which flag carried it.
                match e.message.strip_prefix("invalid timeline cursor: ") {
                    Some(m) if e.code == "invalid_input" => Failure::invalid("--after", m),
                    _ => e.into(),
                }
            })?
    } else {
        let store = ctx.existing_store()?;
        let sid = session_ref(store, &a.session)?;
        let mut opts = TimelineOptions::new().subtree(a.subtree).limit(limit);
        if let Some(c) = a.after {
            opts = opts.cursor(c);
        }
        store.timeline(sid, &opts).map_err(|e| match e {
            // The library names the cursor; say which flag carried it.
            cairn::Error::InvalidInput { what, message } if what == "timeline cursor" => {
                Failure::invalid("--after", message)
            }
            e => e.into(),
        })?
    };
    let subtree = a.subtree;
    ctx.emit(&page, |w, style| {
        if page.items.is_empty() {
            return writeln!(w, "no events");
        }
        let mut head = vec!["WHEN", ">SEQ", "TYPE", "DETAILS"];
        if subtree {
            head.insert(1, "SESSION");
        }
        let mut t = Table::new(&head);
        for e in &page.items {
            let mut row: Vec<Cell> = vec![
                e.event
                    .at
                    .format("%Y-%m-%d %H:%M:%S%.3f")
                    .to_string()
                    .into(),
                e.event.seq.to_string().into(),
                Cell::painted(e.event.kind.type_name(), Colour::Cyan),
                entry_details(e).into(),
            ];
            if subtree {
                row.insert(1, e.event.session_id.to_string().into());
            }
            t.row(row);
        }
        t.write(w, style)?;
        if let Some(c) = &page.next_cursor {
            writeln!(w, "more entries: add --after {c}")?;
        }
        Ok(())
    })
}

/// One line about a timeline entry: the artifact or checkpoint it is about, else the event.
fn entry_details(e: &TimelineEntry) -> String {
    if let Some(a) = &e.artifact {
        return format!(
            "{} v{} {} {} ({})",
            a.name,
            a.version,
            a.kind,
            human_size(a.size),
            a.id
        );
    }
    if let Some(c) = &e.checkpoint {
        return format!("checkpoint {:?} ({})", c.label, c.id);
    }
    let mut details = serde_json::to_value(&e.event.kind).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut details {
        m.remove("type");
    }
    ellipsize(&details.to_string(), 100)
}

/// Appends one message to a session's conversation.
pub fn say(ctx: &Ctx, a: SayArgs) -> CliResult {
    let role = args::role(&a.role)?;
    let metadata = args::parse_meta(&a.meta, "--meta")?;
    let remote = ctx.remote();
    let (store, sid) = match remote {
        Some(r) => (None, remote_session_ref(r, &a.session)?),
        None => {
            let store = ctx.existing_store()?;
            (Some(store), session_ref(store, &a.session)?)
        }
    };
    let text = if a.text == "-" {
        if io::stdin().is_terminal() && !ctx.json {
            super::context::note("reading the message from stdin; end it with Ctrl-D");
        }
        // Remotely, the server checks its own limit; this one bounds what is read here.
        let max = store.map_or_else(
            || cairn::Config::default().limits.max_artifact_size,
            |s| s.config().limits.max_artifact_size,
        );
        let bytes = args::read_stdin_bounded(max, "the message")?;
        String::from_utf8(bytes).map_err(|e| {
            Failure::invalid(
                "message",
                format!(
                    "stdin is not UTF-8 text (bad byte at offset {}); messages are text: \
                     store binary content with `cairn artifact put` instead",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?
    } else {
        a.text
    };
    let m: Message = match (remote, store) {
        (Some(r), _) => r.send(
            "POST",
            &format!("/v1/sessions/{sid}/messages"),
            &Params::new(),
            &json!({ "role": role, "content": text, "metadata": metadata }),
        )?,
        (None, Some(store)) => store.say(sid, role, &text, metadata)?,
        (None, None) => return Err(Failure::usage("no store and no server")),
    };
    ctx.emit(&m, |w, style| {
        writeln!(
            w,
            "message #{} ({}) stored as artifact {}",
            m.seq,
            style.paint(Colour::Cyan, m.role.as_str()),
            m.artifact_id
        )
    })
}

/// Prints the latest messages of a session's conversation, oldest first.
pub fn history(ctx: &Ctx, a: HistoryArgs) -> CliResult {
    if a.last == Some(0) {
        return Err(Failure::invalid(
            "--last",
            "0; give the number of latest messages to print (at least 1), or leave it out for all",
        ));
    }
    let msgs: Vec<Message> = if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        r.get(
            &format!("/v1/sessions/{sid}/messages"),
            &Params::new().opt("last", a.last),
        )?
    } else {
        let store = ctx.existing_store()?;
        let sid = session_ref(store, &a.session)?;
        store.history(sid, a.last)?
    };
    ctx.emit(&msgs, |w, style| {
        if msgs.is_empty() {
            return writeln!(w, "no messages");
        }
        for m in &msgs {
            let colour = match m.role {
                cairn::Role::User => Colour::Green,
                cairn::Role::Assistant => Colour::Cyan,
                cairn::Role::System => Colour::Yellow,
                _ => Colour::Dim,
            };
            writeln!(
                w,
                "{} {} {}",
                style.paint(Colour::Dim, &format!("#{} {}", m.seq, relative_time(m.at))),
                style.paint(colour, &format!("{}:", m.role)),
                m.content.trim_end_matches('\n')
            )?;
        }
        Ok(())
    })
}

/// Prints statistics over the sessions the filters select.
pub fn stats(ctx: &Ctx, a: StatsArgs) -> CliResult {
    let mut filter = SessionFilter::new();
    for s in &a.statuses {
        filter = filter.status(args::status(s)?);
    }
    for t in &a.tags {
        filter = filter.tag(t.clone());
    }
    if let Some(k) = &a.key {
        filter = filter.key(k.clone());
    }
    let since = a
        .since
        .as_deref()
        .map(|t| args::parse_time(t, "--since"))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|t| args::parse_time(t, "--until"))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(Failure::invalid(
                "time range",
                format!(
                    "--since {} is not before --until {}; nothing could match",
                    s.to_rfc3339(),
                    u.to_rfc3339()
                ),
            ));
        }
    }
    if since.is_some() || until.is_some() {
        filter = filter.created_between(since, until);
    }
    if a.roots {
        filter = filter.roots();
    }
    if let Some(r) = ctx.remote() {
        let mut q = Params::new()
            .opt("key", a.key.as_deref())
            .flag("roots", a.roots)
            .opt("created_after", since.map(|t| t.to_rfc3339()))
            .opt("created_before", until.map(|t| t.to_rfc3339()));
        for s in &a.statuses {
            q = q.add("status", s);
        }
        for t in &a.tags {
            q = q.add("tag", t);
        }
        if let Some(p) = &a.parent {
            let pid = remote_session_ref(r, p)?;
            let _: Session = r.get(&format!("/v1/sessions/{pid}"), &Params::new())?;
            q = q.add("parent", pid);
        }
        let st: SessionStats = r.get("/v1/sessions/stats", &q)?;
        return ctx.emit(&st, |w, style| write_stats(w, style, &st));
    }
    let store = ctx.existing_store()?;
    if let Some(p) = &a.parent {
        let pid = session_ref(store, p)?;
        store.session(pid)?; // a clear "not found" instead of empty statistics
        filter = filter.parent(pid);
    }
    let st = store.session_stats(&filter)?;
    ctx.emit(&st, |w, style| write_stats(w, style, &st))
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn write_stats(w: &mut dyn Write, style: &Style, st: &SessionStats) -> io::Result<()> {
    let b = |k: &str| style.paint(Colour::Bold, &format!("{k:<13}"));
    let by_status = st
        .by_status
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    if by_status.is_empty() {
        writeln!(w, "{} {}", b("sessions"), st.sessions)?;
    } else {
        writeln!(w, "{} {} ({by_status})", b("sessions"), st.sessions)?;
    }
    writeln!(
        w,
        "{} {} of {} finished",
        b("success rate"),
        pct(st.success_rate),
        st.finished
    )?;
    let i = &st.iterations;
    writeln!(
        w,
        "{} mean {:.1}, p50 {}, p90 {}, p99 {}, max {} (over {} session(s))",
        b("iterations"),
        i.mean,
        i.p50,
        i.p90,
        i.p99,
        i.max,
        i.count
    )?;
    let d = &st.duration_ms;
    if d.count == 0 {
        writeln!(w, "{} - (no finished session)", b("duration"))?;
    } else {
        writeln!(
            w,
            "{} mean {}, p50 {}, p90 {}, p99 {}, max {} (over {} finished)",
            b("duration"),
            ms(d.mean as u64),
            ms(d.p50),
            ms(d.p90),
            ms(d.p99),
            ms(d.max),
            d.count
        )?;
    }
    writeln!(
        w,
        "{} {} of {} request(s): {}",
        b("errors"),
        st.errors,
        st.requests,
        pct(st.error_rate)
    )?;
    writeln!(
        w,
        "{} {} in, {} out, {} total",
        b("tokens"),
        st.input_tokens,
        st.output_tokens,
        st.total_tokens
    )?;
    writeln!(w, "{} {:.6}", b("cost"), st.cost_micros as f64 / 1e6)?;
    if !st.tool_calls.is_empty() {
        let tools = st
            .tool_calls
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(w, "{} {tools}", b("tool calls"))?;
    }
    Ok(())
}

/// Milliseconds for people: `850ms`, `12.3s`, `4m05s`, `2h03m`.
fn ms(v: u64) -> String {
    if v < 1000 {
        format!("{v}ms")
    } else if v < 60_000 {
        format!("{:.1}s", v as f64 / 1000.0)
    } else if v < 3_600_000 {
        format!("{}m{:02}s", v / 60_000, (v / 1000) % 60)
    } else {
        format!("{}h{:02}m", v / 3_600_000, (v / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(ms(850), "850ms");
        assert_eq!(ms(12_300), "12.3s");
        assert_eq!(ms(245_000), "4m05s");
        assert_eq!(ms(7_380_000), "2h03m");
    }
}
