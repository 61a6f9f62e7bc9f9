//! Benchmark workloads shared by `benches/`, the `bench-suite/` package and `cairn bench`.
//!
//! Every workload measures Cairn and a baseline in the same process run, repeats the measurement
//! [`BenchOptions::runs`] times and reports the median with the spread, so that the ratio holds on
//! a noisy shared machine. Nothing here asserts a timing: it measures and reports. See
//! BENCHMARKS.md for the figures and what bounds each one.
//!
//! ```
//! use cairn_bench::{BenchOptions, Bench, Workload};
//! use cairn::BackendKind;
//!
//! # fn main() -> cairn::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut opts = BenchOptions::tiny();
//! opts.workloads = vec![Workload::Small];
//! let figures = Bench::new(BackendKind::Memory, dir.path(), opts).run()?;
//! assert!(figures.iter().all(|f| f.median > 0.0));
//! println!("{}", cairn_bench::render_table(&figures));
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use cairn::{
    ArtifactKind, Backend, BackendKind, Config, Durability, Error, MemoryBackend, NewArtifact,
    NewSession, Op, Query, Result, SessionId, SledBackend, Store,
};

/// The first byte of the raw engine baseline's keys: that of the store's artifact records (the
/// baseline writes 17-byte keys in random order, as artifact records are).
const RAW_KEY_PREFIX: u8 = b'A';

/// An I/O error naming `path`.
fn io_err(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        path: path.into(),
        source,
    }
}

/// Bad input for the harness: which input, what is wrong.
fn invalid(what: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: what.into(),
        message: message.into(),
    }
}

/// `d` as one zstd frame at `level`, with the content size in the header, as the store writes it.
fn compress(d: &[u8], level: i32) -> Result<Vec<u8>> {
    let err = |e: std::io::Error| Error::Other {
        message: format!("zstd compression failed: {e}"),
    };
    let mut enc = zstd::bulk::Compressor::new(level).map_err(err)?;
    enc.include_contentsize(true).map_err(err)?;
    enc.compress(d).map_err(err)
}

/// Every key and value in `store`'s engine, in key order (through the public
/// [`Store::engine_scan`]).
fn engine_entries(store: &Store, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut from = start.to_vec();
    loop {
        let page = store.engine_scan(&from, end, 4096)?;
        let done = page.len() < 4096;
        if let Some((k, _)) = page.last() {
            from = k.clone();
            from.push(0);
        }
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Items per atomic batch in the ingest workloads (as SQLite savers commit 1,000 rows per transaction).
pub const BATCH: usize = 1000;
/// Size of a "large" artifact.
pub const LARGE: usize = 1 << 20;

/// One of the standard workloads (the numbering follows issue 4 and BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// 1. Small ingest: about 1 KiB tool outputs with tags and metadata, group commit.
    Small,
    /// 2. Large ingest: 1 MiB artifacts, compressible and incompressible.
    Large,
    /// 3. Dedup ingest: the same 1 MiB content many times.
    Dedup,
    /// 4. Reads of 1 KiB and of 1 MiB compressed artifacts.
    Read,
    /// 5, 6, 9. Queries at scale, scale stability and open time on one large store.
    Query,
    /// 7. Space on disk.
    Space,
    /// 8. Peak memory while putting a large streamed input.
    Memory,
    /// 10. The real corpus.
    Corpus,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 8] = [
        Workload::Small,
        Workload::Large,
        Workload::Dedup,
        Workload::Read,
        Workload::Query,
        Workload::Space,
        Workload::Memory,
        Workload::Corpus,
    ];

    /// The name used on the command line and in `CAIRN_BENCH_WORKLOADS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Large => "large",
            Workload::Dedup => "dedup",
            Workload::Read => "read",
            Workload::Query => "query",
            Workload::Space => "space",
            Workload::Memory => "memory",
            Workload::Corpus => "corpus",
        }
    }
}

impl std::str::FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                invalid(
                    "workload",
                    format!("{s:?}; use small, large, dedup, read, query, space, memory or corpus"),
                )
            })
    }
}

/// Sizes and repetitions. [`BenchOptions::full`] has the issue's sizes; [`BenchOptions::quick`]
/// finishes in a few minutes; [`BenchOptions::from_env`] applies `CAIRN_BENCH_*` overrides.
#[derive(Clone, Debug, Serialize)]
pub struct BenchOptions {
    /// Small artifacts per ingest run (workload 1).
    pub small_count: usize,
    /// Approximate size of a small artifact in bytes.
    pub small_size: usize,
    /// 1 MiB artifacts per large-ingest run, for each of compressible and random (workload 2).
    pub large_count: usize,
    /// Times the same 1 MiB content is stored (workload 3).
    pub dedup_count: usize,
    /// Small artifacts read per read run (workload 4).
    pub read_count: usize,
    /// Artifacts in the store the queries run on (workloads 5, 6, 9).
    pub scale_count: usize,
    /// Timed repetitions of each query kind (p50 and p99 come from these).
    pub query_repeats: usize,
    /// MiB streamed into one artifact for the memory workload (workload 8).
    pub stream_mib: u64,
    /// Repetitions of each throughput measurement (the median is reported).
    pub runs: usize,
    /// Folder of real agent runs for workload 10 (skipped if `None` or missing).
    pub corpus: Option<PathBuf>,
    /// Which workloads [`Bench::run`] runs.
    pub workloads: Vec<Workload>,
}

impl BenchOptions {
    /// The sizes issue 4 asks for (the 1,000,000-artifact store takes a while to build).
    pub fn full() -> Self {
        Self {
            small_count: 100_000,
            small_size: 1024,
            large_count: 100,
            dedup_count: 1000,
            read_count: 100_000,
            scale_count: 1_000_000,
            query_repeats: 200,
            stream_mib: 1024,
            runs: 3,
            corpus: None,
            workloads: Workload::ALL.to_vec(),
        }
    }

    /// Smaller sizes that finish in minutes on two cores.
    pub fn quick() -> Self {
        Self {
            small_count: 20_000,
            large_count: 32,
            dedup_count: 200,
            read_count: 20_000,
            scale_count: 50_000,
            query_repeats: 100,
            stream_mib: 256,
            ..Self::full()
        }
    }

    /// Tiny sizes for tests and doc examples: every code path, no meaningful numbers.
    pub fn tiny() -> Self {
        Self {
            small_count: 300,
            large_count: 2,
            dedup_count: 3,
            read_count: 200,
            scale_count: 2_000,
            query_repeats: 3,
            stream_mib: 12,
            runs: 1,
            ..Self::full()
        }
    }

