//! `cairn cleanup`: retention policies from the command line, with a dry run.
//!
//! Rules (at least one): `--older-than AGE` deletes terminal sessions that ended longer ago
//! (narrowed by `--status` and `--tag`), `--keep-versions N` keeps only the newest N versions of
//! each artifact name, `--ttl KIND=AGE` deletes artifacts of a kind older than AGE. Pinned
//! sessions and artifacts are never touched. Freed content is collected at the end.

use clap::Args;

use cairn::{RetentionPolicy, RetentionReport};

use super::args;
use super::context::{CliResult, Ctx, Failure};
use super::output::{human_size, Cell, Colour, Table};
use super::progress::Progress;
use super::remote::Params;

/// Rows of each table printed for people (the JSON report always holds everything).
const MAX_ROWS: usize = 50;

/// `cairn cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Report what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete terminal sessions (completed, failed, cancelled, expired, timed_out) that ended
    /// longer ago than this: 90s, 15m, 2h, 30d, 2w (0d: any age).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// With --older-than: only sessions with this terminal status (repeat: any of several).
    #[arg(long = "status", value_name = "STATUS")]
    pub statuses: Vec<String>,
    /// With --older-than: only sessions with this tag (repeat: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Keep only the newest N versions of each artifact name in each session.
    #[arg(long, value_name = "N")]
    pub keep_versions: Option<u32>,
    /// Delete artifacts of KIND created longer ago than AGE, e.g. tool_result=7d (repeat for
    /// several kinds).
    #[arg(long = "ttl", value_name = "KIND=AGE")]
    pub ttls: Vec<String>,
}

/// Builds the policy from the flags, checking them before the store is opened.
fn policy(a: &CleanupArgs) -> CliResult<RetentionPolicy> {
    if a.older_than.is_none() && a.keep_versions.is_none() && a.ttls.is_empty() {
        return Err(Failure::invalid(
            "cleanup",
            "no rule given: add --older-than AGE, --keep-versions N or --ttl KIND=AGE",
        ));
    }
    if a.older_than.is_none() && (!a.statuses.is_empty() || !a.tags.is_empty()) {
        return Err(Failure::invalid(
            "cleanup",
            "--status and --tag select sessions for --older-than; add --older-than AGE \
             (--older-than 0d for any age)",
        ));
    }
    if a.keep_versions == Some(0) {
        return Err(Failure::invalid(
            "--keep-versions",
            "0 would delete every version; keep at least 1 (use --ttl or --older-than to delete \
             whole artifacts or sessions)",
        ));
    }
    let mut p = RetentionPolicy::new().dry_run(a.dry_run);
    if let Some(age) = &a.older_than {
        p = p.sessions_older_than(args::parse_duration(age, "--older-than")?);
    }
    for s in &a.statuses {
        let st = args::status(s)?;
        if !st.is_terminal() {
            return Err(Failure::invalid(
                "--status",
                format!(
                    "{st} is not a terminal status; cleanup deletes only completed, failed, \
                     cancelled, expired or timed_out sessions"
                ),
            ));
        }
        p = p.status(st);
    }
    for t in &a.tags {
        p = p.tag(t.clone());
    }
    if let Some(n) = a.keep_versions {
        p = p.keep_versions(n);
    }
    let mut seen = Vec::new();
    for t in &a.ttls {
        let Some((kind, age)) = t.split_once('=') else {
            return Err(Failure::invalid(
                "--ttl",
                format!("{t:?}: expected KIND=AGE, e.g. --ttl tool_result=7d"),
            ));
        };
        let kind = args::kind(kind.trim())
            .map_err(|e| Failure::invalid("--ttl", format!("{t:?}: {}", e.message)))?;
        if seen.contains(&kind) {
            return Err(Failure::invalid(
                "--ttl",
                format!("{kind} is given twice; give one age per kind"),
            ));
        }
        seen.push(kind.clone());
        p = p.kind_ttl(kind, args::parse_duration(age, "--ttl")?);
    }
    Ok(p)
}

