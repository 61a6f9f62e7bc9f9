//! `cairn memo ...`: the tool-call memo (action cache) from the shell.
//!
//! A script wraps an expensive tool call as
//! `cairn memo get TOOL ARGS || { run; cairn artifact put ...; cairn memo put TOOL ARGS ID; }`:
//! `get` prints the stored result's artifact and exits 0 on a hit, exits 3 on a miss.

use clap::{Args, Subcommand};
use serde_json::Value;

use cairn::{ArtifactId, MemoHit, MemoScope, MemoStats, SessionId, Store};

use super::args::{self, remote_session_ref, session_ref};
use super::context::{CliResult, Ctx, Failure};
use super::remote::{encode, Params, Remote};

/// Memo verbs. ARGS is the tool's arguments as one JSON document (key order and whitespace do
/// not matter).
#[derive(Debug, Subcommand)]
pub enum MemoCmd {
    /// Look up the stored result of TOOL called with ARGS: prints its artifact (exit 0), or
    /// exits 3 on a miss. Counts a hit or a miss.
    Get(KeyArgs),
    /// Record that TOOL called with ARGS produced the artifact ID.
    Put(PutArgs),
    /// Remove the entry for TOOL and ARGS in exactly the given scope.
    Forget(KeyArgs),
    /// Hit and miss counts, for all tools or one.
    Stats {
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
    },
    /// Show or set how long results of TOOL stay valid.
    Ttl {
        /// The tool.
        tool: String,
        /// A duration (90s, 15m, 2h, 7d) or `none` for no expiry; omit to show the current TTL.
        ttl: Option<String>,
    },
}

/// A memo key and its scope.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The tool name.
    pub tool: String,
    /// The arguments, as JSON (e.g. '{"path":"src","depth":2}').
    pub args: String,
    /// From this session (id or key:KEY): its entries, then its ancestors', then store-wide
    /// ones [default: store-wide only].
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
}

/// `memo put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The tool name.
    pub tool: String,
    /// The arguments, as JSON.
    pub args: String,
    /// The artifact holding the result.
    pub artifact: String,
    /// Visible to this session (id or key:KEY) and its subtree only; the artifact must be in
    /// it [default: store-wide].
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
}

/// Runs a memo verb.
pub fn run(ctx: &Ctx, cmd: MemoCmd) -> CliResult {
    match cmd {
        MemoCmd::Get(k) => get(ctx, &k),
        MemoCmd::Put(p) => put(ctx, &p),
        MemoCmd::Forget(k) => forget(ctx, &k),
        MemoCmd::Stats { tool } => stats(ctx, tool.as_deref()),
        MemoCmd::Ttl { tool, ttl } => ttl_cmd(ctx, &tool, ttl.as_deref()),
    }
}

fn json_args(s: &str) -> CliResult<Value> {
    serde_json::from_str(s).map_err(|e| {
        Failure::invalid(
            "ARGS",
            format!("{e}; give the tool's arguments as one JSON document, e.g. '{{\"q\":1}}'"),
        )
    })
}

fn scope(store: &Store, session: Option<&str>) -> CliResult<MemoScope> {
    Ok(match session {
        Some(s) => MemoScope::Session(session_ref(store, s)?),
        None => MemoScope::Store,
    })
}

/// The server's memo key body (`/v1/memo/lookup`, `/v1/memo/forget`, `PUT /v1/memo`).
fn remote_key(
    r: &Remote,
    tool: &str,
    args: Value,
    session: Option<&str>,
    artifact: Option<ArtifactId>,
) -> CliResult<Value> {
    let sid: Option<SessionId> = match session {
        Some(s) => Some(remote_session_ref(r, s)?),
        None => None,
    };
    let mut body = serde_json::json!({ "tool": tool, "args": args, "session_id": sid });
    if let Some(id) = artifact {
        body["artifact_id"] = serde_json::json!(id);
    }
    Ok(body)
}

/// `{"hit": ...}` from `/v1/memo/lookup`.
#[derive(serde::Deserialize)]
struct Lookup {
    hit: Option<MemoHit>,
}

/// `{"removed": ...}` from `/v1/memo/forget`.
#[derive(serde::Deserialize)]
struct Forgot {
    removed: bool,
}

/// `{"ttl_secs": ...}` from `/v1/memo/ttl/{tool}`.
#[derive(serde::Deserialize, serde::Serialize)]
struct Ttl {
    ttl_secs: Option<u64>,
}

