//! `cargo bench --bench workloads`: every workload of issue 4 on memory, sled and redb, each with
//! the baselines that need no extra dependency (raw engine inserts, zstd alone, write+fsync,
//! BLAKE3 alone, zstd decompression alone, a full scan of every record, an empty store). The
//! SQLite baselines live in the separate `bench-suite/` package so that neither a user's build nor
//! `cargo test` compiles SQLite.
//!
//! Sizes: `CAIRN_BENCH_PRESET=quick` (the default here), `full` (the sizes, including the
//! 1,000,000-artifact store) or `tiny`, plus the `CAIRN_BENCH_*` overrides documented on
//! `BenchOptions::from_env`. `CAIRN_BENCH_BACKENDS=memory,sled,redb` picks backends,
//! `CAIRN_BENCH_DIR` the scratch folder, `CAIRN_BENCH_JSON` a file for the figures as JSON.

use std::process::ExitCode;

use cairn::BackendKind;
use cairn_bench::{render_table, to_json, Bench, BenchOptions};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> cairn::Result<()> {
    let mut opts = BenchOptions::quick();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
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
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id())),
    };
    eprintln!("options: {opts:?}\nscratch: {}", scratch.display());
    let mut all = Vec::new();
    for kind in backends {
        let mut bench = Bench::new(kind, &scratch, opts.clone());
        let figs = bench.run()?;
        print!("{}", render_table(&figs));
        all.extend(figs);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("\n== all backends ==\n{}", render_table(&all));
    if let Some(p) = std::env::var_os("CAIRN_BENCH_JSON") {
        std::fs::write(&p, to_json(&all)).map_err(|e| cairn::Error::Other {
            message: format!("writing {}: {e}", std::path::Path::new(&p).display()),
        })?;
    }
    Ok(())
}