    /// Applies `CAIRN_BENCH_PRESET` (`full`, `quick`, `tiny`: sizes only; the corpus and the
    /// workload list are kept) and then the individual overrides
    /// `CAIRN_BENCH_SMALL`, `_SMALL_SIZE`, `_LARGE`, `_DEDUP`, `_READS`, `_SCALE`, `_QUERY_REPEATS`,
    /// `_STREAM_MIB`, `_RUNS`, `_CORPUS` (a folder) and `_WORKLOADS` (comma-separated names).
    pub fn from_env(self) -> Result<Self> {
        let keep = |o: BenchOptions| BenchOptions {
            corpus: self.corpus.clone(),
            workloads: self.workloads.clone(),
            ..o
        };
        let mut o = match std::env::var("CAIRN_BENCH_PRESET").ok().as_deref() {
            None | Some("") => self.clone(),
            Some("full") => keep(Self::full()),
            Some("quick") => keep(Self::quick()),
            Some("tiny") => keep(Self::tiny()),
            Some(other) => {
                return Err(invalid(
                    "CAIRN_BENCH_PRESET",
                    format!("{other:?}; use full, quick or tiny"),
                ))
            }
        };
        let num = |name: &str, v: &mut usize| -> Result<()> {
            if let Ok(s) = std::env::var(name) {
                *v = s
                    .trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| invalid(name, format!("{s:?} is not a whole number")))?;
            }
            Ok(())
        };
        num("CAIRN_BENCH_SMALL", &mut o.small_count)?;
        num("CAIRN_BENCH_SMALL_SIZE", &mut o.small_size)?;
        num("CAIRN_BENCH_LARGE", &mut o.large_count)?;
        num("CAIRN_BENCH_DEDUP", &mut o.dedup_count)?;
        num("CAIRN_BENCH_READS", &mut o.read_count)?;
        num("CAIRN_BENCH_SCALE", &mut o.scale_count)?;
        num("CAIRN_BENCH_QUERY_REPEATS", &mut o.query_repeats)?;
        num("CAIRN_BENCH_RUNS", &mut o.runs)?;
        let mut mib = o.stream_mib as usize;
        num("CAIRN_BENCH_STREAM_MIB", &mut mib)?;
        o.stream_mib = mib as u64;
        if let Ok(c) = std::env::var("CAIRN_BENCH_CORPUS") {
            o.corpus = Some(PathBuf::from(c));
        }
        if let Ok(w) = std::env::var("CAIRN_BENCH_WORKLOADS") {
            o.workloads = parse_workloads(&w)?;
        }
        o.validate()?;
        Ok(o)
    }

    /// Checks that every size is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, msg: &str| Err(invalid(what, msg.to_string()));
        if self.runs == 0 {
            return bad(
                "runs",
                "0; use at least 1 (3 or more for a meaningful median)",
            );
        }
        if self.small_count == 0 || self.read_count == 0 || self.large_count == 0 {
            return bad("sizes", "small, read and large counts must be at least 1");
        }
        if self.dedup_count == 0 || self.query_repeats == 0 || self.stream_mib == 0 {
            return bad(
                "sizes",
                "dedup count, query repeats and stream MiB must be at least 1",
            );
        }
        if !(64..=60_000).contains(&self.small_size) {
            return bad(
                "small size",
                "use 64 to 60000 bytes (about 1024 is the workload)",
            );
        }
        if self.scale_count < 2_000 {
            return bad(
                "scale count",
                "use at least 2000: the store holds 5 groups of 100 matching artifacts",
            );
        }
        Ok(())
    }
}

/// Parses a comma-separated list of workload names (`all` for every one).
pub fn parse_workloads(s: &str) -> Result<Vec<Workload>> {
    if s.trim() == "all" {
        return Ok(Workload::ALL.to_vec());
    }
    s.split(',')
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(str::parse)
        .collect()
}

/// Median, minimum and maximum of repeated measurements.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The median.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples.
    pub samples: usize,
}

impl Summary {
    /// Summarises samples (an empty slice gives zeros).
    pub fn of(samples: &[f64]) -> Summary {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return Summary {
                median: 0.0,
                min: 0.0,
                max: 0.0,
                samples: 0,
            };
        }
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Summary {
            median,
            min: v[0],
            max: v[n - 1],
            samples: n,
        }
    }
}

/// The `p`-th percentile (0 to 100) of samples, by nearest rank.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = samples.to_vec();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A baseline measured in the same run, and Cairn's figure relative to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Baseline {
    /// What the baseline is.
    pub name: String,
    /// The baseline's median, in the figure's unit.
    pub median: f64,
    /// Cairn relative to the baseline, oriented so that above 1 means Cairn is better
    /// (throughput: cairn / baseline; latency and size: baseline / cairn).
    pub ratio: f64,
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    /// Workload number and name, e.g. `1 small ingest`.
    pub workload: String,
    /// Backend: `memory`, `sled` or `redb`.
    pub backend: String,
    /// What is measured, e.g. `put_batch(1000), group commit`.
    pub metric: String,
    /// Unit of `median`, `min` and `max`.
    pub unit: String,
    /// Whether a larger value is better (throughput) or worse (latency, bytes).
    pub higher_is_better: bool,
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub samples: usize,
    /// Baselines measured in the same run.
    pub baselines: Vec<Baseline>,
    /// The issue's target, in words, if there is one.
    pub target: Option<String>,
    /// Process CPU time over wall time while its workload ran: about 1 (or 2 with both cores
    /// busy) on a quiet machine, well below 1 when other tenants starve the run.
    pub cpu_per_wall: Option<f64>,
}

impl Figure {
    /// A figure from a summary.
    pub fn new(
        workload: &str,
        backend: &str,
        metric: &str,
        unit: &str,
        higher_is_better: bool,
        s: Summary,
    ) -> Self {
        Figure {
            workload: workload.into(),
            backend: backend.into(),
            metric: metric.into(),
            unit: unit.into(),
            higher_is_better,
            median: s.median,
            min: s.min,
            max: s.max,
            samples: s.samples,
            baselines: Vec::new(),
            target: None,
            cpu_per_wall: None,
        }
    }

    /// Adds a baseline measured in the same unit.
    pub fn baseline(mut self, name: &str, median: f64) -> Self {
        let ratio = if self.higher_is_better {
            safe_div(self.median, median)
        } else {
            safe_div(median, self.median)
        };
        self.baselines.push(Baseline {
            name: name.into(),
            median,
            ratio,
        });
        self
    }

    /// Sets the target text.
    pub fn target(mut self, t: &str) -> Self {
        self.target = Some(t.into());
        self
    }
}

fn safe_div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// A plain-text table of figures.
pub fn render_table(figs: &[Figure]) -> String {
    let row =
        |w: &str, b: &str, m: &str, med: &str, spread: &str, u: &str, cpu: &str, base: &str| {
            format!("{w:<20} {b:<7} {m:<58} {med:>10} {spread:>21} {u:<12} {cpu:>4}  {base}\n")
        };
    let mut out = row(
        "workload",
        "backend",
        "metric",
        "median",
        "spread (min..max)",
        "unit",
        "cpu",
        "baselines (ratio, >1 = Cairn better)",
    );
    for f in figs {
        let base = f
            .baselines
            .iter()
            .map(|b| format!("{} {} ({:.2}x)", b.name, fmt_num(b.median), b.ratio))
            .collect::<Vec<_>>()
            .join("; ");
        out.push_str(&row(
            &f.workload,
            &f.backend,
            &f.metric,
            &fmt_num(f.median),
            &format!("{}..{}", fmt_num(f.min), fmt_num(f.max)),
            &f.unit,
            &f.cpu_per_wall
                .map(|c| format!("{c:.2}"))
                .unwrap_or_default(),
            &base,
        ));
    }
    out
}

/// Figures as pretty JSON.
pub fn to_json(figs: &[Figure]) -> String {
    serde_json::to_string_pretty(figs).unwrap_or_else(|_| "[]".into())
}

/// Formats a number with 3 significant digits at most after the point.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.5}")
    }
}

/// Deterministic xorshift generator: the same seed gives the same data in every engine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Incompressible bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

const TOOLS: [&str; 8] = [
    "bash",
    "grep",
    "read_file",
    "edit",
    "python",
    "search",
    "ls",
    "test",
];
const WORDS: [&str; 16] = [
    "error",
    "ok",
    "warning",
    "src/main.rs",
    "fn",
    "return",
    "passed",
    "failed",
    "line",
    "import",
    "value",
    "None",
    "status",
    "index",
    "0x1f",
    "match",
];

