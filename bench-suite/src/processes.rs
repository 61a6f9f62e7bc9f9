//! Whole processes against the tools a user would reach for instead (issue 10, section 1):
//!
//! - **process query**: one `cairn artifact query ...` process on a store of `scale_count`
//!   artifacts (the workload 5 store, on redb) against one `sqlite3 -json` process answering the
//!   same query on the same rows (the workload 5 SQLite database with its indexes). Both print
//!   every hit as JSON; the wall time of the whole process is measured, start-up and open included.
//! - **bulk put**: `cairn artifact put SESSION DIR --recursive` of a folder of 20,000 small files
//!   and 24 files of 1 MiB into a new store, against `tar -cf - DIR | zstd -3` into a file that is
//!   then synced (`sync FILE`).
//!
//! Rounds are interleaved (Cairn, then the baseline, then Cairn again...) so both see the same
//! load. Every process's exit status and hit count is checked. Run with `CAIRN_BENCH_CLI` set to
//! a release `cairn` binary; `sqlite3`, `tar`, `zstd` and `sync` must be on the `PATH`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cairn::BackendKind;
use cairn_bench::{
    json_log, percentile, random_bytes, small_item, Bench, BenchOptions, Figure, ScalePlan,
    ScaleQuery, Summary,
};

use crate::{sqlite_scale, Res};

/// Runs `cmd`, checks it succeeded, and returns its wall time in seconds and its stdout.
fn timed(cmd: &mut Command, what: &str) -> Res<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok((secs, out.stdout))
}

