//! Cairn's benchmark suite: every workload of issue 4 on memory, sled and redb (through
//! `cairn_bench`), plus the SQLite baselines of workloads 1, 5 and 6, all measured in this one
//! process run so the ratios hold on a noisy machine.
//!
//! SQLite is set up as agent frameworks' SQLite savers do: WAL journal, default `synchronous`
//! (FULL: the WAL is fsynced at each commit), tables for sessions, artifacts, tags and blobs
//! (content addressed by BLAKE3, deduplicated), indexes on kind, tag, name, time, size and
//! session, 1,000 inserts per transaction.
//!
//! Options: the `CAIRN_BENCH_*` variables of `cairn_bench::BenchOptions::from_env` (preset
//! `quick` by default here; `full` gives the sizes), `CAIRN_BENCH_BACKENDS`,
//! `CAIRN_BENCH_DIR` (scratch folder) and `CAIRN_BENCH_JSON` (write the figures there).
//! `CAIRN_BENCH_CLI=path/to/cairn` runs the whole-process workloads instead (see `processes`).

mod processes;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn::BackendKind;
use cairn_bench::{
    percentile, render_table, small_item, to_json, Bench, BenchOptions, Figure, GenItem, ScalePlan,
    ScaleQuery, ScaleStep, Summary, Workload, BATCH,
};
use rusqlite::{params, Connection};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE sessions (id INTEGER PRIMARY KEY, parent INTEGER, name TEXT NOT NULL);
CREATE TABLE blobs (hash BLOB PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    hash BLOB NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE tags (tag TEXT NOT NULL, artifact_id INTEGER NOT NULL, PRIMARY KEY (tag, artifact_id)) WITHOUT ROWID;
CREATE INDEX artifacts_kind ON artifacts (kind);
CREATE INDEX artifacts_name ON artifacts (name);
CREATE INDEX artifacts_time ON artifacts (created_at);
CREATE INDEX artifacts_size ON artifacts (size);
CREATE INDEX artifacts_session ON artifacts (session_id);
";

struct Sqlite {
    conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    fn create(path: &Path) -> Res<Self> {
        let _ = std::fs::remove_file(path);
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Sqlite {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn session(&self, parent: Option<i64>, name: &str) -> Res<i64> {
        self.conn.execute(
            "INSERT INTO sessions (parent, name) VALUES (?1, ?2)",
            params![parent, name],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// One transaction: blob (deduplicated by BLAKE3), artifact row, tag rows.
    fn insert_batch(&mut self, items: &[(i64, &GenItem)]) -> Res<()> {
        let tx = self.conn.transaction()?;
        {
            let mut blob = tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?1, ?2, ?3)",
            )?;
            let mut art = tx.prepare_cached(
                "INSERT INTO artifacts (session_id, kind, name, hash, size, created_at, metadata)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut tag =
                tx.prepare_cached("INSERT INTO tags (tag, artifact_id) VALUES (?1, ?2)")?;
            for (sid, it) in items {
                let hash = blake3::hash(&it.content);
                let hash = hash.as_bytes().as_slice();
                blob.execute(params![hash, it.content.len() as i64, &it.content])?;
                let now = chrono::Utc::now().timestamp_millis();
                art.execute(params![
                    sid,
                    it.kind.as_str(),
                    &it.name,
                    hash,
                    it.content.len() as i64,
                    now,
                    serde_json::Value::Object(it.metadata.clone()).to_string()
                ])?;
                let id = tx.last_insert_rowid();
                for t in &it.tags {
                    tag.execute(params![t, id])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rows returned (every artifact column with the metadata parsed, as Cairn returns whole
    /// records; the tags are not fetched, which favours SQLite).
    fn query(&self, q: &ScaleQuery, subtree_root: i64) -> Res<usize> {
        const COLS: &str =
            "a.id, a.session_id, a.kind, a.name, a.hash, a.size, a.created_at, a.metadata";
        let (sql, args): (String, Vec<rusqlite::types::Value>) = match q {
            ScaleQuery::Tag(t) => (
                format!("SELECT {COLS} FROM tags t JOIN artifacts a ON a.id = t.artifact_id WHERE t.tag = ?1 LIMIT 1000"),
                vec![t.clone().into()],
            ),
            ScaleQuery::KindInSubtree(k) => (
                format!(
                    "WITH RECURSIVE sub(id) AS (SELECT ?1 UNION ALL SELECT s.id FROM sessions s JOIN sub ON s.parent = sub.id)
                     SELECT {COLS} FROM artifacts a WHERE a.session_id IN sub AND a.kind = ?2 LIMIT 1000"
                ),
                vec![subtree_root.into(), k.as_str().to_string().into()],
            ),
            ScaleQuery::NameGlob(g) => (
                format!("SELECT {COLS} FROM artifacts a WHERE a.name GLOB ?1 LIMIT 1000"),
                vec![g.clone().into()],
            ),
            ScaleQuery::Size(lo, hi) => (
                format!("SELECT {COLS} FROM artifacts a WHERE a.size BETWEEN ?1 AND ?2 LIMIT 1000"),
                vec![(*lo as i64).into(), (*hi as i64).into()],
            ),
            ScaleQuery::Time(a, b) => (
                format!("SELECT {COLS} FROM artifacts a WHERE a.created_at >= ?1 AND a.created_at < ?2 LIMIT 1000"),
                vec![a.timestamp_millis().into(), b.timestamp_millis().into()],
            ),
        };
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            // Parse the metadata as Cairn does, so both return usable records.
            let meta: String = r.get(7)?;
            let v: serde_json::Value = serde_json::from_str(&meta)?;
            std::hint::black_box(v);
            n += 1;
        }
        Ok(n)
    }

    fn disk(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", self.path.display())).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Workload 1 in SQLite: items/s, 1,000 per transaction.
fn sqlite_small(dir: &Path, items: &[GenItem], runs: usize) -> Res<(Summary, f64)> {
    let mut samples = Vec::new();
    let mut per_artifact = 0.0;
    for r in 0..runs {
        let path = dir.join(format!("small-{r}.sqlite"));
        let mut db = Sqlite::create(&path)?;
        let sid = db.session(None, "bench")?;
        let t = Instant::now();
        for chunk in items.chunks(BATCH) {
            let batch: Vec<(i64, &GenItem)> = chunk.iter().map(|it| (sid, it)).collect();
            db.insert_batch(&batch)?;
        }
        samples.push(rate(items.len(), t.elapsed()));
        per_artifact = db.disk() as f64 / items.len() as f64;
        drop(db);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }
    Ok((Summary::of(&samples), per_artifact))
}

struct SqliteScale {
    db: Sqlite,
    subtree_root: i64,
    window: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    build_rate: f64,
}

fn sqlite_scale(dir: &Path, opts: &BenchOptions) -> Res<SqliteScale> {
    let plan = ScalePlan::new(opts.scale_count, opts.small_size);
    let mut db = Sqlite::create(&dir.join("scale.sqlite"))?;
    let t = Instant::now();
    let mut slots = Vec::new();
    for slot in 0..plan.slots() {
        let parent = plan.parent(slot).map(|p| slots[p]);
        slots.push(db.session(parent, &format!("run-{slot}"))?);
    }
    let mut window = (chrono::Utc::now(), chrono::Utc::now());
    for step in plan.steps() {
        let (items, timed) = match step {
            ScaleStep::Batch(v) => (v, false),
            ScaleStep::TimeWindow(v) => (v, true),
        };
        let batch: Vec<(i64, &GenItem)> = items.iter().map(|(s, it)| (slots[*s], it)).collect();
        if timed {
            window.0 = chrono::Utc::now();
            std::thread::sleep(Duration::from_millis(3));
            db.insert_batch(&batch)?;
            std::thread::sleep(Duration::from_millis(3));
            window.1 = chrono::Utc::now();
            std::thread::sleep(Duration::from_millis(3));
        } else {
            db.insert_batch(&batch)?;
        }
    }
    db.conn.execute_batch("ANALYZE;")?;
    Ok(SqliteScale {
        subtree_root: slots[plan.subtree_root()],
        window,
        build_rate: rate(opts.scale_count, t.elapsed()),
        db,
    })
}

fn run() -> Res<()> {
    let mut opts = BenchOptions::quick();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    if corpus.is_dir() {
        opts.corpus = Some(corpus);
    }
    let opts = opts.from_env()?;
    let backends: Vec<BackendKind> = std::env::var("CAIRN_BENCH_BACKENDS")
        .unwrap_or_else(|_| "memory,sled,redb,fjall".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<cairn::Result<_>>()?;
    let scratch = match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("cairn-bench-suite-{}", std::process::id())),
    };
    std::fs::create_dir_all(&scratch)?;
    eprintln!("options: {opts:?}\nscratch: {}", scratch.display());
    if let Some(cli) = std::env::var_os("CAIRN_BENCH_CLI") {
        let figs = processes::run(Path::new(&cli), &scratch, &opts)?;
        let _ = std::fs::remove_dir_all(&scratch);
        print!("{}", render_table(&figs));
        if let Some(p) = std::env::var_os("CAIRN_BENCH_JSON") {
            std::fs::write(&p, to_json(&figs))?;
        }
        return Ok(());
    }

    // SQLite first, so each backend's table can print its ratios as soon as it is done.
    let mut all: Vec<Figure> = Vec::new();
    let mut small_base = None;
    let mut query_base: Vec<(String, f64)> = Vec::new();
    if opts.workloads.contains(&Workload::Small) {
        let items: Vec<GenItem> = (0..opts.small_count as u64)
            .map(|i| small_item(i, opts.small_size))
            .collect();
        let (s, per_artifact) = sqlite_small(&scratch, &items, opts.runs)?;
        small_base = Some(s.median);
        all.push(Figure::new(
            "1 small ingest",
            "sqlite",
            "1000 inserts per transaction, WAL",
            "artifacts/s",
            true,
            s,
        ));
        all.push(Figure::new(
            "7 space",
            "sqlite",
            &format!(
                "disk per {} B artifact ({} stored)",
                opts.small_size, opts.small_count
            ),
            "bytes",
            false,
            Summary::of(&[per_artifact]),
        ));
    }
    if opts.workloads.contains(&Workload::Query) {
        let t = Instant::now();
        let sc = sqlite_scale(&scratch, &opts)?;
        eprintln!(
            "SQLite scale store built in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        all.push(Figure::new(
            "5 queries: build",
            "sqlite",
            &format!("store {} artifacts, 1000/tx", opts.scale_count),
            "artifacts/s",
            true,
            Summary::of(&[sc.build_rate]),
        ));
        let plan = ScalePlan::new(opts.scale_count, opts.small_size);
        for q in plan.queries(sc.window) {
            let mut lat = Vec::new();
            let mut n = 0;
            for _ in 0..opts.query_repeats {
                let t = Instant::now();
                n = sc.db.query(&q, sc.subtree_root)?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if n != cairn_bench::NEEDLES {
                return Err(
                    format!("SQLite query {} returned {n} rows, expected 100", q.label()).into(),
                );
            }
            let p50 = percentile(&lat, 50.0);
            all.push(Figure::new(
                "5 queries",
                "sqlite",
                &format!("{} ({} hits) p50; max = p99", q.label(), n),
                "ms",
                false,
                Summary {
                    median: p50,
                    min: percentile(&lat, 0.0),
                    max: percentile(&lat, 99.0),
                    samples: lat.len(),
                },
            ));
            query_base.push((format!("{} (", q.label()), p50));
        }
        // Workload 6 for SQLite too: the same batches into the full and into an empty database.
        let m = opts.small_count.min(20_000);
        let items: Vec<GenItem> = (0..m as u64)
            .map(|i| small_item(60_000_000 + i, opts.small_size))
            .collect();
        let mut db = sc.db;
        let sid = db.session(None, "stability")?;
        let mut full = Vec::new();
        for _ in 0..opts.runs {
            let t = Instant::now();
            for chunk in items.chunks(BATCH) {
                let batch: Vec<(i64, &GenItem)> = chunk.iter().map(|it| (sid, it)).collect();
                db.insert_batch(&batch)?;
            }
            full.push(rate(m, t.elapsed()));
        }
        let (empty, _) = sqlite_small(&scratch, &items, opts.runs)?;
        all.push(
            Figure::new(
                "6 scale stability",
                "sqlite",
                &format!("1000/tx into {} stored", opts.scale_count),
                "artifacts/s",
                true,
                Summary::of(&full),
            )
            .baseline("same into an empty database", empty.median),
        );
        let path = db.path.clone();
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    print!("{}", render_table(&all));

    // Workload 1 once more with SQLite interleaved run by run, so both see the same load.
    if opts.workloads.contains(&Workload::Small) {
        let items: Vec<GenItem> = (0..opts.small_count as u64)
            .map(|i| small_item(i, opts.small_size))
            .collect();
        for kind in &backends {
            let one = BenchOptions {
                runs: 1,
                workloads: vec![Workload::Small],
                ..opts.clone()
            };
            let (mut cairn_s, mut sqlite_s) = (Vec::new(), Vec::new());
            let mut name = String::new();
            for _ in 0..opts.runs {
                let mut b = Bench::new(*kind, &scratch, one.clone());
                name = b.backend().to_string();
                let figs = b.small_ingest()?;
                cairn_s.push(figs[0].median);
                sqlite_s.push(sqlite_small(&scratch, &items, 1)?.0.median);
            }
            let f = Figure::new(
                "1 small ingest",
                &name,
                "put_batch(1000), interleaved with SQLite",
                "artifacts/s",
                true,
                Summary::of(&cairn_s),
            )
            .baseline(
                "SQLite WAL, 1000/tx, same rounds",
                Summary::of(&sqlite_s).median,
            )
            .target("at least SQLite's rate (2x aimed)");
            print!("{}", render_table(std::slice::from_ref(&f)));
            all.push(f);
        }
    }

    for kind in &backends {
        let t = Instant::now();
        let mut figs = Bench::new(*kind, &scratch, opts.clone()).run()?;
        for f in figs.iter_mut() {
            if let (Some(b), true) = (
                small_base,
                f.workload == "1 small ingest" && f.unit == "artifacts/s",
            ) {
                *f = f.clone().baseline("SQLite WAL, 1000/tx", b);
            }
            if f.workload == "5 queries" {
                if let Some((_, p50)) = query_base
                    .iter()
                    .find(|(p, _)| f.metric.starts_with(p.as_str()))
                {
                    *f = f.clone().baseline("SQLite p50", *p50);
                }
            }
        }
        eprintln!("{kind:?} done in {:.0} s", t.elapsed().as_secs_f64());
        print!("{}", render_table(&figs));
        all.extend(figs);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("\n== all figures ==\n{}", render_table(&all));
    if let Some(p) = std::env::var_os("CAIRN_BENCH_JSON") {
        std::fs::write(&p, to_json(&all))?;
    }
    Ok(())
}