/// JSON-lines log text of exactly `n` bytes, varied by `seed` (compresses like real tool logs).
pub fn json_log(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 256);
    let mut step = seed % 10_000;
    while out.len() < n {
        let tool = TOOLS[r.below(8) as usize];
        let words: Vec<&str> = (0..4 + r.below(8))
            .map(|_| WORDS[r.below(16) as usize])
            .collect();
        let _ = writeln!(
            out,
            "{{\"step\":{step},\"tool\":\"{tool}\",\"ms\":{},\"exit\":{},\"output\":\"{}\"}}",
            r.below(5000),
            r.below(3),
            words.join(" ")
        );
        step += 1;
    }
    out.truncate(n);
    out
}

/// One generated artifact.
#[derive(Clone, Debug)]
pub struct GenItem {
    /// Kind.
    pub kind: ArtifactKind,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata object.
    pub metadata: Map<String, Value>,
    /// Content.
    pub content: Vec<u8>,
}

impl GenItem {
    /// The options to store it with.
    pub fn new_artifact(&self) -> NewArtifact {
        NewArtifact::new(self.kind.clone(), self.name.clone())
            .tags(self.tags.iter().cloned())
            .metadata(self.metadata.clone())
    }
}

/// The `i`-th small tool output of about `size` bytes (±10%); one in ten repeats an earlier
/// output, so dedup has something to find, as in real runs.
pub fn small_item(i: u64, size: usize) -> GenItem {
    let mut r = Rng::new(i ^ 0xC0FFEE);
    let tool = TOOLS[(i % 8) as usize];
    // A repeat copies an item from about halfway back whose index ends in 4 (never itself a repeat).
    let content_seed = if i % 10 == 9 { i / 20 * 10 + 4 } else { i };
    let spread = (size / 10).max(1) as u64;
    let len = size - size / 10 + (Rng::new(content_seed).below(2 * spread)) as usize;
    let mut metadata = Map::new();
    metadata.insert("tool".into(), Value::from(tool));
    metadata.insert("step".into(), Value::from(i));
    metadata.insert("exit_code".into(), Value::from(r.below(3)));
    GenItem {
        kind: if i % 10 == 3 {
            ArtifactKind::AgentOutput
        } else {
            ArtifactKind::ToolResult
        },
        name: format!("tool/{tool}/{i}.json"),
        tags: vec![format!("tool:{tool}"), format!("step:{}", i % 100)],
        metadata,
        content: json_log(len, content_seed),
    }
}

/// How many artifacts each needle group holds (every query matches one group).
pub const NEEDLES: usize = 100;

/// A query of workload 5, answerable by Cairn, by a full scan and by SQLite.
#[derive(Clone, Debug)]
pub enum ScaleQuery {
    /// Artifacts carrying the tag.
    Tag(String),
    /// Artifacts of a kind in the subtree of a session (the session slot's ids).
    KindInSubtree(ArtifactKind),
    /// Names matching a glob.
    NameGlob(String),
    /// Size in an inclusive range.
    Size(u64, u64),
    /// Created in `[from, to)`.
    Time(DateTime<Utc>, DateTime<Utc>),
}

impl ScaleQuery {
    /// A short label.
    pub fn label(&self) -> &'static str {
        match self {
            ScaleQuery::Tag(_) => "by tag",
            ScaleQuery::KindInSubtree(_) => "by kind in subtree",
            ScaleQuery::NameGlob(_) => "by name glob",
            ScaleQuery::Size(..) => "by size range",
            ScaleQuery::Time(..) => "by time range",
        }
    }
}

/// A step in building the scale store: a batch, or the batch inside the time window.
pub enum ScaleStep {
    /// Items to store in one batch: (session slot, item).
    Batch(Vec<(usize, GenItem)>),
    /// Items to store in one batch, with a pause before and after so a time range holds exactly them.
    TimeWindow(Vec<(usize, GenItem)>),
}

/// The layout of the scale store: `roots` root sessions (slots `0..roots`), then a subtree root
/// (slot `roots`) with two children (slots `roots+1`, `roots+2`).
pub struct ScalePlan {
    /// Total artifacts.
    pub count: usize,
    /// Number of plain root sessions.
    pub roots: usize,
    /// Approximate artifact size.
    pub size: usize,
}

impl ScalePlan {
    /// The plan for `count` artifacts of about `size` bytes.
    pub fn new(count: usize, size: usize) -> Self {
        ScalePlan {
            count,
            roots: (count / 1000).max(1),
            size,
        }
    }

    /// Slot of the subtree root.
    pub fn subtree_root(&self) -> usize {
        self.roots
    }

    /// Number of session slots (roots, the subtree root and its two children).
    pub fn slots(&self) -> usize {
        self.roots + 3
    }

    /// The parent slot of a slot, if any.
    pub fn parent(&self, slot: usize) -> Option<usize> {
        (slot > self.roots && slot < self.roots + 3).then_some(self.roots)
    }

    /// The smallest size of the size needles (100 artifacts of this size up to +99), well above
    /// every ordinary artifact's size.
    pub fn needle_size(&self) -> u64 {
        self.size as u64 * 3 + 1000
    }

    /// Every step, in order. 500 of the artifacts are needles: 100 tagged `needle`, 100 named
    /// `trace/needle-*.log`, 100 sized [`ScalePlan::needle_size`] + 0..=99, 100 of kind
    /// `agent_output` in the subtree (beside 200 `tool_result` there) and 100 in the time window.
    pub fn steps(&self) -> impl Iterator<Item = ScaleStep> + '_ {
        let special = 4 * NEEDLES; // the subtree (300) and the time window (100)
        let generic = self.count.saturating_sub(special);
        let stride = (generic / NEEDLES).max(1);
        let mid = generic / 2 / BATCH;
        let n_batches = generic.div_ceil(BATCH);
        let roots = self.roots;
        let size = self.size;
        let needle_size = self.needle_size() as usize;
        (0..=n_batches).flat_map(move |b| {
            let mut steps = Vec::new();
            if b == mid {
                let sub: Vec<(usize, GenItem)> = (0..3 * NEEDLES)
                    .map(|j| {
                        let mut it = small_item(10_000_000 + j as u64, size);
                        it.kind = if j % 3 == 0 {
                            ArtifactKind::AgentOutput
                        } else {
                            ArtifactKind::ToolResult
                        };
                        it.name = format!("sub/{j}.json");
                        (roots + (j / 3) % 3, it)
                    })
                    .collect();
                steps.push(ScaleStep::Batch(sub));
                let win: Vec<(usize, GenItem)> = (0..NEEDLES)
                    .map(|j| {
                        let mut it = small_item(20_000_000 + j as u64, size);
                        it.name = format!("window/{j}.json");
                        (j % roots, it)
                    })
                    .collect();
                steps.push(ScaleStep::TimeWindow(win));
            }
            if b < n_batches {
                let lo = b * BATCH;
                let hi = ((b + 1) * BATCH).min(generic);
                let batch = (lo..hi)
                    .map(|i| {
                        let mut it = small_item(i as u64, size);
                        let g = i / stride;
                        if g < NEEDLES {
                            match i % stride {
                                1 => it.tags.push("needle".into()),
                                2 => it.name = format!("trace/needle-{g}.log"),
                                3 => it.content = json_log(needle_size + g, i as u64),
                                _ => {}
                            }
                        }
                        ((i / BATCH) % roots, it)
                    })
                    .collect();
                steps.push(ScaleStep::Batch(batch));
            }
            steps
        })
    }

    /// The queries of workload 5 (the time window's bounds come from the build).
    pub fn queries(&self, window: (DateTime<Utc>, DateTime<Utc>)) -> Vec<ScaleQuery> {
        vec![
            ScaleQuery::Tag("needle".into()),
            ScaleQuery::KindInSubtree(ArtifactKind::AgentOutput),
            ScaleQuery::NameGlob("trace/needle-*.log".into()),
            ScaleQuery::Size(self.needle_size(), self.needle_size() + 99),
            ScaleQuery::Time(window.0, window.1),
        ]
    }
}