/// The number of records in a JSON answer: a top-level array (`sqlite3 -json`) or the `items`
/// array of a page (`cairn --json artifact query`). `sqlite3` prints nothing for no rows.
fn json_rows(out: &[u8]) -> Res<usize> {
    if out.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_slice(out)?;
    match v {
        serde_json::Value::Array(a) => Ok(a.len()),
        serde_json::Value::Object(o) => match o.get("items") {
            Some(serde_json::Value::Array(a)) => Ok(a.len()),
            _ => Err("a cairn page without an items array".into()),
        },
        _ => Err("an answer that is neither an array nor a page".into()),
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL of workload 5's SQLite baseline with its parameters written in, for `sqlite3`.
fn sql(q: &ScaleQuery, subtree_root: i64) -> String {
    const COLS: &str =
        "a.id, a.session_id, a.kind, a.name, hex(a.hash) AS hash, a.size, a.created_at, a.metadata";
    match q {
        ScaleQuery::Tag(t) => format!(
            "SELECT {COLS} FROM tags t JOIN artifacts a ON a.id = t.artifact_id WHERE t.tag = {} LIMIT 1000",
            sql_str(t)
        ),
        ScaleQuery::KindInSubtree(k) => format!(
            "WITH RECURSIVE sub(id) AS (SELECT {subtree_root} UNION ALL SELECT s.id FROM sessions s JOIN sub ON s.parent = sub.id) \
             SELECT {COLS} FROM artifacts a WHERE a.session_id IN sub AND a.kind = {} LIMIT 1000",
            sql_str(k.as_str())
        ),
        ScaleQuery::NameGlob(g) => format!(
            "SELECT {COLS} FROM artifacts a WHERE a.name GLOB {} LIMIT 1000",
            sql_str(g)
        ),
        ScaleQuery::Size(lo, hi) => format!(
            "SELECT {COLS} FROM artifacts a WHERE a.size BETWEEN {lo} AND {hi} LIMIT 1000"
        ),
        ScaleQuery::Time(a, b) => format!(
            "SELECT {COLS} FROM artifacts a WHERE a.created_at >= {} AND a.created_at < {} LIMIT 1000",
            a.timestamp_millis(),
            b.timestamp_millis()
        ),
    }
}

/// The `cairn artifact query` arguments of a workload 5 query.
fn cairn_args(q: &ScaleQuery, subtree_root: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["artifact".into(), "query".into()];
    let rfc =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match q {
        ScaleQuery::Tag(t) => v.extend(["--tag".into(), t.clone()]),
        ScaleQuery::KindInSubtree(k) => v.extend([
            "--session".into(),
            subtree_root.into(),
            "--subtree".into(),
            "--kind".into(),
            k.as_str().into(),
        ]),
        ScaleQuery::NameGlob(g) => v.extend(["--name".into(), g.clone()]),
        ScaleQuery::Size(lo, hi) => v.extend([
            "--min-size".into(),
            lo.to_string(),
            "--max-size".into(),
            hi.to_string(),
        ]),
        ScaleQuery::Time(a, b) => v.extend(["--after".into(), rfc(a), "--before".into(), rfc(b)]),
    }
    v.extend(["--limit".into(), "1000".into()]);
    v
}

/// p50 with min and p99 as the spread, as workload 5 reports latencies.
fn latency(samples: &[f64]) -> Summary {
    Summary {
        median: percentile(samples, 50.0),
        min: percentile(samples, 0.0),
        max: percentile(samples, 99.0),
        samples: samples.len(),
    }
}

/// Whole-process queries: `cairn artifact query` against `sqlite3`, interleaved.
fn process_queries(cairn: &Path, scratch: &Path, opts: &BenchOptions) -> Res<Vec<Figure>> {
    let t = Instant::now();
    let sc = sqlite_scale(scratch, opts)?;
    sc.db
        .conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let (sqlite_root, sqlite_window, sqlite_path) =
        (sc.subtree_root, sc.window, sc.db.path.clone());
    drop(sc);
    eprintln!(
        "SQLite store of {} built in {:.0} s",
        opts.scale_count,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let store_path = scratch.join("process-query-store");
    let _ = std::fs::remove_dir_all(&store_path);
    let plan = ScalePlan::new(opts.scale_count, opts.small_size);
    let built = Bench::new(BackendKind::Redb, scratch, opts.clone()).build_scale(&store_path)?;
    let cairn_root = built.sessions[plan.subtree_root()].to_string();
    let cairn_window = built.window;
    drop(built);
    eprintln!(
        "Cairn store of {} built in {:.0} s",
        opts.scale_count,
        t.elapsed().as_secs_f64()
    );

    let reps = opts.query_repeats.clamp(5, 50);
    let mut figs = Vec::new();
    // What a process costs before any query: start, load and exit, interleaved.
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        c.push(timed(Command::new(cairn).arg("--version"), "cairn --version")?.0 * 1000.0);
        s.push(
            timed(
                Command::new("sqlite3").args([":memory:", "select 1"]),
                "sqlite3 :memory:",
            )?
            .0 * 1000.0,
        );
    }
    figs.push(
        Figure::new(
            "11 process query",
            "redb",
            "process start and exit: cairn --version p50; max = p99",
            "ms",
            false,
            latency(&c),
        )
        .baseline("sqlite3 :memory: 'select 1', p50", percentile(&s, 50.0)),
    );
    for (cq, sq) in plan
        .queries(cairn_window)
        .into_iter()
        .zip(plan.queries(sqlite_window))
    {
        let args = cairn_args(&cq, &cairn_root);
        let text = sql(&sq, sqlite_root);
        let (mut c, mut s) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (secs, out) = timed(
                Command::new(cairn)
                    .arg("--store")
                    .arg(&store_path)
                    .arg("--json")
                    .args(&args),
                "cairn artifact query",
            )?;
            let n = json_rows(&out)?;
            if n != cairn_bench::NEEDLES {
                return Err(
                    format!("cairn {} printed {n} artifacts, expected 100", cq.label()).into(),
                );
            }
            c.push(secs * 1000.0);
            let (secs, out) = timed(
                Command::new("sqlite3")
                    .arg("-json")
                    .arg(&sqlite_path)
                    .arg(&text),
                "sqlite3",
            )?;
            let n = json_rows(&out)?;
            if n != cairn_bench::NEEDLES {
                return Err(
                    format!("sqlite3 {} printed {n} rows, expected 100", sq.label()).into(),
                );
            }
            s.push(secs * 1000.0);
        }
        figs.push(
            Figure::new(
                "11 process query",
                "redb",
                &format!(
                    "cairn artifact query {} ({} stored) p50; max = p99",
                    cq.label(),
                    opts.scale_count
                ),
                "ms",
                false,
                latency(&c),
            )
            .baseline("sqlite3 -json, same query, p50", percentile(&s, 50.0))
            .target("at most 2x the sqlite3 process (ratio at least 0.5)"),
        );
    }
    let _ = std::fs::remove_dir_all(&store_path);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
    }
    Ok(figs)
}

