//! Store-wide commands: `cairn stats`, `cairn gc`, `cairn verify [--repair]`.

use clap::Args;

use super::context::{CliResult, Ctx, Failure};
use super::output::{human_size, ratio, Cell, Colour, Table};
use super::progress::Spinner;
use super::remote::Params;

/// `cairn stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {}

/// `cairn gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep content whose last reference was dropped less than this long ago (e.g. 90s, 15m,
    /// 1h, 7d; 0 collects everything unreferenced): a put of the same content meanwhile takes
    /// it back without storing it again. Default 0 for a local store. A server's GC uses the
    /// grace period it was started with (`cairn serve --gc-grace`).
    #[arg(long, env = "CAIRN_GC_GRACE", value_name = "DURATION")]
    pub gc_grace: Option<String>,
}

/// `cairn verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also repair: rebuild indexes and reference counts from the records, and move corrupt or
    /// orphaned blobs into `<store>/quarantine/` (never deleting them); prints what it did.
    #[arg(long)]
    pub repair: bool,
}

/// Prints store-wide counts and ratios.
pub fn stats(ctx: &Ctx, _a: StatsArgs) -> CliResult {
    let (s, place): (cairn::Stats, String) = if let Some(r) = ctx.remote() {
        (
            r.get("/v1/admin/stats", &Params::new())?,
            r.url().to_string(),
        )
    } else {
        let store = ctx.existing_store()?;
        let place = store
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        (store.stats()?, place)
    };
    ctx.emit(&s, |w, style| {
        let b = |k: &str| style.paint(Colour::Bold, &format!("{k:<13}"));
        writeln!(w, "{} {place}", b("store"))?;
        let by_status = s
            .sessions_by_status
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(w, "{} {}{}", b("sessions"), s.sessions, paren(&by_status))?;
        let by_kind = s
            .artifacts_by_kind
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(w, "{} {}{}", b("artifacts"), s.artifacts, paren(&by_kind))?;
        writeln!(w, "{} {}", b("blobs"), s.blobs)?;
        writeln!(
            w,
            "{} {} ({} bytes)",
            b("logical"),
            human_size(s.logical_bytes),
            s.logical_bytes
        )?;
        writeln!(
            w,
            "{} {} ({} bytes)",
            b("unique"),
            human_size(s.content_bytes),
            s.content_bytes
        )?;
        writeln!(
            w,
            "{} {} ({} bytes)",
            b("stored"),
            human_size(s.stored_bytes),
            s.stored_bytes
        )?;
        writeln!(
            w,
            "{} {} (logical / unique)",
            b("dedup"),
            ratio(s.dedup_ratio)
        )?;
        writeln!(
            w,
            "{} {} (unique / stored)",
            b("compression"),
            ratio(s.compression_ratio)
        )
    })
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

/// Collects unreferenced content.
pub fn gc(ctx: &Ctx, a: GcArgs) -> CliResult {
    let grace = a
        .gc_grace
        .as_deref()
        .map(|g| super::args::parse_duration(g, "--gc-grace"))
        .transpose()?;
    let report: cairn::GcReport = {
        let _spin = Spinner::start("collecting garbage", ctx.progress_enabled());
        match (ctx.remote(), grace) {
            (Some(r), None) => r.send(
                "POST",
                "/v1/admin/gc",
                &Params::new(),
                &serde_json::json!({}),
            )?,
            (Some(r), Some(_)) => {
                return Err(Failure::usage(format!(
                    "--gc-grace (or CAIRN_GC_GRACE) applies to a local store; the server {} \
                     collects with the grace period it was started with (`cairn serve \
                     --gc-grace`): run `cairn gc` without it",
                    r.url()
                )))
            }
            (None, Some(g)) => ctx.existing_store()?.gc_with_grace(g)?,
            (None, None) => ctx.existing_store()?.gc()?,
        }
    };
    ctx.emit(&report, |w, _| {
        writeln!(
            w,
            "removed {} blob(s), freed {}; removed {} orphaned blob file(s)",
            report.blobs_removed,
            human_size(report.bytes_freed),
            report.orphan_files_removed
        )
    })
}

/// Re-hashes every blob and checks indexes; exits 1 when problems are found.
pub fn verify(ctx: &Ctx, a: VerifyArgs) -> CliResult {
    if a.repair {
        return repair(ctx);
    }
    let report: cairn::VerifyReport = {
        let _spin = Spinner::start("verifying", ctx.progress_enabled());
        match ctx.remote() {
            Some(r) => r.send(
                "POST",
                "/v1/admin/verify",
                &Params::new(),
                &serde_json::json!({}),
            )?,
            None => ctx.existing_store()?.verify()?,
        }
    };
    ctx.emit(&report, |w, style| {
        let verdict = if report.ok {
            style.paint(Colour::Green, "ok")
        } else {
            style.paint(
                Colour::Red,
                &format!("{} problem(s)", report.problems.len()),
            )
        };
        writeln!(
            w,
            "{verdict}: {} blob(s) re-hashed, {} artifact record(s) and {} index entries checked",
            report.blobs_checked, report.artifacts_checked, report.index_entries_checked
        )?;
        if !report.problems.is_empty() {
            problem_table(&report.problems).write(w, style)?;
            writeln!(
                w,
                "run `cairn verify --repair` to rebuild indexes and quarantine bad blobs"
            )?;
        }
        write_orphans(w, &report)
    })?;
    if report.ok {
        Ok(())
    } else {
        // The report is on stdout; the failure line (and exit 1) tell scripts something is wrong.
        Err(Failure {
            code: "integrity".into(),
            message: format!("verify found {} problem(s)", report.problems.len()),
            exit: 1,
        })
    }
}

/// The orphan blob files `verify` counted, if any: garbage left by an interrupted write, not
/// damage.
fn write_orphans(w: &mut dyn std::io::Write, report: &cairn::VerifyReport) -> std::io::Result<()> {
    if report.orphan_files == 0 {
        return Ok(());
    }
    writeln!(
        w,
        "{} orphan blob file(s), {} ({} bytes): left by an interrupted write, not damage; \
         `cairn gc` reclaims them",
        report.orphan_files,
        human_size(report.orphan_bytes),
        report.orphan_bytes
    )
}

/// The problems `verify` found, one row each, naming the affected artifacts.
fn problem_table(problems: &[cairn::Problem]) -> Table {
    let mut t = Table::new(&["KIND", "HASH", "ARTIFACTS", "PROBLEM"]);
    for p in problems {
        let arts = match p.artifacts.len() {
            0 => "-".to_string(),
            1..=3 => p
                .artifacts
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            n => format!("{},... ({n})", p.artifacts[0]),
        };
        t.row(vec![
            Cell::painted(p.kind.clone(), Colour::Red),
            p.hash
                .map(|h| h.short())
                .unwrap_or_else(|| "-".into())
                .into(),
            arts.into(),
            p.message.clone().into(),
        ]);
    }
    t
}

/// `cairn verify --repair`: repairs, prints the report, and exits 1 when problems remain (lost
/// content cannot be rebuilt: the artifacts that hold it are named).
fn repair(ctx: &Ctx) -> CliResult {
    let report: cairn::RepairReport = {
        let _spin = Spinner::start("verifying and repairing", ctx.progress_enabled());
        match ctx.remote() {
            Some(r) => r.send(
                "POST",
                "/v1/admin/repair",
                &Params::new(),
                &serde_json::json!({}),
            )?,
            None => ctx.existing_store()?.repair()?,
        }
    };
    ctx.emit(&report, |w, style| {
        writeln!(
            w,
            "repaired: {} index entries and {} reference count(s) fixed, {} file(s) quarantined",
            report.index_entries_fixed,
            report.refcounts_fixed,
            report.quarantined.len()
        )?;
        for q in &report.quarantined {
            writeln!(w, "  quarantined {q}")?;
        }
        if !report.artifacts_with_lost_content.is_empty() {
            writeln!(
                w,
                "{} artifact(s) lost their content (records kept; reads fail with an integrity error):",
                report.artifacts_with_lost_content.len()
            )?;
            for a in &report.artifacts_with_lost_content {
                writeln!(w, "  {}", style.paint(Colour::Red, &a.to_string()))?;
            }
        }
        let after = &report.after;
        if after.ok {
            writeln!(w, "{}: the store verifies clean", style.paint(Colour::Green, "ok"))
        } else {
            writeln!(
                w,
                "{} remain after repair:",
                style.paint(Colour::Red, &format!("{} problem(s)", after.problems.len()))
            )?;
            problem_table(&after.problems).write(w, style)?;
            writeln!(
                w,
                "delete the artifacts named above (`cairn artifact delete ID`) and run `cairn gc`, \
                 or put the quarantined files back by hand"
            )
        }
    })?;
    if report.after.ok {
        Ok(())
    } else {
        Err(Failure {
            code: "integrity".into(),
            message: format!(
                "{} problem(s) remain after repair; {} artifact(s) lost their content",
                report.after.problems.len(),
                report.artifacts_with_lost_content.len()
            ),
            exit: 1,
        })
    }
}