/// A throughput sample: `units / seconds`.
fn rate(units: f64, d: Duration) -> f64 {
    units / d.as_secs_f64().max(1e-9)
}

fn mib(n: usize) -> f64 {
    n as f64 / (1 << 20) as f64
}

/// Sum of allocated bytes of every file under `dir` (what `du` reports).
pub fn disk_usage(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| io_err(&d, e))? {
            let e = e.map_err(|e| io_err(&d, e))?;
            let m = e.metadata().map_err(|err| io_err(e.path(), err))?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += allocated(&m);
            }
        }
    }
    Ok(total)
}

#[cfg(unix)]
fn allocated(m: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(m: &fs::Metadata) -> u64 {
    m.len()
}

/// (`VmRSS`, `VmHWM`) of this process in bytes, from /proc/self/status.
pub fn rss() -> Result<(u64, u64)> {
    let p = Path::new("/proc/self/status");
    let s = fs::read_to_string(p).map_err(|e| io_err(p, e))?;
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (0 if unreadable).
pub fn process_cpu_secs() -> f64 {
    let Ok(s) = fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3. Linux's
    // USER_HZ is 100 on every mainstream configuration.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` 5), so the next peak is this phase's.
pub fn reset_peak_rss() -> Result<()> {
    let p = Path::new("/proc/self/clear_refs");
    fs::write(p, "5").map_err(|e| io_err(p, e))
}

/// A reader that yields `total` bytes of generated JSON-like log text without holding them.
pub struct GenReader {
    left: u64,
    seed: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl GenReader {
    /// `total` bytes.
    pub fn new(total: u64, seed: u64) -> Self {
        GenReader {
            left: total,
            seed,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for GenReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.buf.len() {
            self.seed += 1;
            self.buf = json_log(256 << 10, self.seed);
            self.pos = 0;
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(self.left as usize);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Runs the workloads against one backend, in fresh stores under `dir`.
pub struct Bench {
    kind: BackendKind,
    dir: PathBuf,
    opts: BenchOptions,
    seq: usize,
}

/// The scale store built by [`Bench::build_scale`], kept open for queries.
pub struct ScaleStore {
    /// The store.
    pub store: Store,
    /// Session ids by slot.
    pub sessions: Vec<SessionId>,
    /// The time window's bounds.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// Seconds the build took.
    pub build_secs: f64,
}

impl Bench {
    /// A bench of `kind` whose stores live in fresh folders under `dir`.
    pub fn new(kind: BackendKind, dir: impl AsRef<Path>, opts: BenchOptions) -> Self {
        Bench {
            kind,
            dir: dir.as_ref().to_path_buf(),
            opts,
            seq: 0,
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        match self.kind {
            BackendKind::Memory => "memory",
            BackendKind::Sled => "sled",
            BackendKind::Redb => "redb",
            BackendKind::Fjall => "fjall",
        }
    }

    /// The options.
    pub fn options(&self) -> &BenchOptions {
        &self.opts
    }

    fn fresh_path(&mut self, what: &str) -> PathBuf {
        self.seq += 1;
        let p = self
            .dir
            .join(format!("{}-{what}-{}", self.backend(), self.seq));
        let _ = fs::remove_dir_all(&p);
        p
    }

    /// A fresh store with `config`.
    pub fn fresh_store(&mut self, what: &str, config: Config) -> Result<(Store, PathBuf)> {
        let p = self.fresh_path(what);
        let s = Store::open_backend(self.kind, &p, config)?;
        Ok((s, p))
    }

    fn fresh_backend(&mut self) -> Result<(Box<dyn Backend>, PathBuf)> {
        let p = self.fresh_path("raw");
        fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        let b: Box<dyn Backend> = match self.kind {
            BackendKind::Memory => Box::new(MemoryBackend::new()),
            BackendKind::Sled => Box::new(SledBackend::open(&p.join("db"))?),
            #[cfg(feature = "redb")]
            BackendKind::Redb => Box::new(cairn::RedbBackend::open(&p)?),
            #[cfg(not(feature = "redb"))]
            BackendKind::Redb => return Err(invalid("backend", "this build has no redb backend")),
            #[cfg(feature = "fjall")]
            BackendKind::Fjall => Box::new(cairn::FjallBackend::open(&p.join("db"))?),
            #[cfg(not(feature = "fjall"))]
            BackendKind::Fjall => {
                return Err(invalid("backend", "this build has no fjall backend"))
            }
        };
        Ok((b, p))
    }

    /// Group commit: writes return at once, `flush` (timed) makes them durable.
    pub fn group_config() -> Config {
        Config::default().durability(Durability::Group { interval_ms: 1000 })
    }

    /// Runs the selected workloads, removing each store when done with it.
    pub fn run(&mut self) -> Result<Vec<Figure>> {
        self.opts.validate()?;
        fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut out = Vec::new();
        for w in self.opts.workloads.clone() {
            let (cpu0, t0) = (process_cpu_secs(), Instant::now());
            let mut figs = match w {
                Workload::Small => self.small_ingest()?,
                Workload::Large => self.large_ingest()?,
                Workload::Dedup => self.dedup_ingest()?,
                Workload::Read => self.reads()?,
                Workload::Query => self.scale()?,
                Workload::Space => self.space()?,
                Workload::Memory => self.memory()?,
                Workload::Corpus => self.corpus()?,
            };
            let share = (process_cpu_secs() - cpu0) / t0.elapsed().as_secs_f64().max(1e-9);
            for f in &mut figs {
                f.cpu_per_wall = Some(share);
            }
            out.extend(figs);
        }
        Ok(out)
    }

    fn cleanup(&self, p: &Path) {
        let _ = fs::remove_dir_all(p);
    }

    /// Stores `items` into `store` in batches of [`BATCH`], one session; returns items/s.
    pub fn ingest_batches(store: &Store, sid: SessionId, items: &[GenItem]) -> Result<Duration> {
        let t = Instant::now();
        for chunk in items.chunks(BATCH) {
            let batch = chunk
                .iter()
                .map(|it| (sid, it.new_artifact(), it.content.clone()))
                .collect();
            store.put_batch(batch)?;
        }
        store.flush()?;
        Ok(t.elapsed())
    }

    /// Workload 1: small ingest, and the raw engine's cost of one insert per artifact.
    pub fn small_ingest(&mut self) -> Result<Vec<Figure>> {
        let n = self.opts.small_count;
        let items: Vec<GenItem> = (0..n as u64)
            .map(|i| small_item(i, self.opts.small_size))
            .collect();
        let (mut batch_s, mut single_s, mut raw_s) = (Vec::new(), Vec::new(), Vec::new());
        let mut same_s = Vec::new();
        // Every key and value Cairn wrote for these artifacts (taken from the first run), to
        // replay into the bare engine: what the engine alone costs for the same data.
        let mut written: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for run in 0..self.opts.runs {
            let (s, p) = self.fresh_store("small", Config::default())?;
            let sid = s.create_session(NewSession::new().name("bench"))?.id;
            batch_s.push(rate(n as f64, Self::ingest_batches(&s, sid, &items)?));
            if run == 0 {
                written = engine_entries(&s, &[], &[])?;
                let mut r = Rng::new(11);
                for i in (1..written.len()).rev() {
                    written.swap(i, r.below(i as u64 + 1) as usize);
                }
            }
            drop(s);
            self.cleanup(&p);

            let (b, p) = self.fresh_backend()?;
            let per_batch = written.len().div_ceil(n.div_ceil(BATCH)).max(1);
            let t = Instant::now();
            for chunk in written.chunks(per_batch) {
                b.apply(
                    chunk
                        .iter()
                        .map(|(k, v)| Op::Put(k.clone(), v.clone()))
                        .collect(),
                )?;
                b.flush()?;
            }
            same_s.push(rate(n as f64, t.elapsed()));
            drop(b);
            self.cleanup(&p);

            // One put() per artifact with group commit: what an agent loop does.
            let (s, p) = self.fresh_store("small1", Self::group_config())?;
            let sid = s.create_session(NewSession::new().name("bench"))?.id;
            let m = n.min(20_000);
            let t = Instant::now();
            for it in &items[..m] {
                s.put(sid, it.new_artifact(), &it.content)?;
            }
            s.flush()?;
            single_s.push(rate(m as f64, t.elapsed()));
            drop(s);
            self.cleanup(&p);

            let (b, p) = self.fresh_backend()?;
            let mut r = Rng::new(7);
            let t = Instant::now();
            for chunk in items.chunks(BATCH) {
                let ops = chunk
                    .iter()
                    .map(|it| {
                        let mut k = vec![RAW_KEY_PREFIX];
                        k.extend_from_slice(&r.next_u64().to_be_bytes());
                        k.extend_from_slice(&r.next_u64().to_be_bytes());
                        Op::Put(k, it.content.clone())
                    })
                    .collect();
                b.apply(ops)?;
                b.flush()?;
            }
            raw_s.push(rate(n as f64, t.elapsed()));
            drop(b);
            self.cleanup(&p);
        }
        let be = self.backend();
        let raw = Summary::of(&raw_s).median;
        Ok(vec![
            Figure::new(
                "1 small ingest",
                be,
                "put_batch(1000), 1 flush per batch",
                "artifacts/s",
                true,
                Summary::of(&batch_s),
            )
            .baseline(&format!("raw {be} insert"), raw)
            .baseline(&format!("raw {be}, same keys"), Summary::of(&same_s).median)
            .target("at least SQLite's rate (2x aimed); SQLite baseline in bench-suite"),
            Figure::new(
                "1 small ingest",
                be,
                "engine keys written per artifact",
                "keys",
                false,
                Summary::of(&[written.len() as f64 / n as f64]),
            ),
            Figure::new(
                "1 small ingest",
                be,
                "engine bytes (keys + values) per artifact",
                "bytes",
                false,
                Summary::of(&[written
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>() as f64
                    / n as f64]),
            ),
            Figure::new(
                "1 small ingest",
                be,
                "put() each, group commit",
                "artifacts/s",
                true,
                Summary::of(&single_s),
            )
            .baseline(&format!("raw {be} insert"), raw),
        ])
    }

    /// Workload 2: 1 MiB artifacts, compressible and random.
    pub fn large_ingest(&mut self) -> Result<Vec<Figure>> {
        let n = self.opts.large_count;
        let level = Config::default().compression_level;
        let mut figs = Vec::new();
        for compressible in [true, false] {
            let data: Vec<Vec<u8>> = (0..n as u64)
                .map(|i| {
                    if compressible {
                        json_log(LARGE, 1000 + i)
                    } else {
                        random_bytes(LARGE, 1000 + i)
                    }
                })
                .collect();
            let total = mib(n * LARGE);
            let (mut put_s, mut batch_s, mut zstd_s, mut fsync_s) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..self.opts.runs {
                let (s, p) = self.fresh_store("large", Self::group_config())?;
                let sid = s.create_session(NewSession::new())?.id;
                let t = Instant::now();
                for (i, d) in data.iter().enumerate() {
                    s.put(
                        sid,
                        NewArtifact::new(ArtifactKind::ToolResult, format!("big/{i}.log")),
                        d,
                    )?;
                }
                s.flush()?;
                put_s.push(rate(total, t.elapsed()));
                drop(s);
                self.cleanup(&p);

                // put_batch stages (compresses) on every core.
                let (s, p) = self.fresh_store("largeb", Self::group_config())?;
                let sid = s.create_session(NewSession::new())?.id;
                let t = Instant::now();
                for (c, chunk) in data.chunks(16).enumerate() {
                    let items = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            (
                                sid,
                                NewArtifact::new(
                                    ArtifactKind::ToolResult,
                                    format!("big/{c}-{i}.log"),
                                ),
                                d.clone(),
                            )
                        })
                        .collect();
                    s.put_batch(items)?;
                }
                s.flush()?;
                batch_s.push(rate(total, t.elapsed()));
                drop(s);
                self.cleanup(&p);

                let t = Instant::now();
                for d in &data {
                    let c = zstd::bulk::compress(d, level).map_err(|e| Error::Other {
                        message: format!("zstd baseline: {e}"),
                    })?;
                    std::hint::black_box(c);
                }
                zstd_s.push(rate(total, t.elapsed()));

                let p = self.fresh_path("fsync");
                fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
                let t = Instant::now();
                for (i, d) in data.iter().enumerate() {
                    let f = p.join(format!("{i}.bin"));
                    let mut file = fs::File::create(&f).map_err(|e| io_err(&f, e))?;
                    file.write_all(d).map_err(|e| io_err(&f, e))?;
                    file.sync_all().map_err(|e| io_err(&f, e))?;
                }
                fsync_s.push(rate(total, t.elapsed()));
                self.cleanup(&p);
            }
            let be = self.backend();
            let label = if compressible {
                "compressible (JSON logs)"
            } else {
                "incompressible (random)"
            };
            let (zstd, fsync) = (Summary::of(&zstd_s).median, Summary::of(&fsync_s).median);
            let target = if compressible {
                "at least 0.8 of zstd alone"
            } else {
                "at least 0.6 of write+fsync"
            };
            figs.push(
                Figure::new(
                    "2 large ingest",
                    be,
                    &format!("put() 1 MiB, {label}"),
                    "MiB/s",
                    true,
                    Summary::of(&put_s),
                )
                .baseline("zstd -3 alone, 1 core", zstd)
                .baseline("write+fsync", fsync)
                .target(target),
            );
            figs.push(
                Figure::new(
                    "2 large ingest",
                    be,
                    &format!("put_batch(16) 1 MiB, {label}"),
                    "MiB/s",
                    true,
                    Summary::of(&batch_s),
                )
                .baseline("zstd -3 alone, 1 core", zstd)
                .baseline("write+fsync", fsync)
                .target(target),
            );
        }
        Ok(figs)
    }

    /// Workload 3: the same 1 MiB stored many times; baseline BLAKE3 alone.
    pub fn dedup_ingest(&mut self) -> Result<Vec<Figure>> {
        let n = self.opts.dedup_count;
        let data = json_log(LARGE, 77);
        let total = mib(n * LARGE);
        let (mut put_s, mut hash_s) = (Vec::new(), Vec::new());
        let mut stored = 0;
        for _ in 0..self.opts.runs {
            let (s, p) = self.fresh_store("dedup", Self::group_config())?;
            let sid = s.create_session(NewSession::new())?.id;
            // The first copy pays compression; the timed part is the duplicates.
            s.put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "dup/first"),
                &data,
            )?;
            let t = Instant::now();
            for i in 0..n {
                s.put(
                    sid,
                    NewArtifact::new(ArtifactKind::ToolResult, format!("dup/{i}")),
                    &data,
                )?;
            }
            s.flush()?;
            put_s.push(rate(total, t.elapsed()));
            stored = s.stats()?.blobs;
            drop(s);
            self.cleanup(&p);
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(blake3::hash(&data));
            }
            hash_s.push(rate(total, t.elapsed()));
        }
        if stored != 1 {
            return Err(Error::Other {
                message: format!(
                    "dedup workload stored {stored} blobs for one content; expected 1"
                ),
            });
        }
        Ok(vec![Figure::new(
            "3 dedup ingest",
            self.backend(),
            "put() same 1 MiB, group commit",
            "MiB/s",
            true,
            Summary::of(&put_s),
        )
        .baseline("BLAKE3 alone", Summary::of(&hash_s).median)
        .target("at least 0.8 of BLAKE3 alone")])
    }

    /// Workload 4: reads of 1 KiB artifacts and of 1 MiB compressed ones.
    pub fn reads(&mut self) -> Result<Vec<Figure>> {
        let n = self.opts.read_count;
        let items: Vec<GenItem> = (0..n as u64)
            .map(|i| small_item(i, self.opts.small_size))
            .collect();
        let (s, p) = self.fresh_store("read", Config::default())?;
        let sid = s.create_session(NewSession::new())?.id;
        let mut ids = Vec::with_capacity(n);
        for chunk in items.chunks(BATCH) {
            let batch = chunk
                .iter()
                .map(|it| (sid, it.new_artifact(), it.content.clone()))
                .collect();
            ids.extend(s.put_batch(batch)?.into_iter().map(|a| a.id));
        }
        // Random order, so caches do not make it a sequential scan.
        let mut r = Rng::new(3);
        for i in (1..ids.len()).rev() {
            ids.swap(i, r.below(i as u64 + 1) as usize);
        }
        let mut small_s = Vec::new();
        for _ in 0..self.opts.runs {
            let t = Instant::now();
            let mut bytes = 0;
            for id in &ids {
                bytes += s.read(sid, *id)?.len();
            }
            std::hint::black_box(bytes);
            small_s.push(rate(n as f64, t.elapsed()));
        }
        let m = self.opts.large_count.min(64);
        let big: Vec<Vec<u8>> = (0..m as u64).map(|i| json_log(LARGE, 5000 + i)).collect();
        let mut big_ids = Vec::new();
        let mut frames = Vec::new();
        let level = s.config().compression_level;
        for (i, d) in big.iter().enumerate() {
            let a = s.put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, format!("big/{i}")),
                d,
            )?;
            if !a.compressed {
                return Err(Error::Other {
                    message: "a 1 MiB JSON log was not stored compressed".into(),
                });
            }
            big_ids.push(a.id);
            frames.push(compress(d, level)?);
        }
        let total = mib(m * LARGE);
        let (mut big_s, mut dec_s) = (Vec::new(), Vec::new());
        for _ in 0..self.opts.runs {
            let t = Instant::now();
            for id in &big_ids {
                std::hint::black_box(s.read(sid, *id)?);
            }
            big_s.push(rate(total, t.elapsed()));
            let t = Instant::now();
            for f in &frames {
                let d = zstd::bulk::decompress(f, LARGE).map_err(|e| Error::Other {
                    message: format!("zstd baseline: {e}"),
                })?;
                std::hint::black_box(blake3::hash(&d));
            }
            dec_s.push(rate(total, t.elapsed()));
        }
        drop(s);
        self.cleanup(&p);
        let be = self.backend();
        Ok(vec![
            Figure::new(
                "4 reads",
                be,
                "read() 1 KiB, random order, verified",
                "reads/s",
                true,
                Summary::of(&small_s),
            )
            .target("100000 reads/s or more"),
            Figure::new(
                "4 reads",
                be,
                "read() 1 MiB compressed, verified",
                "MiB/s",
                true,
                Summary::of(&big_s),
            )
            .baseline("zstd decompress + BLAKE3 alone", Summary::of(&dec_s).median)
            .target("at least 0.8 of zstd decompression alone"),
        ])
    }

    /// Builds the scale store of workload 5 (batches of [`BATCH`], group commit).
    pub fn build_scale(&mut self, path: &Path) -> Result<ScaleStore> {
        let plan = ScalePlan::new(self.opts.scale_count, self.opts.small_size);
        let store = Store::open_backend(self.kind, path, Self::group_config())?;
        let t = Instant::now();
        let mut sessions = Vec::with_capacity(plan.slots());
        for slot in 0..plan.slots() {
            let mut ns = NewSession::new().name(format!("run-{slot}"));
            if let Some(p) = plan.parent(slot) {
                ns = ns.parent(sessions[p]);
            }
            sessions.push(store.create_session(ns)?.id);
        }
        let mut window = (Utc::now(), Utc::now());
        for step in plan.steps() {
            let (items, timed) = match step {
                ScaleStep::Batch(v) => (v, false),
                ScaleStep::TimeWindow(v) => (v, true),
            };
            let batch = items
                .into_iter()
                .map(|(slot, it)| (sessions[slot], it.new_artifact(), it.content))
                .collect();
            if timed {
                window.0 = Utc::now();
                std::thread::sleep(Duration::from_millis(3));
                store.put_batch(batch)?;
                std::thread::sleep(Duration::from_millis(3));
                window.1 = Utc::now();
                std::thread::sleep(Duration::from_millis(3));
            } else {
                store.put_batch(batch)?;
            }
        }
        store.flush()?;
        Ok(ScaleStore {
            store,
            sessions,
            window,
            build_secs: t.elapsed().as_secs_f64(),
        })
    }

    /// The query as Cairn's query builder.
    pub fn cairn_query(q: &ScaleQuery, subtree_root: SessionId) -> Query {
        let base = Query::new().limit(1000);
        match q {
            ScaleQuery::Tag(t) => base.tag(t.clone()),
            ScaleQuery::KindInSubtree(k) => {
                base.session(subtree_root).subtree(true).kind(k.clone())
            }
            ScaleQuery::NameGlob(g) => base.name_glob(g.clone()),
            ScaleQuery::Size(lo, hi) => base.min_size(*lo).max_size(*hi),
            ScaleQuery::Time(a, b) => base.created_from(*a).created_to(*b),
        }
    }

    /// The baseline: the same query answered by reading every artifact record (a filterless
    /// query through the public API, which streams the record table) and filtering in memory.
    pub fn scan_query(
        store: &Store,
        q: &ScaleQuery,
        subtree: &HashSet<SessionId>,
    ) -> Result<usize> {
        let glob = match q {
            ScaleQuery::NameGlob(g) => Some(
                globset::GlobBuilder::new(g)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| invalid("glob", e.to_string()))?
                    .compile_matcher(),
            ),
            _ => None,
        };
        let mut n = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut all = Query::new().limit(cairn::MAX_LIMIT);
            if let Some(c) = cursor.take() {
                all = all.cursor(c);
            }
            let page = store.query(&all)?;
            for a in &page.items {
                let hit = match q {
                    ScaleQuery::Tag(t) => a.tags.iter().any(|x| x == t),
                    ScaleQuery::KindInSubtree(k) => a.kind == *k && subtree.contains(&a.session_id),
                    ScaleQuery::NameGlob(_) => glob.as_ref().is_some_and(|g| g.is_match(&a.name)),
                    ScaleQuery::Size(lo, hi) => a.size >= *lo && a.size <= *hi,
                    ScaleQuery::Time(from, to) => a.created_at >= *from && a.created_at < *to,
                };
                n += hit as usize;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(n),
            }
        }
    }

    /// Workloads 5, 6 and 9 on one store of [`BenchOptions::scale_count`] artifacts.
    pub fn scale(&mut self) -> Result<Vec<Figure>> {
        let be = self.backend();
        let p = self.fresh_path("scale");
        let built = self.build_scale(&p)?;
        let mut figs = vec![Figure::new(
            "5 queries: build",
            be,
            &format!("store {} artifacts, put_batch(1000)", self.opts.scale_count),
            "artifacts/s",
            true,
            Summary::of(&[self.opts.scale_count as f64 / built.build_secs]),
        )];
        let plan = ScalePlan::new(self.opts.scale_count, self.opts.small_size);
        let root = built.sessions[plan.subtree_root()];
        let subtree: HashSet<SessionId> = built.store.subtree_ids(root)?.into_iter().collect();
        for q in plan.queries(built.window) {
            let cq = Self::cairn_query(&q, root);
            let mut lat = Vec::with_capacity(self.opts.query_repeats);
            let mut count = 0;
            for _ in 0..self.opts.query_repeats {
                let t = Instant::now();
                let page = built.store.query(&cq)?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                count = page.items.len();
            }
            let scan_runs = self.opts.query_repeats.clamp(1, 3);
            let mut scan = Vec::new();
            let mut scan_count = 0;
            for _ in 0..scan_runs {
                let t = Instant::now();
                scan_count = Self::scan_query(&built.store, &q, &subtree)?;
                scan.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if count != scan_count || count != NEEDLES {
                return Err(Error::Other {
                    message: format!(
                        "query {} returned {count}, the scan {scan_count}, expected {NEEDLES}",
                        q.label()
                    ),
                });
            }
            let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
            let scan_med = Summary::of(&scan).median;
            figs.push(
                Figure::new(
                    "5 queries",
                    be,
                    &format!("{} ({} hits) p50; max = p99", q.label(), count),
                    "ms",
                    false,
                    Summary {
                        median: p50,
                        min: percentile(&lat, 0.0),
                        max: p99,
                        samples: lat.len(),
                    },
                )
                .baseline("full scan of every record", scan_med)
                .target("100x faster than the scan; no slower than SQLite"),
            );
        }

        // 6: ingest into the full store vs into an empty one, same batch size and count.
        let m = self.opts.small_count.min(20_000);
        let items: Vec<GenItem> = (0..m as u64)
            .map(|i| small_item(50_000_000 + i, self.opts.small_size))
            .collect();
        let (mut full_s, mut empty_s) = (Vec::new(), Vec::new());
        for _ in 0..self.opts.runs {
            let sid = built.store.create_session(NewSession::new())?.id;
            full_s.push(rate(
                m as f64,
                Self::ingest_batches(&built.store, sid, &items)?,
            ));
            let (s, ep) = self.fresh_store("empty", Self::group_config())?;
            let sid = s.create_session(NewSession::new())?.id;
            empty_s.push(rate(m as f64, Self::ingest_batches(&s, sid, &items)?));
            drop(s);
            self.cleanup(&ep);
        }
        figs.push(
            Figure::new(
                "6 scale stability",
                be,
                &format!("put_batch into {} stored", self.opts.scale_count),
                "artifacts/s",
                true,
                Summary::of(&full_s),
            )
            .baseline("same into an empty store", Summary::of(&empty_s).median)
            .target("ratio at least 0.7"),
        );

        // 9: reopen.
        let ScaleStore { store, .. } = built;
        drop(store);
        if self.kind != BackendKind::Memory {
            let mut open_s = Vec::new();
            for _ in 0..self.opts.runs {
                let t = Instant::now();
                let s = Store::open_backend(self.kind, &p, Config::default())?;
                open_s.push(t.elapsed().as_secs_f64() * 1000.0);
                std::hint::black_box(s.stats()?.artifacts);
                drop(s);
            }
            figs.push(Figure::new(
                "9 open",
                be,
                &format!("open a store of {} artifacts", self.opts.scale_count),
                "ms",
                false,
                Summary::of(&open_s),
            ));
            figs.push(Figure::new(
                "7 space",
                be,
                &format!(
                    "disk per small artifact (scale store, {} B avg content)",
                    self.opts.small_size
                ),
                "bytes",
                false,
                Summary::of(&[
                    disk_usage(&p)? as f64 / (self.opts.scale_count + m * self.opts.runs) as f64
                ]),
            ));
        }
        self.cleanup(&p);
        Ok(figs)
    }

    /// Workload 7: bytes on disk over distinct stored content, for 1 MiB and 1 KiB artifacts.
    pub fn space(&mut self) -> Result<Vec<Figure>> {
        if self.kind == BackendKind::Memory {
            return Ok(Vec::new());
        }
        let be = self.backend();
        let n = self.opts.large_count;
        let (s, p) = self.fresh_store("space", Self::group_config())?;
        let sid = s.create_session(NewSession::new())?.id;
        for i in 0..n {
            let d = if i % 2 == 0 {
                json_log(LARGE, 9000 + i as u64)
            } else {
                random_bytes(LARGE, 9000 + i as u64)
            };
            s.put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, format!("big/{i}")),
                &d,
            )?;
        }
        s.flush()?;
        let st = s.stats()?;
        drop(s);
        let disk = disk_usage(&p)? as f64;
        self.cleanup(&p);
        let large = Figure::new(
            "7 space",
            be,
            "disk / distinct stored bytes, 1 MiB (half JSON, half random)",
            "ratio",
            false,
            Summary::of(&[disk / st.stored_bytes.max(1) as f64]),
        )
        .target("at most 1.3");

        let m = self.opts.small_count;
        let items: Vec<GenItem> = (0..m as u64)
            .map(|i| small_item(i, self.opts.small_size))
            .collect();
        let (s, p) = self.fresh_store("space1k", Self::group_config())?;
        let sid = s.create_session(NewSession::new())?.id;
        Self::ingest_batches(&s, sid, &items)?;
        let st = s.stats()?;
        drop(s);
        let disk = disk_usage(&p)? as f64;
        self.cleanup(&p);
        Ok(vec![
            large,
            Figure::new(
                "7 space",
                be,
                &format!(
                    "disk per {} B artifact ({} stored)",
                    self.opts.small_size, m
                ),
                "bytes",
                false,
                Summary::of(&[disk / m as f64]),
            )
            .baseline(
                "logical content per artifact",
                st.logical_bytes as f64 / m as f64,
            ),
        ])
    }

    /// Workload 8: peak RSS over the base while one large input streams in.
    pub fn memory(&mut self) -> Result<Vec<Figure>> {
        let total = self.opts.stream_mib << 20;
        let (s, p) = self.fresh_store("mem", Config::default())?;
        let sid = s.create_session(NewSession::new())?.id;
        let mut peaks = Vec::new();
        let mut rates = Vec::new();
        for run in 0..self.opts.runs {
            let (base, _) = rss()?;
            reset_peak_rss()?;
            let t = Instant::now();
            let a = s.put_reader(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, format!("stream/{run}")),
                GenReader::new(total, 31 + run as u64),
            )?;
            rates.push(rate(mib(total as usize), t.elapsed()));
            let (_, peak) = rss()?;
            if a.size != total {
                return Err(Error::Other {
                    message: format!("streamed {} bytes, stored {}", total, a.size),
                });
            }
            peaks.push(peak.saturating_sub(base) as f64 / (1u64 << 20) as f64);
        }
        drop(s);
        self.cleanup(&p);
        let be = self.backend();
        Ok(vec![
            Figure::new(
                "8 memory",
                be,
                &format!(
                    "peak RSS over base, put_reader {} MiB JSON",
                    self.opts.stream_mib
                ),
                "MiB",
                false,
                Summary::of(&peaks),
            )
            .target(if self.kind == BackendKind::Memory {
                "n/a: a memory store keeps the content in memory"
            } else {
                "at most 64 MiB"
            }),
            Figure::new(
                "8 memory",
                be,
                &format!("streamed put_reader {} MiB JSON", self.opts.stream_mib),
                "MiB/s",
                true,
                Summary::of(&rates),
            ),
        ])
    }

    /// Workload 10: the real corpus, one session per top-level folder, batches of 100 files.
    pub fn corpus(&mut self) -> Result<Vec<Figure>> {
        let Some(dir) = self.opts.corpus.clone().filter(|d| d.is_dir()) else {
            return Ok(Vec::new());
        };
        let files = files_under(&dir)?;
        let mut loaded = Vec::with_capacity(files.len());
        for (rel, path) in &files {
            let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
            loaded.push((rel.clone(), bytes));
        }
        let total: usize = loaded.iter().map(|(_, b)| b.len()).sum();
        let (mut rates, mut stats) = (Vec::new(), None);
        for _ in 0..self.opts.runs {
            let (s, p) = self.fresh_store("corpus", Self::group_config())?;
            let t = Instant::now();
            let mut sessions = std::collections::HashMap::new();
            for chunk in loaded.chunks(100) {
                let mut batch = Vec::with_capacity(chunk.len());
                for (rel, bytes) in chunk {
                    let top = rel.split('/').next().unwrap_or("corpus").to_string();
                    let sid = match sessions.get(&top) {
                        Some(id) => *id,
                        None => {
                            let id = s.create_session(NewSession::new().name(top.clone()))?.id;
                            sessions.insert(top, id);
                            id
                        }
                    };
                    let name: String = rel
                        .chars()
                        .map(|c| if c.is_control() { '_' } else { c })
                        .collect();
                    batch.push((
                        sid,
                        NewArtifact::new(ArtifactKind::ToolResult, name),
                        bytes.clone(),
                    ));
                }
                s.put_batch(batch)?;
            }
            s.flush()?;
            rates.push(rate(mib(total), t.elapsed()));
            stats = Some(s.stats()?);
            drop(s);
            self.cleanup(&p);
        }
        let be = self.backend();
        let mut figs = vec![Figure::new(
            "10 corpus",
            be,
            &format!("ingest {} files, {:.1} MiB", loaded.len(), mib(total)),
            "MiB/s",
            true,
            Summary::of(&rates),
        )];
        if let Some(st) = stats {
            figs.push(Figure::new(
                "10 corpus",
                be,
                "dedup ratio (logical / distinct)",
                "x",
                true,
                Summary::of(&[st.dedup_ratio]),
            ));
            figs.push(Figure::new(
                "10 corpus",
                be,
                "compression ratio (distinct / stored)",
                "x",
                true,
                Summary::of(&[st.compression_ratio]),
            ));
        }
        Ok(figs)
    }
}

