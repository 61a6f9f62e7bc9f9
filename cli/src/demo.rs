//! `cairn demo`: plays real SWE-agent runs (fixtures/agent-runs) into a demo store and reports.
//!
//! What it stores, for each run of the demo (a new root session keyed `demo-run-N`):
//! - one child session per task instance (`organized/<instance>/`): every file of the organized
//!   run in one bulk batch, each trajectory step as its own artifact, the final patch of every
//!   attempt as versions of `patch.diff`, and the submission copy of the trajectory (identical
//!   content: deduplicated);
//! - one child session per evaluation log (`results/*.log`): the log, and each step of the
//!   agent's tool loop as a thought, a tool call and a tool observation; a log that reports
//!   "Evaluation failed" makes its session failed with that reason;
//! - the predictions file and each predicted patch in the root session (patches equal to an
//!   instance's final patch are deduplicated);
//!
//! then a few queries, and the dedup and compression ratios from `Store::stats()`.
//! Running it again reuses the store: the new run's content is all deduplicated against the
//! earlier runs, which the report shows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};

use cairn::{
    Artifact, ArtifactKind, ContentHash, NewArtifact, NewSession, Query, Session, SessionId,
    SessionStatus, Stats, Store,
};

use super::output::{human_size, ratio, Colour, Style};
use super::{CliResult, Ctx, Failure};

/// `cairn demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The agent runs to play: a folder laid out like fixtures/agent-runs (organized/,
    /// submission/, results/). Default: the fixtures of the source tree.
    #[arg(long, value_name = "DIR")]
    pub runs: Option<PathBuf>,
}

/// The store the demo uses when no --store (or CAIRN_STORE) is given.
pub const DEFAULT_DEMO_STORE: &str = ".cairn-demo";

fn default_runs() -> PathBuf {
    // The source tree's fixtures: this package sits in cli/ beside them.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/agent-runs")
}

/// Everything this run of the demo stored, for the report.
#[derive(Default)]
struct Recorder {
    artifacts: Vec<Artifact>,
    seen: HashSet<ContentHash>,
    deduplicated: u64,
    sessions: Vec<SessionReport>,
}

#[derive(Serialize)]
struct SessionReport {
    id: SessionId,
    name: String,
    status: SessionStatus,
    reason: Option<String>,
    artifacts: u64,
}

impl Recorder {
    fn record(&mut self, store_blobs_before: &HashSet<ContentHash>, a: Artifact) {
        if !self.seen.insert(a.hash) || store_blobs_before.contains(&a.hash) {
            self.deduplicated += 1;
        }
        self.artifacts.push(a);
    }
}

struct Demo<'a> {
    store: &'a Store,
    rec: Recorder,
    /// Content hashes already in the store before this run (from earlier demo runs).
    before: HashSet<ContentHash>,
}

impl Demo<'_> {
    fn put(&mut self, sid: SessionId, new: NewArtifact, bytes: &[u8]) -> CliResult<Artifact> {
        let a = self.store.put(sid, new, bytes)?;
        self.rec.record(&self.before, a.clone());
        Ok(a)
    }

    fn put_batch(&mut self, items: Vec<(SessionId, NewArtifact, Vec<u8>)>) -> CliResult<usize> {
        let stored = self.store.put_batch(items)?;
        let n = stored.len();
        for a in stored {
            self.rec.record(&self.before, a);
        }
        Ok(n)
    }

    fn finish(&mut self, sid: SessionId, to: SessionStatus, reason: Option<&str>) -> CliResult {
        let s = self.store.transition(sid, to, reason)?;
        let artifacts = self
            .rec
            .artifacts
            .iter()
            .filter(|a| a.session_id == sid)
            .count() as u64;
        self.rec.sessions.push(SessionReport {
            id: s.id,
            name: s.name.clone().unwrap_or_default(),
            status: s.status,
            reason: s.reason.clone(),
            artifacts,
        });
        Ok(())
    }
}

fn read(path: &Path) -> CliResult<Vec<u8>> {
    fs::read(path).map_err(|e| Failure::io(path, e))
}

fn first_dir(root: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| root.join(n)).find(|p| p.is_dir())
}