/// The folder of the bulk put: 20,000 small files (workload 1's ~1 KiB JSON-like tool outputs,
/// 10% repeats) in 100 subfolders, and 24 files of 1 MiB (12 JSON logs, 12 random).
fn bulk_folder(root: &Path, small_size: usize) -> Res<u64> {
    let _ = std::fs::remove_dir_all(root);
    let mut bytes = 0u64;
    for i in 0..20_000u64 {
        let dir = root.join(format!("calls-{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir)?;
        }
        let it = small_item(i, small_size);
        bytes += it.content.len() as u64;
        std::fs::write(dir.join(format!("out-{i:05}.json")), &it.content)?;
    }
    let big = root.join("large");
    std::fs::create_dir_all(&big)?;
    for i in 0..24u64 {
        let content = if i % 2 == 0 {
            json_log(1 << 20, 7_000 + i)
        } else {
            random_bytes(1 << 20, 8_000 + i)
        };
        bytes += content.len() as u64;
        std::fs::write(big.join(format!("blob-{i:02}.bin")), content)?;
    }
    Ok(bytes)
}

/// `cairn artifact put DIR --recursive` against `tar | zstd -3` plus a sync, interleaved.
fn bulk_put(cairn: &Path, scratch: &Path, opts: &BenchOptions) -> Res<Vec<Figure>> {
    let src = scratch.join("bulk-src");
    let data = src.join("data");
    let bytes = bulk_folder(&data, opts.small_size)?;
    let archive = scratch.join("bulk.tar.zst");
    let store = scratch.join("bulk-store");
    let script = format!(
        "tar -cf - -C '{}' data | zstd -3 -q -f -o '{}' && sync '{}'",
        src.display(),
        archive.display(),
        archive.display()
    );
    // One untimed pass of each, so both read the folder from the page cache.
    timed(Command::new("sh").arg("-c").arg(&script), "tar | zstd")?;
    let (mut c, mut t) = (Vec::new(), Vec::new());
    for round in 0..=opts.runs {
        let _ = std::fs::remove_dir_all(&store);
        let _ = std::fs::remove_file(&archive);
        let (_, out) = timed(
            Command::new(cairn)
                .arg("--store")
                .arg(&store)
                .args(["--json", "session", "create", "--name", "bulk"]),
            "cairn session create",
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out)?;
        let sid = v["id"]
            .as_str()
            .ok_or("session create printed no id")?
            .to_string();
        let (secs, _) = timed(
            Command::new(cairn)
                .arg("--store")
                .arg(&store)
                .args(["--json", "artifact", "put", &sid])
                .arg(&data)
                .args(["--recursive", "--kind", "tool_result"])
                .stdout(Stdio::null()),
            "cairn artifact put --recursive",
        )?;
        let (_, out) = timed(
            Command::new(cairn)
                .arg("--store")
                .arg(&store)
                .args(["--json", "artifact", "list", &sid, "--limit", "100000"]),
            "cairn artifact list",
        )?;
        let n = json_rows(&out)?;
        if n != 20_024 {
            return Err(format!("the bulk put stored {n} artifacts, expected 20,024").into());
        }
        let (tsecs, _) = timed(Command::new("sh").arg("-c").arg(&script), "tar | zstd")?;
        // Round 0 warms both up (the store's first open, the binary in the page cache).
        if round > 0 {
            c.push(bytes as f64 / (1 << 20) as f64 / secs);
            t.push(bytes as f64 / (1 << 20) as f64 / tsecs);
        }
    }
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_dir_all(&src);
    Ok(vec![Figure::new(
        "12 bulk CLI put",
        "redb",
        "cairn artifact put DIR -r: 20,000 small + 24 x 1 MiB files",
        "MiB/s",
        true,
        Summary::of(&c),
    )
    .baseline(
        "tar -cf - DIR | zstd -3 into a file, synced",
        Summary::of(&t).median,
    )
    .target("at least 1/1.5 of tar | zstd (ratio at least 0.67)")])
}

/// Both process workloads.
pub fn run(cairn: &Path, scratch: &Path, opts: &BenchOptions) -> Res<Vec<Figure>> {
    let mut figs = bulk_put(cairn, scratch, opts)?;
    figs.extend(process_queries(cairn, scratch, opts)?);
    Ok(figs)
}