/// Applies the retention rules (or reports what they would remove) and prints a summary.
pub fn cleanup(ctx: &Ctx, a: CleanupArgs) -> CliResult {
    let policy = policy(&a)?;
    if let Some(r) = ctx.remote() {
        // The same rules, checked above, sent as the body of `POST /v1/admin/cleanup`.
        let mut ttl = serde_json::Map::new();
        for t in &a.ttls {
            if let Some((kind, age)) = t.split_once('=') {
                let secs = args::parse_duration(age, "--ttl")?.as_secs_f64();
                ttl.insert(kind.trim().to_string(), serde_json::json!(secs));
            }
        }
        let older = a
            .older_than
            .as_deref()
            .map(|age| args::parse_duration(age, "--older-than"))
            .transpose()?
            .map(|d| d.as_secs_f64());
        let body = serde_json::json!({
            "dry_run": a.dry_run,
            "older_than_secs": older,
            "statuses": a.statuses,
            "tags": a.tags,
            "keep_versions": a.keep_versions,
            "ttl_secs": ttl,
        });
        let report: RetentionReport = r.send("POST", "/v1/admin/cleanup", &Params::new(), &body)?;
        return print_report(ctx, &report);
    }
    let store = ctx.existing_store()?;
    let enabled = ctx.progress_enabled();
    let mut bar: Option<(&'static str, Progress)> = None;
    let report = store.apply_retention_with_progress(&policy, |p| {
        if bar.as_ref().is_none_or(|(phase, _)| *phase != p.phase) {
            let label = match p.phase {
                "planning" => "planning",
                "sessions" => "deleting sessions",
                "artifacts" => "deleting artifacts",
                "gc" => "collecting garbage",
                other => other,
            };
            let unit = if p.phase == "sessions" {
                "sessions"
            } else {
                "items"
            };
            bar = Some((p.phase, Progress::new(label, p.total, enabled).unit(unit)));
        }
        if let Some((_, b)) = bar.as_mut() {
            b.set(p.done, p.total);
        }
    })?;
    drop(bar);
    print_report(ctx, &report)
}

fn print_report(ctx: &Ctx, r: &RetentionReport) -> CliResult {
    ctx.emit(r, |w, style| {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        let freed = if r.dry_run { "would free" } else { "freed" };
        writeln!(
            w,
            "{}{verb} {} session(s) and {} artifact(s) ({} logical); {freed} {} in {} blob(s)",
            if r.dry_run {
                style.paint(Colour::Yellow, "dry run: ")
            } else {
                String::new()
            },
            r.sessions.len(),
            r.artifacts_removed,
            human_size(r.logical_bytes_removed),
            human_size(r.bytes_freed),
            r.blobs_freed
        )?;
        let kept = r.kept_pinned_sessions + r.kept_pinned_artifacts + r.kept_with_kept_children;
        if kept > 0 {
            writeln!(
                w,
                "kept {} pinned session(s), {} pinned artifact(s), {} session(s) with kept children",
                r.kept_pinned_sessions, r.kept_pinned_artifacts, r.kept_with_kept_children
            )?;
        }
        if !r.sessions.is_empty() {
            writeln!(w)?;
            let mut t = Table::new(&["SESSION", "STATUS", "ENDED", ">ARTIFACTS", ">SIZE"]);
            for s in r.sessions.iter().take(MAX_ROWS) {
                t.row(vec![
                    s.id.to_string().into(),
                    Cell::painted(s.status.as_str(), super::output::Style::status_colour(s.status)),
                    s.ended_at
                        .map(|e| e.to_rfc3339())
                        .unwrap_or_else(|| "-".into())
                        .into(),
                    s.artifacts.to_string().into(),
                    human_size(s.bytes).into(),
                ]);
            }
            t.write(w, style)?;
            if r.sessions.len() > MAX_ROWS {
                writeln!(w, "... and {} more (see --json)", r.sessions.len() - MAX_ROWS)?;
            }
        }
        if !r.artifacts.is_empty() {
            writeln!(w)?;
            let mut t = Table::new(&["ARTIFACT", "SESSION", "NAME", ">VER", "KIND", ">SIZE", "RULE"]);
            for x in r.artifacts.iter().take(MAX_ROWS) {
                let rule = serde_json::to_value(x.rule)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                t.row(vec![
                    x.id.to_string().into(),
                    x.session_id.to_string().into(),
                    x.name.clone().into(),
                    x.version.to_string().into(),
                    x.kind.to_string().into(),
                    human_size(x.size).into(),
                    rule.into(),
                ]);
            }
            t.write(w, style)?;
            if r.artifacts.len() > MAX_ROWS {
                writeln!(w, "... and {} more (see --json)", r.artifacts.len() - MAX_ROWS)?;
            }
        }
        if r.dry_run && (!r.sessions.is_empty() || r.artifacts_removed > 0) {
            writeln!(w, "run again without --dry-run to remove them")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut CleanupArgs)) -> CleanupArgs {
        let mut a = CleanupArgs {
            dry_run: false,
            older_than: None,
            statuses: vec![],
            tags: vec![],
            keep_versions: None,
            ttls: vec![],
        };
        f(&mut a);
        a
    }

    #[test]
    fn bad_flags_are_invalid_input() {
        let cases: Vec<(CleanupArgs, &str)> = vec![
            (args(|_| {}), "no rule"),
            (args(|a| a.statuses = vec!["failed".into()]), "--older-than"),
            (args(|a| a.keep_versions = Some(0)), "--keep-versions"),
            (args(|a| a.ttls = vec!["tool_result".into()]), "KIND=AGE"),
            (args(|a| a.ttls = vec!["Tool=1d".into()]), "--ttl"),
            (args(|a| a.ttls = vec!["tool_result=soon".into()]), "--ttl"),
            (
                args(|a| a.ttls = vec!["tool_result=1d".into(), "tool_result=2d".into()]),
                "twice",
            ),
            (
                args(|a| {
                    a.older_than = Some("1d".into());
                    a.statuses = vec!["active".into()];
                }),
                "terminal",
            ),
            (args(|a| a.older_than = Some("30".into())), "--older-than"),
        ];
        for (a, want) in cases {
            let e = policy(&a).unwrap_err();
            assert_eq!(e.exit, 5, "{a:?}");
            assert!(e.message.contains(want), "{a:?}: {}", e.message);
        }
        assert!(policy(&args(|a| a.ttls = vec!["tool_result=0s".into()])).is_ok());
    }
}
