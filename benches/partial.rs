//! Partial reads (issue 13): the cost of a 4 KiB range read, a tail and a grep on a large
//! compressed artifact, against reading the whole artifact and against `zstd -dc | grep`, and the
//! space of the seekable format (as Cairn's writer stores it: header, frames, index and footer)
//! against the zstd CLI at level 3 on the same bytes. Every figure is a ratio to a baseline
//! measured in the same run, with the 1-minute load average before and after it.
//!
//! The content is agent-log-like JSON lines built from the shared corpus (`Gen`). Run:
//! `cargo bench --bench partial`. `CAIRN_BENCH_PARTIAL_MIB` sets the artifact size in MiB
//! (default 64; 1024 for the 1 GiB figures in BENCHMARKS.md). Temporary stores and zstd files
//! live under `target/` and are removed at the end. Reads run on a warm page cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::{ArtifactKind, Config, NewArtifact, NewSession, Part, PartLimits, Store};

/// A corpus file: its path under the corpus, its bytes, and where each of its lines starts.
type CorpusFile = (String, Vec<u8>, Vec<usize>);
type Corpus = std::sync::Arc<Vec<CorpusFile>>;

/// Agent-log-like JSON lines built from the shared corpus, generated as it is read (no 1 GiB
/// buffer): one event per tool call, with a timestamp, sequence number, run id, tool, arguments,
/// exit code and duration, and as output a run of 1 to 60 consecutive lines taken from a random
/// place in a random corpus file (JSON-escaped). Deterministic (xorshift), so every layout and
/// the zstd CLI get the same bytes. About one event in 20,000 has `"exit_code":137` (the rare
/// match the grep rows search for).
struct Gen {
    left: u64,
    seq: u64,
    x: u64,
    files: Corpus,
    line: Vec<u8>,
    pos: usize,
}

impl Gen {
    fn new(size: u64, files: Corpus) -> Self {
        assert!(!files.is_empty(), "the corpus (../shared/corpus) is empty");
        Self {
            left: size,
            seq: 0,
            x: 0x9e37_79b9_7f4a_7c15,
            files,
            line: Vec::new(),
            pos: 0,
        }
    }