fn subdirs(dir: &Path) -> CliResult<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Failure::io(dir, e))? {
        let e = e.map_err(|e| Failure::io(dir, e))?;
        if e.file_type()
            .map_err(|err| Failure::io(&e.path(), err))?
            .is_dir()
        {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// Regular files under `dir`, recursively, sorted, with `/`-separated relative names.
fn files(dir: &Path) -> CliResult<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| Failure::io(&d, e))? {
            let e = e.map_err(|e| Failure::io(&d, e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|err| Failure::io(&p, err))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn custom(kind: &str) -> ArtifactKind {
    ArtifactKind::custom(kind).unwrap_or(ArtifactKind::SystemGenerated)
}

/// The kind of a file of an organized run, by its place in the layout.
fn organized_kind(rel: &str) -> ArtifactKind {
    if rel.ends_with(".jsonl") {
        custom("trajectory")
    } else if rel.starts_with("tool_calls/") {
        ArtifactKind::ToolResult
    } else if rel.starts_with("llm_interactions/") {
        ArtifactKind::AgentOutput
    } else if rel.starts_with("performance_metrics/") {
        custom("metrics")
    } else {
        ArtifactKind::SystemGenerated
    }
}

/// The kind of one trajectory step, by its action.
fn step_kind(action: &str) -> ArtifactKind {
    match action {
        "initialization" => ArtifactKind::UserInput,
        "repository_setup" => ArtifactKind::ToolResult,
        "agent_preparation" => ArtifactKind::SystemGenerated,
        _ => ArtifactKind::AgentOutput,
    }
}

fn slug(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "unknown".into()
    } else {
        t
    }
}

/// Plays one organized task instance into a child session.
fn play_instance(
    d: &mut Demo<'_>,
    root: SessionId,
    run_key: &str,
    dir: &Path,
    submission: Option<PathBuf>,
) -> CliResult {
    let instance = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let repo = instance.split("__").next().unwrap_or("repo").to_string();
    let summary: Value = fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let perf = &summary["summary"]["performance_metrics"];
    let mut meta = Map::new();
    meta.insert("instance_id".into(), json!(instance));
    for (k, v) in [
        (
            "total_steps",
            &summary["summary"]["total_trajectory_entries"],
        ),
        ("avg_memory_mb", &perf["avg_memory_usage"]),
        ("max_memory_mb", &perf["max_memory_usage"]),
        ("walkable", &summary["walkability"]["is_walkable"]),
    ] {
        if !v.is_null() {
            meta.insert(k.into(), v.clone());
        }
    }
    let s = d.store.create_session(
        NewSession::new()
            .name(instance.clone())
            .key(format!("{run_key}/{instance}"))
            .description(format!("SWE-bench task instance {instance}"))
            .parent(root)
            .tag("swe-bench")
            .tag(repo.clone())
            .metadata(meta),
    )?;
    let sid = s.id;

    // 1. The organized run as it is on disk: one bulk batch.
    let mut batch = Vec::new();
    for (rel, path) in files(dir)? {
        let new = NewArtifact::new(organized_kind(&rel), format!("organized/{rel}"))
            .tag("organized")
            .tag(repo.clone());
        batch.push((sid, new, read(&path)?));
    }
    d.put_batch(batch)?;

    // 2. The trajectory, step by step; attempts restart at step 1.
    let traj = dir.join("raw_logs/trajectory.jsonl");
    // A missing trajectory means no steps; the organized files above are stored either way.
    let raw = fs::read(&traj).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw);
    let mut attempt = 0u32;
    let mut success = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue; // a torn line in a real log: the raw file above still has it
        };
        if let Some(action) = v["action"].as_str() {
            let step = v["step"].as_u64().unwrap_or(0);
            if step == 1 || attempt == 0 {
                attempt += 1;
            }
            let new = NewArtifact::new(
                step_kind(action),
                format!("attempt-{attempt}/step-{step}-{}.json", slug(action)),
            )
            .tag(format!("step:{}", slug(action)))
            .meta("attempt", attempt)
            .meta("step", step)
            .mime_type("application/json");
            d.put(sid, new, line.as_bytes())?;
            if action == "initialization" {
                if let Some(p) = v["details"]["problem_statement"].as_str() {
                    // The same statement every attempt: new versions, one blob.
                    let new = NewArtifact::new(ArtifactKind::UserInput, "problem_statement.md")
                        .tag("problem")
                        .meta("attempt", attempt);
                    d.put(sid, new, p.as_bytes())?;
                }
            }
        } else if v["event"].as_str() == Some("final_result") {
            let ok = v["success"].as_bool().unwrap_or(false);
            success = Some(ok);
            let message = v["message"].as_str().unwrap_or("").to_string();
            let new = NewArtifact::new(
                ArtifactKind::AgentOutput,
                format!("attempt-{attempt}/final_result.json"),
            )
            .tag("final_result")
            .meta("success", ok)
            .mime_type("application/json");
            d.put(sid, new, line.as_bytes())?;
            let patch = v["final_patch"].as_str().unwrap_or("");
            let new = NewArtifact::new(ArtifactKind::AgentOutput, "patch.diff")
                .tag("patch")
                .meta("attempt", attempt)
                .meta("success", ok)
                .meta("message", message.clone())
                .mime_type("text/x-diff");
            d.put(sid, new, patch.as_bytes())?;
            d.store.append_event(
                sid,
                "attempt_finished",
                json!({"attempt": attempt, "success": ok, "message": message, "patch_bytes": patch.len()}),
            )?;
        }
    }

    // 3. The submission copy (same trajectory bytes: deduplicated against raw_logs).
    if let Some(sub) = submission.filter(|p| p.is_dir()) {
        let mut batch = Vec::new();
        for (rel, path) in files(&sub)? {
            let kind = if rel.ends_with(".jsonl") {
                custom("trajectory")
            } else {
                ArtifactKind::SystemGenerated
            };
            batch.push((
                sid,
                NewArtifact::new(kind, format!("submission/{rel}")).tag("submission"),
                read(&path)?,
            ));
        }
        d.put_batch(batch)?;
    }

    match success {
        Some(false) => d.finish(
            sid,
            SessionStatus::Failed,
            Some("the final attempt produced no patch"),
        ),
        _ => d.finish(sid, SessionStatus::Completed, None),
    }
}