fn get(ctx: &Ctx, k: &KeyArgs) -> CliResult {
    let a = json_args(&k.args)?;
    let found = match ctx.remote() {
        Some(r) => {
            let body = remote_key(r, &k.tool, a, k.session.as_deref(), None)?;
            let l: Lookup = r.send("POST", "/v1/memo/lookup", &Params::new(), &body)?;
            l.hit
        }
        None => {
            let store = ctx.existing_store()?;
            let sc = scope(store, k.session.as_deref())?;
            store.memo_lookup(sc, &k.tool, &a)?
        }
    };
    match found {
        Some(hit) => ctx.emit(&hit, |w, _| {
            writeln!(
                w,
                "hit: {} ({}, {} bytes){}",
                hit.artifact.id,
                hit.artifact.name,
                hit.artifact.size,
                hit.expires_at
                    .map(|t| format!(", expires {}", t.to_rfc3339()))
                    .unwrap_or_default()
            )
        }),
        None => Err(Failure {
            code: "memo_miss".into(),
            message: format!(
                "no stored result of {} with these arguments; run the tool, then `cairn memo put`",
                k.tool
            ),
            exit: 3,
        }),
    }
}

fn put(ctx: &Ctx, p: &PutArgs) -> CliResult {
    let a = json_args(&p.args)?;
    let id = args::artifact_id(&p.artifact)?;
    let hit: MemoHit = match ctx.remote() {
        Some(r) => {
            let body = remote_key(r, &p.tool, a, p.session.as_deref(), Some(id))?;
            r.send("PUT", "/v1/memo", &Params::new(), &body)?
        }
        None => {
            let store = ctx.existing_store()?;
            let sc = scope(store, p.session.as_deref())?;
            store.memo_store(sc, &p.tool, &a, id)?
        }
    };
    ctx.emit(&hit, |w, _| {
        writeln!(w, "stored: {} -> {}", p.tool, hit.artifact.id)
    })
}

fn forget(ctx: &Ctx, k: &KeyArgs) -> CliResult {
    let a = json_args(&k.args)?;
    let removed = match ctx.remote() {
        Some(r) => {
            let body = remote_key(r, &k.tool, a, k.session.as_deref(), None)?;
            let f: Forgot = r.send("POST", "/v1/memo/forget", &Params::new(), &body)?;
            f.removed
        }
        None => {
            let store = ctx.existing_store()?;
            let sc = scope(store, k.session.as_deref())?;
            store.memo_forget(sc, &k.tool, &a)?
        }
    };
    let v = serde_json::json!({ "removed": removed });
    ctx.emit(&v, |w, _| {
        writeln!(w, "{}", if removed { "removed" } else { "no such entry" })
    })
}

fn stats(ctx: &Ctx, tool: Option<&str>) -> CliResult {
    let s: MemoStats = match ctx.remote() {
        Some(r) => r.get("/v1/memo/stats", &Params::new().opt("tool", tool))?,
        None => ctx.existing_store()?.memo_stats(tool)?,
    };
    ctx.emit(&s, |w, _| {
        let total = s.hits + s.misses;
        let rate = if total == 0 {
            0.0
        } else {
            s.hits as f64 * 100.0 / total as f64
        };
        writeln!(
            w,
            "{}: {} hits, {} misses ({rate:.1}% hits)",
            tool.unwrap_or("all tools"),
            s.hits,
            s.misses
        )
    })
}

fn ttl_cmd(ctx: &Ctx, tool: &str, ttl: Option<&str>) -> CliResult {
    let new_ttl = match ttl {
        Some("none") => Some(None),
        Some(t) => Some(Some(args::parse_duration(t, "TTL")?)),
        None => None,
    };
    let cur = match ctx.remote() {
        Some(r) => {
            let path = format!("/v1/memo/ttl/{}", encode(tool));
            let t: Ttl = match new_ttl {
                Some(d) => {
                    let body = Ttl {
                        ttl_secs: d.map(|d| d.as_secs()),
                    };
                    r.send("PUT", &path, &Params::new(), &body)?
                }
                None => r.get(&path, &Params::new())?,
            };
            t.ttl_secs.map(std::time::Duration::from_secs)
        }
        None => {
            let store = match new_ttl {
                Some(_) => ctx.store()?,
                None => ctx.existing_store()?,
            };
            if let Some(d) = new_ttl {
                store.memo_set_ttl(tool, d)?;
            }
            store.memo_ttl(tool)?
        }
    };
    let v = serde_json::json!({ "tool": tool, "ttl_secs": cur.map(|d| d.as_secs()) });
    ctx.emit(&v, |w, _| match cur {
        Some(d) => writeln!(w, "{tool}: results stay valid {}s", d.as_secs()),
        None => writeln!(w, "{tool}: results never expire"),
    })
}