    fn next(&mut self) -> u64 {
        let x = &mut self.x;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn event(&mut self) -> Vec<u8> {
        let files = std::sync::Arc::clone(&self.files);
        let (path, text, starts) = &files[(self.next() % files.len() as u64) as usize];
        let first = (self.next() % starts.len() as u64) as usize;
        let count = 1 + (self.next() % 60) as usize;
        let from = starts[first];
        let to = starts.get(first + count).copied().unwrap_or(text.len());
        // Real tool outputs differ in their numbers (times, line numbers, ids, counts) even
        // when their text repeats: about one digit in four is redrawn, so the corpus is not
        // simply repeated hundreds of times over.
        let mut raw = text[from..to.min(from + (16 << 10))].to_vec();
        for b in raw.iter_mut().filter(|b| b.is_ascii_digit()) {
            let r = self.next();
            if r % 4 == 0 {
                *b = b'0' + ((r >> 8) % 10) as u8;
            }
        }
        let output = String::from_utf8_lossy(&raw);
        let call_id = format!("call_{:016x}", self.next());
        let tool = [
            "bash",
            "read_file",
            "grep",
            "run_tests",
            "edit_file",
            "list_dir",
        ][(self.next() % 6) as usize];
        let exit = match self.next() % 20_000 {
            0 => 137,
            1..=2_000 => 1,
            _ => 0,
        };
        let ms = self.next() % 30_000;
        let run = self.seq / 5_000;
        let t = self.seq * 731;
        let line = serde_json::json!({
            "ts": format!("2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                1 + t / 86_400_000 % 28, t / 3_600_000 % 24, t / 60_000 % 60, t / 1000 % 60, t % 1000),
            "seq": self.seq,
            "run": format!("run-{run:06}"),
            "tool": tool,
            "call_id": call_id,
            "args": {"path": path, "line": first + 1, "count": count},
            "exit_code": exit,
            "duration_ms": ms,
            "output": output,
        });
        self.seq += 1;
        let mut v = serde_json::to_vec(&line).expect("json");
        v.push(b'\n');
        v
    }
}

impl Read for Gen {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.line.len() {
            self.line = self.event();
            self.pos = 0;
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

/// The 1-minute load average from `uptime` (for the tables; the full lines are printed too).
fn load() -> String {
    let u = uptime();
    println!("uptime: {u}");
    u.split("load average:")
        .nth(1)
        .and_then(|l| l.split(',').next())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "?".into())
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

/// Every file of the shared corpus (sorted by path), with its line starts.
fn corpus_files() -> Vec<CorpusFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut paths = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                paths.push(p);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read(&p).ok()?;
            let mut starts = vec![0];
            starts.extend(
                text.iter()
                    .enumerate()
                    .filter(|(i, b)| **b == b'\n' && i + 1 < text.len())
                    .map(|(i, _)| i + 1),
            );
            let name = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            (!text.is_empty()).then_some((name, text, starts))
        })
        .collect()
}

/// Writes `content` through the zstd CLI (`zstd -3`, one thread, as a user would) to `out`.
fn zstd_cli(content: impl Read, out: &Path) -> u64 {
    let mut child = Command::new("zstd")
        .args(["-3", "-q", "-f", "-o"])
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run the zstd CLI (is zstd installed?)");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::copy(&mut { content }, &mut stdin).expect("feed zstd");
    drop(stdin);
    assert!(child.wait().expect("zstd").success(), "zstd failed");
    std::fs::metadata(out).expect("zstd output").len()
}

fn pct(a: u64, b: u64) -> String {
    format!("{:+.2}%", (a as f64 / b as f64 - 1.0) * 100.0)
}

/// Space of seekable storage through Cairn's writer (the blob file on disk: header, frames,
/// index and footer) against the zstd CLI at level 3 over the same bytes.
fn space(dir: &Path, label: &str, data: &[u8]) {
    let l0 = load();
    let cli = zstd_cli(data, &dir.join(format!("{label}.zst")));
    let mut row = format!("| {label} | {} | {cli} |", data.len());
    for frame in [256u64 << 10, 1 << 20, 4 << 20] {
        let name = format!("space-{label}-{frame}");
        let s = open(
            dir,
            &name,
            Config::default()
                .seekable_threshold(Config::ALWAYS_SEEKABLE)
                .seekable_frame_size(frame),
        );
        let sid = s.create_session(NewSession::new()).expect("session").id;
        let a = s
            .put(sid, NewArtifact::new(ArtifactKind::ToolResult, "x"), data)
            .expect("put");
        let on_disk = std::fs::metadata(blob_file(&dir.join(&name)))
            .expect("blob")
            .len();
        assert_eq!(on_disk, a.stored_size, "stored_size is the blob file");
        row.push_str(&format!(" {on_disk} ({}) |", pct(on_disk, cli)));
        drop(s);
        std::fs::remove_dir_all(dir.join(&name)).expect("clean up");
    }
    let l1 = load();
    println!("{row} {l0} / {l1} |");
}

fn main() {
    let mib: u64 = std::env::var("CAIRN_BENCH_PARTIAL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let size = mib << 20;
    // Temp files under target/ (not /tmp, often a small tmpfs); removed when `dir` drops.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&target).expect("target dir");
    let dir = tempfile::Builder::new()
        .prefix("bench-partial-")
        .tempdir_in(&target)
        .expect("tempdir");
    let files = std::sync::Arc::new(corpus_files());
    println!("# Partial reads, {mib} MiB artifact (format version 2, Cairn's writer)");
    println!(
        "zstd CLI: {}",
        String::from_utf8_lossy(
            &Command::new("zstd")
                .arg("--version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .trim()
    );

    println!("\n## Space: blob file through Cairn's writer vs `zstd -3` (CLI) of the same bytes\n");
    println!("| content | bytes | zstd -3 | 256 KiB frames | 1 MiB frames (default) | 4 MiB frames | load 1-min before / after |");
    println!("|---|---|---|---|---|---|---|");
    let corpus: Vec<u8> = files.iter().flat_map(|f| f.1.iter().copied()).collect();
    space(dir.path(), "corpus", &corpus);
    drop(corpus);
    let mut sample = Vec::new();
    Gen::new(64 << 20, files.clone())
        .read_to_end(&mut sample)
        .expect("gen");
    space(dir.path(), "agent-log-64MiB", &sample);
    drop(sample);

    // What producing the content costs by itself (it is inside every ingest time below).
    let lg0 = load();
    let t = Instant::now();
    std::io::copy(&mut Gen::new(size, files.clone()), &mut std::io::sink()).expect("gen");
    let gen_time = t.elapsed();
    let lg1 = load();

    // The big content: through the zstd CLI (the grep and space baseline), and stored by Cairn
    // seekable (default config: 1 MiB frames, version 2) and as plain zstd (no index).
    let l0 = load();
    let t = Instant::now();
    let cli_file = dir.path().join("big.jsonl.zst");
    let cli_size = zstd_cli(Gen::new(size, files.clone()), &cli_file);
    let cli_time = t.elapsed();
    let l1 = load();
    let mut arts = Vec::new();
    let mut put_loads = Vec::new();
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
        let l0 = load();
        let t = Instant::now();
        let a = s
            .put_reader(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "big.jsonl"),
                Gen::new(size, files.clone()),
            )
            .expect("put");
        let put = t.elapsed();
        put_loads.push((l0, load()));
        let file = blob_file(&dir.path().join(&name));
        assert_eq!(std::fs::metadata(&file).expect("blob").len(), a.stored_size);
        arts.push((label, s, sid, a, put, file));
    }
    println!(
        "\n## Ingest and stored size ({mib} MiB agent-log JSON lines, {} lines)\n",
        {
            let (s, sid, a) = (&arts[0].1, arts[0].2, &arts[0].3);
            s.preview(sid, a.id)
                .map(|p| p.lines.to_string())
                .unwrap_or_default()
        }
    );
    println!(
        "| writer | time | MiB/s | stored bytes | vs zstd -3 CLI | load 1-min before / after |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| content generator alone (no storing) | {:.2} s | {:.0} | - | - | {lg0} / {lg1} |",
        gen_time.as_secs_f64(),
        mib as f64 / gen_time.as_secs_f64()
    );
    println!(
        "| zstd -3 CLI (1 thread) | {:.2} s | {:.0} | {cli_size} | 1 | {l0} / {l1} |",
        cli_time.as_secs_f64(),
        mib as f64 / cli_time.as_secs_f64()
    );
    for ((label, _, _, a, put, _), (b, e)) in arts.iter().zip(&put_loads) {
        println!(
            "| Cairn {label} | {:.2} s | {:.0} | {} | {} | {b} / {e} |",
            put.as_secs_f64(),
            mib as f64 / put.as_secs_f64(),
            a.stored_size,
            pct(a.stored_size, cli_size)
        );
    }

    println!("\n## Reads ({mib} MiB; ratios against reading the whole artifact, same layout, same run)\n");
    println!("| layout | read | time (median) | stored bytes read | time ratio | bytes ratio | load 1-min before / after |");
    println!("|---|---|---|---|---|---|---|");
    let limits = PartLimits::default();
    for (label, s, sid, a, _, _) in &arts {
        let l0 = load();
        let whole = median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let mut r = s.open_reader(*sid, a.id).expect("reader");
                    std::io::copy(&mut r, &mut std::io::sink()).expect("read");
                    t.elapsed()
                })
                .collect(),
        );
        println!(
            "| {label} | whole artifact (`open_reader`) | {:.3} s | {} | 1 | 1 | {l0} / {} |",
            whole.as_secs_f64(),
            a.stored_size,
            load()
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
            let l0 = load();
            let mut bytes = 0;
            // Without an index every partial read decodes everything: fewer runs.
            let runs = if *label == "seekable" { 11 } else { 3 };
            let t = median(
                (0..runs)
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
                "| {label} | {what} | {:.3} ms | {bytes} | 1/{:.0} | 1/{:.0} | {l0} / {} |",
                t.as_secs_f64() * 1e3,
                whole.as_secs_f64() / t.as_secs_f64(),
                a.stored_size as f64 / bytes.max(1) as f64,
                load()
            );
        }
    }

    println!("\n## Grep over the whole artifact (context 2; same content, zstd CLI file for the baseline)\n");
    println!("| pattern | how | time | content MiB/s | matching lines | ratio to zstd -dc \\| grep | load 1-min before / after |");
    println!("|---|---|---|---|---|---|---|");
    let grep_limits = PartLimits {
        max_bytes: 16 << 20,
        ..PartLimits::default()
    };
    for pattern in ["\"exit_code\":137,", "timeout after 31s"] {
        let l0 = load();
        let t = Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zstd -dc '{}' | grep -c '{pattern}'",
                cli_file.display()
            ))
            .output()
            .expect("zstd | grep");
        let base = t.elapsed();
        let base_count: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(u64::MAX);
        println!(
            "| `{pattern}` | `zstd -dc FILE \\| grep -c` | {:.2} s | {:.0} | {base_count} | 1 | {l0} / {} |",
            base.as_secs_f64(),
            mib as f64 / base.as_secs_f64(),
            load()
        );
        for (label, s, sid, a, _, _) in &arts {
            let l0 = load();
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
                    &grep_limits,
                )
                .expect("grep");
            let e = t.elapsed();
            let cairn::PartContent::Grep { matches, .. } = r.content else {
                panic!("not grep")
            };
            assert!(!r.truncated, "grep result cut short: raise max_bytes");
            assert_eq!(matches, base_count, "grep and zstd|grep disagree");
            println!(
                "| `{pattern}` | Cairn grep ({label}) | {:.2} s | {:.0} | {matches} | {:.2} | {l0} / {} |",
                e.as_secs_f64(),
                mib as f64 / e.as_secs_f64(),
                base.as_secs_f64() / e.as_secs_f64(),
                load()
            );
        }
    }
    drop(arts);
    println!("\nload after: {}", uptime());
}