/// `20250924_081215` -> `2025-09-24 08:12:15`; anything else as it is.
fn log_time(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() == 15
        && b[8] == b'_'
        && s.bytes()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
    {
        format!(
            "{}-{}-{} {}:{}:{}",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[9..11],
            &s[11..13],
            &s[13..15]
        )
    } else {
        s.to_string()
    }
}

/// One step of an agent's tool loop, parsed from an evaluation log.
#[derive(Default)]
struct LogStep {
    phase: String,
    step: u64,
    thought: Option<String>,
    tool: Option<String>,
    args: Option<String>,
    observation: Option<String>,
}

/// Parsed evaluation log: header facts, the tool loop, and the outcome.
#[derive(Default)]
struct LogRun {
    instances: Vec<String>,
    steps: Vec<LogStep>,
    failure: Option<String>,
    last_step: Option<String>,
}

/// Splits a Python `logging` file into records (a record may span several lines) and reads the
/// agent's loop out of them: `Execution step N/M`, `next_thought:`, `next_tool_name:`,
/// `next_tool_args:`, `next_observation:`.
fn parse_log(text: &str) -> LogRun {
    let is_start = |l: &str| {
        let b = l.as_bytes();
        b.len() > 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b' '
            && b[13] == b':'
            && b[19] == b','
    };
    let mut records: Vec<String> = Vec::new();
    for line in text.lines() {
        if is_start(line) || records.is_empty() {
            records.push(line.to_string());
        } else if let Some(last) = records.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    let mut run = LogRun::default();
    for r in records {
        // "2025-09-24 08:12:17,603 - INFO - [PHASE] message"
        let Some(msg) = r.splitn(3, " - ").nth(2) else {
            continue;
        };
        let (phase, msg) = match msg.strip_prefix('[') {
            Some(rest)
                if rest.find(']').is_some_and(|i| {
                    rest[..i]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_')
                }) =>
            {
                let i = rest.find(']').unwrap_or(0);
                (rest[..i].to_ascii_lowercase(), rest[i + 1..].trim_start())
            }
            _ => ("main".to_string(), msg),
        };
        if let Some(rest) = msg.strip_prefix("🔄 Processing ") {
            run.instances.push(rest.trim().to_string());
        } else if let Some(i) = msg.find("Evaluation failed:") {
            run.failure = Some(msg[i..].lines().next().unwrap_or("").trim().to_string());
        } else if let Some(rest) = msg.strip_prefix("Execution step ") {
            run.last_step = Some(format!("{phase} step {}", rest.trim()));
            let n = rest
                .split('/')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            run.steps.push(LogStep {
                phase,
                step: n,
                ..LogStep::default()
            });
        } else if let Some(step) = run.steps.last_mut() {
            if let Some(i) = msg.find("next_thought:") {
                let body = &msg[i + "next_thought:".len()..];
                let (thought, rest) = match body.find("\nnext_tool_name:") {
                    Some(j) => (&body[..j], &body[j + 1..]),
                    None => (body, ""),
                };
                step.thought = Some(thought.trim().trim_matches('"').to_string());
                for l in rest.lines() {
                    if let Some(t) = l.strip_prefix("next_tool_name:") {
                        step.tool = Some(t.trim().to_string()).filter(|t| !t.is_empty());
                    } else if let Some(a) = l.strip_prefix("next_tool_args:") {
                        step.args = Some(a.trim().to_string());
                    }
                }
            } else if let Some(o) = msg.strip_prefix("next_observation:") {
                step.observation = Some(o.trim_start().to_string());
            }
        }
    }
    run
}

/// Plays one evaluation log into a child session.
fn play_log(d: &mut Demo<'_>, root: SessionId, run_key: &str, path: &Path) -> CliResult {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let run = parse_log(&text);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let when = log_time(stem.trim_start_matches("evaluation_"));
    let mut tools: BTreeMap<String, u64> = BTreeMap::new();
    for s in &run.steps {
        if let Some(t) = &s.tool {
            *tools.entry(t.clone()).or_default() += 1;
        }
    }
    let name = match run.instances.first() {
        Some(i) => format!("evaluation {when} ({i})"),
        None => format!("evaluation {when}"),
    };
    let s = d.store.create_session(
        NewSession::new()
            .name(name)
            .key(format!("{run_key}/{stem}"))
            .description(format!("SWE-bench evaluation log {}", path.display()))
            .parent(root)
            .tag("swe-bench")
            .tag("evaluation")
            .meta("log", stem.clone())
            .meta("instances", json!(run.instances))
            .meta("tool_steps", run.steps.len())
            .meta("tools", json!(tools)),
    )?;
    let sid = s.id;
    d.put(
        sid,
        NewArtifact::new(ArtifactKind::SystemGenerated, "evaluation.log")
            .tag("log")
            .mime_type("text/plain"),
        &bytes,
    )?;
    for st in &run.steps {
        let dir = format!("{}/step-{:03}", st.phase, st.step);
        let tool_tag = st.tool.as_deref().map(|t| format!("tool:{}", slug(t)));
        if let Some(t) = &st.thought {
            let new = NewArtifact::new(ArtifactKind::AgentOutput, format!("{dir}/thought.txt"))
                .tag("thought");
            d.put(sid, new, t.as_bytes())?;
        }
        if let Some(tool) = &st.tool {
            let call = json!({"tool": tool, "args": st.args});
            let mut new = NewArtifact::new(custom("tool_call"), format!("{dir}/call.json"))
                .meta("tool", tool.clone())
                .mime_type("application/json");
            if let Some(t) = &tool_tag {
                new = new.tag(t.clone());
            }
            d.put(sid, new, call.to_string().as_bytes())?;
        }
        if let Some(o) = &st.observation {
            let mut new =
                NewArtifact::new(ArtifactKind::ToolResult, format!("{dir}/observation.txt"))
                    .meta("tool", st.tool.clone().unwrap_or_default());
            if let Some(t) = &tool_tag {
                new = new.tag(t.clone());
            }
            d.put(sid, new, o.as_bytes())?;
        }
    }
    if let Some(f) = &run.failure {
        d.finish(sid, SessionStatus::Failed, Some(f))
    } else if run.steps.is_empty() && run.instances.is_empty() {
        d.finish(sid, SessionStatus::Completed, None)
    } else {
        let at = run.last_step.clone().unwrap_or_else(|| "its start".into());
        d.finish(
            sid,
            SessionStatus::Cancelled,
            Some(&format!(
                "the log ends at {at} without a result: the run was interrupted"
            )),
        )
    }
}

/// One query the demo runs, shown as the command that runs it.
#[derive(Serialize)]
struct QueryReport {
    command: String,
    count: usize,
    names: Vec<String>,
}

fn run_query(store: &Store, root: SessionId, args: &str, q: Query) -> CliResult<QueryReport> {
    let mut names = Vec::new();
    let mut count = 0;
    let mut q = q.session(root).subtree(true).limit(1000);
    loop {
        let page = store.query(&q)?;
        count += page.items.len();
        names.extend(
            page.items
                .iter()
                .map(|a| format!("{} v{}", a.name, a.version)),
        );
        match page.next_cursor {
            Some(c) => q = q.cursor(c),
            None => break,
        }
    }
    Ok(QueryReport {
        command: format!("cairn artifact query --session {root} --subtree {args}"),
        count,
        names,
    })
}

/// Runs the demo.
pub fn run(ctx: &Ctx, a: DemoArgs) -> CliResult {
    let runs = a.runs.unwrap_or_else(default_runs);
    let organized = first_dir(&runs, &["organized", "organized_trajectories"]);
    let submission = first_dir(&runs, &["submission", "submission_trajectories"]);
    let results = first_dir(&runs, &["results"]);
    if organized.is_none() && results.is_none() {
        return Err(Failure {
            code: "not_found".into(),
            message: format!(
                "no agent runs at {}: expected organized/ and results/ folders like fixtures/agent-runs; pass --runs DIR",
                runs.display()
            ),
            exit: 3,
        });
    }
    let path = if ctx.store_given {
        ctx.store_path.clone()
    } else {
        PathBuf::from(DEFAULT_DEMO_STORE)
    };
    let reused = path.exists();
    let store = Store::open(&path)?;
    let mut n = 1;
    while store.session_by_key(&format!("demo-run-{n}"))?.is_some() {
        n += 1;
    }
    let run_key = format!("demo-run-{n}");
    let before_stats = store.stats()?;
    let mut before = HashSet::new();
    if reused {
        let mut q = Query::new().limit(10_000);
        loop {
            let page = store.query(&q)?;
            before.extend(page.items.iter().map(|a| a.hash));
            match page.next_cursor {
                Some(c) => q = q.cursor(c),
                None => break,
            }
        }
    }
    let root = store.create_session(
        NewSession::new()
            .name(format!("SWE-bench agent evaluation (demo run {n})"))
            .key(run_key.clone())
            .description(format!(
                "Real SWE-agent runs played from {}",
                runs.display()
            ))
            .tag("demo")
            .tag("swe-bench")
            .meta("source", runs.display().to_string())
            .meta("dataset", "princeton-nlp/SWE-bench_Verified"),
    )?;
    let mut d = Demo {
        store: &store,
        rec: Recorder::default(),
        before,
    };

    if let Some(org) = &organized {
        for dir in subdirs(org)? {
            let sub = submission
                .as_ref()
                .and_then(|s| dir.file_name().map(|n| s.join(n)));
            play_instance(&mut d, root.id, &run_key, &dir, sub)?;
        }
    }
    let mut logs = Vec::new();
    let mut predictions = Vec::new();
    if let Some(res) = &results {
        for (rel, p) in files(res)? {
            if rel.ends_with(".log") {
                logs.push(p);
            } else if rel.ends_with(".jsonl")
                && rel
                    .rsplit('/')
                    .next()
                    .is_some_and(|f| f.starts_with("predictions"))
            {
                predictions.push((rel, p));
            }
        }
    }
    for log in &logs {
        play_log(&mut d, root.id, &run_key, log)?;
    }
    for (rel, p) in &predictions {
        let bytes = read(p)?;
        d.put(
            root.id,
            NewArtifact::new(custom("predictions"), format!("results/{rel}")).tag("predictions"),
            &bytes,
        )?;
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(id), Some(patch)) = (v["instance_id"].as_str(), v["model_patch"].as_str())
            else {
                continue;
            };
            let new = NewArtifact::new(ArtifactKind::AgentOutput, format!("predictions/{id}.diff"))
                .tag("prediction")
                .tag("patch")
                .meta("model", v["model_name_or_path"].clone())
                .mime_type("text/x-diff");
            d.put(root.id, new, patch.as_bytes())?;
        }
    }
    store.append_event(
        root.id,
        "demo_finished",
        json!({"children": d.rec.sessions.len(), "artifacts": d.rec.artifacts.len()}),
    )?;
    d.finish(root.id, SessionStatus::Completed, None)?;

    // Queries over this run's tree, as the command line would run them.
    let first_child = d.rec.sessions.first().map(|s| s.id);
    let queries = vec![
        run_query(&store, root.id, "--kind tool_result", Query::new().kind(ArtifactKind::ToolResult))?,
        run_query(&store, root.id, "--tag patch --name '*.diff' --latest", Query::new().tag("patch").name_glob("*.diff").latest_only(true))?,
        run_query(&store, root.id, "--name '*/observation.txt' --any-tag tool:get_file_content --any-tag tool:search_in_specified_file_v2", Query::new().name_glob("*/observation.txt").any_tag("tool:get_file_content").any_tag("tool:search_in_specified_file_v2"))?,
        run_query(&store, root.id, "--min-size 10KiB", Query::new().min_size(10 << 10))?,
        run_query(&store, root.id, "--kind trajectory --kind metrics", Query::new().kind(custom("trajectory")).kind(custom("metrics")))?,
    ];
    let patch_versions: Vec<Artifact> = match first_child {
        Some(c) => store.versions(c, "patch.diff").unwrap_or_default(),
        None => Vec::new(),
    };
    let stats = store.stats()?;
    let logical: u64 = d.rec.artifacts.iter().map(|a| a.size).sum();
    let mut unique: HashMap<ContentHash, u64> = HashMap::new();
    for a in &d.rec.artifacts {
        unique.insert(a.hash, a.size);
    }
    let unique_bytes: u64 = unique.values().sum();
    let tree = store.subtree(root.id)?;
    let report = DemoReport {
        store: path.display().to_string(),
        reused,
        run: n,
        root_session: root.id,
        sessions: d.rec.sessions,
        artifacts_stored: d.rec.artifacts.len(),
        deduplicated_artifacts: d.rec.deduplicated,
        logical_bytes: logical,
        unique_bytes_in_run: unique_bytes,
        store_grew_by: stats.stored_bytes.saturating_sub(before_stats.stored_bytes),
        queries,
        stats,
    };
    ctx.emit(&report, |w, style| {
        write_report(
            w,
            style,
            &report,
            &runs,
            &tree,
            &patch_versions,
            ctx.store_given,
        )
    })
}