/// Every regular file under `dir`, sorted, with its `/`-separated relative path.
pub fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| io_err(&d, e))? {
            let e = e.map_err(|e| io_err(&d, e))?;
            let ft = e.file_type().map_err(|err| io_err(e.path(), err))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let path = e.path();
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_is_read_and_moves_forward() {
        let before = process_cpu_secs();
        let t = Instant::now();
        let mut x = 0u64;
        while process_cpu_secs() <= before && t.elapsed() < Duration::from_secs(20) {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(process_cpu_secs() > before);
    }

    #[test]
    fn summary_and_percentiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, f64::NAN]);
        assert_eq!((s.median, s.min, s.max, s.samples), (3.0, 1.0, 5.0, 3));
        assert_eq!(Summary::of(&[1.0, 2.0, 3.0, 4.0]).median, 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
    }

    #[test]
    fn ratios_are_oriented_so_above_one_is_better() {
        let s = Summary::of(&[200.0]);
        let thr = Figure::new("w", "b", "m", "x/s", true, s).baseline("base", 100.0);
        assert_eq!(thr.baselines[0].ratio, 2.0);
        let lat = Figure::new("w", "b", "m", "ms", false, s).baseline("base", 100.0);
        assert_eq!(lat.baselines[0].ratio, 0.5);
    }

    #[test]
    fn generators_are_deterministic_and_sized() {
        assert_eq!(json_log(1000, 4), json_log(1000, 4));
        assert_eq!(json_log(1000, 4).len(), 1000);
        let a = small_item(19, 1024);
        assert_eq!(a.content, small_item(19, 1024).content);
        assert!(
            (921..=1126).contains(&a.content.len()),
            "{}",
            a.content.len()
        );
        // One in ten repeats an earlier output.
        assert_eq!(small_item(39, 1024).content, small_item(14, 1024).content);
        assert_ne!(small_item(38, 1024).content, small_item(14, 1024).content);
        let mut r = GenReader::new(600_000, 1);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        assert_eq!(buf.len(), 600_000);
    }

    #[test]
    fn scale_plan_places_exactly_one_hundred_of_each_needle() {
        let plan = ScalePlan::new(5_000, 200);
        let (mut total, mut tag, mut name, mut size, mut sub_kind, mut window) = (0, 0, 0, 0, 0, 0);
        for step in plan.steps() {
            let (items, timed) = match step {
                ScaleStep::Batch(v) => (v, false),
                ScaleStep::TimeWindow(v) => (v, true),
            };
            for (slot, it) in items {
                total += 1;
                assert!(slot < plan.slots());
                tag += it.tags.iter().any(|t| t == "needle") as usize;
                name += it.name.starts_with("trace/needle-") as usize;
                size += (plan.needle_size()..plan.needle_size() + 100)
                    .contains(&(it.content.len() as u64)) as usize;
                sub_kind +=
                    (slot >= plan.subtree_root() && it.kind == ArtifactKind::AgentOutput) as usize;
                window += timed as usize;
            }
        }
        assert_eq!(total, 5_000);
        assert_eq!(
            (tag, name, size, sub_kind, window),
            (100, 100, 100, 100, 100)
        );
    }

    #[test]
    fn options_validate() {
        assert!(BenchOptions::full().validate().is_ok());
        assert!(BenchOptions::tiny().validate().is_ok());
        let mut o = BenchOptions::quick();
        o.runs = 0;
        assert!(o.validate().unwrap_err().to_string().contains("runs"));
        assert!(parse_workloads("small,nope").is_err());
        assert_eq!(
            parse_workloads("small, query").unwrap(),
            vec![Workload::Small, Workload::Query]
        );
        assert_eq!(parse_workloads("all").unwrap().len(), 8);
    }
}
