//! Partial reads (issue 13): the cost of a 4 KiB range read, a tail and a grep on a large
//! compressed artifact, against reading the whole artifact and against `zstd -dc | grep`, and the
//! space of the seekable format against plain zstd. Every figure is a ratio to a baseline
//! measured in the same run.
//!
//! Run: `cargo bench --bench partial`. `CAIRN_BENCH_PARTIAL_MIB` sets the artifact size in MiB
//! (default 64; 1024 for the 1 GiB figures in BENCHMARKS.md). Reads run on a warm page cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::{ArtifactKind, Config, NewArtifact, NewSession, Part, PartLimits, Store};

/// Deterministic JSON-lines tool output, generated as it is read (no 1 GiB buffer).
struct Gen {
    left: u64,
    seq: u64,
    x: u64,
    line: Vec<u8>,
    pos: usize,
}

impl Gen {
    fn new(size: u64) -> Self {
        Self {
            left: size,
            seq: 0,
            x: 0x9e37_79b9_7f4a_7c15,
            line: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Gen {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.line.len() {
            let x = &mut self.x;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            self.line = format!(
                "{{\"seq\":{},\"tool\":\"run_tests\",\"status\":\"{}\",\"ms\":{},\"file\":\"tests/test_{}.py\",\"msg\":\"case {} {}\"}}\n",
                self.seq,
                ["passed", "failed", "skipped", "error"][(*x % 4) as usize],
                *x % 10_000,
                *x % 397,
                *x % 9973,
                ["ok", "assert x == y", "timeout after 30s", "fixture missing"][(*x >> 8) as usize % 4]
            )
            .into_bytes();
            self.pos = 0;
            self.seq += 1;
        }
        let n = out
            .len()
            .min(self.line.len() - self.pos)
            .min(self.left as usize);
        out[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn open(dir: &Path, name: &str, config: Config) -> Store {
    Store::open_with(dir.join(name), config).expect("open store")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn blob_file(root: &Path) -> PathBuf {
    for d in std::fs::read_dir(root.join("blobs")).expect("blobs") {
        let d = d.expect("entry").path();
        if d.is_dir() {
            if let Some(f) = std::fs::read_dir(&d).expect("dir").next() {
                return f.expect("entry").path();
            }
        }
    }
    panic!("no blob file under {}", root.display());
}

fn corpus() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(std::fs::read(f).unwrap_or_default());
    }
    out
}

fn space(dir: &Path, label: &str, data: &[u8]) {
    let plain = zstd::bulk::compress(data, 3).expect("zstd").len() as f64;
    print!(
        "| {label} | {:.1} MiB | {:.2} MiB |",
        data.len() as f64 / (1 << 20) as f64,
        plain / (1 << 20) as f64
    );
    for frame in [64u64 << 10, 256 << 10, 1 << 20] {
        let s = open(
            dir,
            &format!("space-{label}-{frame}"),
            Config::default()
                .seekable_threshold(Config::ALWAYS_SEEKABLE)
                .seekable_frame_size(frame),
        );
        let sid = s.create_session(NewSession::new()).expect("session").id;
        let a = s
            .put(sid, NewArtifact::new(ArtifactKind::ToolResult, "x"), data)
            .expect("put");
        print!(" {:+.2}% |", (a.stored_size as f64 / plain - 1.0) * 100.0);
    }
    println!();
}

fn main() {
    let mib: u64 = std::env::var("CAIRN_BENCH_PARTIAL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let size = mib << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    println!("# Partial reads, {mib} MiB artifact");
    println!("load before: {}", uptime());

    println!("\n## Space: seekable vs plain zstd level 3 (one frame over the whole content)\n");
    println!("| content | size | plain zstd | 64 KiB frames | 256 KiB frames | 1 MiB frames |");
    println!("|---|---|---|---|---|---|");
    space(dir.path(), "corpus", &corpus());
    let mut json = Vec::new();
    Gen::new(64 << 20).read_to_end(&mut json).expect("gen");
    space(dir.path(), "json-lines", &json);
    drop(json);

    // The same content stored seekable (default 1 MiB frames) and as plain zstd.
    let mut arts = Vec::new();
    for (label, cfg) in [
        ("seekable", Config::default()),
        (
            "plain zstd",
            Config::default().seekable_threshold(Config::NEVER_SEEKABLE),
        ),
    ] {
        let name = label.replace(' ', "-");
        let s = open(dir.path(), &name, cfg);
        let sid = s.create_session(NewSession::new()).expect("session").id;
        let t = Instant::now();
        let a = s
            .put_reader(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "big.jsonl"),
                Gen::new(size),
            )
            .expect("put");
        let put = t.elapsed();
        let file = blob_file(&dir.path().join(&name));
        arts.push((label, s, sid, a, put, file));
    }
    println!("\n## Ingest and stored size ({mib} MiB JSON lines)\n");
    println!("| layout | put | MiB/s | stored |");
    println!("|---|---|---|---|");
    for (label, _, _, a, put, _) in &arts {
        println!(
            "| {label} | {:.2} s | {:.0} | {:.1} MiB ({:.2}x) |",
            put.as_secs_f64(),
            mib as f64 / put.as_secs_f64(),
            a.stored_size as f64 / (1 << 20) as f64,
            a.size as f64 / a.stored_size as f64
        );
    }
    let plain_stored = arts[1].3.stored_size as f64;
    println!(
        "seekable vs plain zstd (as Cairn streams it, 2 workers): {:+.2}%",
        (arts[0].3.stored_size as f64 / plain_stored - 1.0) * 100.0
    );

    println!("\n## Reads ({mib} MiB; ratios against reading the whole artifact)\n");
    println!("| layout | read | time (median) | stored bytes read | time ratio | bytes ratio |");
    println!("|---|---|---|---|---|---|");
    let limits = PartLimits::default();
    for (label, s, sid, a, _, _) in &arts {
        let runs = if mib >= 512 { 3 } else { 5 };
        let whole = median(
            (0..runs.min(3))
                .map(|_| {
                    let t = Instant::now();
                    let mut r = s.open_reader(*sid, a.id).expect("reader");
                    std::io::copy(&mut r, &mut std::io::sink()).expect("read");
                    t.elapsed()
                })
                .collect(),
        );
        println!(
            "| {label} | whole artifact | {:.3} s | {} | 1 | 1 |",
            whole.as_secs_f64(),
            a.stored_size
        );
        let cases = [
            (
                "4 KiB at the middle",
                Part::Bytes {
                    offset: a.size / 2,
                    len: 4096,
                },
            ),
            (
                "4 KiB at the end",
                Part::Bytes {
                    offset: a.size - 4096,
                    len: 4096,
                },
            ),
            ("tail 20 lines", Part::Tail { lines: 20 }),
        ];
        for (what, part) in cases {
            let mut bytes = 0;
            let t = median(
                // Without an index every partial read decodes everything: fewer runs.
                (0..if a.compressed && *label == "seekable" { runs * 4 } else { 3 })
                    .map(|_| {
                        let t = Instant::now();
                        let r = s.read_part_with(*sid, a.id, &part, &limits).expect("part");
                        let e = t.elapsed();
                        bytes = r.cost.stored_bytes_read;
                        e
                    })
                    .collect(),
            );
            println!(
                "| {label} | {what} | {:.3} ms | {bytes} | 1/{:.0} | 1/{:.0} |",
                t.as_secs_f64() * 1e3,
                whole.as_secs_f64() / t.as_secs_f64(),
                a.stored_size as f64 / bytes.max(1) as f64
            );
        }
    }

    println!("\n## Grep over the whole artifact (a pattern with no match: every line scanned)\n");
    println!("| how | time | content MiB/s | ratio to zstd -dc \\| grep |");
    println!("|---|---|---|---|");
    let pattern = "timeout after 31s";
    let plain_file = &arts[1].5;
    let t = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | grep -c '{pattern}'",
            plain_file.display()
        ))
        .output()
        .expect("zstd | grep");
    let base = t.elapsed();
    let base_count: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    println!(
        "| zstd -dc \\| grep -c (plain zstd blob) | {:.2} s | {:.0} | 1 |",
        base.as_secs_f64(),
        mib as f64 / base.as_secs_f64()
    );
    for (label, s, sid, a, _, _) in &arts {
        let t = Instant::now();
        let r = s
            .read_part_with(
                *sid,
                a.id,
                &Part::Grep {
                    pattern: pattern.into(),
                    context: 2,
                    max_matches: 100_000,
                    ignore_case: false,
                    start_line: 1,
                },
                &limits,
            )
            .expect("grep");
        let e = t.elapsed();
        let cairn::PartContent::Grep { matches, .. } = r.content else {
            panic!("not grep")
        };
        assert_eq!(matches, base_count, "grep and zstd|grep disagree");
        println!(
            "| Cairn grep ({label}) | {:.2} s | {:.0} | {:.2} |",
            e.as_secs_f64(),
            mib as f64 / e.as_secs_f64(),
            base.as_secs_f64() / e.as_secs_f64()
        );
    }
    println!("\nload after: {}", uptime());
}