#[derive(Serialize)]
struct DemoReport {
    store: String,
    reused: bool,
    run: u32,
    root_session: SessionId,
    sessions: Vec<SessionReport>,
    artifacts_stored: usize,
    deduplicated_artifacts: u64,
    logical_bytes: u64,
    unique_bytes_in_run: u64,
    store_grew_by: u64,
    queries: Vec<QueryReport>,
    stats: Stats,
}

fn write_report(
    w: &mut dyn Write,
    style: &Style,
    r: &DemoReport,
    runs: &Path,
    tree: &[Session],
    patch_versions: &[Artifact],
    store_given: bool,
) -> std::io::Result<()> {
    let h = |t: &str| style.paint(Colour::Bold, t);
    writeln!(
        w,
        "{}",
        h(&format!(
            "Cairn demo: real SWE-agent runs from {}",
            runs.display()
        ))
    )?;
    if r.reused {
        writeln!(
            w,
            "Reusing the demo store at {} ({} earlier demo run(s) kept); this is demo run {} (session key demo-run-{}). Delete the folder for a fresh start.",
            r.store,
            r.run - 1,
            r.run,
            r.run
        )?;
    } else {
        writeln!(
            w,
            "Started a fresh demo store at {} (session key demo-run-{}).",
            r.store, r.run
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{}",
        h("Sessions (a root run with one child per task instance and per evaluation log):")
    )?;
    let root = tree.iter().find(|s| s.id == r.root_session);
    if let Some(root) = root {
        writeln!(
            w,
            "  {} {} {}",
            root.name.clone().unwrap_or_default(),
            style.paint(
                Style::status_colour(root.status),
                &format!("[{}]", root.status)
            ),
            style.paint(Colour::Dim, &root.id.to_string())
        )?;
    }
    let kids: Vec<&SessionReport> = r
        .sessions
        .iter()
        .filter(|s| s.id != r.root_session)
        .collect();
    for (i, s) in kids.iter().enumerate() {
        let branch = if i + 1 == kids.len() {
            "└─"
        } else {
            "├─"
        };
        let reason = s
            .reason
            .as_ref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default();
        writeln!(
            w,
            "  {branch} {} {} {} artifact(s){reason}",
            s.name,
            style.paint(Style::status_colour(s.status), &format!("[{}]", s.status)),
            s.artifacts
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "Stored {} artifacts ({} of content) in {} sessions; {} of them reuse content stored before (deduplicated: one blob, many artifacts).",
        r.artifacts_stored,
        human_size(r.logical_bytes),
        r.sessions.len(),
        r.deduplicated_artifacts
    )?;
    writeln!(
        w,
        "This run's distinct content is {}; the store grew by {} on disk (after dedup against earlier runs and zstd).",
        human_size(r.unique_bytes_in_run),
        human_size(r.store_grew_by)
    )?;
    if !patch_versions.is_empty() {
        let v: Vec<String> = patch_versions
            .iter()
            .map(|a| format!("v{} {}", a.version, human_size(a.size)))
            .collect();
        writeln!(
            w,
            "Re-run attempts became versions: patch.diff of the first instance has {}.",
            v.join(", ")
        )?;
    }
    writeln!(w)?;
    writeln!(w, "{}", h("Queries over this run:"))?;
    for q in &r.queries {
        writeln!(w, "  {}", style.paint(Colour::Cyan, &q.command))?;
        let shown: Vec<&str> = q.names.iter().take(4).map(String::as_str).collect();
        let more = if q.names.len() > shown.len() {
            format!(", ... ({} more)", q.names.len() - shown.len())
        } else {
            String::new()
        };
        writeln!(w, "    {} artifact(s): {}{more}", q.count, shown.join(", "))?;
    }
    writeln!(w)?;
    let s = &r.stats;
    writeln!(w, "{}", h("Store totals (cairn stats):"))?;
    writeln!(
        w,
        "  {} sessions, {} artifacts, {} blobs; {} logical, {} distinct, {} stored",
        s.sessions,
        s.artifacts,
        s.blobs,
        human_size(s.logical_bytes),
        human_size(s.content_bytes),
        human_size(s.stored_bytes)
    )?;
    writeln!(
        w,
        "  dedup ratio {} (logical / distinct), compression ratio {} (distinct / stored)",
        style.paint(Colour::Green, &ratio(s.dedup_ratio)),
        style.paint(Colour::Green, &ratio(s.compression_ratio))
    )?;
    writeln!(w)?;
    let flag = if store_given {
        format!("--store {} ", r.store)
    } else {
        format!("--store {DEFAULT_DEMO_STORE} ")
    };
    writeln!(w, "{}", h("Try:"))?;
    writeln!(w, "  cairn {flag}session tree {}", r.root_session)?;
    writeln!(
        w,
        "  cairn {flag}artifact query --kind tool_result --tag tool:get_file_content"
    )?;
    writeln!(
        w,
        "  cairn {flag}artifact list key:demo-run-{}/astropy__astropy-12907",
        r.run
    )?;
    writeln!(w, "  cairn {flag}stats")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fixture_evaluation_log() {
        let text =
            fs::read_to_string(default_runs().join("results/evaluation_20250924_081215.log"))
                .unwrap();
        let run = parse_log(&text);
        assert_eq!(run.instances, vec!["astropy__astropy-14539".to_string()]);
        assert!(run.failure.is_none());
        let raw_steps = text.matches("Execution step ").count();
        assert_eq!(run.steps.len(), raw_steps);
        let observations = run.steps.iter().filter(|s| s.observation.is_some()).count();
        assert_eq!(observations, text.matches("next_observation:").count());
        assert!(run.steps.iter().any(|s| s.phase == "test_patch_find"));
        assert!(run.steps.iter().any(|s| s.phase == "main"));
        assert_eq!(
            run.steps[0].tool.as_deref(),
            Some("search_in_all_files_content_v2")
        );
        assert!(run.steps[0]
            .args
            .as_deref()
            .unwrap_or("")
            .contains("FITSDiff"));
        let failed = parse_log(
            &fs::read_to_string(default_runs().join("results/evaluation_20250924_085703.log"))
                .unwrap(),
        );
        assert_eq!(
            failed.failure.as_deref(),
            Some("Evaluation failed: string indices must be integers, not 'str'")
        );
    }
}
