//! `cairn bench`: the standard workloads (small, large, dedup, read, query by default) against
//! one backend, in scratch stores under a folder of their own, printed as a table or JSON.
//!
//! The folder must be new, empty, or one `cairn bench` used before (it holds a `.cairn-bench`
//! marker): the benchmark creates and deletes stores in it, so it never runs inside a real store.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;

use cairn::BackendKind;
use cairn_bench::{parse_workloads, render_table, Bench, BenchOptions};

use super::context::{CliResult, Ctx, Failure};

const MARKER: &str = ".cairn-bench";
const DEFAULT_DIR: &str = ".cairn-bench";

/// `cairn bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The engine to measure: memory, sled or redb.
    #[arg(long, default_value = "sled", value_name = "ENGINE")]
    pub backend: String,
    /// Comma-separated workloads: small, large, dedup, read, query, space, memory, corpus, or all.
    #[arg(
        long,
        default_value = "small,large,dedup,read,query",
        value_name = "LIST"
    )]
    pub workloads: String,
    /// Size preset: tiny (seconds), quick (minutes) or full (the sizes of BENCHMARKS.md, with a
    /// 1,000,000-artifact query store).
    #[arg(long, default_value = "quick", value_name = "PRESET")]
    pub preset: String,
    /// Small (~1 KiB) artifacts per ingest run.
    #[arg(long, value_name = "N")]
    pub small: Option<usize>,
    /// 1 MiB artifacts per large-ingest run.
    #[arg(long, value_name = "N")]
    pub large: Option<usize>,
    /// Copies of the same 1 MiB content in the dedup run.
    #[arg(long, value_name = "N")]
    pub dedup: Option<usize>,
    /// Small artifacts read in the read run.
    #[arg(long, value_name = "N")]
    pub reads: Option<usize>,
    /// Artifacts in the store the queries run on (at least 2000).
    #[arg(long, value_name = "N")]
    pub scale: Option<usize>,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Folder of files for the corpus workload.
    #[arg(long, value_name = "PATH")]
    pub corpus: Option<PathBuf>,
}

/// Runs the selected workloads and prints the figures.
pub fn run(ctx: &Ctx, a: BenchArgs) -> CliResult {
    let kind: BackendKind = a.backend.parse()?;
    let mut opts = match a.preset.as_str() {
        "tiny" => BenchOptions::tiny(),
        "quick" => BenchOptions::quick(),
        "full" => BenchOptions::full(),
        other => {
            return Err(Failure::invalid(
                "preset",
                format!("{other:?}; use tiny, quick or full"),
            ))
        }
    };
    opts.workloads = parse_workloads(&a.workloads)?;
    let set = |v: Option<usize>, slot: &mut usize| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(a.small, &mut opts.small_count);
    set(a.large, &mut opts.large_count);
    set(a.dedup, &mut opts.dedup_count);
    set(a.reads, &mut opts.read_count);
    set(a.scale, &mut opts.scale_count);
    set(a.runs, &mut opts.runs);
    opts.corpus = a.corpus;
    opts.validate()?;
    let dir = if ctx.store_given {
        ctx.store_path.clone()
    } else {
        PathBuf::from(DEFAULT_DIR)
    };
    claim_dir(&dir)?;
    let figs = Bench::new(kind, &dir, opts).run()?;
    ctx.emit(&figs, |w, _| write!(w, "{}", render_table(&figs)))
}

/// Creates `dir` with the marker, or accepts it if empty or already marked; refuses anything else.
fn claim_dir(dir: &Path) -> CliResult {
    let marker = dir.join(MARKER);
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Failure::invalid(
                "bench folder",
                format!(
                    "{} is a file; pass a folder for the scratch stores",
                    dir.display()
                ),
            ));
        }
        let empty = fs::read_dir(dir)
            .map_err(|e| Failure::io(dir, e))?
            .next()
            .is_none();
        if !empty && !marker.exists() {
            return Err(Failure::invalid(
                "bench folder",
                format!(
                    "{} is not empty and was not made by `cairn bench`; the benchmark creates and \
                     deletes stores in its folder, so pass a new or empty folder with --store",
                    dir.display()
                ),
            ));
        }
    }
    fs::create_dir_all(dir).map_err(|e| Failure::io(dir, e))?;
    super::atomic::write_bytes(&marker, b"scratch folder of `cairn bench`\n")
}
